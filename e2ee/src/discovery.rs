//! Where to connect for a domain's XMPP service (RFC 6120 §3.2, XEP-0368):
//! the `_xmpps-client._tcp` / `_xmpps-server._tcp` SRV records (direct TLS)
//! first, then `_xmpp-client._tcp` / `_xmpp-server._tcp` (STARTTLS), each
//! in priority order with weighted random choice among equal priorities
//! (RFC 2782); without records, the domain itself on port 5222 (clients)
//! or 5269 (servers) with STARTTLS. Clients use it to find their server,
//! `tern-federation` to find peer servers.

use std::net::SocketAddr;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use rand::Rng;

/// How to talk TLS at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (XEP-0368).
    Direct,
    /// A plain stream upgraded with `<starttls/>`.
    StartTls,
}

/// One place to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How TLS starts there.
    pub tls: TlsMode,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.tls {
            TlsMode::Direct => "direct TLS",
            TlsMode::StartTls => "STARTTLS",
        };
        write!(f, "{}:{} ({mode})", self.host, self.port)
    }
}

/// A SRV record's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Srv {
    priority: u16,
    weight: u16,
    target: String,
    port: u16,
}

/// Which XMPP service to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Client-to-server: `_xmpps-client`, `_xmpp-client`, port 5222.
    Client,
    /// Server-to-server: `_xmpps-server`, `_xmpp-server`, port 5269.
    Server,
}

impl Service {
    /// The SRV services to ask, in order, with how TLS starts at each.
    fn records(self) -> [(&'static str, TlsMode); 2] {
        match self {
            Self::Client => [
                ("_xmpps-client._tcp", TlsMode::Direct),
                ("_xmpp-client._tcp", TlsMode::StartTls),
            ],
            Self::Server => [
                ("_xmpps-server._tcp", TlsMode::Direct),
                ("_xmpp-server._tcp", TlsMode::StartTls),
            ],
        }
    }

    /// The port used without SRV records (RFC 6120 §3.2.2).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Client => 5222,
            Self::Server => 5269,
        }
    }
}

/// A DNS resolver kept for the life of its owner, so that answers are
/// cached for their TTL.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `nameserver`, or the system's resolvers.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Self, String> {
        Ok(Self {
            inner: resolver(nameserver)?,
        })
    }

    /// The endpoints of `service` at `domain`, best first: SRV targets
    /// (direct TLS before STARTTLS, each in RFC 2782 order) resolved to
    /// addresses through the same DNS; without records, the domain's own
    /// addresses on the service's default port. Empty when the domain has
    /// no address at all.
    pub async fn endpoints(&self, domain: &str, service: Service) -> Vec<Endpoint> {
        let mut targets = Vec::new();
        for (name, tls) in service.records() {
            let records = lookup_srv(&self.inner, &format!("{name}.{domain}.")).await;
            targets.extend(
                order(records)
                    .into_iter()
                    .map(|srv| (srv.target, srv.port, tls)),
            );
        }
        if targets.is_empty() {
            targets.push((domain.to_owned(), service.default_port(), TlsMode::StartTls));
        }
        // Targets resolve through the same DNS (a private nameserver's
        // names are unknown to the system's resolver).
        let mut endpoints = Vec::new();
        for (host, port, tls) in targets {
            for ip in lookup_ips(&self.inner, &host).await {
                endpoints.push(Endpoint {
                    host: ip.to_string(),
                    port,
                    tls,
                });
            }
        }
        endpoints
    }
}

/// The client endpoints of `domain`, best first. `nameserver` replaces the
/// system's resolvers (tests, private networks). Without a resolver, the
/// domain itself on port 5222.
pub async fn client_endpoints(domain: &str, nameserver: Option<SocketAddr>) -> Vec<Endpoint> {
    match Resolver::new(nameserver) {
        Ok(resolver) => resolver.endpoints(domain, Service::Client).await,
        Err(e) => {
            tracing::warn!("no DNS resolver ({e}); trying {domain} directly");
            vec![Endpoint {
                host: domain.to_owned(),
                port: Service::Client.default_port(),
                tls: TlsMode::StartTls,
            }]
        }
    }
}

/// The addresses of `host` (an IP address stands for itself).
async fn lookup_ips(resolver: &TokioResolver, host: &str) -> Vec<std::net::IpAddr> {
    if let Ok(ip) = host.parse() {
        return vec![ip];
    }
    match resolver.lookup_ip(format!("{host}.")).await {
        Ok(found) => found.iter().collect(),
        Err(e) => {
            tracing::debug!(%host, "no address: {e}");
            Vec::new()
        }
    }
}

fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let builder = match nameserver {
        Some(address) => {
            let connections = [ProtocolConfig::Udp, ProtocolConfig::Tcp]
                .into_iter()
                .map(|protocol| {
                    let mut connection = ConnectionConfig::new(protocol);
                    connection.port = address.port();
                    connection
                })
                .collect();
            let server = NameServerConfig::new(address.ip(), true, connections);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    builder.build().map_err(|e| e.to_string())
}

/// The SRV records at `name`; none when there are none or DNS fails
/// (the caller falls back).
async fn lookup_srv(resolver: &TokioResolver, name: &str) -> Vec<Srv> {
    match resolver.srv_lookup(name).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => Some(Srv {
                    priority: srv.priority,
                    weight: srv.weight,
                    target: srv.target.to_ascii().trim_end_matches('.').to_owned(),
                    port: srv.port,
                }),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::debug!(%name, "no SRV records: {e}");
            Vec::new()
        }
    }
}

/// RFC 2782 order: by priority; within one, a weighted random draw
/// (weight 0 is drawn rarely but still drawn). A single record whose
/// target is "." says the service is not offered: nothing.
fn order(mut records: Vec<Srv>) -> Vec<Srv> {
    if records.len() == 1 && records[0].target.is_empty() {
        return Vec::new();
    }
    records.retain(|r| !r.target.is_empty());
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rng = rand::thread_rng();
    while !records.is_empty() {
        let priority = records[0].priority;
        let end = records.partition_point(|r| r.priority == priority);
        let mut group: Vec<Srv> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight) + 1).sum();
            let mut pick = rng.gen_range(0..total);
            let index = group
                .iter()
                .position(|r| {
                    let share = u32::from(r.weight) + 1;
                    if pick < share {
                        true
                    } else {
                        pick -= share;
                        false
                    }
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

/// The DNS server named by `TERN_DNS` (`IP:PORT`) for finding servers;
/// `Ok(None)` when unset (the system's), `Err` saying what is wrong.
pub fn nameserver_from_env() -> Result<Option<SocketAddr>, String> {
    match std::env::var("TERN_DNS") {
        Ok(text) if !text.is_empty() => text
            .parse()
            .map(Some)
            .map_err(|_| format!("TERN_DNS={text:?} is not IP:PORT")),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            target: target.to_owned(),
            port: 5222,
        }
    }

    #[test]
    fn priorities_come_first_and_weights_share_the_rest() {
        let records = vec![
            srv(20, 0, "c"),
            srv(10, 1, "b"),
            srv(10, 1000, "a"),
            srv(30, 5, "d"),
        ];
        let mut a_first = 0;
        for _ in 0..200 {
            let ordered: Vec<String> = order(records.clone())
                .into_iter()
                .map(|r| r.target)
                .collect();
            assert_eq!(ordered.len(), 4);
            assert_eq!(&ordered[2..], ["c", "d"]);
            a_first += usize::from(ordered[0] == "a");
        }
        assert!(a_first > 150, "weight 1000 wins most draws: {a_first}/200");
    }

    #[test]
    fn a_dot_target_means_no_service() {
        assert!(order(vec![srv(0, 0, "")]).is_empty());
        assert!(order(Vec::new()).is_empty());
    }
}
