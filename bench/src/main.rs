//! `tern-load`: measures an XMPP server over plain c2s (STARTTLS, SCRAM,
//! resource binding), so the same command measures Tern, Prosody and
//! ejabberd. Scenarios: message throughput (saturation, then latency at
//! half that load), federation (the same with the pairs split across two
//! domains), idle connections (server memory per connection), and logins
//! per second. Each prints a table line and appends a JSON line to
//! `--json`; `tern-load report FILE` compares servers side by side.
//!
//! A separate crate, not a binary of the server: a load generator is a
//! client of any server and must not link (or favour) ours.

mod client;
mod report;
mod scenarios;
mod scram;
mod usage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use client::Target;
use scenarios::{Traffic, Users};

#[derive(Parser)]
#[command(
    name = "tern-load",
    version,
    about = "XMPP c2s load generator for any server"
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    /// Name of the server measured, in reports.
    #[arg(long, default_value = "server")]
    label: String,
    /// Appends one JSON line per measurement to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The server's process id, to read its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// User names are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "load")]
    user_prefix: String,
    /// Every user's password.
    #[arg(long, default_value = "load-password")]
    password: String,
    /// The scenario name to record (e.g. `throughput-archive` for a run
    /// with the server's archive on).
    #[arg(long)]
    record_as: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// The server's STARTTLS c2s address.
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: SocketAddr,
    /// The XMPP domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// PEM file of the CA to trust; without it, certificates are not
    /// checked (loopback benchmarks of self-signed servers only).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// SASL mechanisms, in order of preference.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "SCRAM-SHA-256,SCRAM-SHA-1,PLAIN"
    )]
    mechanisms: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Creates users 0..N in-band (XEP-0077); existing ones are kept.
    Register {
        #[arg(long)]
        users: usize,
        #[arg(long, default_value_t = 16)]
        parallel: usize,
    },
    /// N pairs send to each other: delivered messages/s at saturation,
    /// then latency at half that offered load.
    Throughput(TrafficArgs),
    /// Throughput with user A of each pair on this server and user B on
    /// the peer server (another domain, federated).
    Federation {
        #[command(flatten)]
        traffic: TrafficArgs,
        /// The peer server's STARTTLS c2s address.
        #[arg(long)]
        peer_addr: SocketAddr,
        /// The peer's domain.
        #[arg(long)]
        peer_domain: String,
        /// The peer's CA file (default: the same as --ca-file).
        #[arg(long)]
        peer_ca_file: Option<PathBuf>,
    },
    /// Logs in idle users up to each level; server RSS and memory per
    /// connection (needs --server-pid).
    Connections {
        #[arg(long, value_delimiter = ',', default_value = "2000,15000")]
        levels: Vec<usize>,
    },
    /// Workers log in and out in a loop: complete logins per second.
    Logins {
        #[arg(long, default_value_t = 32)]
        workers: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Prints a comparison of the JSON lines in FILE (servers side by
    /// side, with the ratios of the first label to each other).
    Report { file: PathBuf },
}

#[derive(Args, Clone)]
struct TrafficArgs {
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Messages in flight per sender at saturation.
    #[arg(long, default_value_t = 16)]
    window: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Skip the latency run at half the saturation load.
    #[arg(long)]
    no_latency: bool,
    /// Skip saturation: measure latency at this offered load (messages/s).
    #[arg(long, conflicts_with = "no_latency")]
    rate: Option<f64>,
    /// Latency runs at the fixed load, each with fresh logins: the run
    /// with the median p99 is the result, and every run is printed and
    /// recorded (as `<scenario>-run`). One noisy stretch of a shared
    /// machine then spoils one run, not the figure.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    latency_runs: u32,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("cannot raise the open-file limit: {e}");
    }
    if let Command::Report { file } = &cli.command {
        return report::compare(file);
    }
    let target = target(&cli.server)?;
    let users = Users {
        prefix: cli.user_prefix.clone(),
        password: cli.password.clone(),
    };
    let recorder = Recorder {
        label: cli.label.clone(),
        json: cli.json.clone(),
    };
    match &cli.command {
        Command::Register {
            users: count,
            parallel,
        } => {
            scenarios::register_many(&target, &users, *count, *parallel).await?;
            println!("{}: {count} users registered (or there already)", cli.label);
        }
        Command::Throughput(args) => {
            let pairs = args.pairs;
            let a = (target.clone(), 0..pairs);
            let b = (target.clone(), pairs..2 * pairs);
            let name = cli.record_as.as_deref().unwrap_or("throughput");
            throughput(&recorder, name, &users, a, b, args, cli.server_pid).await?;
        }
        Command::Federation {
            traffic,
            peer_addr,
            peer_domain,
            peer_ca_file,
        } => {
            let peer = ServerArgs {
                addr: *peer_addr,
                domain: peer_domain.clone(),
                ca_file: peer_ca_file.clone().or(cli.server.ca_file.clone()),
                mechanisms: cli.server.mechanisms.clone(),
            };
            let pairs = traffic.pairs;
            let a = (target.clone(), 0..pairs);
            let b = (self::target(&peer)?, 0..pairs);
            let name = cli.record_as.as_deref().unwrap_or("federation");
            throughput(&recorder, name, &users, a, b, traffic, cli.server_pid).await?;
        }
        Command::Connections { levels } => {
            let pid = cli.server_pid.context("connections needs --server-pid")?;
            let result = scenarios::connections(&target, &users, levels, pid).await?;
            println!(
                "{:<10} connections   {}  → {:.1} KiB per connection",
                cli.label,
                result
                    .levels
                    .iter()
                    .map(|(c, rss)| format!("{c}: {} MiB", rss / 1024))
                    .collect::<Vec<_>>()
                    .join(", "),
                result.kib_per_connection
            );
            recorder.record("connections", json!({ "levels": levels }), &result)?;
        }
        Command::Logins { workers, seconds } => {
            let result =
                scenarios::logins(&target, &users, *workers, *seconds, cli.server_pid).await?;
            println!(
                "{:<10} logins        {:>9.0} logins/s ({} failed)  generator {:.2} cores, server {}",
                cli.label,
                result.per_sec,
                result.failures,
                result.generator_cpu,
                cores(result.server_cpu)
            );
            recorder.record(
                "logins",
                json!({ "workers": workers, "seconds": seconds }),
                &result,
            )?;
        }
        Command::Report { .. } => {}
    }
    Ok(())
}

/// One side of a traffic run: a server and the user numbers on it.
type Side = (Target, std::ops::Range<usize>);

/// Saturation, then (unless told not to) latency at half that load.
async fn throughput(
    recorder: &Recorder,
    scenario: &str,
    users: &Users,
    a: Side,
    b: Side,
    args: &TrafficArgs,
    server_pid: Option<u32>,
) -> Result<()> {
    let mut settings = Traffic {
        pairs: args.pairs,
        window: args.window,
        rate: None,
        warmup_secs: args.warmup,
        seconds: args.seconds,
    };
    if let Some(rate) = args.rate {
        settings.rate = Some(rate);
        return latency(
            recorder,
            &format!("{scenario}-fixed"),
            "at a fixed offered load",
            users,
            (&a, &b),
            &settings,
            server_pid,
            args.latency_runs,
        )
        .await;
    }
    let (left, right) = (login(&a, users).await?, login(&b, users).await?);
    let saturated = scenarios::traffic(left, right, &settings, server_pid).await?;
    println!(
        "{:<10} {:<13} {:>9.0} msg/s at saturation ({} pairs, window {})  p50 {:.2} ms p99 {:.2} ms  generator {:.2} cores, server {}{}",
        recorder.label,
        scenario,
        saturated.delivered_per_sec,
        settings.pairs,
        settings.window,
        saturated.latency_ms.p50,
        saturated.latency_ms.p99,
        saturated.generator_cpu,
        cores(saturated.server_cpu),
        errors(saturated.errors)
    );
    recorder.record(scenario, json!(settings), &saturated)?;
    if args.no_latency || saturated.delivered_per_sec < 1.0 {
        return Ok(());
    }
    settings.rate = Some(saturated.delivered_per_sec / 2.0);
    latency(
        recorder,
        &format!("{scenario}-half"),
        "offered at half load",
        users,
        (&a, &b),
        &settings,
        server_pid,
        args.latency_runs,
    )
    .await
}

/// Latency at the fixed offered load of `settings`, measured `runs`
/// times; the run with the median p99 is recorded as `scenario`.
#[allow(clippy::too_many_arguments)]
async fn latency(
    recorder: &Recorder,
    scenario: &str,
    load: &str,
    users: &Users,
    (a, b): (&Side, &Side),
    settings: &Traffic,
    server_pid: Option<u32>,
    runs: u32,
) -> Result<()> {
    let mut measured = Vec::new();
    for run in 1..=runs {
        let (left, right) = (login(a, users).await?, login(b, users).await?);
        let result = scenarios::traffic(left, right, settings, server_pid).await?;
        let name = if runs > 1 {
            format!("{scenario} {run}/{runs}")
        } else {
            scenario.to_owned()
        };
        print_latency(&recorder.label, &name, load, &result);
        if runs > 1 {
            recorder.record(&format!("{scenario}-run"), json!(settings), &result)?;
        }
        measured.push(result);
    }
    let p99s: Vec<f64> = measured.iter().map(|m| m.latency_ms.p99).collect();
    let median = median_run(&measured);
    if runs > 1 {
        let listed: Vec<String> = p99s.iter().map(|p| format!("{p:.2}")).collect();
        print_latency(&recorder.label, scenario, "median run", median);
        println!(
            "{:<10} {:<13} p99 of the {runs} runs: {} ms",
            recorder.label,
            scenario,
            listed.join(", ")
        );
    }
    let mut settings = json!(settings);
    settings["latency_runs"] = json!(runs);
    settings["p99_of_runs"] = json!(p99s);
    recorder.record(scenario, settings, median)
}

/// The run whose p99 is the median (the lower middle one of an even
/// number).
fn median_run(runs: &[scenarios::TrafficResult]) -> &scenarios::TrafficResult {
    let mut order: Vec<&scenarios::TrafficResult> = runs.iter().collect();
    order.sort_by(|x, y| x.latency_ms.p99.total_cmp(&y.latency_ms.p99));
    order[(order.len() - 1) / 2]
}

fn print_latency(label: &str, scenario: &str, load: &str, m: &scenarios::TrafficResult) {
    println!(
        "{:<10} {:<13} {:>9.0} msg/s {load}  p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms  generator {:.2} cores, server {}{}",
        label,
        scenario,
        m.delivered_per_sec,
        m.latency_ms.p50,
        m.latency_ms.p90,
        m.latency_ms.p99,
        m.latency_ms.max,
        m.generator_cpu,
        cores(m.server_cpu),
        errors(m.errors)
    );
}

/// Logs in one side's users.
async fn login(side: &Side, users: &Users) -> Result<Vec<client::Session>> {
    scenarios::login_many(&side.0, users, side.1.clone(), 64).await
}

fn cores(value: Option<f64>) -> String {
    value.map_or("?".to_owned(), |c| format!("{c:.2} cores"))
}

fn errors(count: u64) -> String {
    if count == 0 {
        String::new()
    } else {
        format!("  ({count} error stanzas)")
    }
}

fn target(args: &ServerArgs) -> Result<Target> {
    Ok(Target {
        addr: args.addr,
        domain: args.domain.clone(),
        tls: client::tls_config(args.ca_file.as_deref())?,
        mechanisms: args.mechanisms.clone(),
        salted: Arc::new(Mutex::new(HashMap::new())),
    })
}

/// Writes measurements as JSON lines.
struct Recorder {
    label: String,
    json: Option<PathBuf>,
}

impl Recorder {
    fn record(
        &self,
        scenario: &str,
        settings: serde_json::Value,
        result: &impl serde::Serialize,
    ) -> Result<()> {
        let Some(path) = &self.json else {
            return Ok(());
        };
        let line = json!({
            "label": self.label,
            "scenario": scenario,
            "settings": settings,
            "result": result,
        });
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{line}")?;
        Ok(())
    }
}
