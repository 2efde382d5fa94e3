//! dnsmasq as the test bed's DNS server, on loopback, touching nothing
//! system-wide (shared by the server's and the CLI's tests).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// dnsmasq serving the test domain's records on a free loopback port,
/// stopped on drop.
pub struct Dns {
    pub child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Dns {
    /// `None` when dnsmasq is not installed (allowed outside CI).
    pub fn start(records: &str) -> Option<Dns> {
        dnsmasq()?;
        with_fresh_ports("dnsmasq", || Self::try_start_at(free_port(), records))
    }

    /// Starts dnsmasq on `port` (see [`free_port`]); `None` as for
    /// [`Dns::start`].
    pub fn start_at(port: u16, records: &str) -> Option<Dns> {
        Self::try_start_at(port, records).unwrap_or_else(|why| panic!("{why}"))
    }

    /// As [`Dns::start_at`], but a dnsmasq that exits at start (its port
    /// was taken) is an error, for the caller to try other ports.
    pub fn try_start_at(port: u16, records: &str) -> Result<Option<Dns>, String> {
        let Some(dnsmasq) = dnsmasq() else {
            return Ok(None);
        };
        let dir = tempfile::tempdir().expect("dir");
        let conf = dir.path().join("dns.conf");
        std::fs::write(
            &conf,
            format!(
                "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                 no-poll\nlocal=/test/\n{records}"
            ),
        )
        .expect("dns.conf");
        let log = dir.path().join("dnsmasq.log");
        let mut child = Command::new(dnsmasq)
            .arg("--no-daemon")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file=")
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("dnsmasq.log"))
            .spawn()
            .expect("start dnsmasq");
        // Ready when it answers on TCP; gone if it could not bind.
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("dnsmasq on port {port} exited ({status}): {said}"));
            }
            if std::net::TcpStream::connect(&address).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(Dns {
            child,
            address,
            _dir: dir,
        }))
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 free for both UDP and TCP right now. Another
/// process may still take it before the caller binds it: start servers
/// through [`with_fresh_ports`].
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let port = udp.local_addr().expect("its address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// How many times [`with_fresh_ports`] tries.
pub const PORT_ATTEMPTS: u32 = 5;

/// Runs `start`, which picks its ports with [`free_port`], again while it
/// fails (a port it picked was taken before it could bind it), at most
/// [`PORT_ATTEMPTS`] times.
pub fn with_fresh_ports<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for attempt in 1..=PORT_ATTEMPTS {
        match start() {
            Ok(started) => return started,
            Err(why) => {
                eprintln!("{what} did not start (attempt {attempt} of {PORT_ATTEMPTS}): {why}");
                last = why;
            }
        }
    }
    panic!("{what} did not start in {PORT_ATTEMPTS} attempts: {last}");
}

/// The dnsmasq binary; `None` when it is not installed (allowed outside
/// CI).
fn dnsmasq() -> Option<&'static str> {
    let found = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("TERN_REQUIRE_PEERS").is_some();
        assert!(
            !required,
            "no dnsmasq: run the README's test command (scripts/test.sh)"
        );
        eprintln!("SKIPPED: no dnsmasq; run scripts/test.sh");
    }
    found
}

/// dnsmasq records of federating servers, each `(domain, s2s address)`:
/// an address record for the domain, and `_xmpp-server` SRV records
/// pointing at the s2s port for the domain and its `groups.` and
/// `upload.` services.
pub fn federation_records<'a>(
    servers: impl IntoIterator<Item = (&'a str, std::net::SocketAddr)>,
) -> String {
    let mut records = String::new();
    for (domain, s2s) in servers {
        records.push_str(&format!("host-record={domain},{}\n", s2s.ip()));
        for name in [
            domain.to_owned(),
            format!("groups.{domain}"),
            format!("upload.{domain}"),
        ] {
            records.push_str(&format!(
                "srv-host=_xmpp-server._tcp.{name},{domain},{},0,0\n",
                s2s.port()
            ));
        }
    }
    records
}
