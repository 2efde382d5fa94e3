//! Group commits: writes that arrive while a transaction is being written
//! go together into the next one, so concurrent writers share one `fsync`
//! (the database runs with `synchronous = FULL`) instead of paying one
//! each. Used by the federation queue, the message archive and the users'
//! last logouts.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Result, Storage};

/// Most changes written in one group commit.
pub const MAX_BATCH: usize = 4096;

/// A kind of change a [`BatchWriter`] writes.
pub trait BatchChange: Send + Sized + 'static {
    /// Writes `changes` in one transaction, in order; one result each.
    fn apply(storage: &Storage, changes: &[Self]) -> impl Future<Output = Result<Vec<i64>>> + Send;

    /// Whether a writer that lingers ([`BatchWriter::spawn_lingering`])
    /// commits at once when this change arrives (someone waits for it).
    fn urgent(&self) -> bool {
        false
    }
}

/// What a batch said of one change: its result, or why it failed.
pub type Written = std::result::Result<i64, String>;

/// The handle to a writer task of changes `C`.
#[derive(Debug)]
pub struct BatchWriter<C> {
    changes: mpsc::Sender<(C, oneshot::Sender<Written>)>,
}

impl<C> Clone for BatchWriter<C> {
    fn clone(&self) -> Self {
        Self {
            changes: self.changes.clone(),
        }
    }
}

const STOPPED: &str = "the storage writer stopped";

impl<C: BatchChange> BatchWriter<C> {
    /// Starts the writer task; it ends when the last handle is dropped.
    /// Each commit takes what arrived while the last one was written.
    pub fn spawn(storage: Storage) -> Self {
        Self::spawn_lingering(storage, Duration::ZERO)
    }

    /// As [`BatchWriter::spawn`], but a commit also waits up to `linger`
    /// for more changes, unless the batch fills or an urgent change
    /// arrives: fewer, larger commits, for changes nobody waits for.
    pub fn spawn_lingering(storage: Storage, linger: Duration) -> Self {
        let (changes, queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(storage, queue, linger));
        Self { changes }
    }

    /// Queues a change and returns once it is on disk, with its result.
    pub async fn write(&self, change: C) -> Written {
        let written = self.submit(change).await?;
        written.await.map_err(|_| STOPPED.to_owned())?
    }

    /// Queues a change (waiting only while the queue is full); the
    /// receiver tells when it is on disk.
    pub async fn submit(
        &self,
        change: C,
    ) -> std::result::Result<oneshot::Receiver<Written>, String> {
        let (done, written) = oneshot::channel();
        self.changes
            .send((change, done))
            .await
            .map_err(|_| STOPPED.to_owned())?;
        Ok(written)
    }
}

async fn write_batches<C: BatchChange>(
    storage: Storage,
    mut queue: mpsc::Receiver<(C, oneshot::Sender<Written>)>,
    linger: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !linger.is_zero() {
            gather(&mut queue, &mut batch, linger).await;
        }
        let (changes, waiting): (Vec<C>, Vec<_>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        let applied = C::apply(&storage, &changes).await;
        tracing::trace!(
            changes = changes.len(),
            took = ?started.elapsed(),
            "group commit of {}",
            std::any::type_name::<C>()
        );
        match applied {
            Ok(results) => {
                for (done, result) in waiting.into_iter().zip(results) {
                    let _ = done.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!("a group commit failed: {e}");
                let text = e.to_string();
                for done in waiting {
                    let _ = done.send(Err(text.clone()));
                }
            }
        }
    }
}

/// Adds to `batch` what arrives within `linger`, until it is full or holds
/// an urgent change.
async fn gather<C: BatchChange>(
    queue: &mut mpsc::Receiver<(C, oneshot::Sender<Written>)>,
    batch: &mut Vec<(C, oneshot::Sender<Written>)>,
    linger: Duration,
) {
    let until = tokio::time::Instant::now() + linger;
    let mut checked = 0;
    loop {
        if batch[checked..].iter().any(|(change, _)| change.urgent()) || batch.len() >= MAX_BATCH {
            return;
        }
        checked = batch.len();
        let room = MAX_BATCH - batch.len();
        match tokio::time::timeout_at(until, queue.recv_many(batch, room)).await {
            Ok(received) if received > 0 => {}
            // Time is up, or every handle is gone.
            _ => return,
        }
    }
}
