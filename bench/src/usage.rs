//! What processes use, from `/proc`: CPU time (to show that the generator
//! is not the bottleneck, and what the server spent) and resident memory.

use std::time::Instant;

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time of a process since a moment.
#[derive(Debug)]
pub struct CpuClock {
    pid: Option<u32>,
    ticks: Option<u64>,
    since: Instant,
}

impl CpuClock {
    /// Starts measuring this process.
    pub fn own() -> Self {
        Self::start(None)
    }

    /// Starts measuring process `pid`.
    pub fn of(pid: u32) -> Self {
        Self::start(Some(pid))
    }

    fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            ticks: cpu_ticks(pid),
            since: Instant::now(),
        }
    }

    /// Cores used on average since the start (0 when unreadable).
    pub fn cores_since(&self) -> f64 {
        self.cores_since_checked().unwrap_or(0.0)
    }

    /// Cores used on average since the start, if readable.
    pub fn cores_since_checked(&self) -> Option<f64> {
        let used = cpu_ticks(self.pid)?.checked_sub(self.ticks?)? as f64 / TICKS_PER_SEC;
        Some(used / self.since.elapsed().as_secs_f64())
    }
}

/// User plus system time of a process (`None`: this one), in ticks.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) in brackets.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        let clock = CpuClock::own();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(clock.cores_since_checked().is_some());
    }
}
