//! The benchmark harness works: `tern-load` (the `tern-bench` crate) runs
//! every scenario once at a tiny size against real servers — two Tern
//! servers federating through DNS for the federation scenario — and
//! `tern-load report` compares what it recorded. Nothing is asserted
//! about speed: benchmarks are measured with `bench/compare.sh`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::bed::Bed;
use common::{wait_child, TestCa, TestServer};

/// The `tern-load` binary, brought up to date once per test run (a
/// binary left by an earlier build may predate its sources; cargo does
/// not build another package's binaries for an integration test).
fn tern_load() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let deps = std::env::current_exe().expect("test executable");
            let dir = deps.parent().and_then(Path::parent).expect("target dir");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "tern-bench", "--bin", "tern-load"])
                .status()
                .expect("cargo build");
            assert!(status.success(), "building tern-load failed");
            dir.join("tern-load")
        })
        .clone()
}

/// Runs `tern-load` against `server` (bounded); its standard output.
fn load(server: &TestServer, json: &Path, args: &[String]) -> String {
    let out = server.dir.path().join("tern-load.out");
    let mut child = Command::new(tern_load())
        .arg("--addr")
        .arg(server.c2s.to_string())
        .args(["--domain", &server.domain, "--label", "tern"])
        .arg("--ca-file")
        .arg(TestCa::get().ca_path())
        .args(["--server-pid", &server.pid().to_string()])
        .arg("--json")
        .arg(json)
        .args(args)
        .stdout(std::fs::File::create(&out).expect("output file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run tern-load");
    let finished = wait_child(&mut child, Duration::from_secs(120));
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        finished,
        "tern-load {args:?} failed:\n{output}\nserver log:\n{}",
        server.log()
    );
    println!("{output}");
    output
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn every_benchmark_scenario_runs_once_tiny() {
    let Some(bed) = Bed::start(9, &[("a.test", ""), ("b.test", "")]) else {
        return;
    };
    let (a, b) = (bed.server("a.test"), bed.server("b.test"));
    let json = a.dir.path().join("results.jsonl");
    for server in [a, b] {
        load(server, &json, &strings(&["register", "--users", "8"]));
    }
    let tiny = ["--pairs", "2", "--seconds", "0.5", "--warmup", "0.2"];
    let throughput = [&["throughput", "--latency-runs", "2"][..], &tiny].concat();
    let out = load(a, &json, &strings(&throughput));
    assert!(
        out.contains("at saturation")
            && out.contains("throughput-half 2/2")
            && out.contains("median run"),
        "{out}"
    );
    let mut federation = strings(&[&["federation"][..], &tiny].concat());
    federation.extend([
        "--peer-addr".to_owned(),
        b.c2s.to_string(),
        "--peer-domain".to_owned(),
        "b.test".to_owned(),
    ]);
    let out = load(a, &json, &federation);
    assert!(out.contains("federation"), "{out}");
    let out = load(a, &json, &strings(&["connections", "--levels", "2,6"]));
    assert!(out.contains("per connection"), "{out}");
    let out = load(
        a,
        &json,
        &strings(&["logins", "--workers", "2", "--seconds", "0.5"]),
    );
    assert!(out.contains("logins/s (0 failed)"), "{out}");
    let recorded = std::fs::read_to_string(&json).expect("JSON lines");
    assert_eq!(
        recorded.lines().count(),
        8,
        "one line per measurement (and per latency run):\n{recorded}"
    );
    let half = recorded
        .lines()
        .find(|l| l.contains(r#""scenario":"throughput-half""#))
        .expect("the half-load figure");
    assert!(half.contains(r#""latency_runs":2"#), "{half}");
    let report = Command::new(tern_load())
        .arg("report")
        .arg(&json)
        .output()
        .expect("report");
    let report = String::from_utf8_lossy(&report.stdout);
    println!("{report}");
    assert!(
        report.contains("throughput (msg/s)") && report.contains("logins/s"),
        "{report}"
    );
}
