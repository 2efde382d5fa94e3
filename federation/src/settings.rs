//! Federation's settings, as the server's configuration gives them.

use std::net::SocketAddr;
use std::time::Duration;

/// Which remote domains this server federates with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// When not empty, only these domains (and their subdomains).
    pub allow: Vec<String>,
    /// Never these domains (and their subdomains); wins over `allow`.
    pub deny: Vec<String>,
}

impl Policy {
    /// Whether stanzas may be exchanged with `domain`.
    pub fn allows(&self, domain: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|d| covers(d, domain));
        !listed(&self.deny) && (self.allow.is_empty() || listed(&self.allow))
    }
}

/// `listed` names `domain` itself or a parent of it.
fn covers(listed: &str, domain: &str) -> bool {
    let listed = listed.trim_end_matches('.');
    domain.eq_ignore_ascii_case(listed)
        || domain.len() > listed.len()
            && domain[domain.len() - listed.len()..].eq_ignore_ascii_case(listed)
            && domain.as_bytes()[domain.len() - listed.len() - 1] == b'.'
}

/// Everything federation is told by the server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The domains served here: the server's domain first, then its
    /// groups and upload domains.
    pub local_domains: Vec<String>,
    /// The DNS server to ask; `None` for the system's resolvers.
    pub nameserver: Option<SocketAddr>,
    /// Present our certificate and accept peers' certificates for SASL
    /// EXTERNAL (XEP-0178). When off, every stream uses dialback.
    pub certificate_auth: bool,
    /// Allow and deny lists.
    pub policy: Policy,
    /// Stanzas undelivered for this long are bounced with
    /// `remote-server-timeout`.
    pub bounce_after: Duration,
    /// Streams silent for this long are closed.
    pub idle_after: Duration,
    /// The longest wait between two connection attempts (the backoff
    /// doubles from one second up to this).
    pub retry_max: Duration,
    /// Connecting, TLS and authentication together must finish in this
    /// time.
    pub connect_timeout: Duration,
    /// Largest stanza accepted from a peer, in bytes.
    pub max_stanza_bytes: usize,
    /// Dialback verifications one inbound stream may have under way (a
    /// real peer asks for a few (local, remote) pairs); one more closes
    /// the stream with `policy-violation`.
    pub max_pending_dialbacks: usize,
    /// Dialback verifications under way for all inbound streams together
    /// (each looks a domain up and connects to it); beyond, a request is
    /// answered with a `resource-constraint` error to retry later.
    pub max_dialback_verifications: usize,
}

impl Settings {
    /// Whether `domain` is served here.
    pub fn is_local(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_covers_subdomains() {
        let policy = Policy {
            allow: vec![],
            deny: vec!["evil.test".into()],
        };
        assert!(!policy.allows("evil.test"));
        assert!(!policy.allows("groups.evil.test"));
        assert!(policy.allows("notevil.test"));
        assert!(policy.allows("b.test"));
    }

    #[test]
    fn a_non_empty_allow_list_is_exclusive() {
        let policy = Policy {
            allow: vec!["b.test".into()],
            deny: vec!["upload.b.test".into()],
        };
        assert!(policy.allows("b.test"));
        assert!(policy.allows("groups.b.test"));
        assert!(!policy.allows("upload.b.test"));
        assert!(!policy.allows("c.test"));
    }
}
