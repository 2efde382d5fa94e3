//! How long a message takes from `tern send` to the line a listening
//! `tern chat` prints, with the real release binaries of `tern` and
//! `tern-server` on loopback (median of 100 and spread). Also the same
//! from a line typed into one chat to the other chat: the messaging path
//! without `tern send`'s process start and login.
//!
//! `cargo bench -p tern-cli --bench chat_latency [-- ROUNDS]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{jid, Server, Tern};

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");
    alice.ok(&["send", &jid("bob"), "hello"]);
    let mut listening = bob.chat(&jid("alice"));

    let mut send_to_print = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let text = format!("send {round}");
        let started = Instant::now();
        let mut sending = alice
            .command(&["send", &jid("bob"), &text])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("tern send");
        listening.expect(|line| line["body"] == text.as_str());
        send_to_print.push(started.elapsed());
        assert!(sending.wait().expect("wait").success());
        if std::env::var_os("TERN_BENCH_VERBOSE").is_some() {
            eprintln!(
                "round {round}: printed after {:?}, send exited after {:?}",
                send_to_print[round],
                started.elapsed()
            );
        }
    }

    let mut typing = alice.chat(&jid("bob"));
    let mut chat_to_chat = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let text = format!("chat {round}");
        let started = Instant::now();
        typing.say(&text);
        listening.expect(|line| line["body"] == text.as_str());
        chat_to_chat.push(started.elapsed());
    }
    typing.quit();
    listening.quit();

    println!("tern chat latency, {rounds} messages each, release binaries, one server on loopback");
    report(
        "`tern send` started -> line printed by `tern chat`",
        &mut send_to_print,
    );
    report(
        "line typed into `tern chat` -> line printed by the peer's",
        &mut chat_to_chat,
    );
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: median {:.1} ms, p10 {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(at(0.5)),
        ms(at(0.1)),
        ms(at(0.9)),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}
