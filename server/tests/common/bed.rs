//! A federation test bed: Tern servers of their own domains on their own
//! loopback addresses (s2s on ports only their SRV records tell), with
//! test-CA certificates, found through dnsmasq.

use super::dns::{federation_records, free_port, Dns};
use super::{ServerOptions, TestCa, TestServer};

/// Servers of one test, with their DNS.
pub struct Bed {
    pub servers: Vec<TestServer>,
    _dns: Option<Dns>,
}

impl Bed {
    /// Starts one server per `(domain, extra [federation] keys)` on
    /// 127.`net`.0.2, .3, …, then dnsmasq with their SRV records. `None`
    /// without dnsmasq (allowed outside CI).
    pub fn start(net: u8, specs: &[(&str, &str)]) -> Option<Bed> {
        Self::start_with(net, specs, &[])
    }

    /// As [`Bed::start`], but the servers of `impostors` (`(domain, name
    /// on its certificate)`) hold a certificate for another name than
    /// their domain.
    pub fn start_with(net: u8, specs: &[(&str, &str)], impostors: &[(&str, &str)]) -> Option<Bed> {
        let dns_port = free_port();
        let servers = specs
            .iter()
            .enumerate()
            .map(|(i, (domain, extra))| {
                TestServer::start_with(ServerOptions {
                    domain: (*domain).to_owned(),
                    address: format!("127.{net}.0.{}", i + 2),
                    s2s_ports: Some((free_port(), free_port())),
                    sections: federation_section(dns_port, extra),
                    certificate_for: impostors
                        .iter()
                        .find(|(impostor, _)| impostor == domain)
                        .map(|(_, name)| (*name).to_owned()),
                    ..Default::default()
                })
            })
            .collect();
        let mut bed = Bed {
            servers,
            _dns: None,
        };
        bed._dns = Some(Dns::start_at(dns_port, &bed.records())?);
        Some(bed)
    }

    /// Address and SRV records of every server.
    fn records(&self) -> String {
        federation_records(self.servers.iter().map(|s| (s.domain.as_str(), s.s2s)))
    }

    pub fn server(&self, domain: &str) -> &TestServer {
        self.servers
            .iter()
            .find(|s| s.domain == domain)
            .expect("server of the bed")
    }
}

/// The `[federation]` section of a test server: DNS on 127.0.0.1:
/// `dns_port`, the test CA trusted, retries at most a second apart, then
/// `extra` keys.
pub fn federation_section(dns_port: u16, extra: &str) -> String {
    format!(
        "[federation]\nnameserver = \"127.0.0.1:{dns_port}\"\nca_file = \"{}\"\n\
         retry_max_secs = 1\n{extra}\n",
        TestCa::get().ca_path().display()
    )
}
