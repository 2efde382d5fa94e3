//! Group commits: writes that arrive while a transaction is being written
//! go together into the next one, so concurrent writers share one `fsync`
//! (the database runs with `synchronous = FULL`) instead of paying one
//! each. Used by the federation queue and the users' last logouts (the
//! archive stages its entries instead: `archive/writer.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

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
    changes: mpsc::Sender<Queued<C>>,
    /// Ends a lingering writer's wait early: an urgent change came, or
    /// half a batch waits in the queue.
    wake: Arc<Notify>,
}

/// A change in the writer's queue, with whoever waits for its result.
#[derive(Debug)]
struct Queued<C> {
    change: C,
    done: Option<oneshot::Sender<Written>>,
}

impl<C> Clone for BatchWriter<C> {
    fn clone(&self) -> Self {
        Self {
            changes: self.changes.clone(),
            wake: self.wake.clone(),
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
    /// for more changes, unless half a batch waits in the queue or an
    /// urgent change arrives: fewer, larger commits, for changes nobody
    /// waits for. The writer sleeps while it lingers; the changes queued
    /// meanwhile do not wake it one by one.
    pub fn spawn_lingering(storage: Storage, linger: Duration) -> Self {
        let (changes, queue) = mpsc::channel(MAX_BATCH * 4);
        let wake = Arc::new(Notify::new());
        tokio::spawn(write_batches(storage, queue, linger, wake.clone()));
        Self { changes, wake }
    }

    /// Queues a change and returns once it is on disk, with its result.
    pub async fn write(&self, change: C) -> Written {
        let (done, written) = oneshot::channel();
        self.send(change, Some(done)).await?;
        written.await.map_err(|_| STOPPED.to_owned())?
    }

    /// Queues a change nobody waits for (waiting only while the queue is
    /// full); a failure to write it is logged by the writer.
    pub async fn queue(&self, change: C) -> std::result::Result<(), String> {
        self.send(change, None).await
    }

    async fn send(
        &self,
        change: C,
        done: Option<oneshot::Sender<Written>>,
    ) -> std::result::Result<(), String> {
        let urgent = change.urgent();
        self.changes
            .send(Queued { change, done })
            .await
            .map_err(|_| STOPPED.to_owned())?;
        let queued = self.changes.max_capacity() - self.changes.capacity();
        if urgent || queued >= MAX_BATCH / 2 {
            self.wake.notify_one();
        }
        Ok(())
    }
}

async fn write_batches<C: BatchChange>(
    storage: Storage,
    mut queue: mpsc::Receiver<Queued<C>>,
    linger: Duration,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !linger.is_zero() {
            gather(&mut queue, &mut batch, linger, &wake).await;
        }
        let (changes, waiting): (Vec<C>, Vec<_>) = batch
            .drain(..)
            .map(|queued| (queued.change, queued.done))
            .unzip();
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
                    if let Some(done) = done {
                        let _ = done.send(Ok(result));
                    }
                }
            }
            Err(e) => {
                tracing::error!("a group commit failed: {e}");
                let text = e.to_string();
                for done in waiting.into_iter().flatten() {
                    let _ = done.send(Err(text.clone()));
                }
            }
        }
    }
}

/// Unless `batch` is full or holds an urgent change: sleeps for `linger`
/// (or until woken), then adds to `batch` what arrived meanwhile, up to a
/// whole batch.
async fn gather<C: BatchChange>(
    queue: &mut mpsc::Receiver<Queued<C>>,
    batch: &mut Vec<Queued<C>>,
    linger: Duration,
    wake: &Notify,
) {
    let ready = |batch: &[Queued<C>]| {
        batch.len() >= MAX_BATCH || batch.iter().any(|queued| queued.change.urgent())
    };
    if ready(batch) {
        return;
    }
    // A wake-up left over from an earlier batch only makes this one smaller.
    let _ = tokio::time::timeout(linger, wake.notified()).await;
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(queued) => batch.push(queued),
            // Empty, or every handle is gone.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A change that records the size of every batch it is written in.
    #[derive(Debug)]
    struct Counted {
        batches: Arc<Mutex<Vec<usize>>>,
        urgent: bool,
    }

    impl BatchChange for Counted {
        async fn apply(_: &Storage, changes: &[Self]) -> Result<Vec<i64>> {
            if let Some(first) = changes.first() {
                first.batches.lock().unwrap().push(changes.len());
            }
            Ok(vec![0; changes.len()])
        }

        fn urgent(&self) -> bool {
            self.urgent
        }
    }

    async fn lingering_writer(
        linger: Duration,
    ) -> (
        tempfile::TempDir,
        BatchWriter<Counted>,
        Arc<Mutex<Vec<usize>>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let writer = BatchWriter::spawn_lingering(storage, linger);
        (dir, writer, Arc::default())
    }

    fn change(batches: &Arc<Mutex<Vec<usize>>>, urgent: bool) -> Counted {
        Counted {
            batches: batches.clone(),
            urgent,
        }
    }

    #[tokio::test]
    async fn changes_queued_while_the_writer_lingers_go_in_one_batch() {
        let (_dir, writer, batches) = lingering_writer(Duration::from_millis(200)).await;
        for _ in 0..100 {
            writer.queue(change(&batches, false)).await.unwrap();
        }
        // The urgent change is queued after the others: it ends the wait,
        // and everything before it is in its batch.
        let written = tokio::time::timeout(
            Duration::from_secs(10),
            writer.write(change(&batches, true)),
        );
        written
            .await
            .expect("the urgent change is written")
            .unwrap();
        assert_eq!(*batches.lock().unwrap(), [101]);
    }

    #[tokio::test]
    async fn an_urgent_change_does_not_wait_for_the_linger() {
        let (_dir, writer, batches) = lingering_writer(Duration::from_secs(3600)).await;
        writer.queue(change(&batches, false)).await.unwrap();
        let written = tokio::time::timeout(
            Duration::from_secs(10),
            writer.write(change(&batches, true)),
        );
        written.await.expect("written before the linger").unwrap();
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 2);
    }

    #[tokio::test]
    async fn half_a_batch_in_the_queue_is_written_without_waiting_for_the_linger() {
        let (_dir, writer, batches) = lingering_writer(Duration::from_secs(3600)).await;
        for _ in 0..MAX_BATCH * 2 {
            writer.queue(change(&batches, false)).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while batches.lock().unwrap().iter().sum::<usize>() < MAX_BATCH {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the changes waited for the linger: {:?}",
                batches.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(batches
            .lock()
            .unwrap()
            .iter()
            .all(|&size| size <= MAX_BATCH));
    }
}
