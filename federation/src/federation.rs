//! The federation handle the server holds: sending, listening, status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minidom::Element;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dialback::Secret;
use crate::host::{Host, Pair, QueueError, QueueStore};
use crate::link::{self, Link};
use crate::outbound::Dialer;
use crate::settings::Settings;
use crate::status::{AuthMethod, InboundStatus, Status};
use crate::tls::TlsConfigs;
use crate::{inbound, xml, TlsMode};

/// Why a stanza cannot be sent to another server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// `from` is not one of our domains, or `to` is not another server's.
    #[error("not a stanza for federation: {0}")]
    BadAddress(&'static str),
    /// The policy refuses the remote domain.
    #[error("federation with {0} is not allowed on this server")]
    Denied(String),
    /// The queue could not take it.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What every part of federation shares.
pub(crate) struct Context {
    pub(crate) settings: Settings,
    pub(crate) tls: TlsConfigs,
    pub(crate) dialer: Dialer,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) queue: Arc<dyn QueueStore>,
    pub(crate) secret: Secret,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// Dialback verifications under way, for every inbound stream.
    pub(crate) verifications: Arc<tokio::sync::Semaphore>,
    links: Mutex<HashMap<Pair, Arc<Link>>>,
    inbound: Mutex<HashMap<u64, InboundStatus>>,
    next_inbound: AtomicU64,
}

impl Context {
    pub(crate) fn register_inbound(&self, peer: SocketAddr) -> u64 {
        let number = self.next_inbound.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut streams) = self.inbound.lock() {
            streams.insert(number, inbound::new_status(peer));
        }
        number
    }

    pub(crate) fn unregister_inbound(&self, number: u64) {
        if let Ok(mut streams) = self.inbound.lock() {
            streams.remove(&number);
        }
    }

    pub(crate) fn inbound_authenticated(&self, number: u64, pair: Pair, method: AuthMethod) {
        self.update_inbound(number, |status| status.authenticated.push((pair, method)));
    }

    pub(crate) fn inbound_received(&self, number: u64) {
        self.update_inbound(number, |status| status.received += 1);
    }

    fn update_inbound(&self, number: u64, change: impl FnOnce(&mut InboundStatus)) {
        if let Ok(mut streams) = self.inbound.lock() {
            if let Some(status) = streams.get_mut(&number) {
                change(status);
            }
        }
    }
}

/// Server-to-server federation.
#[derive(Clone)]
pub struct Federation {
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("local_domains", &self.ctx.settings.local_domains)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Federation for the server behind `host` and `queue`; stops when
    /// `shutdown` is cancelled.
    pub fn new(
        settings: Settings,
        tls: TlsConfigs,
        host: Arc<dyn Host>,
        queue: Arc<dyn QueueStore>,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        let secret = Secret::random();
        let dialer = Dialer::new(&settings, tls.clone(), secret.clone())?;
        let verifications = Arc::new(tokio::sync::Semaphore::new(
            settings.max_dialback_verifications,
        ));
        Ok(Self {
            ctx: Arc::new(Context {
                settings,
                tls,
                dialer,
                host,
                queue,
                secret,
                shutdown,
                tracker: TaskTracker::new(),
                verifications,
                links: Mutex::new(HashMap::new()),
                inbound: Mutex::new(HashMap::new()),
                next_inbound: AtomicU64::new(1),
            }),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.ctx.settings
    }

    /// Starts the links of the pairs that still have queued stanzas (after
    /// a restart).
    pub async fn resume(&self) -> Result<(), QueueError> {
        for pair in self.ctx.queue.pairs().await? {
            self.link(pair).notify.notify_one();
        }
        Ok(())
    }

    /// Accepts inbound streams on `listener` until shutdown.
    pub fn serve(&self, listener: TcpListener, mode: TlsMode) {
        let ctx = self.ctx.clone();
        self.ctx.tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((tcp, peer)) => {
                        ctx.tracker
                            .spawn(inbound::serve(ctx.clone(), tcp, peer, mode));
                    }
                    Err(e) => {
                        tracing::warn!("s2s accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    /// Queues a stanza (in `jabber:client`, `from` one of our domains,
    /// `to` another server's) for its pair's stream, serialised as it will
    /// be sent (in `jabber:server`). Returns once it is durably queued.
    pub async fn send(&self, stanza: &Element) -> Result<(), SendError> {
        let settings = &self.ctx.settings;
        let from =
            xml::domain_of(stanza.attr("from")).ok_or(SendError::BadAddress("no valid 'from'"))?;
        let to = xml::domain_of(stanza.attr("to")).ok_or(SendError::BadAddress("no valid 'to'"))?;
        if !settings.is_local(&from) {
            return Err(SendError::BadAddress("'from' is not a domain served here"));
        }
        if settings.is_local(&to) {
            return Err(SendError::BadAddress("'to' is a domain served here"));
        }
        if !settings.policy.allows(&to) {
            return Err(SendError::Denied(to));
        }
        let pair = Pair {
            local: from,
            remote: to,
        };
        self.ctx
            .queue
            .push(
                pair.clone(),
                crate::xml_text::to_text_renamed(stanza, xml::NS_CLIENT, xml::NS_SERVER),
            )
            .await?;
        self.link(pair).notify.notify_one();
        Ok(())
    }

    /// Each link's and inbound stream's state.
    pub async fn status(&self) -> Status {
        let links: Vec<Arc<Link>> = self
            .ctx
            .links
            .lock()
            .map(|links| links.values().cloned().collect())
            .unwrap_or_default();
        let mut outbound = Vec::with_capacity(links.len());
        for link in links {
            let Ok(mut status) = link.status.lock().map(|s| s.clone()) else {
                continue;
            };
            status.queued = self.ctx.queue.count(status.pair.clone()).await.unwrap_or(0);
            outbound.push(status);
        }
        outbound.sort_by(|a, b| a.pair.cmp(&b.pair));
        let mut inbound: Vec<InboundStatus> = self
            .ctx
            .inbound
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        inbound.sort_by(|a, b| a.peer.cmp(&b.peer));
        Status { outbound, inbound }
    }

    /// Waits (at most `limit`) for every stream and link to close after
    /// shutdown was cancelled.
    pub async fn wait(&self, limit: Duration) {
        self.ctx.tracker.close();
        if tokio::time::timeout(limit, self.ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some s2s streams did not close in time");
        }
    }

    /// The link of `pair`, started on first use.
    fn link(&self, pair: Pair) -> Arc<Link> {
        let mut links = match self.ctx.links.lock() {
            Ok(links) => links,
            Err(poisoned) => poisoned.into_inner(),
        };
        links
            .entry(pair.clone())
            .or_insert_with(|| {
                let link = Arc::new(Link::new(pair.clone()));
                self.ctx
                    .tracker
                    .spawn(link::run(self.ctx.clone(), link.clone(), pair));
                link
            })
            .clone()
    }
}
