//! The queue of what the rest of the server sends to one client session:
//! bounded in items and in bytes, many senders, one receiver. It
//! allocates nothing until something is queued and releases its storage
//! once drained, so an idle session's queue is a few dozen bytes (tokio's
//! mpsc channel allocates its first block of slots up front: about 1 KiB
//! per session). A sender may ask the receiver to stop what it is doing
//! ([`QueueSender::request_close`], [`CloseSignal`]): a session stuck
//! writing to a client that does not read is closed that way.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A new queue holding at most `capacity` items of at most
/// `byte_capacity` bytes in all (but for [`QueueSender::force_send`]; an
/// empty queue takes one item of any size).
pub fn queue<T>(capacity: usize, byte_capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        capacity,
        byte_capacity,
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            senders: 1,
            receiver_closed: false,
            receiver: None,
            close_requested: false,
            overflowed: false,
            close_waiter: None,
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
    byte_capacity: usize,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// The items with the bytes each counts for.
    items: VecDeque<(T, usize)>,
    /// The bytes of the items queued.
    bytes: usize,
    /// Live senders: none left, and nothing queued, ends the queue.
    senders: usize,
    /// The receiver closed the queue, or is gone.
    receiver_closed: bool,
    /// The receiver waiting for an item.
    receiver: Option<Waker>,
    /// A sender asked the receiver to close.
    close_requested: bool,
    /// An item was refused for want of room since the receiver last
    /// asked ([`QueueReceiver::take_overflowed`]).
    overflowed: bool,
    /// Whoever waits for that ([`CloseSignal::requested`]).
    close_waiter: Option<Waker>,
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
    /// Queues `item`, counting `bytes`, unless the queue is full or
    /// closed.
    pub fn try_send(&self, item: T, bytes: usize) -> Result<(), TrySendError<T>> {
        self.push(item, bytes, true)
    }

    /// Queues `item` even when the queue is full (for the rare item that
    /// must get through, such as a request to close); only a closed
    /// queue refuses it.
    pub fn force_send(&self, item: T) -> Result<(), T> {
        self.push(item, 0, false).map_err(|e| match e {
            TrySendError::Full(item) | TrySendError::Closed(item) => item,
        })
    }

    /// Asks the receiver to close: wakes whoever waits on its
    /// [`CloseSignal`].
    pub fn request_close(&self) {
        let mut state = self.shared.lock();
        state.close_requested = true;
        let waiter = state.close_waiter.take();
        drop(state);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    fn push(&self, item: T, bytes: usize, bounded: bool) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if state.receiver_closed {
            return Err(TrySendError::Closed(item));
        }
        let full = state.items.len() >= self.shared.capacity
            || (!state.items.is_empty()
                && state.bytes.saturating_add(bytes) > self.shared.byte_capacity);
        if bounded && full {
            state.overflowed = true;
            return Err(TrySendError::Full(item));
        }
        state.bytes += bytes;
        state.items.push_back((item, bytes));
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

    /// The bytes of the items queued.
    pub fn bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Whether an item was refused for want of room since the last call.
    pub fn take_overflowed(&mut self) -> bool {
        std::mem::take(&mut self.shared.lock().overflowed)
    }

    /// A handle that tells when a sender asked this receiver to close.
    pub fn close_signal(&self) -> CloseSignal<T> {
        CloseSignal {
            shared: self.shared.clone(),
        }
    }
}

/// Tells when a sender asked the receiver to close
/// ([`QueueSender::request_close`]).
#[derive(Debug)]
pub struct CloseSignal<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for CloseSignal<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> CloseSignal<T> {
    /// Returns once a sender asked the receiver to close (at once if one
    /// did already).
    pub async fn requested(&self) {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.close_requested {
                return Poll::Ready(());
            }
            match &mut state.close_waiter {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waiter => *waiter = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
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
    let (item, bytes) = state.items.pop_front()?;
    state.bytes -= bytes;
    if state.items.is_empty() {
        state.items = VecDeque::new();
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_until_every_sender_is_gone() {
        let (tx, mut rx) = queue(8, usize::MAX);
        let other = tx.clone();
        tx.try_send(1, 1).unwrap();
        other.try_send(2, 1).unwrap();
        assert!(!rx.is_empty());
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        assert!(rx.is_empty());
        drop(tx);
        other.try_send(3, 1).unwrap();
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
        let (tx, mut rx) = queue(8, usize::MAX);
        let receiver = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send("a", 1).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let received = tokio::time::timeout(Duration::from_secs(5), receiver).await;
        assert_eq!(received.unwrap().unwrap(), (Some("a"), None));
    }

    #[test]
    fn a_full_queue_refuses_but_a_forced_item_gets_through() {
        let (tx, mut rx) = queue(2, usize::MAX);
        tx.try_send(1, 1).unwrap();
        tx.try_send(2, 1).unwrap();
        assert_eq!(tx.try_send(3, 1), Err(TrySendError::Full(3)));
        tx.force_send(4).unwrap();
        assert_eq!(
            std::iter::from_fn(|| rx.try_recv()).collect::<Vec<_>>(),
            [1, 2, 4]
        );
    }

    #[test]
    fn a_closed_queue_refuses_new_items_and_keeps_the_queued_ones() {
        let (tx, mut rx) = queue(8, usize::MAX);
        tx.try_send(1, 1).unwrap();
        rx.close();
        assert_eq!(tx.try_send(2, 1), Err(TrySendError::Closed(2)));
        assert_eq!(tx.force_send(3), Err(3));
        assert_eq!(rx.try_recv(), Some(1));
        drop(rx);
        assert_eq!(tx.try_send(4, 1), Err(TrySendError::Closed(4)));
    }

    #[test]
    fn bytes_bound_the_queue_but_an_empty_queue_takes_any_item() {
        let (tx, mut rx) = queue(100, 1000);
        tx.try_send("big", 5000).unwrap();
        assert_eq!(rx.bytes(), 5000);
        assert_eq!(tx.try_send("small", 1), Err(TrySendError::Full("small")));
        assert_eq!(rx.try_recv(), Some("big"));
        assert_eq!(rx.bytes(), 0);
        tx.try_send("a", 600).unwrap();
        assert_eq!(tx.try_send("b", 600), Err(TrySendError::Full("b")));
        tx.try_send("c", 400).unwrap();
        assert_eq!(rx.bytes(), 1000);
        assert!(rx.take_overflowed());
        assert!(!rx.take_overflowed());
    }

    #[tokio::test]
    async fn a_close_request_wakes_the_signal() {
        let (tx, rx) = queue::<u8>(8, usize::MAX);
        let signal = rx.close_signal();
        let waiting = tokio::spawn(async move { signal.requested().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        tx.request_close();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        // Once requested, it stays requested.
        tokio::time::timeout(Duration::from_secs(5), rx.close_signal().requested())
            .await
            .expect("at once");
    }

    #[test]
    fn a_drained_queue_holds_no_storage() {
        let (tx, mut rx) = queue(8, usize::MAX);
        for i in 0..5 {
            tx.try_send(i, 1).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(tx.shared.lock().items.capacity(), 0);
    }
}
