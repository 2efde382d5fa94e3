//! The real XMPP peers of the interoperability tests — slixmpp clients,
//! Prosody and ejabberd servers — run from the test's own temporary
//! directory, on loopback only, stopped when dropped
//! (../shared/TESTBED.md).
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

/// How a peer server authenticates other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAuth {
    /// Trusts the test CA and requires valid certificates: SASL EXTERNAL
    /// or certificate-backed dialback.
    Certificates,
    /// Trusts no test certificate: dialback only.
    Dialback,
}

/// Where a server of another implementation serves.
#[derive(Debug, Clone)]
pub struct PeerAddresses {
    pub domain: String,
    /// Its c2s (STARTTLS) listener.
    pub c2s: SocketAddr,
    /// Its s2s (STARTTLS) listener.
    pub s2s: SocketAddr,
}

impl PeerAddresses {
    /// `domain` on free ports of `address`.
    fn new(domain: &str, address: &str) -> Self {
        let port = || super::dns::free_port();
        PeerAddresses {
            domain: domain.to_owned(),
            c2s: format!("{address}:{}", port()).parse().expect("address"),
            s2s: format!("{address}:{}", port()).parse().expect("address"),
        }
    }

    /// Waits (up to `limit`) until both listeners accept connections;
    /// panics with `log()` when `exited()` says the server is gone or
    /// time is up.
    fn wait_until_listening(
        &self,
        limit: Duration,
        mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
        log: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + limit;
        while std::net::TcpStream::connect(self.c2s).is_err()
            || std::net::TcpStream::connect(self.s2s).is_err()
        {
            if let Some(status) = exited() {
                panic!("{} exited ({status}):\n{}", self.domain, log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                self.domain,
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A server of another implementation, as the interoperability tests use
/// it.
pub trait PeerServer {
    /// Its domain and listeners.
    fn addresses(&self) -> &PeerAddresses;
    /// Creates an account.
    fn register(&self, user: &str, password: &str);
    /// Its log so far.
    fn log(&self) -> String;
}

/// A Prosody server (Debian's `prosody`, with `lua-unbound` for DNS on a
/// port of our own), stopped on drop.
pub struct Prosody {
    addresses: PeerAddresses,
    config: PathBuf,
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
        auth: PeerAuth,
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
        let addresses = PeerAddresses::new(domain, address);
        let trust = match auth {
            PeerAuth::Certificates => format!(
                "s2s_secure_auth = true\nssl = {{ cafile = \"{}\" }}",
                TestCa::get().ca_path().display()
            ),
            PeerAuth::Dialback => "s2s_secure_auth = false".to_owned(),
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
                c2s_port = addresses.c2s.port(),
                s2s_port = addresses.s2s.port(),
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
            addresses,
            config,
            dir,
            child,
        };
        let child = &mut prosody.child;
        let exited = || child.try_wait().ok().flatten();
        prosody
            .addresses
            .wait_until_listening(Duration::from_secs(30), exited, || {
                read_log(&prosody.dir, "debug.log")
            });
        Some(prosody)
    }
}

impl PeerServer for Prosody {
    fn addresses(&self) -> &PeerAddresses {
        &self.addresses
    }

    fn register(&self, user: &str, password: &str) {
        let output = Command::new("/usr/bin/prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(["register", user, &self.addresses.domain, password])
            .stdin(Stdio::null())
            .output()
            .expect("run prosodyctl");
        assert!(output.status.success(), "prosodyctl register: {output:?}");
    }

    fn log(&self) -> String {
        read_log(&self.dir, "debug.log")
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

/// An ejabberd server (Debian's `ejabberd`), run in the foreground by
/// `ejabberdctl` as the `ejabberd` user, Erlang distribution on loopback
/// at a fixed port (no epmd daemon left behind), stopped on drop.
pub struct Ejabberd {
    addresses: PeerAddresses,
    dir: tempfile::TempDir,
    child: Child,
}

const EJABBERDCTL: &str = "/usr/sbin/ejabberdctl";

impl Ejabberd {
    /// Starts ejabberd for `domain` on `address` (free ports), asking the
    /// DNS server at `nameserver`, with a certificate from the test CA.
    /// Erlang's resolver finds SRV records there but takes the targets'
    /// addresses from `hosts` (`(name, IP)`). `None` when ejabberd is not
    /// installed (allowed outside CI).
    pub fn start(
        domain: &str,
        address: &str,
        nameserver: SocketAddr,
        hosts: &[(&str, std::net::IpAddr)],
        auth: PeerAuth,
    ) -> Option<Ejabberd> {
        if !Path::new(EJABBERDCTL).exists() {
            missing("ejabberd");
            return None;
        }
        let dir = tempfile::tempdir().expect("dir");
        let base = dir.path();
        for sub in ["conf", "logs", "spool"] {
            std::fs::create_dir_all(base.join(sub)).expect("dir");
        }
        let (cert, key) = TestCa::get().issue_for(domain, address, base);
        let pem = std::fs::read_to_string(&cert).expect("cert")
            + &std::fs::read_to_string(&key).expect("key");
        std::fs::write(base.join("conf/server.pem"), pem).expect("pem");
        // A CA that issued nothing of ours: every peer certificate is
        // untrusted, dialback is all that is left.
        let ca = match auth {
            PeerAuth::Certificates => TestCa::get().ca_path(),
            PeerAuth::Dialback => {
                let other = base.join("other-ca.pem");
                let key = rcgen::KeyPair::generate().expect("key");
                let ca = super::ca_params().self_signed(&key).expect("CA");
                std::fs::write(&other, ca.pem()).expect("CA");
                other
            }
        };
        std::fs::copy(&ca, base.join("conf/ca.pem")).expect("CA");
        let addresses = PeerAddresses::new(domain, address);
        let dist_port = super::dns::free_port();
        std::fs::write(
            base.join("conf/ejabberdctl.cfg"),
            format!(
                "ERLANG_NODE=tern-test-{dist_port}@localhost\nINET_DIST_INTERFACE=127.0.0.1\n\
                 ERL_EPMD_ADDRESS=127.0.0.1\nERL_DIST_PORT={dist_port}\n\
                 EJABBERD_PID_PATH={}\n",
                base.join("spool/ejabberd.pid").display()
            ),
        )
        .expect("ejabberdctl.cfg");
        let erlang_ip = |ip: std::net::IpAddr| ip.to_string().replace('.', ",");
        let inetrc = format!(
            "{{resolv_conf, \"\"}}.\n{{hosts_file, \"\"}}.\n{{host, {{127,0,0,1}}, [\"localhost\"]}}.\n\
             {{nameserver, {{{}}}, {}}}.\n{{lookup, [file, dns]}}.\n",
            erlang_ip(nameserver.ip()),
            nameserver.port()
        );
        std::fs::write(base.join("conf/inetrc"), inetrc).expect("inetrc");
        let mut hosts_file = "127.0.0.1 localhost\n".to_owned();
        for (name, ip) in hosts {
            hosts_file.push_str(&format!("{ip} {name}\n"));
        }
        std::fs::write(base.join("hosts"), hosts_file).expect("hosts");
        std::fs::write(
            base.join("conf/ejabberd.yml"),
            format!(
                r#"loglevel: info
log_rotate_count: 0
hosts:
  - {domain}
certfiles:
  - "{base}/conf/server.pem"
ca_file: "{base}/conf/ca.pem"
listen:
  -
    port: {c2s_port}
    ip: "{address}"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: {s2s_port}
    ip: "{address}"
    module: ejabberd_s2s_in
s2s_use_starttls: required
auth_method: internal
auth_password_format: scram
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
modules:
  mod_disco: {{}}
  mod_roster: {{}}
  mod_ping: {{}}
  mod_s2s_dialback: {{}}
"#,
                base = base.display(),
                c2s_port = addresses.c2s.port(),
                s2s_port = addresses.s2s.port(),
            ),
        )
        .expect("ejabberd.yml");
        // It runs as the ejabberd user, which must reach its files.
        let chown = Command::new("chown")
            .args(["-R", "ejabberd:ejabberd"])
            .arg(base)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown to ejabberd failed");
        let foreground = format!(
            "mount --bind {hosts} /etc/hosts && exec {EJABBERDCTL} {dirs} foreground",
            hosts = base.join("hosts").display(),
            dirs = ctl_dirs(base).join(" ")
        );
        let child = Command::new("unshare")
            .args(["--mount", "sh", "-c", &foreground])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ejabberd");
        let ejabberd = Ejabberd {
            addresses,
            dir,
            child,
        };
        // Its supervisor (ejabberdctl, su) outlives a failed start: wait.
        ejabberd.addresses.wait_until_listening(
            Duration::from_secs(60),
            || None,
            || ejabberd.log(),
        );
        Some(ejabberd)
    }

    /// Runs `ejabberdctl COMMAND…` against this node.
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(EJABBERDCTL);
        command.args(ctl_dirs(self.dir.path())).args(args);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ejabberdctl");
        wait_child(&mut child, Duration::from_secs(30));
        child.wait_with_output().expect("ejabberdctl output")
    }
}

/// The `ejabberdctl` options naming a node's own directories.
fn ctl_dirs(base: &Path) -> Vec<String> {
    let dir = |sub: &str| base.join(sub).display().to_string();
    vec![
        "--config-dir".into(),
        dir("conf"),
        "--logs".into(),
        dir("logs"),
        "--spool".into(),
        dir("spool"),
    ]
}

impl PeerServer for Ejabberd {
    fn addresses(&self) -> &PeerAddresses {
        &self.addresses
    }

    fn register(&self, user: &str, password: &str) {
        let output = self.ctl(&["register", user, &self.addresses.domain, password]);
        assert!(output.status.success(), "ejabberdctl register: {output:?}");
    }

    fn log(&self) -> String {
        read_log(&self.dir, "logs/ejabberd.log")
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        // The Erlang VM runs in a session of its own (su): stop it through
        // its control channel, and by its pid if that fails.
        let _ = self.ctl(&["stop"]);
        if !wait_child(&mut self.child, Duration::from_secs(15)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let pid = std::fs::read_to_string(self.dir.path().join("spool/ejabberd.pid"));
        if let Some(pid) = pid.ok().and_then(|p| p.trim().parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "beam.smp" {
                super::signal(pid, "KILL");
            }
        }
    }
}

/// A peer's log file under its directory, as far as it was written.
fn read_log(dir: &tempfile::TempDir, file: &str) -> String {
    std::fs::read_to_string(dir.path().join(file)).unwrap_or_default()
}

/// The Node.js packages of the web client tests (`server/tests/web`,
/// installed by the test command with `npm ci`), if there.
pub fn web_clients() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let installed = dir.join("node_modules/@xmpp/client").exists();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (installed && node).then_some(dir)
}

/// A helper process (a client script) that is killed if still running
/// when dropped; its output goes to files in `dir`.
pub struct Helper {
    child: Child,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Helper {
    /// Starts `command`, its output kept under `dir` as `name`.
    pub fn start(mut command: Command, dir: &Path, name: &str) -> Helper {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = command
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Helper {
            child,
            name: name.to_owned(),
            stdout,
            stderr,
        }
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.name,
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits until its output contains `text` (bounded).
    pub fn wait_for_output(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if std::fs::read_to_string(&self.stdout).is_ok_and(|o| o.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits (bounded) for it to exit; whether it exited successfully and
    /// said "all steps passed".
    pub fn passed(&mut self, limit: Duration) -> bool {
        wait_child(&mut self.child, limit)
            && std::fs::read_to_string(&self.stdout).is_ok_and(|o| o.contains("all steps passed"))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
