//! The server's side of federation ([`tern_federation`]): its settings
//! from the configuration, and the [`Host`] and [`QueueStore`] it needs —
//! inbound stanzas go to [`router::route_inbound`], the queue lives in the
//! server's database.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use minidom::Element;
use tern_federation::{
    Federation, Host, Pair, Policy, QueueError, QueueStore, Queued, Settings, TlsConfigs,
};
use tokio_util::sync::CancellationToken;
use xmpp_parsers::stanza_error::DefinedCondition;

use crate::config::Config;
use crate::router;
use crate::server::{Server, StartError};
use crate::storage::{QueueWriter, Storage};
use crate::tls::ServerTls;

/// Federation's settings from the server's configuration.
pub fn settings(config: &Config) -> Settings {
    let federation = &config.federation;
    Settings {
        local_domains: vec![
            config.domain.clone(),
            config.groups_domain(),
            config.upload_domain(),
        ],
        nameserver: federation.nameserver,
        certificate_auth: federation.certificate_auth,
        policy: Policy {
            allow: federation.allow.clone(),
            deny: federation.deny.clone(),
        },
        bounce_after: Duration::from_secs(federation.bounce_after_secs),
        idle_after: Duration::from_secs(federation.idle_timeout_secs),
        retry_max: Duration::from_secs(federation.retry_max_secs),
        connect_timeout: Duration::from_secs(federation.connect_timeout_secs),
        max_stanza_bytes: config.limits.max_stanza_bytes,
        max_pending_dialbacks: federation.max_pending_dialbacks,
        max_dialback_verifications: federation.max_dialback_verifications,
    }
}

/// The TLS configurations of federation, around the server's certificate.
pub fn tls_configs(config: &Config, tls: &ServerTls) -> Result<TlsConfigs, StartError> {
    TlsConfigs::new(
        tls.chain.clone(),
        tls.key.clone_key(),
        config.federation.ca_file.as_deref(),
        config.federation.certificate_auth,
    )
    .map_err(|e| StartError::Federation(e.to_string()))
}

/// Federation for the server that `server` will point to, queueing in
/// `storage`.
pub fn federation(
    config: &Config,
    tls: TlsConfigs,
    storage: Storage,
    server: Weak<Server>,
    shutdown: CancellationToken,
) -> Result<Federation, String> {
    let host = Arc::new(ServerHost {
        server,
        queue: QueueWriter::spawn(storage),
    });
    Federation::new(settings(config), tls, host.clone(), host, shutdown)
}

/// The server as federation sees it.
struct ServerHost {
    server: Weak<Server>,
    queue: QueueWriter,
}

impl ServerHost {
    fn server(&self) -> Result<Arc<Server>, QueueError> {
        self.server
            .upgrade()
            .ok_or_else(|| QueueError("the server is gone".to_owned()))
    }
}

fn queue_error(e: crate::storage::StorageError) -> QueueError {
    QueueError(e.to_string())
}

impl Host for ServerHost {
    fn deliver(&self, stanza: Element) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(server) = self.server.upgrade() {
                router::route_inbound(&server, stanza).await;
            }
        })
    }

    fn durable_mark(&self) -> u64 {
        self.server
            .upgrade()
            .map_or(0, |server| server.archive.durable_mark())
    }

    fn durable(&self, mark: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(server) = self.server.upgrade() {
                server.archive.durable(mark).await;
            }
        })
    }

    fn bounce(
        &self,
        stanza: Element,
        condition: DefinedCondition,
        text: String,
    ) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(server) = self.server.upgrade() {
                server.bounce(&stanza, condition, &text).await;
            }
        })
    }
}

impl QueueStore for ServerHost {
    fn push(&self, pair: Pair, stanza: String) -> BoxFuture<'_, Result<i64, QueueError>> {
        Box::pin(async move {
            let now = chrono::Utc::now().timestamp();
            self.queue.push(pair, stanza, now).await.map_err(QueueError)
        })
    }

    fn pending(
        &self,
        pair: Pair,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Queued>, QueueError>> {
        Box::pin(async move {
            self.server()?
                .storage
                .s2s_queue_pending(&pair, after, limit)
                .await
                .map_err(queue_error)
        })
    }

    fn remove(&self, ids: Vec<i64>) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move { self.queue.remove(ids).await.map_err(QueueError) })
    }

    fn count(&self, pair: Pair) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async move {
            self.server()?
                .storage
                .s2s_queue_count(&pair)
                .await
                .map_err(queue_error)
        })
    }

    fn pairs(&self) -> BoxFuture<'_, Result<Vec<Pair>, QueueError>> {
        Box::pin(async move {
            self.server()?
                .storage
                .s2s_queue_pairs()
                .await
                .map_err(queue_error)
        })
    }
}
