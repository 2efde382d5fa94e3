//! `tern-server`: run a Tern home server, write its config, administer
//! accounts.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tern_server::c2s::negotiation::normalize_username;
use tern_server::tls::CertificateSource;
use tern_server::{Config, Registration, RunningServer, Storage};

/// The Tern home server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file. Without it, a development server runs:
    /// domain `localhost`, data in ./tern-data, registration open.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a commented configuration file.
    Init {
        /// The XMPP domain to serve.
        #[arg(long)]
        domain: String,
        /// The data directory.
        #[arg(long = "data", value_name = "DIR")]
        data_dir: PathBuf,
        /// Where to write the file.
        #[arg(long, short, default_value = "tern.toml")]
        output: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Administer accounts (works while the server runs).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Inspect federation on the running server.
    Federation {
        #[command(subcommand)]
        action: FederationAction,
    },
}

#[derive(Debug, Subcommand)]
enum FederationAction {
    /// Each remote domain's stream state, authentication, queue length
    /// and last error, and the inbound streams.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create an account. The password is read from the terminal, or from
    /// the TERN_PASSWORD environment variable.
    Add {
        /// The account, `name@domain` or just `name`.
        jid: String,
    },
    /// Delete an account and everything stored for it.
    Del {
        /// The account.
        jid: String,
    },
    /// Set a new password.
    Passwd {
        /// The account.
        jid: String,
    },
    /// List all accounts.
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        None => runtime.block_on(run(cli.config.as_deref())),
        Some(Command::Init {
            domain,
            data_dir,
            output,
            force,
        }) => init(domain, data_dir, &output, force),
        Some(Command::User { action }) => runtime.block_on(user(cli.config.as_deref(), action)),
        Some(Command::Federation {
            action: FederationAction::Status { json },
        }) => runtime.block_on(federation_status(cli.config.as_deref(), json)),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TERN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(path: Option<&Path>) -> Result<(Config, bool)> {
    match path {
        Some(path) => Ok((Config::load(path)?, false)),
        None => Ok((Config::development(), true)),
    }
}

async fn run(config_path: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    raise_open_file_limit();
    let (config, development) = load_config(config_path)?;
    // Watch the signals before saying "ready", so that an early SIGTERM
    // still shuts down cleanly.
    let shutdown_signal = ShutdownSignal::install()?;
    let running = RunningServer::start(config).await?;
    print_report(&running, development, started);
    shutdown_signal.wait().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn federation_status(config_path: Option<&Path>, json: bool) -> Result<()> {
    let (config, _) = load_config(config_path)?;
    let command = if json {
        "federation status json"
    } else {
        "federation status"
    };
    let answer = tern_server::admin::ask(&config, command)
        .await
        .with_context(|| {
            format!(
                "cannot reach the running server at {} (is it running with this config?)",
                tern_server::admin::socket_path(&config).display()
            )
        })?;
    print!("{answer}");
    Ok(())
}

fn print_report(running: &RunningServer, development: bool, started: Instant) {
    let server = &running.server;
    let config = &server.config;
    let data_dir =
        std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    let certificate = match &server.tls.source {
        CertificateSource::Configured(path) => format!("{}", path.display()),
        CertificateSource::SelfSigned(path) => {
            format!("{} (self-signed, generated)", path.display())
        }
    };
    let registration = match config.registration {
        Registration::Open => "open (clients may create accounts in-band, XEP-0077)",
        Registration::Closed => "closed (create accounts with `tern-server user add`)",
    };
    let mut report = format!(
        "tern-server {} ready in {} ms\n",
        env!("CARGO_PKG_VERSION"),
        started.elapsed().as_millis()
    );
    if development {
        report.push_str("  mode          development (no --config given)\n");
    }
    report.push_str(&format!(
        "  domain        {}\n  groups        {}\n  c2s STARTTLS  {}\n  c2s TLS       {}\n  \
         upload        {} ({}, files up to {} bytes)\n  \
         websocket     {}{}\n  \
         data dir      {}\n  certificate   {certificate}\n  fingerprint   SHA-256 {}\n  \
         registration  {registration}\n  plaintext     {}\n",
        config.domain,
        config.groups_domain(),
        running.c2s_addr,
        running.c2s_tls_addr,
        server.upload.domain,
        server.upload.base_url,
        server.upload.max_file_bytes,
        server.upload.base_url.replacen("https://", "wss://", 1),
        tern_server::https::WEBSOCKET_PATH,
        data_dir.display(),
        server.tls.fingerprint,
        config.plaintext.as_str()
    ));
    match running.s2s_addrs {
        Some((plain, direct)) => report.push_str(&format!(
            "  s2s STARTTLS  {plain}
  s2s TLS       {direct}
  federation    {}
",
            federation_summary(config)
        )),
        None => report.push_str(
            "  federation    disabled
",
        ),
    }
    // One write, and no panic if nobody reads standard output any more: a
    // running server must not die of a closed pipe.
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(report.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!("cannot print the start-up report: {e}");
    }
}

fn federation_summary(config: &Config) -> String {
    let federation = &config.federation;
    let auth = if federation.certificate_auth {
        "certificates, then dialback"
    } else {
        "dialback only"
    };
    let dns = match federation.nameserver {
        Some(address) => format!("DNS {address}"),
        None => "system DNS".to_owned(),
    };
    let policy = match (federation.allow.is_empty(), federation.deny.is_empty()) {
        (true, true) => "all domains".to_owned(),
        (false, _) => format!("only {}", federation.allow.join(", ")),
        (true, false) => format!("all but {}", federation.deny.join(", ")),
    };
    format!("{auth}; {dns}; {policy}")
}

/// Every client holds a socket: lift the soft open-file limit to the hard
/// one, as XMPP servers do.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
}

/// SIGTERM and SIGINT, watched from start-up on.
struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn init(domain: String, data_dir: PathBuf, output: &Path, force: bool) -> Result<()> {
    let config = Config {
        domain,
        data_dir,
        ..Config::default()
    };
    config.validate()?;
    if output.exists() && !force {
        bail!(
            "{} exists already; pass --force to overwrite it",
            output.display()
        );
    }
    std::fs::write(output, config.example_toml())
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "wrote {}; start the server with: tern-server --config {}",
        output.display(),
        output.display()
    );
    Ok(())
}

async fn user(config_path: Option<&Path>, action: UserAction) -> Result<()> {
    let (config, _) = load_config(config_path)?;
    let storage = Storage::open(&config.data_dir).await?;
    let result = user_action(&config, &storage, action).await;
    storage.close().await;
    result
}

async fn user_action(config: &Config, storage: &Storage, action: UserAction) -> Result<()> {
    match action {
        UserAction::Add { jid } => {
            let name = username(&jid, &config.domain)?;
            let password = read_password()?;
            if !storage.create_account(&name, &password).await? {
                bail!("{name}@{} exists already", config.domain);
            }
            println!("created {name}@{}", config.domain);
        }
        UserAction::Del { jid } => {
            let name = username(&jid, &config.domain)?;
            if !storage.delete_account(&name).await? {
                bail!("no account {name}@{}", config.domain);
            }
            println!("deleted {name}@{}", config.domain);
        }
        UserAction::Passwd { jid } => {
            let name = username(&jid, &config.domain)?;
            if !storage.account_exists(&name).await? {
                bail!("no account {name}@{}", config.domain);
            }
            let password = read_password()?;
            storage.set_password(&name, &password).await?;
            println!("password changed for {name}@{}", config.domain);
        }
        UserAction::List => {
            for name in storage.list_accounts().await? {
                println!("{name}@{}", config.domain);
            }
        }
    }
    Ok(())
}

/// The user name of `jid` (`name@domain` or `name`) on this server.
fn username(jid: &str, domain: &str) -> Result<String> {
    let (name, jid_domain) = match jid.split_once('@') {
        Some((name, d)) => (name, d),
        None => (jid, domain),
    };
    if jid_domain != domain {
        bail!("{jid} is not on this server's domain {domain}");
    }
    normalize_username(name).with_context(|| format!("{name:?} is not a valid user name"))
}

fn read_password() -> Result<String> {
    if let Ok(password) = std::env::var("TERN_PASSWORD") {
        if password.is_empty() {
            bail!("TERN_PASSWORD is empty");
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password: set TERN_PASSWORD");
    }
    let password = rpassword::prompt_password("Password: ")?;
    let again = rpassword::prompt_password("Again: ")?;
    if password != again {
        bail!("the passwords differ");
    }
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(password)
}
