//! Side-by-side comparison of the JSON lines `tern-load` wrote: one
//! column per server (in the order they first appear), one row per
//! figure, and the ratio of the first server to each other one.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// One figure of the comparison: where it is, and whether more is better.
#[derive(Clone, Copy)]
struct Figure<'a> {
    name: &'a str,
    scenario: &'a str,
    path: &'static [&'static str],
    higher_is_better: bool,
}

/// The prefix of the scenarios of latency at a fixed offered load
/// (`tern-load --record-as latency-<rate> throughput --rate <rate>`).
const LATENCY_AT: &str = "latency-";

/// The latency figures of the fixed-rate runs in `lines`, by rate.
fn fixed_rates(lines: &[Value]) -> Vec<(u64, String, String)> {
    let mut rates: Vec<(u64, String, String)> = Vec::new();
    for line in lines {
        let Some(scenario) = line["scenario"].as_str() else {
            continue;
        };
        let rate = scenario
            .strip_prefix(LATENCY_AT)
            .and_then(|rest| rest.strip_suffix("-fixed"))
            .and_then(|rate| rate.parse::<u64>().ok());
        if let Some(rate) = rate {
            if !rates.iter().any(|(r, ..)| *r == rate) {
                let name = format!("p99 at {rate} msg/s (ms)");
                rates.push((rate, name, scenario.to_owned()));
            }
        }
    }
    rates.sort();
    rates
}

const FIGURES: &[Figure<'static>] = &[
    Figure {
        name: "throughput (msg/s)",
        scenario: "throughput",
        path: &["delivered_per_sec"],
        higher_is_better: true,
    },
    Figure {
        name: "p99 at half load (ms)",
        scenario: "throughput-half",
        path: &["latency_ms", "p99"],
        higher_is_better: false,
    },
    Figure {
        name: "p50 at half load (ms)",
        scenario: "throughput-half",
        path: &["latency_ms", "p50"],
        higher_is_better: false,
    },
    Figure {
        name: "federated (msg/s)",
        scenario: "federation",
        path: &["delivered_per_sec"],
        higher_is_better: true,
    },
    Figure {
        name: "KiB per idle connection",
        scenario: "connections",
        path: &["kib_per_connection"],
        higher_is_better: false,
    },
    Figure {
        name: "logins/s",
        scenario: "logins",
        path: &["per_sec"],
        higher_is_better: true,
    },
    Figure {
        name: "throughput, archive on (msg/s)",
        scenario: "throughput-archive",
        path: &["delivered_per_sec"],
        higher_is_better: true,
    },
    Figure {
        name: "throughput, both cores (msg/s)",
        scenario: "throughput-both-cores",
        path: &["delivered_per_sec"],
        higher_is_better: true,
    },
];

/// Prints the comparison of `file`.
pub fn compare(file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("a line is not JSON")?;
    let mut labels: Vec<String> = Vec::new();
    for line in &lines {
        if let Some(label) = line["label"].as_str() {
            if !labels.iter().any(|l| l == label) {
                labels.push(label.to_owned());
            }
        }
    }
    let value = |label: &str, figure: &Figure| -> Option<f64> {
        // The last measurement of that scenario for that server.
        lines
            .iter()
            .rev()
            .find(|l| l["label"] == label && l["scenario"] == figure.scenario)
            .and_then(|l| {
                let mut v = &l["result"];
                for key in figure.path {
                    v = &v[*key];
                }
                v.as_f64()
            })
    };
    print!("{:<32}", "");
    for label in &labels {
        print!(" {label:>13}");
    }
    for label in labels.iter().skip(1) {
        print!(" {:>20}", format!("{}/{label}", labels[0]));
    }
    println!();
    let rates = fixed_rates(&lines);
    let latencies = rates.iter().map(|(_, name, scenario)| Figure {
        name,
        scenario,
        path: &["latency_ms", "p99"],
        higher_is_better: false,
    });
    for figure in FIGURES.iter().copied().chain(latencies) {
        let figure = &figure;
        let values: Vec<Option<f64>> = labels.iter().map(|l| value(l, figure)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        print!("{:<32}", figure.name);
        for v in &values {
            match v {
                Some(v) => print!(" {v:>13.2}"),
                None => print!(" {:>13}", "-"),
            }
        }
        for other in values.iter().skip(1) {
            match (values[0], other) {
                (Some(ours), Some(theirs)) if *theirs > 0.0 && ours > 0.0 => {
                    let ratio = if figure.higher_is_better {
                        ours / theirs
                    } else {
                        theirs / ours
                    };
                    print!(" {:>19.2}×", ratio);
                }
                _ => print!(" {:>20}", "-"),
            }
        }
        println!();
    }
    println!("(ratios: how many times better the first server is; > 1 means better)");
    Ok(())
}
