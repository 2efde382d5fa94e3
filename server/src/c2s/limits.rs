//! Per-IP protections: simultaneous connections and the authentication
//! failure rate.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts open connections per IP address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// A limiter admitting `max_per_ip` connections per address.
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_ip,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `ip`, or returns `None` if it has too many.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Remembers recent authentication failures per IP address.
#[derive(Debug)]
pub struct AuthLimiter {
    max_per_minute: u32,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AuthLimiter {
    /// The window over which failures are counted.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// How long a refused attempt is held before the answer.
    pub const PENALTY: Duration = Duration::from_secs(2);

    /// A limiter allowing `max_per_minute` failures per address.
    pub fn new(max_per_minute: u32) -> Arc<Self> {
        Arc::new(Self {
            max_per_minute,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `ip` may try to authenticate now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = failures.get_mut(&ip) else {
            return true;
        };
        let now = Instant::now();
        while list
            .front()
            .is_some_and(|t| now.duration_since(*t) > Self::WINDOW)
        {
            list.pop_front();
        }
        if list.is_empty() {
            failures.remove(&ip);
            return true;
        }
        list.len() < self.max_per_minute as usize
    }

    /// Records a failed attempt from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let list = failures.entry(ip).or_default();
        list.push_back(Instant::now());
        if list.len() > self.max_per_minute as usize * 2 {
            list.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_freed_on_drop() {
        let limiter = ConnectionLimiter::new(2);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let a = limiter.admit(ip).unwrap();
        let _b = limiter.admit(ip).unwrap();
        assert!(limiter.admit(ip).is_none());
        assert!(limiter.admit("127.0.0.8".parse().unwrap()).is_some());
        drop(a);
        assert!(limiter.admit(ip).is_some());
    }

    #[test]
    fn failures_over_the_limit_block() {
        let limiter = AuthLimiter::new(2);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(limiter.allowed(ip));
        limiter.record_failure(ip);
        assert!(limiter.allowed(ip));
        limiter.record_failure(ip);
        assert!(!limiter.allowed(ip));
        assert!(limiter.allowed("127.0.0.8".parse().unwrap()));
    }
}
