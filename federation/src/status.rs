//! What `tern-server federation status` shows: each outbound link's state,
//! how it authenticated, its queue and its last error, and the inbound
//! streams with the domains they authenticated.

use serde::Serialize;

use crate::host::Pair;

/// How a stream's peer was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// SASL EXTERNAL with the peer's certificate (XEP-0178).
    Certificate,
    /// Server dialback (XEP-0220).
    Dialback,
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::Dialback => "dialback",
        })
    }
}

/// Where an outbound link is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// No stream, nothing to send.
    Idle,
    /// Resolving, connecting, negotiating.
    Connecting,
    /// Authenticated and sending.
    Connected,
    /// The last attempt failed; the next one is this many seconds away.
    Retrying {
        /// Seconds until the next attempt.
        in_secs: u64,
    },
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("idle"),
            Self::Connecting => f.write_str("connecting"),
            Self::Connected => f.write_str("connected"),
            Self::Retrying { in_secs } => write!(f, "retrying in {in_secs} s"),
        }
    }
}

/// One outbound link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// The domains.
    pub pair: Pair,
    /// The link's state.
    pub state: LinkState,
    /// How the current (or last) stream authenticated.
    pub auth: Option<AuthMethod>,
    /// Where the current (or last) stream went, `ip:port (mode)`.
    pub endpoint: Option<String>,
    /// Whether the peer acknowledges stanzas (XEP-0198).
    pub acknowledged: bool,
    /// Stanzas waiting (including sent but not yet acknowledged).
    pub queued: u64,
    /// Stanzas the peer has (acknowledged or written) since start.
    pub delivered: u64,
    /// Stanzas bounced back to their senders since start.
    pub bounced: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// One inbound stream.
#[derive(Debug, Clone, Serialize)]
pub struct InboundStatus {
    /// The peer's address.
    pub peer: String,
    /// The pairs authenticated on it, with how.
    pub authenticated: Vec<(Pair, AuthMethod)>,
    /// Stanzas received.
    pub received: u64,
}

/// The whole view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Outbound links, by pair.
    pub outbound: Vec<LinkStatus>,
    /// Inbound streams.
    pub inbound: Vec<InboundStatus>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.outbound.is_empty() && self.inbound.is_empty() {
            return writeln!(f, "no federation streams");
        }
        for link in &self.outbound {
            write!(f, "out {}: {}", link.pair, link.state)?;
            if let Some(auth) = link.auth {
                write!(f, ", {auth}")?;
            }
            if let Some(endpoint) = &link.endpoint {
                write!(f, ", {endpoint}")?;
            }
            write!(
                f,
                ", queued {}, delivered {}, bounced {}",
                link.queued, link.delivered, link.bounced
            )?;
            if link.acknowledged {
                write!(f, ", acknowledged")?;
            }
            if let Some(error) = &link.last_error {
                write!(f, ", last error: {error}")?;
            }
            writeln!(f)?;
        }
        for stream in &self.inbound {
            write!(f, "in from {}:", stream.peer)?;
            if stream.authenticated.is_empty() {
                write!(f, " not authenticated")?;
            }
            for (pair, auth) in &stream.authenticated {
                write!(f, " {} <- {} ({auth})", pair.local, pair.remote)?;
            }
            writeln!(f, ", received {}", stream.received)?;
        }
        Ok(())
    }
}
