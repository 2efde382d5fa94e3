//! `tern-bridge`: a gateway on the user's own machine that gives standard
//! XMPP clients (Gajim, Profanity, Dino, a slixmpp bot) Tern's MLS
//! end-to-end encryption, while the home server still sees only
//! ciphertext.
//!
//! It logs into the user's home server as one Tern device ([`core`]) and
//! accepts standard clients on loopback ([`local`]), which log in with the
//! account's JID and the bridge password; [`mapping`] translates messages
//! both ways.

#![forbid(unsafe_code)]

mod archive;
mod core;
mod local;
mod mapping;
mod muc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use jid::BareJid;
use tern_e2ee::{ClientStore, Device, Session, SessionOptions};
use tern_server::c2s::limits::AuthLimiter;
use tern_server::c2s::negotiation::C2sSettings;
use tern_server::tls::ServerTls;
use tokio_xmpp::xmlstream::Timeouts;

/// Key packages kept on the server for the bridge's device.
const KEY_PACKAGE_STOCK: u32 = 20;

/// tern-bridge: standard XMPP clients, end-to-end encrypted with MLS.
#[derive(Debug, Parser)]
#[command(name = "tern-bridge", version)]
struct Options {
    /// The account (its home server is found through DNS SRV records, or
    /// named with --server). Its password: TERN_PASSWORD, or asked.
    #[arg(long)]
    account: String,
    /// Where the bridge keeps its device, its decrypted store, its
    /// certificate and the bridge password (default:
    /// $XDG_DATA_HOME/tern-bridge/ACCOUNT). The store is encrypted at
    /// rest when TERN_BRIDGE_PASSPHRASE is set (from its first start on).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Where standard clients connect (STARTTLS).
    #[arg(long, default_value = "127.0.0.1:5222")]
    listen: SocketAddr,
    /// Listen on a non-loopback address. The bridge hands out decrypted
    /// messages: only with a network you trust.
    #[arg(long)]
    allow_remote: bool,
    /// The home server's direct-TLS address HOST:PORT (default: DNS SRV).
    #[arg(long)]
    server: Option<String>,
    /// A PEM file of CA certificates to trust for the home server.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TERN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<()> {
    check_listen_address(options.listen, options.allow_remote)?;
    if let Some(ca) = &options.ca_file {
        // rustls-native-certs reads the trusted roots from SSL_CERT_FILE.
        std::env::set_var("SSL_CERT_FILE", ca);
    }
    let account = match BareJid::new(&options.account) {
        Ok(jid) if jid.node().is_some() => jid,
        _ => bail!("{:?} is not a JID like alice@example.org", options.account),
    };
    let profile = match &options.profile {
        Some(dir) => dir.clone(),
        None => default_profile(&account)?,
    };
    // The bridge's keys, password and store: the owner's only, also where
    // an earlier version left them readable.
    tern_e2ee::private::private_dir(&profile)
        .and_then(|()| tern_e2ee::private::tighten_tree(&profile))
        .with_context(|| format!("creating {}", profile.display()))?;
    let (bridge_password, password_source) = bridge_password(&profile)?;
    let tls = ServerTls::load_or_generate(None, None, account.domain().as_str(), &profile)
        .context("making the bridge's certificate")?;

    let session = log_in(&account, &profile, options.server.clone()).await?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let listening = listener.local_addr()?;

    let clients = Arc::new(local::Clients::default());
    let username = account.node().map(|n| n.as_str()).unwrap_or_default();
    let backend = Arc::new(local::Backend::new(
        username,
        &bridge_password,
        clients.clone(),
    ));
    let settings = Arc::new(C2sSettings {
        domain: account.domain().to_string(),
        tls: tls.config.clone(),
        max_stanza_bytes: 256 * 1024,
        negotiation_timeout: Duration::from_secs(60),
        timeouts: Timeouts {
            read_timeout: Duration::from_secs(240),
            response_timeout: Duration::from_secs(120),
        },
        auth_limiter: AuthLimiter::new(10),
        // One account, whose name the client knows: no names to hide.
        decoy_key: Vec::new(),
    });
    let (to_core, requests) = tokio::sync::mpsc::channel(256);
    tokio::spawn(local::serve(listener, settings, backend, to_core));

    let device = session.device().name().device.to_string();
    print_report(&[
        ("account", format!("{account} (device {device})")),
        (
            "home server",
            options
                .server
                .clone()
                .unwrap_or_else(|| "found through DNS".into()),
        ),
        ("clients", format!("{listening} (STARTTLS)")),
        (
            "certificate",
            format!("{} (self-signed)", profile.join("tls/cert.pem").display()),
        ),
        ("fingerprint", format!("SHA-256 {}", tls.fingerprint)),
        ("password", password_source),
        (
            "store",
            match std::env::var_os("TERN_BRIDGE_PASSPHRASE").filter(|p| !p.is_empty()) {
                Some(_) => "encrypted at rest (TERN_BRIDGE_PASSPHRASE)".to_owned(),
                None => "not encrypted at rest (set TERN_BRIDGE_PASSPHRASE)".to_owned(),
            },
        ),
    ]);

    core::Core::new(session, clients)
        .run(requests)
        .await
        .context("the session with the home server failed")
}

/// Refuses a non-loopback address unless told otherwise.
fn check_listen_address(address: SocketAddr, allow_remote: bool) -> Result<()> {
    if !address.ip().is_loopback() && !allow_remote {
        bail!(
            "refusing to listen on {address}: the bridge serves decrypted messages, so it \
             listens on loopback only; pass --allow-remote to listen on {} anyway",
            address.ip()
        );
    }
    Ok(())
}

fn default_profile(account: &BareJid) -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        Some(data) => PathBuf::from(data),
        None => PathBuf::from(std::env::var_os("HOME").context("set --profile or HOME")?)
            .join(".local/share"),
    };
    Ok(base.join("tern-bridge").join(account.as_str()))
}

/// The bridge password: TERN_BRIDGE_PASSWORD, else the one kept in the
/// profile (made on first start, owner-only). Also says where it is.
fn bridge_password(profile: &Path) -> Result<(String, String)> {
    if let Ok(password) = std::env::var("TERN_BRIDGE_PASSWORD") {
        if !password.is_empty() {
            return Ok((password, "from TERN_BRIDGE_PASSWORD".into()));
        }
    }
    let path = profile.join("bridge-password");
    if let Ok(password) = std::fs::read_to_string(&path) {
        return Ok((password.trim().to_owned(), format!("in {}", path.display())));
    }
    use rand::Rng;
    let password: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    write_private(&path, &password)?;
    Ok((
        password.clone(),
        format!("{password} (new; kept in {})", path.display()),
    ))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Logs the profile's device in (creating it on first start), publishes
/// it, stocks key packages, joins the account's conversations and catches
/// up.
async fn log_in(account: &BareJid, profile: &Path, server: Option<String>) -> Result<Session> {
    let password = match std::env::var("TERN_PASSWORD") {
        Ok(password) => password,
        Err(_) => rpassword::prompt_password(format!("Password for {account}: "))
            .context("reading the password (or set TERN_PASSWORD)")?,
    };
    let passphrase = std::env::var("TERN_BRIDGE_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty());
    let store = ClientStore::open_with(&profile.join("client.sqlite3"), passphrase.as_deref())
        .with_context(|| format!("opening the store in {}", profile.display()))?;
    let device = match Device::open(store.clone()).await {
        Ok(device) => device,
        Err(tern_e2ee::Error::NoDevice) => Device::create(store, account.clone()).await?,
        Err(e) => return Err(e.into()),
    };
    let options = SessionOptions {
        jid: account.clone(),
        password,
        server,
        nameserver: tern_e2ee::discovery::nameserver_from_env().map_err(anyhow::Error::msg)?,
    };
    let mut session = Session::connect(device, options)
        .await
        .with_context(|| format!("logging in as {account}"))?;
    session.publish_device(Some("tern-bridge")).await?;
    session.replenish_key_packages(KEY_PACKAGE_STOCK).await?;
    session.join_existing_conversations().await?;
    session.catch_up().await?;
    Ok(session)
}

/// The start-up report, in one write.
fn print_report(lines: &[(&str, String)]) {
    use std::io::Write;
    let mut report = format!("tern-bridge {} ready\n", env!("CARGO_PKG_VERSION"));
    for (key, value) in lines {
        report.push_str(&format!("  {key:<13} {value}\n"));
    }
    let _ = std::io::stdout().write_all(report.as_bytes());
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_the_explicit_option() {
        let loopback: SocketAddr = "127.0.0.1:5222".parse().expect("address");
        let everywhere: SocketAddr = "0.0.0.0:5222".parse().expect("address");
        assert!(check_listen_address(loopback, false).is_ok());
        let refused = check_listen_address(everywhere, false).expect_err("refused");
        assert!(refused.to_string().contains("--allow-remote"), "{refused}");
        assert!(check_listen_address(everywhere, true).is_ok());
    }
}
