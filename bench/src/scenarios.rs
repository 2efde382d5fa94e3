//! The measured scenarios: message throughput (at saturation, and
//! latency at a fixed offered load), idle connections (server memory),
//! and logins per second. Each is bounded in time and count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::client::{self, find, Session, Target};
use crate::usage::CpuClock;

/// How users are named and what password they have.
#[derive(Debug, Clone)]
pub struct Users {
    /// Prefix of every user name (`{prefix}{n}`).
    pub prefix: String,
    /// Their password.
    pub password: String,
}

impl Users {
    /// The name of user `n`.
    pub fn name(&self, n: usize) -> String {
        format!("{}{n}", self.prefix)
    }
}

/// Runs `work` for each user of `range` (its name and password), at most
/// `parallel` at once; the results in user order.
async fn per_user<T, F, Fut>(
    users: &Users,
    range: std::ops::Range<usize>,
    parallel: usize,
    work: F,
) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for n in range.clone() {
        let job = work(users.name(n), users.password.clone());
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            anyhow::Ok((n, job.await?))
        });
    }
    let mut done: Vec<(usize, T)> = Vec::with_capacity(range.len());
    while let Some(result) = tasks.join_next().await {
        done.push(result??);
    }
    done.sort_by_key(|(n, _)| *n);
    Ok(done.into_iter().map(|(_, t)| t).collect())
}

/// Logs in users `range` on `target` with at most `parallel` logins at
/// once; the sessions in order.
pub async fn login_many(
    target: &Target,
    users: &Users,
    range: std::ops::Range<usize>,
    parallel: usize,
) -> Result<Vec<Session>> {
    per_user(users, range, parallel, |name, password| {
        let target = target.clone();
        async move {
            client::login(&target, &name, &password, "load")
                .await
                .with_context(|| format!("logging in {name}"))
        }
    })
    .await
}

/// Creates users `0..count` in-band (existing ones are fine).
pub async fn register_many(
    target: &Target,
    users: &Users,
    count: usize,
    parallel: usize,
) -> Result<()> {
    per_user(users, 0..count, parallel, |name, password| {
        let target = target.clone();
        async move { client::register(&target, &name, &password).await }
    })
    .await
    .map(drop)
}

/// Settings of a throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    /// Pairs of users writing to each other.
    pub pairs: usize,
    /// Messages each sender may have in flight (saturation runs).
    pub window: usize,
    /// Offered load in messages/s for all senders together; `None`:
    /// as fast as the window allows.
    pub rate: Option<f64>,
    /// Time before measuring.
    pub warmup_secs: f64,
    /// Time measured.
    pub seconds: f64,
}

/// What a throughput run measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficResult {
    /// Messages delivered per second while measuring.
    pub delivered_per_sec: f64,
    /// Messages delivered while measuring.
    pub delivered: u64,
    /// Latency percentiles, milliseconds.
    pub latency_ms: Percentiles,
    /// Error stanzas received.
    pub errors: u64,
    /// CPU the generator used while measuring, in cores.
    pub generator_cpu: f64,
    /// CPU the server used while measuring, in cores (when its pid is
    /// known).
    pub server_cpu: Option<f64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut micros: Vec<u32>) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        micros.sort_unstable();
        let at = |q: f64| {
            let index = ((micros.len() as f64 - 1.0) * q).round() as usize;
            f64::from(micros[index]) / 1000.0
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The shared state of one throughput run.
struct Run {
    start: Instant,
    measuring: AtomicBool,
    stop: AtomicBool,
    delivered: AtomicU64,
    errors: AtomicU64,
}

impl Run {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// One direction of a pair: what the sender sent and the receiver got.
#[derive(Default)]
struct Lane {
    received: AtomicU64,
    space: Notify,
}

/// Runs traffic between `a[i]` and `b[i]` (both ways) and measures it;
/// the sessions are closed at the end.
pub async fn traffic(
    a: Vec<Session>,
    b: Vec<Session>,
    settings: &Traffic,
    server_pid: Option<u32>,
) -> Result<TrafficResult> {
    if a.len() != b.len() || a.is_empty() {
        bail!("traffic needs the same number (at least one) of users on each side");
    }
    let run = Arc::new(Run::new());
    let senders = a.len() * 2;
    let turns: Vec<Arc<Notify>> = (0..senders).map(|_| Arc::new(Notify::new())).collect();
    let mut readers = JoinSet::new();
    let mut writers = JoinSet::new();
    let mut samples = Vec::new();
    let mut sender_turns = turns.iter();
    for (x, y) in a.into_iter().zip(b) {
        let to_y = Arc::new(Lane::default());
        let to_x = Arc::new(Lane::default());
        let (x_jid, y_jid) = (x.jid.clone(), y.jid.clone());
        for (session, partner, outgoing, incoming) in [
            (x, y_jid, to_y.clone(), to_x.clone()),
            (y, x_jid, to_x, to_y),
        ] {
            let Session { reader, writer, .. } = session;
            let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
            samples.push(latencies.clone());
            readers.spawn(read_messages(reader, incoming, run.clone(), latencies));
            writers.spawn(write_messages(
                writer,
                partner,
                outgoing,
                run.clone(),
                settings.window as u64,
                settings.rate.and(sender_turns.next()).cloned(),
            ));
        }
    }
    let pacer = settings
        .rate
        .map(|rate| Pacer::spawn(rate, turns, run.clone()))
        .transpose()?;
    tokio::time::sleep(Duration::from_secs_f64(settings.warmup_secs)).await;
    let generator = CpuClock::own();
    let server = server_pid.map(CpuClock::of);
    run.delivered.store(0, Ordering::Relaxed);
    run.measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(settings.seconds)).await;
    run.measuring.store(false, Ordering::Relaxed);
    let elapsed = measured_from.elapsed().as_secs_f64();
    let delivered = run.delivered.load(Ordering::Relaxed);
    let generator_cpu = generator.cores_since();
    let server_cpu = server.and_then(|s| s.cores_since_checked());
    run.stop.store(true, Ordering::Relaxed);
    if let Some(pacer) = pacer {
        pacer.stop().await;
    }
    let mut writer_halves = Vec::new();
    while let Some(done) = writers.join_next().await {
        writer_halves.push(done??);
    }
    // Let in-flight messages arrive, then stop reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    let mut latencies = Vec::new();
    for reader in samples {
        latencies.append(&mut reader.lock().unwrap_or_else(|e| e.into_inner()));
    }
    drop(writer_halves);
    let result = TrafficResult {
        delivered_per_sec: delivered as f64 / elapsed,
        delivered,
        latency_ms: Percentiles::of(latencies),
        errors: run.errors.load(Ordering::Relaxed),
        generator_cpu,
        server_cpu,
    };
    Ok(result)
}

/// The message a sender sends: about 200 bytes of OMEMO-style encrypted
/// payload, so that Tern accepts it, with the `<store/>` hint OMEMO
/// clients add (XEP-0334), so that every server's archive keeps it when
/// archiving is on; the id is the send time.
fn message(to: &str, sent_micros: u64) -> String {
    format!(
        "<message to='{to}' type='chat' id='{sent_micros}'><encrypted xmlns='eu.siacs.conversations.axolotl'>\
         <header sid='1'><key rid='2'>AAAA</key><iv>AAAAAAAAAAAAAAAA</iv></header>\
         <payload>c2VhbGVkIGJ5IHRoZSBsb2FkIGdlbmVyYXRvcg==</payload></encrypted>\
         <store xmlns='urn:xmpp:hints'/></message>"
    )
}

async fn write_messages(
    mut writer: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    partner: String,
    lane: Arc<Lane>,
    run: Arc<Run>,
    window: u64,
    turn: Option<Arc<Notify>>,
) -> Result<tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let mut sent = 0u64;
    while !run.stop.load(Ordering::Relaxed) {
        match &turn {
            Some(turn) => {
                // Turns missed while a write waited are not made up for
                // (a `Notify` keeps at most one).
                if tokio::time::timeout(Duration::from_millis(100), turn.notified())
                    .await
                    .is_err()
                {
                    continue;
                }
            }
            None => {
                while sent - lane.received.load(Ordering::Relaxed) >= window {
                    let waited =
                        tokio::time::timeout(Duration::from_millis(100), lane.space.notified())
                            .await;
                    if waited.is_err() && run.stop.load(Ordering::Relaxed) {
                        return Ok(writer);
                    }
                }
            }
        }
        writer
            .write_all(message(&partner, run.micros()).as_bytes())
            .await?;
        writer.flush().await?;
        sent += 1;
    }
    Ok(writer)
}

/// Gives senders their turns at a fixed overall rate, evenly spaced and
/// round the senders in turn. tokio's timers tick in whole milliseconds:
/// senders paced by them would all send at each millisecond (50 messages
/// at once at 50,000/s), and the server would be measured on bursts, not
/// on the offered load. So a thread of its own ticks every
/// [`Pacer::TICK`] and wakes a task that gives the turns due meanwhile
/// (one wake across threads per tick, not one per message).
struct Pacer {
    ticker: std::thread::JoinHandle<()>,
    giver: tokio::task::JoinHandle<()>,
}

impl Pacer {
    /// Shortest time between ticks (when turns are due more often);
    /// sleeps end up to the kernel's timer slack (50 µs by default) late,
    /// so turns then come about every 100 µs (5 at once at 50,000/s).
    const TICK: Duration = Duration::from_micros(50);
    /// Longest time between ticks (when turns are due less often), so
    /// that the thread sees the end of the run soon.
    const LONGEST_TICK: Duration = Duration::from_millis(10);

    fn spawn(rate: f64, turns: Vec<Arc<Notify>>, run: Arc<Run>) -> Result<Self> {
        let tick = Arc::new(Notify::new());
        let ticking = (tick.clone(), run.clone());
        let rate = rate.max(1.0);
        let every = Duration::from_secs_f64(1.0 / rate).clamp(Self::TICK, Self::LONGEST_TICK);
        let ticker = std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                let (tick, run) = ticking;
                while !run.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    tick.notify_one();
                }
            })
            .context("starting the pacer thread")?;
        let giver = tokio::spawn(Self::give_turns(rate, turns, tick, run));
        Ok(Self { ticker, giver })
    }

    async fn give_turns(rate: f64, turns: Vec<Arc<Notify>>, tick: Arc<Notify>, run: Arc<Run>) {
        let start = Instant::now();
        let mut given = 0u64;
        while !run.stop.load(Ordering::Relaxed) {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            for turn in given..due {
                turns[(turn % turns.len() as u64) as usize].notify_one();
            }
            given = given.max(due);
            // Bounded, to see the stop even if the ticker has ended.
            let _ = tokio::time::timeout(Duration::from_millis(100), tick.notified()).await;
        }
    }

    /// Waits for the pacer, which ends once the run is stopped.
    async fn stop(self) {
        let ticker = tokio::task::spawn_blocking(move || self.ticker.join());
        if !matches!(ticker.await, Ok(Ok(()))) {
            eprintln!("the pacer thread panicked");
        }
        if let Err(e) = self.giver.await {
            eprintln!("the pacer task failed: {e}");
        }
    }
}

/// Reads messages until aborted, recording the latencies (µs) seen while
/// measuring.
async fn read_messages(
    mut reader: client::StreamReader,
    lane: Arc<Lane>,
    run: Arc<Run>,
    latencies: Arc<std::sync::Mutex<Vec<u32>>>,
) -> Result<()> {
    loop {
        if !reader.fill().await? {
            return Ok(());
        }
        let mut consumed = 0;
        let buffer = reader.buffer();
        while let Some(end) = find(&buffer[consumed..], b"</message>") {
            let element = &buffer[consumed..consumed + end];
            consumed += end + b"</message>".len();
            if find(element, b"type='error'").is_some()
                || find(element, b"type=\"error\"").is_some()
            {
                run.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            lane.received.fetch_add(1, Ordering::Relaxed);
            lane.space.notify_one();
            if run.measuring.load(Ordering::Relaxed) {
                run.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = sent_at(element) {
                    let micros = run.micros().saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                    latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(micros);
                }
            }
        }
        reader.consume(consumed);
    }
}

/// The send time in a received message's id.
fn sent_at(element: &[u8]) -> Option<u64> {
    let start = find(element, b"<message")?;
    let tag_end = start + find(&element[start..], b">")?;
    let tag = &element[start..tag_end];
    let at = find(tag, b" id=")? + 5;
    let digits: Vec<u8> = tag[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// What the connections scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsResult {
    /// `(connections, server RSS in KiB)` at each level.
    pub levels: Vec<(usize, u64)>,
    /// Server memory per connection between the first and last level,
    /// KiB.
    pub kib_per_connection: f64,
}

/// Logs in idle users up to each level and reads the server's RSS there.
pub async fn connections(
    target: &Target,
    users: &Users,
    levels: &[usize],
    server_pid: u32,
) -> Result<ConnectionsResult> {
    let mut sessions = Vec::new();
    let mut measured = Vec::new();
    for &level in levels {
        if level > sessions.len() {
            let more = login_many(target, users, sessions.len()..level, 64).await?;
            sessions.extend(more);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = crate::usage::rss_kib(server_pid).context("reading the server's RSS")?;
        eprintln!("  {level} connections: server RSS {rss} KiB");
        measured.push((level, rss));
    }
    let kib_per_connection = match (measured.first(), measured.last()) {
        (Some(&(c1, r1)), Some(&(c2, r2))) if c2 > c1 => (r2 as f64 - r1 as f64) / (c2 - c1) as f64,
        _ => 0.0,
    };
    drop(sessions);
    Ok(ConnectionsResult {
        levels: measured,
        kib_per_connection,
    })
}

/// What the logins scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoginsResult {
    /// Complete logins (STARTTLS, SASL, bind) per second.
    pub per_sec: f64,
    /// Logins done while measuring.
    pub logins: u64,
    /// Failed attempts.
    pub failures: u64,
    /// CPU the generator used, in cores.
    pub generator_cpu: f64,
    /// CPU the server used, in cores.
    pub server_cpu: Option<f64>,
}

/// `workers` loops of login and logout for `seconds`.
pub async fn logins(
    target: &Target,
    users: &Users,
    workers: usize,
    seconds: f64,
    server_pid: Option<u32>,
) -> Result<LoginsResult> {
    // One login each first: the client caches salted passwords, as real
    // clients do.
    drop(login_many(target, users, 0..workers, workers).await?);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let generator = CpuClock::own();
    let server = server_pid.map(CpuClock::of);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 0..workers {
        let (target, name, password, done, failed) = (
            target.clone(),
            users.name(n),
            users.password.clone(),
            done.clone(),
            failed.clone(),
        );
        tasks.spawn(async move {
            while Instant::now() < deadline {
                match client::login(&target, &name, &password, "login").await {
                    Ok(mut session) => {
                        let _ = session.writer.write_all(b"</stream:stream>").await;
                        let _ = session.writer.shutdown().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let logins = done.load(Ordering::Relaxed);
    Ok(LoginsResult {
        per_sec: logins as f64 / elapsed,
        logins,
        failures: failed.load(Ordering::Relaxed),
        generator_cpu: generator.cores_since(),
        server_cpu: server.and_then(|s| s.cores_since_checked()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pacer never gives more turns than are due, gives them round
    /// the senders, and stops with the run.
    #[tokio::test]
    async fn the_pacer_gives_the_turns_due_round_the_senders() {
        let run = Arc::new(Run::new());
        let turns: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let mut takers = JoinSet::new();
        for turn in &turns {
            let (turn, run) = (turn.clone(), run.clone());
            takers.spawn(async move {
                let mut taken = 0u64;
                while !run.stop.load(Ordering::Relaxed) {
                    if tokio::time::timeout(Duration::from_millis(20), turn.notified())
                        .await
                        .is_ok()
                    {
                        taken += 1;
                    }
                }
                taken
            });
        }
        let rate = 2000.0;
        let started = Instant::now();
        let pacer = Pacer::spawn(rate, turns, run.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        run.stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        pacer.stop().await;
        let mut taken = Vec::new();
        while let Some(count) = takers.join_next().await {
            taken.push(count.unwrap());
        }
        let total: u64 = taken.iter().sum();
        assert!(
            total as f64 <= rate * elapsed + 1.0,
            "{taken:?} in {elapsed} s"
        );
        // Liveness only (a busy machine may give fewer, never more).
        assert!(total >= 100, "{taken:?} in {elapsed} s");
        let (fewest, most) = (taken.iter().min(), taken.iter().max());
        assert!(
            most.zip(fewest).is_some_and(|(m, f)| m - f <= 1 + m / 4),
            "{taken:?}"
        );
    }

    #[test]
    fn send_times_are_read_back_whatever_the_quoting() {
        assert_eq!(
            sent_at(b"<message from='a' id='1234' type='chat'><body/>"),
            Some(1234)
        );
        assert_eq!(sent_at(b"<message id=\"99\" to=\"b\"><x/>"), Some(99));
        assert_eq!(sent_at(b"<message to='b'>"), None);
        let p = Percentiles::of(vec![1000, 2000, 3000, 4000]);
        assert_eq!((p.p50, p.max), (3.0, 4.0));
    }
}
