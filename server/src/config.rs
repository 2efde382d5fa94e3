//! Server configuration: one documented struct, read from TOML, validated at
//! start-up with errors that name the offending key.
//!
//! Every field has a default; a config file only needs the keys it changes.
//! [`Config::example_toml`] produces the commented file that
//! `tern-server init` writes, and a test checks that it parses back to the
//! same values, so the example cannot drift from the struct.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors found while reading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the
    /// wrong type. The message names the key and the line.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// What the TOML parser said, with the key and line.
        message: String,
    },
    /// A key has a value of the right type that is still not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `limits.max_stanza_bytes`.
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

/// Whether new accounts may be created by clients with in-band
/// registration (XEP-0077).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Registration {
    /// Anyone who can reach the server may create an account.
    Open,
    /// Only the operator creates accounts, with `tern-server user add`.
    Closed,
}

impl Registration {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// What to do with a `<message>` that carries a plain `<body>` and no
/// end-to-end encryption payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlaintextPolicy {
    /// Refuse it with a `policy-violation` stanza error.
    Refuse,
    /// Route it to online resources only; never store or archive it.
    RouteLive,
}

impl PlaintextPolicy {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::RouteLive => "route-live",
        }
    }
}

/// Listening addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Client-to-server with STARTTLS (RFC 6120). Default `127.0.0.1:5222`.
    /// Port 0 picks a free port, which the start-up report prints.
    pub c2s: SocketAddr,
    /// Client-to-server with direct TLS (XEP-0368). Default `127.0.0.1:5223`.
    pub c2s_tls: SocketAddr,
    /// HTTPS of the file upload service (XEP-0363). Default
    /// `127.0.0.1:5281`.
    pub upload: SocketAddr,
    /// Server-to-server with STARTTLS. Default `127.0.0.1:5269`.
    pub s2s: SocketAddr,
    /// Server-to-server with direct TLS (XEP-0368). Default
    /// `127.0.0.1:5270`.
    pub s2s_tls: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            c2s: SocketAddr::from(([127, 0, 0, 1], 5222)),
            c2s_tls: SocketAddr::from(([127, 0, 0, 1], 5223)),
            upload: SocketAddr::from(([127, 0, 0, 1], 5281)),
            s2s: SocketAddr::from(([127, 0, 0, 1], 5269)),
            s2s_tls: SocketAddr::from(([127, 0, 0, 1], 5270)),
        }
    }
}

/// The server's certificate. When both are unset, a self-signed
/// certificate for the domain is generated in `<data_dir>/tls/` on first
/// start and reused afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain. Default: unset (self-signed, generated).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Default: unset.
    pub key: Option<PathBuf>,
}

/// Resource limits that protect the server and its users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest stanza accepted, in bytes; a larger one closes the stream
    /// with `policy-violation`. Default 262144 (256 KiB).
    pub max_stanza_bytes: usize,
    /// Simultaneous connections from one IP address. Default 100.
    pub max_connections_per_ip: usize,
    /// Failed authentications per IP address and minute before further
    /// attempts are delayed and refused. Default 10.
    pub auth_failures_per_minute: u32,
    /// Seconds a connection may take to authenticate and bind a resource
    /// before it is closed with `connection-timeout`. Default 60.
    pub unauthenticated_timeout_secs: u64,
    /// Offline messages kept per user; more bounce with
    /// `resource-constraint`. Default 1000.
    pub max_offline_messages: u32,
    /// Offline messages one sender may have waiting for a user; more
    /// bounce the same way. Default 100.
    pub max_offline_per_sender: u32,
    /// Offline messages senders not in the user's roster may have waiting
    /// for a user, together, so that strangers never fill the queue for
    /// the user's contacts. Default 500.
    pub max_offline_from_strangers: u32,
    /// Seconds a session with Stream Management resumption (XEP-0198)
    /// waits for its client to come back after the connection dropped;
    /// 0 disables resumption. Default 300.
    pub resumption_timeout_secs: u64,
    /// Bytes of stanzas queued for one session and not yet written (and,
    /// separately, written and not yet acknowledged, and held while a
    /// resumable session has no connection) before the session counts as
    /// stuck and is closed; what it held goes to offline storage or back
    /// to its senders. A queue always takes one stanza. Default 262144.
    pub session_buffer_bytes: usize,
    /// Seconds one write to a client may take before the session counts
    /// as stuck and is closed as above. Default 60.
    pub write_timeout_secs: u64,
    /// Push registrations (XEP-0357) one user may keep; more are refused
    /// with `resource-constraint` (each is notified of every offline
    /// message). Default 5.
    pub max_push_registrations: u32,
    /// PEP nodes one user may have; a publish that would create one more
    /// is refused with `resource-constraint`. Default 64.
    pub max_pep_nodes: usize,
    /// Largest PEP item payload in bytes; a larger one is refused with
    /// `not-acceptable` and `<payload-too-big/>`. Default 65536.
    pub max_pep_item_bytes: usize,
    /// Contacts in one user's roster; adding one more is refused with
    /// `not-allowed`. Default 1000.
    pub max_roster_items: usize,
    /// Subscription requests from users not yet in the roster kept
    /// waiting for one user's answer; more are dropped. Default 100.
    pub max_pending_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_connections_per_ip: 100,
            auth_failures_per_minute: 10,
            unauthenticated_timeout_secs: 60,
            max_offline_messages: 1000,
            max_offline_per_sender: 100,
            max_offline_from_strangers: 500,
            resumption_timeout_secs: 300,
            session_buffer_bytes: crate::sessions::DEFAULT_SESSION_BUFFER,
            write_timeout_secs: 60,
            max_push_registrations: 5,
            max_pep_nodes: 64,
            max_pep_item_bytes: 64 * 1024,
            max_roster_items: 1000,
            max_pending_subscriptions: 100,
        }
    }
}

/// The group hub: the MLS delivery service that orders each group's
/// messages, on a subdomain of the server's domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Groups {
    /// The hub's domain; each group is `<group-id>@<domain>`. Default
    /// unset: `groups.<domain>`.
    pub domain: Option<String>,
    /// Groups one user may create. Default 100.
    pub max_groups_per_user: u32,
    /// Devices in one group; a commit that would add more is refused
    /// with `policy-violation` (every message fans out to every member).
    /// Default 1000.
    pub max_members: u32,
}

impl Default for Groups {
    fn default() -> Self {
        Self {
            domain: None,
            max_groups_per_user: 100,
            max_members: 1000,
        }
    }
}

/// The key directory: each device's stock of MLS key packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    /// Single-use key packages kept per device; an upload beyond it is
    /// refused. Default 100.
    pub max_per_device: u32,
    /// A device with fewer left is told to upload more. Default 10.
    pub low_watermark: u32,
    /// Devices with key packages one user may have; an upload for one
    /// more is refused with `resource-constraint`. Default 32.
    pub max_devices: u32,
    /// Claims of a user's single-use packages one claimer may make in an
    /// hour; beyond, it gets last-resort packages only, so that nobody
    /// drains a user's stock. Default 10.
    pub claims_per_hour: u32,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            max_per_device: 100,
            low_watermark: 10,
            max_devices: 32,
            claims_per_hour: 10,
        }
    }
}

/// The file upload service (XEP-0363): stores the encrypted files clients
/// share, as opaque blobs served over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upload {
    /// The service's XMPP address. Default unset: `upload.<domain>`.
    pub domain: Option<String>,
    /// The host name in the URLs given to clients (the HTTPS port is
    /// `listen.upload`'s). Default unset: the domain.
    pub url_host: Option<String>,
    /// Largest file in bytes. Default 104857600 (100 MiB).
    pub max_file_bytes: u64,
    /// Bytes one user may keep uploaded (slots handed out in the last
    /// hour count too). Default 1073741824 (1 GiB).
    pub quota_bytes_per_user: u64,
    /// Days an uploaded file is served before it is deleted; 0 keeps it
    /// for ever. Default 30.
    pub expire_after_days: u32,
    /// Seconds an upload may go without receiving a byte before it is
    /// abandoned (408). Default 30.
    pub idle_timeout_secs: u64,
}

impl Default for Upload {
    fn default() -> Self {
        Self {
            domain: None,
            url_host: None,
            max_file_bytes: 100 * 1024 * 1024,
            quota_bytes_per_user: 1024 * 1024 * 1024,
            expire_after_days: 30,
            idle_timeout_secs: 30,
        }
    }
}

/// The message archive (XEP-0313): each user's encrypted one-to-one
/// messages, as ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Archive {
    /// Whether to archive at all. Default true.
    pub enabled: bool,
    /// Days a message is kept; 0 keeps it for ever. Default 0.
    pub expire_after_days: u32,
    /// Longest wait, in milliseconds, between a message's archive entry
    /// and the group commit that puts it on disk; Stream Management
    /// acknowledgements of archived messages wait for that commit.
    /// Longer gathers more entries a commit. Default 20 (1 to 1000).
    pub commit_delay_ms: u64,
}

impl Default for Archive {
    fn default() -> Self {
        Self {
            enabled: true,
            expire_after_days: 0,
            commit_delay_ms: crate::storage::DEFAULT_COMMIT_DELAY.as_millis() as u64,
        }
    }
}

/// The MUC service (XEP-0045) for standard clients that encrypt with
/// OMEMO: members-only, non-anonymous rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Muc {
    /// Whether to offer the service. Default true.
    pub enabled: bool,
    /// The service's domain. Default unset: `conference.<domain>`.
    pub domain: Option<String>,
    /// Messages of the room's archive sent to an occupant who joins.
    /// Default 20.
    pub history_messages: u32,
    /// Rooms one user may own; creating one more is refused with
    /// `not-allowed`. Default 20.
    pub max_rooms_per_user: u32,
    /// Rooms on the service. Default 10000.
    pub max_rooms: u32,
}

impl Default for Muc {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: None,
            history_messages: 20,
            max_rooms_per_user: 20,
            max_rooms: 10_000,
        }
    }
}

/// Federation with other servers over XMPP server-to-server streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Federation {
    /// Whether to exchange stanzas with other domains at all. Default
    /// true.
    pub enabled: bool,
    /// The DNS server that finds peers (`"IP:PORT"`). Default unset: the
    /// system's resolvers.
    pub nameserver: Option<SocketAddr>,
    /// PEM file of the CAs trusted for peers' certificates. Default
    /// unset: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Authenticate with certificates (SASL EXTERNAL, XEP-0178) where
    /// both sides can; dialback (XEP-0220) otherwise. Default true.
    pub certificate_auth: bool,
    /// When not empty, federate only with these domains and their
    /// subdomains. Default empty.
    pub allow: Vec<String>,
    /// Never federate with these domains or their subdomains. Default
    /// empty.
    pub deny: Vec<String>,
    /// Seconds a stanza may wait for an unreachable peer before it is
    /// bounced with `remote-server-timeout`. Default 86400 (one day).
    pub bounce_after_secs: u64,
    /// Seconds without traffic before a stream is closed. Default 600.
    pub idle_timeout_secs: u64,
    /// Longest wait between two connection attempts, in seconds (the
    /// backoff doubles from one second). Default 300.
    pub retry_max_secs: u64,
    /// Seconds to connect, start TLS and authenticate. Default 30.
    pub connect_timeout_secs: u64,
    /// Dialback verifications one inbound stream may ask for at once;
    /// more closes it with `policy-violation`. Default 8.
    pub max_pending_dialbacks: usize,
    /// Dialback verifications under way for all inbound streams (each
    /// looks up and connects to the domain it names); beyond, requests are
    /// answered `resource-constraint`. Default 128.
    pub max_dialback_verifications: usize,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            enabled: true,
            nameserver: None,
            ca_file: None,
            certificate_auth: true,
            allow: Vec::new(),
            deny: Vec::new(),
            bounce_after_secs: 86400,
            idle_timeout_secs: 600,
            retry_max_secs: 300,
            connect_timeout_secs: 30,
            max_pending_dialbacks: 8,
            max_dialback_verifications: 128,
        }
    }
}

/// The whole configuration of `tern-server`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The XMPP domain this server is authoritative for. Default `localhost`.
    pub domain: String,
    /// Where the database and generated certificate live. Default
    /// `./tern-data`.
    pub data_dir: PathBuf,
    /// In-band registration: `"open"` or `"closed"`. Default `"closed"`
    /// (the no-argument development server uses `"open"`).
    pub registration: Registration,
    /// Plain-body messages: `"refuse"` or `"route-live"`. Default
    /// `"refuse"`.
    pub plaintext: PlaintextPolicy,
    /// Listening addresses.
    pub listen: Listen,
    /// The server certificate.
    pub tls: Tls,
    /// Resource limits.
    pub limits: Limits,
    /// The group hub.
    pub groups: Groups,
    /// The key directory.
    pub keys: Keys,
    /// The file upload service.
    pub upload: Upload,
    /// The message archive.
    pub archive: Archive,
    /// The MUC service.
    pub muc: Muc,
    /// Server-to-server federation.
    pub federation: Federation,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            domain: "localhost".to_owned(),
            data_dir: PathBuf::from("./tern-data"),
            registration: Registration::Closed,
            plaintext: PlaintextPolicy::Refuse,
            listen: Listen::default(),
            tls: Tls::default(),
            limits: Limits::default(),
            groups: Groups::default(),
            keys: Keys::default(),
            upload: Upload::default(),
            archive: Archive::default(),
            muc: Muc::default(),
            federation: Federation::default(),
        }
    }
}

impl Config {
    /// The development preset used when `tern-server` runs without
    /// `--config`: everything default, in-band registration open.
    pub fn development() -> Self {
        Self {
            registration: Registration::Open,
            ..Self::default()
        }
    }

    /// Reads and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        match jid::BareJid::new(&self.domain) {
            Ok(jid) if jid.node().is_none() && jid.domain().as_str() == self.domain => {}
            _ => return Err(invalid("domain", "not a valid, normalised XMPP domain")),
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "tls.cert",
                "tls.cert and tls.key must be set together",
            ));
        }
        if self.listen.c2s == self.listen.c2s_tls && self.listen.c2s.port() != 0 {
            return Err(invalid("listen.c2s_tls", "must differ from listen.c2s"));
        }
        if !(1..=1000).contains(&self.archive.commit_delay_ms) {
            return Err(invalid("archive.commit_delay_ms", "must be from 1 to 1000"));
        }
        if self.upload.idle_timeout_secs == 0 {
            return Err(invalid("upload.idle_timeout_secs", "must be at least 1"));
        }
        if self.limits.session_buffer_bytes < 4096 {
            return Err(invalid(
                "limits.session_buffer_bytes",
                "must be at least 4096",
            ));
        }
        if self.limits.write_timeout_secs == 0 {
            return Err(invalid("limits.write_timeout_secs", "must be at least 1"));
        }
        if self.limits.max_stanza_bytes < 4096 {
            return Err(invalid("limits.max_stanza_bytes", "must be at least 4096"));
        }
        if self.limits.max_connections_per_ip == 0 {
            return Err(invalid(
                "limits.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if self.limits.auth_failures_per_minute == 0 {
            return Err(invalid(
                "limits.auth_failures_per_minute",
                "must be at least 1",
            ));
        }
        if self.limits.unauthenticated_timeout_secs == 0 {
            return Err(invalid(
                "limits.unauthenticated_timeout_secs",
                "must be at least 1",
            ));
        }
        if let Some(groups) = &self.groups.domain {
            check_subdomain(groups, "groups.domain")?;
        }
        if let Some(upload) = &self.upload.domain {
            check_subdomain(upload, "upload.domain")?;
        }
        if let Some(muc) = &self.muc.domain {
            check_subdomain(muc, "muc.domain")?;
        }
        let muc = self.muc_domain();
        if [
            self.domain.clone(),
            self.groups_domain(),
            self.upload_domain(),
        ]
        .contains(&muc)
        {
            return Err(invalid(
                "muc.domain",
                "must differ from domain, groups.domain and upload.domain",
            ));
        }
        if self.groups_domain() == self.upload_domain() || self.upload_domain() == self.domain {
            return Err(invalid(
                "upload.domain",
                "must differ from domain and groups.domain",
            ));
        }
        if self.groups_domain() == self.domain {
            return Err(invalid("groups.domain", "must differ from domain"));
        }
        if self.upload.max_file_bytes == 0 {
            return Err(invalid("upload.max_file_bytes", "must be at least 1"));
        }
        if self.listen.s2s == self.listen.s2s_tls && self.listen.s2s.port() != 0 {
            return Err(invalid("listen.s2s_tls", "must differ from listen.s2s"));
        }
        let federation = &self.federation;
        for (key, value) in [
            ("federation.bounce_after_secs", federation.bounce_after_secs),
            ("federation.idle_timeout_secs", federation.idle_timeout_secs),
            ("federation.retry_max_secs", federation.retry_max_secs),
            (
                "federation.connect_timeout_secs",
                federation.connect_timeout_secs,
            ),
            (
                "federation.max_pending_dialbacks",
                federation.max_pending_dialbacks as u64,
            ),
            (
                "federation.max_dialback_verifications",
                federation.max_dialback_verifications as u64,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (key, list) in [
            ("federation.allow", &federation.allow),
            ("federation.deny", &federation.deny),
        ] {
            for domain in list {
                check_subdomain(domain, key)?;
            }
        }
        if self.keys.max_per_device == 0 {
            return Err(invalid("keys.max_per_device", "must be at least 1"));
        }
        Ok(())
    }

    /// The group hub's domain.
    pub fn groups_domain(&self) -> String {
        self.groups
            .domain
            .clone()
            .unwrap_or_else(|| format!("groups.{}", self.domain))
    }

    /// The MUC service's domain.
    pub fn muc_domain(&self) -> String {
        self.muc
            .domain
            .clone()
            .unwrap_or_else(|| format!("conference.{}", self.domain))
    }

    /// The upload service's domain.
    pub fn upload_domain(&self) -> String {
        self.upload
            .domain
            .clone()
            .unwrap_or_else(|| format!("upload.{}", self.domain))
    }

    /// Where uploaded files are kept.
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// The path of the SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("tern.sqlite3")
    }

    /// A commented configuration file with these values, as written by
    /// `tern-server init`.
    pub fn example_toml(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: &Path| quote(&p.display().to_string());
        let tls = match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => format!("cert = {}\nkey = {}\n", path(cert), path(key)),
            _ => "# cert = \"/etc/tern/fullchain.pem\"\n# key = \"/etc/tern/privkey.pem\"\n"
                .to_owned(),
        };
        format!(
            r#"# tern-server configuration. Every key is optional; the comment gives
# the default. Unknown keys are errors.

# The XMPP domain this server serves. Publish an A record for it, and
# SRV records _xmpp-client._tcp / _xmpps-client._tcp pointing at it.
domain = {domain}

# Database and generated certificate. Back this directory up.
data_dir = {data_dir}

# In-band registration (XEP-0077): "open" or "closed" (default).
# With "closed", create accounts with `tern-server user add JID`.
registration = {registration}

# Messages with a plain <body> and no end-to-end encryption:
# "refuse" (default) answers policy-violation; "route-live" delivers them
# to online resources but never stores them.
plaintext = {plaintext}

[listen]
# STARTTLS client port (default "127.0.0.1:5222"). Use "0.0.0.0:5222"
# or "[::]:5222" to accept clients from the network.
c2s = {c2s}
# Direct TLS client port, XEP-0368 (default "127.0.0.1:5223").
c2s_tls = {c2s_tls}
# HTTPS port of the file upload service and of XMPP over WebSocket
# (wss://<host>:<port>/xmpp-websocket) for browser clients (default
# "127.0.0.1:5281").
upload = {upload_listen}
# Server-to-server ports, STARTTLS (default "127.0.0.1:5269") and
# direct TLS (default "127.0.0.1:5270"). Use "0.0.0.0:5269" to federate
# with servers on the network.
s2s = {s2s}
s2s_tls = {s2s_tls}

[tls]
# PEM certificate chain and key for the domain. When unset, a
# self-signed certificate is generated in <data_dir>/tls/ (fine for
# testing, clients will warn).
{tls}
[limits]
# Largest stanza in bytes (default 262144).
max_stanza_bytes = {max_stanza}
# Simultaneous connections per IP address (default 100).
max_connections_per_ip = {max_conn}
# Failed logins per IP and minute before attempts are refused (default 10).
auth_failures_per_minute = {auth_fail}
# Seconds to authenticate before the connection is closed (default 60).
unauthenticated_timeout_secs = {unauth}
# Offline messages kept per user (default 1000), from one sender (default
# 100), and from senders not in the user's roster together (default 500).
max_offline_messages = {offline}
max_offline_per_sender = {offline_per_sender}
max_offline_from_strangers = {offline_strangers}
# Seconds a dropped session may be resumed (XEP-0198) before what it
# did not acknowledge goes to offline storage; 0 = no resumption
# (default 300).
resumption_timeout_secs = {resumption}
# Bytes queued for a client that is not reading (and, separately, sent
# and not acknowledged) before its session is closed; what it held goes
# to offline storage or back to its senders (default 262144).
session_buffer_bytes = {session_buffer}
# Seconds one write to a client may take before its session is closed
# the same way (default 60).
write_timeout_secs = {write_timeout}
# Push registrations (XEP-0357) per user (default 5).
max_push_registrations = {max_push}
# PEP nodes per user (default 64), and the largest item in bytes (default
# 65536).
max_pep_nodes = {max_pep_nodes}
max_pep_item_bytes = {max_pep_item}
# Contacts per roster (default 1000), and subscription requests from
# others waiting for an answer (default 100).
max_roster_items = {max_roster}
max_pending_subscriptions = {max_pending}

[groups]
# The group hub's domain (default "groups.<domain>"). Every group is
# <id>@<this domain>; publish DNS records for it as for the domain, and
# cover it with the certificate.
{groups_domain}
# Groups one user may create (default 100), and devices in one group
# (default 1000).
max_groups_per_user = {max_groups}
max_members = {max_members}

[keys]
# Single-use MLS key packages kept per device (default 100).
max_per_device = {max_keys}
# Devices with fewer left are told to upload more (default 10).
low_watermark = {low_keys}
# Devices with key packages per user (default 32).
max_devices = {max_devices}
# Claims of a user's single-use packages per claimer and hour; beyond,
# last-resort packages only (default 10).
claims_per_hour = {claims_per_hour}

[upload]
# File upload (XEP-0363) for encrypted files: the server keeps opaque
# blobs and never sees names or contents. The service's address
# (default "upload.<domain>").
{upload_domain}
# Host name in the file URLs given to clients (default: the domain).
{url_host}
# Largest file in bytes (default 104857600, 100 MiB).
max_file_bytes = {max_file}
# Bytes one user may keep uploaded (default 1073741824, 1 GiB).
quota_bytes_per_user = {quota}
# Days a file is served before it is deleted, 0 = for ever (default 30).
expire_after_days = {upload_expire}
# Seconds an upload may stall before it is abandoned (default 30).
idle_timeout_secs = {upload_idle}

[muc]
# Group chat rooms (XEP-0045) for standard clients that encrypt with
# OMEMO: members-only and non-anonymous; plain bodies are refused as in
# one-to-one chats (default true).
enabled = {muc_enabled}
# The service's address (default "conference.<domain>"); publish DNS
# records for it as for the domain.
{muc_domain}
# Archived messages sent to an occupant who joins (default 20).
history_messages = {muc_history}
# Rooms one user may own (default 20), and rooms in all (default 10000).
max_rooms_per_user = {muc_per_user}
max_rooms = {muc_rooms}

[archive]
# Message archive (XEP-0313) of each user's encrypted messages, kept as
# ciphertext: the stanzas in <data_dir>/archive-log/, an index of them in
# the database (default true).
enabled = {archive_enabled}
# Days a message is kept, 0 = for ever (default 0). Expired messages
# leave the disk at the hourly sweep.
expire_after_days = {archive_expire}
# Longest wait in milliseconds before an archived message is committed
# to disk; acknowledgements (XEP-0198) wait for the commit. Longer
# gathers more messages a commit (default 20, 1 to 1000).
commit_delay_ms = {archive_delay}

[federation]
# Exchange stanzas with other domains over XMPP s2s (default true).
# Peers find this server through SRV records _xmpp-server._tcp (and
# _xmpps-server._tcp for direct TLS) of the domain and groups domain.
enabled = {fed_enabled}
# DNS server used to find peers, "IP:PORT" (default: the system's).
{nameserver}
# PEM file of the CAs trusted for peer certificates (default: the
# system's trust store).
{ca_file}
# Authenticate with certificates (SASL EXTERNAL) where both sides can,
# dialback otherwise (default true). false: dialback only.
certificate_auth = {cert_auth}
# Domains to federate with only (default [] = all) and never.
allow = {allow}
deny = {deny}
# Seconds before undeliverable stanzas bounce (default 86400).
bounce_after_secs = {bounce_after}
# Seconds before an idle stream closes (default 600).
idle_timeout_secs = {idle_timeout}
# Longest wait between connection attempts in seconds (default 300).
retry_max_secs = {retry_max}
# Seconds to connect, start TLS and authenticate (default 30).
connect_timeout_secs = {connect_timeout}
# Dialback verifications one inbound stream may ask for at once (default
# 8), and all streams together (default 128).
max_pending_dialbacks = {pending_dialbacks}
max_dialback_verifications = {dialback_verifications}
"#,
            archive_enabled = self.archive.enabled,
            muc_enabled = self.muc.enabled,
            muc_domain = match &self.muc.domain {
                Some(domain) => format!("domain = {}", quote(domain)),
                None => format!("# domain = {}", quote(&self.muc_domain())),
            },
            muc_history = self.muc.history_messages,
            muc_per_user = self.muc.max_rooms_per_user,
            muc_rooms = self.muc.max_rooms,
            upload_expire = self.upload.expire_after_days,
            upload_idle = self.upload.idle_timeout_secs,
            archive_expire = self.archive.expire_after_days,
            archive_delay = self.archive.commit_delay_ms,
            domain = quote(&self.domain),
            data_dir = path(&self.data_dir),
            registration = quote(self.registration.as_str()),
            plaintext = quote(self.plaintext.as_str()),
            c2s = quote(&self.listen.c2s.to_string()),
            c2s_tls = quote(&self.listen.c2s_tls.to_string()),
            tls = tls,
            max_stanza = self.limits.max_stanza_bytes,
            max_conn = self.limits.max_connections_per_ip,
            auth_fail = self.limits.auth_failures_per_minute,
            unauth = self.limits.unauthenticated_timeout_secs,
            offline = self.limits.max_offline_messages,
            offline_per_sender = self.limits.max_offline_per_sender,
            offline_strangers = self.limits.max_offline_from_strangers,
            resumption = self.limits.resumption_timeout_secs,
            session_buffer = self.limits.session_buffer_bytes,
            write_timeout = self.limits.write_timeout_secs,
            max_push = self.limits.max_push_registrations,
            max_pep_nodes = self.limits.max_pep_nodes,
            max_pep_item = self.limits.max_pep_item_bytes,
            max_roster = self.limits.max_roster_items,
            max_pending = self.limits.max_pending_subscriptions,
            groups_domain = match &self.groups.domain {
                Some(domain) => format!("domain = {}", quote(domain)),
                None => format!("# domain = {}", quote(&self.groups_domain())),
            },
            max_groups = self.groups.max_groups_per_user,
            max_members = self.groups.max_members,
            max_keys = self.keys.max_per_device,
            low_keys = self.keys.low_watermark,
            max_devices = self.keys.max_devices,
            claims_per_hour = self.keys.claims_per_hour,
            upload_listen = quote(&self.listen.upload.to_string()),
            upload_domain = match &self.upload.domain {
                Some(domain) => format!("domain = {}", quote(domain)),
                None => format!("# domain = {}", quote(&self.upload_domain())),
            },
            url_host = match &self.upload.url_host {
                Some(host) => format!("url_host = {}", quote(host)),
                None => format!("# url_host = {}", quote(&self.domain)),
            },
            max_file = self.upload.max_file_bytes,
            quota = self.upload.quota_bytes_per_user,
            s2s = quote(&self.listen.s2s.to_string()),
            s2s_tls = quote(&self.listen.s2s_tls.to_string()),
            fed_enabled = self.federation.enabled,
            nameserver = match &self.federation.nameserver {
                Some(address) => format!("nameserver = {}", quote(&address.to_string())),
                None => "# nameserver = \"127.0.0.1:53\"".to_owned(),
            },
            ca_file = match &self.federation.ca_file {
                Some(file) => format!("ca_file = {}", path(file)),
                None => "# ca_file = \"/etc/ssl/certs/ca-certificates.crt\"".to_owned(),
            },
            cert_auth = self.federation.certificate_auth,
            allow = toml_list(&self.federation.allow),
            deny = toml_list(&self.federation.deny),
            bounce_after = self.federation.bounce_after_secs,
            idle_timeout = self.federation.idle_timeout_secs,
            retry_max = self.federation.retry_max_secs,
            connect_timeout = self.federation.connect_timeout_secs,
            pending_dialbacks = self.federation.max_pending_dialbacks,
            dialback_verifications = self.federation.max_dialback_verifications,
        )
    }
}

/// A TOML array of strings.
fn toml_list(items: &[String]) -> String {
    toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect()).to_string()
}

/// A configured subdomain must be a valid, normalised XMPP domain.
fn check_subdomain(domain: &str, key: &'static str) -> Result<(), ConfigError> {
    match jid::BareJid::new(domain) {
        Ok(jid) if jid.node().is_none() && jid.domain().as_str() == domain => Ok(()),
        _ => Err(ConfigError::Invalid {
            key,
            reason: "not a valid, normalised XMPP domain".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_back_to_the_same_values() {
        let mut config = Config::development();
        config.domain = "a.example".into();
        config.data_dir = "/var/lib/tern".into();
        config.plaintext = PlaintextPolicy::RouteLive;
        config.limits.max_stanza_bytes = 65536;
        assert_eq!(Config::parse(&config.example_toml()).unwrap(), config);
        config.groups.domain = Some("muc.a.example".into());
        config.keys.low_watermark = 3;
        assert_eq!(Config::parse(&config.example_toml()).unwrap(), config);
        config.upload.domain = Some("files.a.example".into());
        config.upload.url_host = Some("files.a.example".into());
        config.upload.max_file_bytes = 5;
        config.upload.quota_bytes_per_user = 7;
        assert_eq!(Config::parse(&config.example_toml()).unwrap(), config);

        config.federation.nameserver = Some("127.0.0.1:5353".parse().unwrap());
        config.federation.ca_file = Some("/ca.pem".into());
        config.federation.certificate_auth = false;
        config.federation.allow = vec!["b.example".into()];
        config.federation.deny = vec!["c.example".into(), "d.example".into()];
        config.federation.bounce_after_secs = 60;
        config.listen.s2s = "127.0.0.2:5269".parse().unwrap();
        assert_eq!(Config::parse(&config.example_toml()).unwrap(), config);

        config.tls.cert = Some("/c.pem".into());
        config.tls.key = Some("/k.pem".into());
        assert_eq!(Config::parse(&config.example_toml()).unwrap(), config);
    }

    #[test]
    fn default_example_is_the_default() {
        let config = Config::default();
        assert_eq!(Config::parse(&config.example_toml()).unwrap(), config);
        assert_eq!(Config::parse("").unwrap(), config);
    }

    #[test]
    fn readme_shows_the_default_config() {
        let readme = include_str!("../../README.md");
        let example = Config::default().example_toml();
        assert!(
            readme.contains(&example),
            "README.md must contain Config::default().example_toml() verbatim:\n{example}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[limits]\nmax_stanzas = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_stanzas"), "{err}");
        let err = Config::parse("domian = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("domian"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse("registration = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().contains("registration"), "{err}");
        let err = Config::parse("[limits]\nmax_stanza_bytes = 10\n").unwrap_err();
        assert!(err.to_string().contains("limits.max_stanza_bytes"), "{err}");
        let err = Config::parse("domain = \"not a domain\"\n").unwrap_err();
        assert!(err.to_string().contains("`domain`"), "{err}");
        let err = Config::parse("[tls]\ncert = \"/x\"\n").unwrap_err();
        assert!(err.to_string().contains("tls.cert"), "{err}");
        let err = Config::parse("[upload]\ndomain = \"groups.localhost\"\n").unwrap_err();
        assert!(err.to_string().contains("upload.domain"), "{err}");
        let err = Config::parse("[listen]\nc2s = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("c2s"), "{err}");
    }
}
