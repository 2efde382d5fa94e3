//! The queue of what the rest of the server sends to one client session:
//! bounded, many senders, one receiver. It allocates nothing until
//! something is queued and releases its storage once drained, so an idle
//! session's queue is a few dozen bytes (tokio's mpsc channel allocates
//! its first block of slots up front: about 1 KiB per session).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A new queue holding at most `capacity` items (but for
/// [`QueueSender::force_send`]).
pub fn queue<T>(capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        capacity,
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_closed: false,
            receiver: None,
        }),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

#[derive(Debug)]
struct Shared<T> {
    capacity: usize,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Live senders: none left, and nothing queued, ends the queue.
    senders: usize,
    /// The receiver closed the queue, or is gone.
    receiver_closed: bool,
    /// The receiver waiting for an item.
    receiver: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; if something did, the
        // queue itself would still be consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why [`QueueSender::try_send`] gave its item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The receiver closed the queue or is gone.
    Closed(T),
}

/// A sending half; clones send to the same queue.
#[derive(Debug)]
pub struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueSender<T> {
    /// Queues `item` unless the queue is full or closed.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.push(item, true)
    }

    /// Queues `item` even when the queue is full (for the rare item that
    /// must get through, such as a request to close); only a closed
    /// queue refuses it.
    pub fn force_send(&self, item: T) -> Result<(), T> {
        self.push(item, false).map_err(|e| match e {
            TrySendError::Full(item) | TrySendError::Closed(item) => item,
        })
    }

    fn push(&self, item: T, bounded: bool) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if state.receiver_closed {
            return Err(TrySendError::Closed(item));
        }
        if bounded && state.items.len() >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Ok(())
    }
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let receiver = if state.senders == 0 {
            state.receiver.take()
        } else {
            None
        };
        drop(state);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueReceiver<T> {
    /// The next item; `None` once every sender is gone (or the queue is
    /// closed) and nothing is left. Cancel-safe: an item is taken only
    /// when returned.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(item) = pop(&mut state) {
            return Poll::Ready(Some(item));
        }
        if state.senders == 0 || state.receiver_closed {
            return Poll::Ready(None);
        }
        match &mut state.receiver {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            receiver => *receiver = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next item, if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        pop(&mut self.shared.lock())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// Refuses further items; those queued can still be taken.
    pub fn close(&mut self) {
        self.shared.lock().receiver_closed = true;
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_closed = true;
        // Dropped outside the lock: an item's drop may send elsewhere.
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
    }
}

/// Takes the first item; the storage goes once the queue is empty.
fn pop<T>(state: &mut State<T>) -> Option<T> {
    let item = state.items.pop_front();
    if item.is_some() && state.items.is_empty() {
        state.items = VecDeque::new();
    }
    item
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_until_every_sender_is_gone() {
        let (tx, mut rx) = queue(8);
        let other = tx.clone();
        tx.try_send(1).unwrap();
        other.try_send(2).unwrap();
        assert!(!rx.is_empty());
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        assert!(rx.is_empty());
        drop(tx);
        other.try_send(3).unwrap();
        drop(other);
        assert_eq!(
            rx.recv().await,
            Some(3),
            "queued before the last sender left"
        );
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_and_by_the_last_sender_leaving() {
        let (tx, mut rx) = queue(8);
        let receiver = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send("a").unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let received = tokio::time::timeout(Duration::from_secs(5), receiver).await;
        assert_eq!(received.unwrap().unwrap(), (Some("a"), None));
    }

    #[test]
    fn a_full_queue_refuses_but_a_forced_item_gets_through() {
        let (tx, mut rx) = queue(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        tx.force_send(4).unwrap();
        assert_eq!(
            std::iter::from_fn(|| rx.try_recv()).collect::<Vec<_>>(),
            [1, 2, 4]
        );
    }

    #[test]
    fn a_closed_queue_refuses_new_items_and_keeps_the_queued_ones() {
        let (tx, mut rx) = queue(8);
        tx.try_send(1).unwrap();
        rx.close();
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
        assert_eq!(tx.force_send(3), Err(3));
        assert_eq!(rx.try_recv(), Some(1));
        drop(rx);
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
    }

    #[test]
    fn a_drained_queue_holds_no_storage() {
        let (tx, mut rx) = queue(8);
        for i in 0..5 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(tx.shared.lock().items.capacity(), 0);
    }
}
