//! Stream Management (XEP-0198) primitives shared by client and server
//! streams.

/// Acknowledgements waiting for durability, sent in order: the oldest
/// `<r/>`'s, and the latest one's behind it (the ones between are
/// covered by it, `h` being a count). Neither starves the other: the
/// oldest is not replaced by newer requests.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingAcks {
    first: Option<(u32, u64)>,
    latest: Option<(u32, u64)>,
}

impl PendingAcks {
    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The one to send next, with its mark.
    pub fn first(&self) -> Option<(u32, u64)> {
        self.first
    }

    /// Queues the answer to an `<r/>`: `h` once `mark` is durable.
    pub fn push(&mut self, h: u32, mark: u64) {
        if self.first.is_none() {
            self.first = Some((h, mark));
        } else {
            self.latest = Some((h, mark));
        }
    }

    /// The first's `h`, the latest moving up.
    pub fn pop(&mut self) -> Option<u32> {
        let (h, _) = self.first.take()?;
        self.first = self.latest.take();
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_go_in_order_and_the_oldest_is_not_replaced() {
        let mut pending = PendingAcks::default();
        assert!(pending.is_empty());
        pending.push(3, 10);
        pending.push(5, 11);
        pending.push(9, 12);
        assert_eq!(pending.first(), Some((3, 10)));
        assert_eq!(pending.pop(), Some(3));
        assert_eq!(pending.first(), Some((9, 12)));
        assert_eq!(pending.pop(), Some(9));
        assert_eq!(pending.pop(), None);
    }
}
