//! Group commits: writes that arrive while a transaction is being written
//! go together into the next one, so concurrent writers share one `fsync`
//! (the database runs with `synchronous = FULL`) instead of paying one
//! each. Used by the federation queue, the message archive and the users'
//! last logouts.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{Result, Storage};

/// Most changes written in one group commit.
pub const MAX_BATCH: usize = 4096;

/// A kind of change a [`BatchWriter`] writes.
pub trait BatchChange: Send + Sized + 'static {
    /// Writes `changes` in one transaction, in order; one result each.
    fn apply(storage: &Storage, changes: &[Self]) -> impl Future<Output = Result<Vec<i64>>> + Send;
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
    pub fn spawn(storage: Storage) -> Self {
        let (changes, queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(storage, queue));
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
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (changes, waiting): (Vec<C>, Vec<_>) = batch.drain(..).unzip();
        match C::apply(&storage, &changes).await {
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
