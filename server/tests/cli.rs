//! The `tern-server` command line as an operator uses it: `init`, `user`
//! administration, config errors, the no-argument development server and
//! a clean shutdown on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{RawClient, TestClient, TestServer, DOMAIN};

fn tern_server(args: &[&str], dir: &std::path::Path, password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern-server"));
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    match password {
        Some(p) => cmd.env("TERN_PASSWORD", p),
        None => cmd.env_remove("TERN_PASSWORD"),
    };
    cmd.output().expect("run tern-server")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_writes_a_config_that_loads_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = tern_server(
        &[
            "init",
            "--domain",
            "chat.example",
            "--data",
            "/var/lib/tern",
        ],
        dir.path(),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(dir.path().join("tern.toml")).unwrap();
    assert!(written.contains("domain = \"chat.example\""));
    assert!(written.contains("registration = \"closed\""));
    assert!(written.contains("# Largest stanza"), "commented");
    let config = tern_server::Config::parse(&written).unwrap();
    assert_eq!(config.domain, "chat.example");

    let again = tern_server(
        &["init", "--domain", "x.example", "--data", "d"],
        dir.path(),
        None,
    );
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("--force"));
    let bad = tern_server(
        &[
            "init",
            "--domain",
            "not a domain",
            "--data",
            "d",
            "-o",
            "x.toml",
        ],
        dir.path(),
        None,
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("domain"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[limits]\nmax_stanza_byte = 1\n", "max_stanza_byte"),
        ("plaintext = \"sometimes\"\n", "plaintext"),
        (
            "[limits]\nmax_connections_per_ip = 0\n",
            "limits.max_connections_per_ip",
        ),
        ("[listen]\nc2s = \"localhost\"\n", "c2s"),
    ];
    for (toml, key) in cases {
        std::fs::write(dir.path().join("bad.toml"), toml).unwrap();
        let out = tern_server(&["--config", "bad.toml"], dir.path(), None);
        assert!(!out.status.success(), "{toml} was accepted");
        assert!(
            text(&out.stderr).contains(key),
            "{key} not named in {}",
            text(&out.stderr)
        );
    }
    let out = tern_server(&["--config", "missing.toml"], dir.path(), None);
    assert!(text(&out.stderr).contains("missing.toml"));
}

#[tokio::test]
async fn user_administration_stores_only_scram_secrets() {
    let server = TestServer::start();
    let config = server.config_path.to_str().unwrap().to_owned();
    let dir = server.dir.path();
    let add = tern_server(
        &[
            "--config",
            &config,
            "user",
            "add",
            &format!("carol@{DOMAIN}"),
        ],
        dir,
        Some("first-secret"),
    );
    assert!(add.status.success(), "{}", text(&add.stderr));
    let dup = tern_server(
        &["--config", &config, "user", "add", "carol"],
        dir,
        Some("x"),
    );
    assert!(!dup.status.success() && text(&dup.stderr).contains("exists"));
    let other = tern_server(
        &["--config", &config, "user", "add", "dave@elsewhere.example"],
        dir,
        Some("x"),
    );
    assert!(!other.status.success() && text(&other.stderr).contains("domain"));
    let no_password = tern_server(&["--config", &config, "user", "add", "erin"], dir, None);
    assert!(!no_password.status.success() && text(&no_password.stderr).contains("TERN_PASSWORD"));

    let list = tern_server(&["--config", &config, "user", "list"], dir, None);
    assert_eq!(text(&list.stdout).trim(), format!("carol@{DOMAIN}"));

    TestClient::login(&server, "carol", "first-secret")
        .await
        .close()
        .await;
    let passwd = tern_server(
        &["--config", &config, "user", "passwd", "carol"],
        dir,
        Some("second-secret"),
    );
    assert!(passwd.status.success(), "{}", text(&passwd.stderr));
    TestClient::login(&server, "carol", "second-secret")
        .await
        .close()
        .await;

    for file in std::fs::read_dir(server.data_dir()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap_or_default();
        for secret in ["first-secret", "second-secret"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "password on disk"
            );
        }
    }
    let del = tern_server(&["--config", &config, "user", "del", "carol"], dir, None);
    assert!(del.status.success());
    let del = tern_server(&["--config", &config, "user", "del", "carol"], dir, None);
    assert!(!del.status.success() && text(&del.stderr).contains("no account"));
}

#[test]
fn no_arguments_runs_a_development_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern-server"))
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut report = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        report.push(line);
        if report.last().unwrap().contains("federation") {
            break;
        }
    }
    common::signal(child.id(), "TERM");
    assert!(
        common::wait_child(&mut child, Duration::from_secs(20)),
        "clean exit on SIGTERM"
    );
    let report = report.join("\n");
    for expected in [
        "domain        localhost",
        "groups        groups.localhost",
        "c2s STARTTLS  127.0.0.1:5222",
        "c2s TLS       127.0.0.1:5223",
        "s2s STARTTLS  127.0.0.1:5269",
        "s2s TLS       127.0.0.1:5270",
        "federation    certificates, then dialback; system DNS; all domains",
        "tern-data",
        "self-signed",
        "fingerprint   SHA-256",
        "registration  open",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from:\n{report}"
        );
    }
    assert!(dir.path().join("tern-data/tern.sqlite3").exists());
    assert!(dir.path().join("tern-data/tls/cert.pem").exists());
}

#[tokio::test]
async fn sigterm_closes_streams_with_system_shutdown() {
    let mut server = TestServer::start();
    server.add_user("alice", "pw");
    let mut raw = RawClient::login(&server, "alice", "pw").await;
    assert!(server.terminate(), "exit status 0");
    let text = raw
        .read_to_close(Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(text.contains("<system-shutdown"), "{text}");
    assert!(text.contains("</stream:stream>"), "{text}");
}
