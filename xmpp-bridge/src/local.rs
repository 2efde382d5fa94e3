//! The bridge's XMPP c2s side: standard clients on loopback log in with
//! the account's JID and the bridge password, through the server's own
//! negotiation code (STARTTLS with the bridge's certificate, SASL SCRAM or
//! PLAIN, bind). Each bound client gets a [`ClientId`]; its stanzas go to
//! the bridge core, and the core's stanzas come back through [`Clients`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jid::FullJid;
use minidom::Element;
use tern_server::c2s::negotiation::{
    negotiate, AccountBackend, BackendError, C2sSettings, C2sStream, Negotiated, TlsMode,
};
use tern_server::c2s::stanza_stream::Input;
use tern_server::sasl::{ScramHash, StoredCredentials};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Stanzas queued for one client before it counts as stuck.
const CLIENT_QUEUE: usize = 1024;

/// A connected client's number.
pub type ClientId = u64;

/// What a client sent, for the core.
#[derive(Debug)]
pub struct FromClient {
    /// Who.
    pub client: ClientId,
    /// Its bound JID.
    pub jid: FullJid,
    /// The stanza.
    pub stanza: Element,
}

/// The connected clients, by number: where the core writes to them.
#[derive(Debug, Default)]
pub struct Clients {
    next: AtomicU64,
    senders: Mutex<HashMap<ClientId, (FullJid, mpsc::Sender<Element>)>>,
}

impl Clients {
    fn add(&self, jid: FullJid) -> (ClientId, mpsc::Receiver<Element>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        if let Ok(mut senders) = self.senders.lock() {
            senders.insert(id, (jid, tx));
        }
        (id, rx)
    }

    fn remove(&self, id: ClientId) {
        if let Ok(mut senders) = self.senders.lock() {
            senders.remove(&id);
        }
    }

    /// The connected clients and their JIDs.
    pub fn all(&self) -> Vec<(ClientId, FullJid)> {
        self.senders
            .lock()
            .map(|s| s.iter().map(|(id, (jid, _))| (*id, jid.clone())).collect())
            .unwrap_or_default()
    }

    /// A connected client's JID.
    pub fn jid(&self, id: ClientId) -> Option<FullJid> {
        self.senders
            .lock()
            .ok()
            .and_then(|s| s.get(&id).map(|(jid, _)| jid.clone()))
    }

    /// Queues a stanza for one client (dropped if it is gone or stuck).
    pub fn send(&self, id: ClientId, stanza: Element) {
        let sender = self
            .senders
            .lock()
            .ok()
            .and_then(|s| s.get(&id).map(|(_, tx)| tx.clone()));
        if let Some(tx) = sender {
            if tx.try_send(stanza).is_err() {
                tracing::warn!(client = id, "a client does not read: stanza dropped");
            }
        }
    }

    /// Queues a stanza for every client, addressed to each one's JID;
    /// whether any client is connected.
    pub fn broadcast(&self, stanza: &Element) -> bool {
        let clients = self.all();
        for (id, jid) in &clients {
            let mut copy = stanza.clone();
            tern_server::stanza::set_attr(&mut copy, "to", jid.to_string());
            self.send(*id, copy);
        }
        !clients.is_empty()
    }
}

/// The one account clients may log in as, with the bridge password.
pub struct Backend {
    username: String,
    sha1: StoredCredentials,
    sha256: StoredCredentials,
    clients: Arc<Clients>,
}

impl Backend {
    /// Accepts `username` with `password`.
    pub fn new(username: &str, password: &str, clients: Arc<Clients>) -> Self {
        Self {
            username: username.to_owned(),
            sha1: StoredCredentials::derive(ScramHash::Sha1, password),
            sha256: StoredCredentials::derive(ScramHash::Sha256, password),
            clients,
        }
    }
}

impl AccountBackend for Backend {
    type Binding = (ClientId, mpsc::Receiver<Element>);

    async fn credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<StoredCredentials>, BackendError> {
        if username != self.username {
            return Ok(None);
        }
        Ok(Some(match hash {
            ScramHash::Sha1 => self.sha1.clone(),
            ScramHash::Sha256 => self.sha256.clone(),
        }))
    }

    fn registration_open(&self) -> bool {
        false
    }

    async fn register(&self, _username: &str, _password: &str) -> Result<bool, BackendError> {
        Ok(false)
    }

    async fn bind(&self, jid: &FullJid) -> Result<Self::Binding, BackendError> {
        Ok(self.clients.add(jid.clone()))
    }
}

/// Accepts clients on `listener` until the core goes away.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<C2sSettings>,
    backend: Arc<Backend>,
    to_core: mpsc::Sender<FromClient>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        if to_core.is_closed() {
            return;
        }
        let (settings, backend, to_core) = (settings.clone(), backend.clone(), to_core.clone());
        tokio::spawn(async move {
            client(tcp, peer, &settings, &backend, to_core).await;
        });
    }
}

/// One client connection, from accept to close.
async fn client(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    settings: &C2sSettings,
    backend: &Backend,
    to_core: mpsc::Sender<FromClient>,
) {
    let C2sStream {
        mut stream,
        budget,
        jid,
        binding: (id, mut outbound),
        ..
    } = match negotiate(Box::new(tcp), peer, TlsMode::StartTls, settings, backend).await {
        Ok(Negotiated::Bound(stream)) => *stream,
        Ok(Negotiated::Resumed) => return,
        Err(e) => {
            tracing::info!(%peer, "client refused: {e}");
            return;
        }
    };
    tracing::info!(%jid, "client connected");
    loop {
        tokio::select! {
            stanza = outbound.recv() => {
                let Some(stanza) = stanza else { break };
                if stream.send(&stanza).await.is_err() {
                    break;
                }
            }
            read = stream.next() => match read {
                Input::Element(mut stanza) => {
                    budget.reset();
                    tern_server::stanza::set_attr(&mut stanza, "from", jid.to_string());
                    let request = FromClient { client: id, jid: jid.clone(), stanza };
                    if to_core.send(request).await.is_err() {
                        break;
                    }
                }
                Input::Silent => {}
                Input::Ended | Input::Failed(_) => break,
            }
        }
    }
    backend.clients.remove(id);
    let _ = stream.close().await;
    tracing::info!(%jid, "client disconnected");
}
