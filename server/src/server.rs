//! The running home server: shared state built once at start, the c2s
//! listeners, and a clean shutdown that closes every stream with
//! `system-shutdown` and checkpoints storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jid::BareJid;
use minidom::Element;
use tern_federation::{Federation, SendError};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use crate::c2s::limits::{AuthLimiter, ConnectionLimiter};
use crate::c2s::negotiation::{AccountBackend, BackendError, C2sSettings, TlsMode};
use crate::c2s::stream_management::{ResumeRequest, Resumptions};
use crate::config::{Config, Registration};
use crate::hub::Hub;
use crate::modules::blocking::Blocklists;
use crate::muc::MucService;
use crate::router::Destination;
use crate::sasl::{ScramHash, StoredCredentials};
use crate::session_queue::QueueReceiver;
use crate::sessions::{Outbound, SessionHandle, Sessions};
use crate::storage::{ArchiveWriter, LogoutWriter, Storage, StorageError};
use crate::tls::{ServerTls, TlsError};
use crate::upload::UploadService;
use crate::{s2s, stanza};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Storage could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The certificate could not be loaded or created.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Federation could not be set up (TLS roots, DNS resolver).
    #[error("federation: {0}")]
    Federation(String),
    /// A file in the data directory could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What the file is for.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The state every part of the server shares.
#[derive(Debug)]
pub struct Server {
    /// The validated configuration.
    pub config: Config,
    /// The database.
    pub storage: Storage,
    /// Connected sessions.
    pub sessions: Sessions,
    /// Claims of single-use key packages, per claimer and user.
    pub key_claims: crate::modules::keys::ClaimLimiter,
    /// The certificate in use.
    pub tls: ServerTls,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// c2s negotiation settings.
    pub c2s: C2sSettings,
    /// Per-IP connection limits.
    pub connections: Arc<ConnectionLimiter>,
    /// The group hub.
    pub hub: Hub,
    /// The file upload service.
    pub upload: UploadService,
    /// The writer of the message archive.
    pub archive: ArchiveWriter,
    /// The writer of users' last logouts.
    pub logouts: LogoutWriter,
    /// The MUC service.
    pub muc: MucService,
    /// Sessions that may be resumed (XEP-0198).
    pub resumptions: Resumptions,
    /// Users' blocklists (XEP-0191), as far as read.
    pub blocklists: Blocklists,
    /// When the server started.
    pub started: std::time::Instant,
    /// The hash of its disco#info (XEP-0115), once computed.
    pub caps: std::sync::OnceLock<Option<xmpp_parsers::hashes::Hash>>,
    /// Server-to-server federation (`None` when disabled).
    pub federation: Option<Federation>,
}

impl Server {
    /// The server's domain as a JID.
    pub fn domain_jid(&self) -> BareJid {
        BareJid::new(&self.config.domain).expect("domain validated at start-up")
    }

    /// The account name of `jid` when it is one of this server's users.
    pub fn local_user<'a>(&self, jid: &'a BareJid) -> Option<&'a str> {
        (jid.domain().as_str() == self.config.domain)
            .then(|| jid.node().map(|n| n.as_str()))
            .flatten()
    }

    /// Where a stanza addressed to `to` goes.
    pub fn destination(&self, to: Option<&jid::Jid>) -> Destination {
        let muc = self.config.muc.enabled.then_some(self.muc.domain.as_str());
        let domains = crate::router::Domains {
            domain: &self.config.domain,
            groups: self.hub.domain(),
            upload: &self.upload.domain,
            muc,
        };
        Destination::of(to, &domains)
    }

    /// Sends a stanza (from a local address) to another server. When
    /// federation cannot take it, the sender gets the error.
    pub async fn send_remote(&self, stanza: Element) {
        let refusal = match &self.federation {
            None => Some((
                DefinedCondition::RemoteServerNotFound,
                "federation is disabled on this server".to_owned(),
            )),
            Some(federation) => match federation.send(&stanza).await {
                Ok(()) => None,
                Err(SendError::Denied(domain)) => Some((
                    DefinedCondition::PolicyViolation,
                    format!("this server does not federate with {domain}"),
                )),
                Err(SendError::Queue(e)) => {
                    tracing::error!("{e}");
                    Some((
                        DefinedCondition::InternalServerError,
                        "the federation queue failed".to_owned(),
                    ))
                }
                Err(e) => {
                    tracing::debug!("not sent to another server: {e}");
                    None
                }
            },
        };
        if let Some((condition, text)) = refusal {
            self.bounce(&stanza, condition, &text).await;
        }
    }

    /// Sends a reply to another server's user, if there is one.
    pub async fn send_remote_reply(&self, reply: Option<Element>) {
        if let Some(reply) = reply {
            self.send_remote(reply).await;
        }
    }

    /// Tells the local sender of `stanza` that it was not delivered.
    pub async fn bounce(&self, stanza: &Element, condition: DefinedCondition, text: &str) {
        let type_ = match condition {
            DefinedCondition::RemoteServerTimeout | DefinedCondition::InternalServerError => {
                ErrorType::Wait
            }
            _ => ErrorType::Cancel,
        };
        if let Some(error) = stanza::error_reply(stanza, type_, condition, text) {
            Box::pin(crate::router::route_inbound(self, error)).await;
        }
    }
}

impl AccountBackend for Server {
    type Binding = (SessionHandle, QueueReceiver<Outbound>);

    async fn credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<StoredCredentials>, BackendError> {
        self.storage
            .credentials(username, hash)
            .await
            .map_err(|e| BackendError(e.to_string()))
    }

    fn registration_open(&self) -> bool {
        self.config.registration == Registration::Open
    }

    async fn register(&self, username: &str, password: &str) -> Result<bool, BackendError> {
        self.storage
            .create_account(username, password)
            .await
            .map_err(|e| BackendError(e.to_string()))
    }

    async fn bind(&self, jid: &jid::FullJid) -> Result<Self::Binding, BackendError> {
        let username = jid.node().map(|n| n.as_str()).unwrap_or_default();
        let (handle, rx, replaced) = self.sessions.bind(username, jid.resource().as_str());
        if let Some(old) = replaced {
            tracing::info!(%jid, "resource conflict: replacing the older session");
            old.close(
                StreamCondition::Conflict,
                "replaced by a new session with the same resource",
            );
        }
        Ok((handle, rx))
    }

    fn session_features(&self) -> Vec<Element> {
        let mut features = vec![
            Element::bare("sm", crate::c2s::stream_management::NS),
            Element::bare("csi", crate::modules::csi::NS),
        ];
        features.extend(crate::modules::caps::stream_feature(self));
        features
    }

    async fn resume(&self, request: ResumeRequest) -> Result<(), ResumeRequest> {
        self.resumptions.take_over(request).await
    }
}

/// A started server: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct RunningServer {
    /// The shared state.
    pub server: Arc<Server>,
    /// The bound STARTTLS address.
    pub c2s_addr: SocketAddr,
    /// The bound direct-TLS address.
    pub c2s_tls_addr: SocketAddr,
    /// The bound HTTPS address of the upload service.
    pub upload_addr: SocketAddr,
    /// The bound s2s addresses (STARTTLS, direct TLS), when federating.
    pub s2s_addrs: Option<(SocketAddr, SocketAddr)>,
    tracker: TaskTracker,
}

impl RunningServer {
    /// Opens storage, loads the certificate and starts listening.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let storage = Storage::open(&config.data_dir).await?;
        let archive_last_seq = storage.archive_last_seq().await?;
        let tls = ServerTls::load_or_generate(
            config.tls.cert.as_deref(),
            config.tls.key.as_deref(),
            &config.domain,
            &config.data_dir,
        )?;
        let c2s = C2sSettings {
            domain: config.domain.clone(),
            tls: tls.config.clone(),
            max_stanza_bytes: config.limits.max_stanza_bytes,
            negotiation_timeout: Duration::from_secs(config.limits.unauthenticated_timeout_secs),
            timeouts: Timeouts {
                read_timeout: Duration::from_secs(240),
                response_timeout: Duration::from_secs(120),
            },
            auth_limiter: AuthLimiter::new(config.limits.auth_failures_per_minute),
            decoy_key: crate::sasl::decoy_key(&config.data_dir.join("decoy-salt.key")).map_err(
                |source| StartError::Io {
                    what: "the decoy salt key",
                    source,
                },
            )?,
        };
        let (c2s_listener, c2s_addr) = bind(config.listen.c2s).await?;
        let (tls_listener, c2s_tls_addr) = bind(config.listen.c2s_tls).await?;
        let (upload_listener, upload_addr) = bind(config.listen.upload).await?;
        let upload = UploadService {
            domain: config.upload_domain(),
            base_url: format!(
                "https://{}:{}",
                config.upload.url_host.as_deref().unwrap_or(&config.domain),
                upload_addr.port()
            ),
            max_file_bytes: config.upload.max_file_bytes,
            quota_bytes_per_user: config.upload.quota_bytes_per_user,
        };
        let mut https = (*tls.config).clone();
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        let s2s_listeners = match config.federation.enabled {
            true => Some((
                bind(config.listen.s2s).await?,
                bind(config.listen.s2s_tls).await?,
            )),
            false => None,
        };
        let shutdown = CancellationToken::new();
        let federation_tls = match config.federation.enabled {
            true => Some(s2s::tls_configs(&config, &tls)?),
            false => None,
        };
        let mut federation_error = None;
        let server = Arc::new_cyclic(|weak| {
            let federation = federation_tls.and_then(|federation_tls| {
                s2s::federation(
                    &config,
                    federation_tls,
                    storage.clone(),
                    weak.clone(),
                    shutdown.clone(),
                )
                .map_err(|e| federation_error = Some(e))
                .ok()
            });
            let sessions = Sessions::new(config.limits.session_buffer_bytes);
            Server {
                connections: ConnectionLimiter::new(config.limits.max_connections_per_ip),
                hub: Hub::new(config.groups_domain()),
                upload,
                archive: ArchiveWriter::spawn(
                    storage.clone(),
                    archive_last_seq,
                    Duration::from_millis(config.archive.commit_delay_ms),
                ),
                logouts: LogoutWriter::spawn(storage.clone()),
                key_claims: crate::modules::keys::ClaimLimiter::new(config.keys.claims_per_hour),
                muc: MucService::new(config.muc_domain()),
                resumptions: Resumptions::default(),
                blocklists: Blocklists::default(),
                started: std::time::Instant::now(),
                caps: std::sync::OnceLock::new(),
                config,
                storage,
                sessions,
                tls,
                shutdown,
                c2s,
                federation,
            }
        });
        if let Some(e) = federation_error {
            return Err(StartError::Federation(e));
        }
        let s2s_addrs = match (&server.federation, s2s_listeners) {
            (Some(federation), Some(((plain, plain_addr), (direct, direct_addr)))) => {
                federation.serve(plain, tern_federation::TlsMode::StartTls);
                federation.serve(direct, tern_federation::TlsMode::Direct);
                if let Err(e) = federation.resume().await {
                    tracing::error!("cannot resume federation queues: {e}");
                }
                Some((plain_addr, direct_addr))
            }
            _ => None,
        };
        let tracker = TaskTracker::new();
        tokio::spawn(accept_loop(
            server.clone(),
            c2s_listener,
            TlsMode::StartTls,
            tracker.clone(),
        ));
        tokio::spawn(accept_loop(
            server.clone(),
            tls_listener,
            TlsMode::Direct,
            tracker.clone(),
        ));
        if let Err(e) = crate::admin::serve(server.clone()) {
            tracing::warn!("no admin socket ({e}); `tern-server federation status` will not work");
        }
        tokio::spawn(crate::expiry::run(server.clone()));
        tokio::spawn(crate::https::serve(
            server.clone(),
            upload_listener,
            Arc::new(https),
            tracker.clone(),
        ));
        Ok(Self {
            server,
            c2s_addr,
            c2s_tls_addr,
            upload_addr,
            s2s_addrs,
            tracker,
        })
    }

    /// Stops listening, closes every stream with `system-shutdown`, waits
    /// (at most ten seconds) for sessions to end, and closes storage.
    pub async fn shutdown(self) {
        self.server.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close within ten seconds");
        }
        if let Some(federation) = &self.server.federation {
            federation.wait(Duration::from_secs(10)).await;
        }
        // What the archive and logout writers still hold goes to disk
        // first.
        self.server.archive.flushed().await;
        if let Err(e) = self.server.logouts.flushed().await {
            tracing::warn!("the last logouts were not written: {e}");
        }
        self.server.storage.close().await;
    }
}

/// Listens on `addr`; returns the listener and the address it got (the
/// port chosen when `addr` asks for port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listen = |source| StartError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    Ok((listener, bound))
}

async fn accept_loop(
    server: Arc<Server>,
    listener: TcpListener,
    mode: TlsMode,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => admit(&server, tcp, peer, mode, &tracker),
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn admit(
    server: &Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    mode: TlsMode,
    tracker: &TaskTracker,
) {
    let Some(slot) = server.connections.admit(peer.ip()) else {
        tracing::info!(%peer, "too many connections from this address; refused");
        return;
    };
    let _ = tcp.set_nodelay(true);
    let server = server.clone();
    tracker.spawn(async move {
        crate::c2s::session::run(server, tcp, peer, mode).await;
        drop(slot);
    });
}
