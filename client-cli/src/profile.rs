//! The profile: a directory holding one device of one account — its
//! settings (`profile.toml`) and its client store (keys, MLS state,
//! decrypted history).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jid::BareJid;
use serde::{Deserialize, Serialize};
use tern_e2ee::{ClientStore, Device, SessionOptions};

/// What `profile.toml` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The account.
    pub jid: String,
    /// `host:port` of the server's direct-TLS port, when not found by DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// An opened profile.
pub struct Profile {
    /// Its directory.
    pub dir: PathBuf,
    /// Its settings.
    pub settings: Settings,
}

impl Profile {
    /// The directory: `--profile`, `TERN_HOME`, or `$XDG_DATA_HOME/tern`
    /// (`~/.local/share/tern`).
    pub fn locate(flag: Option<PathBuf>) -> Result<PathBuf> {
        if let Some(dir) = flag.or_else(|| std::env::var_os("TERN_HOME").map(PathBuf::from)) {
            return Ok(dir);
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(data).join("tern"));
        }
        let home =
            std::env::var_os("HOME").context("no profile directory: set --profile or TERN_HOME")?;
        Ok(PathBuf::from(home).join(".local/share/tern"))
    }

    /// Opens the profile in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("profile.toml");
        if dir.exists() {
            // Keys and decrypted history: the owner's only, also where an
            // earlier version left them readable.
            tern_e2ee::private::tighten_tree(dir)
                .with_context(|| format!("making {} private", dir.display()))?;
        }
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no account in {}: run `tern account register JID` (new account) or `tern account login JID` first",
                dir.display()
            )
        })?;
        let settings: Settings =
            toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            settings,
        })
    }

    /// Creates the profile for `jid` in `dir` (refusing to replace another
    /// account's).
    pub fn create(dir: &Path, jid: &BareJid, server: Option<String>) -> Result<Self> {
        if let Ok(existing) = Self::open(dir) {
            if existing.settings.jid != jid.as_str() {
                bail!(
                    "{} holds the account {}; use another --profile",
                    dir.display(),
                    existing.settings.jid
                );
            }
            return Ok(existing);
        }
        tern_e2ee::private::private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let settings = Settings {
            jid: jid.to_string(),
            server,
        };
        let path = dir.join("profile.toml");
        let text = toml::to_string(&settings)?;
        tern_e2ee::private::private_file(&path)
            .and_then(|()| std::fs::write(&path, text))
            .with_context(|| format!("writing the profile in {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            settings,
        })
    }

    /// The account.
    pub fn jid(&self) -> Result<BareJid> {
        BareJid::new(&self.settings.jid).context("the profile's JID is not valid")
    }

    /// The client store.
    pub fn store(&self) -> Result<ClientStore> {
        ClientStore::open(&self.dir.join("client.sqlite3"))
            .with_context(|| format!("opening the client store in {}", self.dir.display()))
    }

    /// The profile's device, created on first use.
    pub async fn device(&self) -> Result<Device> {
        self.device_in(self.store()?).await
    }

    /// The profile's device in an opened store.
    pub async fn device_in(&self, store: ClientStore) -> Result<Device> {
        match Device::open(store.clone()).await {
            Ok(device) => Ok(device),
            Err(tern_e2ee::Error::NoDevice) => Ok(Device::create(store, self.jid()?).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// How to log in, with the password from `TERN_PASSWORD` or the
    /// terminal.
    pub fn session_options(&self, server: Option<String>) -> Result<SessionOptions> {
        let password = match std::env::var("TERN_PASSWORD") {
            Ok(password) => password,
            Err(_) => rpassword::prompt_password(format!("Password for {}: ", self.settings.jid))
                .context("reading the password (or set TERN_PASSWORD)")?,
        };
        self.options_with(password, server)
    }

    /// Like [`Self::session_options`] for a password being chosen: typed
    /// twice at the terminal.
    pub fn new_password_options(&self, server: Option<String>) -> Result<SessionOptions> {
        if let Ok(password) = std::env::var("TERN_PASSWORD") {
            return self.options_with(password, server);
        }
        let read = |prompt: &str| {
            rpassword::prompt_password(prompt)
                .context("reading the password (or set TERN_PASSWORD)")
        };
        let password = read(&format!("New password for {}: ", self.settings.jid))?;
        if password.is_empty() {
            bail!("the password must not be empty");
        }
        if read("Again: ")? != password {
            bail!("the two passwords differ");
        }
        self.options_with(password, server)
    }

    fn options_with(&self, password: String, server: Option<String>) -> Result<SessionOptions> {
        Ok(SessionOptions {
            jid: self.jid()?,
            password,
            server: server.or_else(|| self.settings.server.clone()),
            nameserver: tern_e2ee::discovery::nameserver_from_env().map_err(anyhow::Error::msg)?,
        })
    }
}
