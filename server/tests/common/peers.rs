//! The real XMPP peers of the interoperability tests — slixmpp clients and
//! a Prosody server — run from the test's own temporary directory, on
//! loopback only, stopped when dropped (../shared/TESTBED.md).
//!
//! A missing peer fails the test under CI (or `TERN_REQUIRE_PEERS=1`) and
//! skips it, loudly, elsewhere: the README's test command installs them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{wait_child, TestCa};

/// Whether missing peers fail tests rather than skip them.
fn peers_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("TERN_REQUIRE_PEERS").is_some()
}

/// Says that `what` is missing: a failure where peers are required, a
/// skip (returns) elsewhere.
pub fn missing(what: &str) {
    assert!(
        !peers_required(),
        "no {what}: run the README's test command (scripts/test.sh)"
    );
    eprintln!("SKIPPED: no {what}; run scripts/test.sh");
}

/// The Python with slixmpp: `TERN_TEST_PYTHON`, else `.venv/bin/python`
/// at the workspace root (the test command creates it).
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TERN_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs one of the slixmpp scenarios under `server/tests/slixmpp/` with
/// `args` (bounded to 150 s); its output when it printed "all steps
/// passed", else a panic showing it and `context()`.
pub fn run_slixmpp(python: &Path, script: &str, args: &[String], context: impl Fn() -> String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/slixmpp")
        .join(script);
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let finished = wait_child(&mut child, Duration::from_secs(150));
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        finished && stdout.contains("all steps passed"),
        "slixmpp scenario failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        context()
    );
}

/// How a Prosody server authenticates other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProsodyAuth {
    /// Trusts the test CA and requires valid certificates
    /// (`s2s_secure_auth`): SASL EXTERNAL or certificate-backed dialback.
    Certificates,
    /// Trusts no test certificate: dialback only.
    Dialback,
}

/// A Prosody server (Debian's `prosody`, with `lua-unbound` for DNS on a
/// port of our own), stopped on drop.
pub struct Prosody {
    pub domain: String,
    pub c2s: SocketAddr,
    pub s2s: SocketAddr,
    pub config: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

impl Prosody {
    /// Starts Prosody for `domain` on `address` (free ports), resolving
    /// through the DNS server at `nameserver` (`127.0.0.1:PORT`), with a
    /// certificate from the test CA. `None` when Prosody or lua-unbound is
    /// not installed (allowed outside CI).
    pub fn start(
        domain: &str,
        address: &str,
        nameserver: SocketAddr,
        auth: ProsodyAuth,
    ) -> Option<Prosody> {
        if !Path::new("/usr/bin/prosody").exists() || !lua_unbound_installed() {
            missing("Prosody with lua-unbound");
            return None;
        }
        let dir = tempfile::tempdir().expect("dir");
        let base = dir.path();
        let certs = base.join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        std::fs::create_dir_all(base.join("data")).expect("data dir");
        let (cert, key) = TestCa::get().issue_for(domain, address, &certs);
        std::fs::rename(cert, certs.join(format!("{domain}.crt"))).expect("cert");
        std::fs::rename(key, certs.join(format!("{domain}.key"))).expect("key");
        let port = || super::dns::free_port();
        let c2s: SocketAddr = format!("{address}:{}", port()).parse().expect("address");
        let s2s: SocketAddr = format!("{address}:{}", port()).parse().expect("address");
        let trust = match auth {
            ProsodyAuth::Certificates => format!(
                "s2s_secure_auth = true\nssl = {{ cafile = \"{}\" }}",
                TestCa::get().ca_path().display()
            ),
            ProsodyAuth::Dialback => "s2s_secure_auth = false".to_owned(),
        };
        let config = base.join("prosody.cfg.lua");
        std::fs::write(
            &config,
            format!(
                r#"local base = "{base}"
run_as_root = true
pidfile = base.."/prosody.pid"
data_path = base.."/data"
certificates = base.."/certs"
admin_socket = base.."/prosody.sock"
interfaces = {{ "{address}" }}
local_interfaces = {{ "{address}" }}
c2s_ports = {{ {c2s_port} }}
s2s_ports = {{ {s2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
log = {{ debug = base.."/debug.log" }}
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_require_encryption = true
{trust}
unbound = {{
    resolvconf = false; hoststxt = false;
    forward = {{ "{ns_ip}@{ns_port}" }};
    options = {{ ["do-not-query-localhost:"] = "no"; ["local-zone:"] = "test. transparent" }};
}}
modules_enabled = {{ "disco"; "roster"; "saslauth"; "tls"; "dialback"; "ping"; "admin_shell" }}
VirtualHost "{domain}"
"#,
                base = base.display(),
                c2s_port = c2s.port(),
                s2s_port = s2s.port(),
                ns_ip = nameserver.ip(),
                ns_port = nameserver.port(),
            ),
        )
        .expect("prosody config");
        let child = Command::new("/usr/bin/prosody")
            .arg("-F")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prosody");
        let mut prosody = Prosody {
            domain: domain.to_owned(),
            c2s,
            s2s,
            config,
            dir,
            child,
        };
        prosody.wait_until_listening();
        Some(prosody)
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.c2s).is_err()
            || std::net::TcpStream::connect(self.s2s).is_err()
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prosody exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prosody did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates an account.
    pub fn register(&self, user: &str, password: &str) {
        let output = Command::new("/usr/bin/prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(["register", user, &self.domain, password])
            .stdin(Stdio::null())
            .output()
            .expect("run prosodyctl");
        assert!(output.status.success(), "prosodyctl register: {output:?}");
    }

    /// Prosody's debug log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("debug.log")).unwrap_or_default()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        super::signal(self.child.id(), "TERM");
        if !wait_child(&mut self.child, Duration::from_secs(10)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn lua_unbound_installed() -> bool {
    Path::new("/usr/lib/x86_64-linux-gnu/lua/5.4/lunbound.so").exists()
        || Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", "lua-unbound"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}
