//! Footprint of `tern-server`: start-up time to listening (median of 10,
//! fresh and existing data directory), RSS idle, and RSS with 100 and
//! 1,000 idle authenticated connections (memory per connection from the
//! difference).
//!
//! Run: `cargo bench -p tern-server --bench footprint` (release build).
//! Prints a table and writes `target/footprint.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawClient, ServerOptions, TestServer};

const RUNS: usize = 10;
const CONNECTIONS: [usize; 2] = [100, 1000];
const PARALLEL_LOGINS: usize = 16;

fn main() {
    rlimit::increase_nofile_limit(u64::MAX).expect("raise open file limit");
    let fresh = startup_times(true);
    let warm = startup_times(false);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (idle, with) = runtime.block_on(connections());
    let per_connection_kib = (with[1] - with[0]) as f64 / (CONNECTIONS[1] - CONNECTIONS[0]) as f64;

    println!("tern-server footprint (release build)");
    println!("  start-up to listening, fresh data dir   median {:>7.1} ms  (min {:.1}, max {:.1}, {RUNS} runs)", median(&fresh), min(&fresh), max(&fresh));
    println!("  start-up to listening, existing data    median {:>7.1} ms  (min {:.1}, max {:.1}, {RUNS} runs)", median(&warm), min(&warm), max(&warm));
    println!("  RSS idle (started, no client)           {:>7} KiB", idle);
    for (n, rss) in CONNECTIONS.iter().zip(&with) {
        println!("  RSS with {n:>5} idle authenticated conns  {rss:>7} KiB");
    }
    println!("  memory per idle TLS connection          {per_connection_kib:>7.1} KiB  ((RSS@{} - RSS@{}) / {})", CONNECTIONS[1], CONNECTIONS[0], CONNECTIONS[1] - CONNECTIONS[0]);

    let json = format!(
        "{{\"startup_fresh_ms_median\":{:.2},\"startup_existing_ms_median\":{:.2},\"rss_idle_kib\":{idle},\"rss_kib_at\":{{\"{}\":{},\"{}\":{}}},\"kib_per_connection\":{per_connection_kib:.2}}}\n",
        median(&fresh), median(&warm), CONNECTIONS[0], with[0], CONNECTIONS[1], with[1]
    );
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/footprint.json");
    std::fs::write(&target, json).expect("write json");
    println!("  written to {}", target.display());
}

/// Times spawn -> "ready" report line over RUNS starts: each on a new data
/// directory (`fresh`: certificate generation and migrations included), or
/// all on one that an untimed first start created.
fn startup_times(fresh: bool) -> Vec<f64> {
    let dir = tempfile::tempdir().expect("temp dir");
    if !fresh {
        time_one_start(dir.path(), "data");
    }
    (0..RUNS)
        .map(|run| {
            time_one_start(
                dir.path(),
                &if fresh {
                    format!("data{run}")
                } else {
                    "data".into()
                },
            )
        })
        .collect()
}

fn time_one_start(dir: &std::path::Path, data: &str) -> f64 {
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"tern.test\"\ndata_dir = \"{}\"\n[listen]\nc2s = \"127.0.0.1:0\"\nc2s_tls = \"127.0.0.1:0\"\nupload = \"127.0.0.1:0\"\ns2s = \"127.0.0.1:0\"\ns2s_tls = \"127.0.0.1:0\"\n",
            dir.join(data).display()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern-server"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.contains("ready in")));
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    assert!(ready, "server did not start");
    common::signal(child.id(), "TERM");
    assert!(
        common::wait_child(&mut child, Duration::from_secs(20)),
        "clean exit"
    );
    elapsed
}

/// RSS idle, then with each number of idle authenticated connections.
async fn connections() -> (u64, Vec<u64>) {
    let server = TestServer::start_with(ServerOptions {
        limits: "max_connections_per_ip = 5000".into(),
        ..Default::default()
    });
    server.add_user("bench", "bench-password");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kib(&server);
    let mut clients: Vec<RawClient> = Vec::new();
    let mut at = Vec::new();
    for &target in &CONNECTIONS {
        while clients.len() < target {
            let batch = (target - clients.len()).min(PARALLEL_LOGINS);
            let logins = (0..batch).map(|_| RawClient::login(&server, "bench", "bench-password"));
            clients.extend(futures::future::join_all(logins).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        at.push(rss_kib(&server));
    }
    drop(clients);
    (idle, at)
}

fn rss_kib(server: &TestServer) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.len() % 2 == 0 {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    } else {
        s[s.len() / 2]
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}
