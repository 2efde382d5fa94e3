//! The archive's message log: the bytes of archived stanzas, appended once
//! per group commit to numbered segment files in `archive-log/` of the
//! data directory, and read back by place. The archive's chunks in SQLite
//! say where each of their messages lies (a segment, an offset, a length);
//! the log itself holds nothing but the stanzas, one after another.
//!
//! A segment's bytes are live while a chunk points into them. Bytes no
//! chunk points to (a deleted account's, an expired message's, a write
//! whose transaction failed) stay until the segment is compacted: its live
//! messages are copied to the newest segment and the file is removed
//! (`archive.rs` decides when).
//!
//! Appends run on a thread of their own below routing's priority, as the
//! archive's SQLite writes do: a commit's `write` and `fdatasync` are
//! milliseconds of work that routing should not wait behind.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use tokio::sync::{oneshot, RwLock, RwLockReadGuard};

use super::{Result, StorageError};

/// A segment grows to about this size before the next append starts a
/// new one (one append is never split).
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The name of the appending thread (Linux keeps 15 bytes of it).
const LOG_THREAD: &str = "tern-msg-log";

/// Where an append's bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The segment written.
    pub segment: u32,
    /// The offset of the first byte in it.
    pub offset: u64,
}

/// A stanza's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    /// The byte offset in its segment.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u32,
}

/// The message log of one data directory.
#[derive(Debug)]
pub struct MessageLog {
    dir: PathBuf,
    /// The appending thread's queue, started by the first append.
    appender: Mutex<Option<mpsc::Sender<Job>>>,
    /// Held by readers while they go from chunks to the log, and by the
    /// removal of a segment: a reader that saw a chunk point into a
    /// segment finds the file still there.
    removal: RwLock<()>,
}

/// Work for the appending thread.
type Job = Box<dyn FnOnce(&mut Appending) + Send>;

/// The appending thread's state: the newest segment, opened on first use.
#[derive(Debug)]
struct Appending {
    dir: PathBuf,
    segment: u32,
    file: Option<File>,
    /// Where the next append goes in the segment.
    len: u64,
    /// What goes to the disk next: the segment's last partial block, then
    /// the bytes being appended, then zeros to the end of their block.
    blocks: AlignedBuffer,
}

/// The size appends are written in: file offsets, lengths and memory
/// addresses of writes that bypass the page cache are multiples of it
/// (4 KiB is the logical block size of every disk in use).
const BLOCK: usize = 4096;

/// A reused buffer whose bytes start at a multiple of [`BLOCK`] in memory.
#[derive(Debug, Default)]
struct AlignedBuffer {
    raw: Vec<u8>,
    /// Where the aligned bytes start in `raw`.
    start: usize,
    /// How many bytes are in use.
    len: usize,
}

impl AlignedBuffer {
    /// The most memory kept between appends.
    const KEPT_BYTES: usize = 16 * 1024 * 1024;

    /// Keeps the first `keep` bytes and makes room for `more` after them
    /// and the padding to a whole block.
    fn make_room(&mut self, keep: usize, more: usize) {
        let needed = (keep + more).div_ceil(BLOCK) * BLOCK;
        if self.raw.len() - self.start < needed {
            let mut raw = vec![0; needed + BLOCK];
            let start = raw.as_ptr().align_offset(BLOCK);
            raw[start..start + keep].copy_from_slice(&self.raw[self.start..self.start + keep]);
            self.raw = raw;
            self.start = start;
        }
        self.len = keep;
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.start + self.len;
        self.raw[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The bytes in use, with zeros to the end of their last block.
    fn padded(&mut self) -> &[u8] {
        let padded = self.len.div_ceil(BLOCK) * BLOCK;
        self.raw[self.start + self.len..self.start + padded].fill(0);
        &self.raw[self.start..self.start + padded]
    }

    /// Keeps only the last `tail` bytes in use, moved to the start (the
    /// partial block the next write begins with); gives up memory a
    /// large batch took.
    fn keep_tail(&mut self, tail: usize) {
        let from = self.start + self.len - tail;
        if self.raw.len() > Self::KEPT_BYTES {
            let kept = self.raw[from..from + tail].to_vec();
            *self = Self::default();
            self.make_room(0, tail);
            self.push(&kept);
        } else {
            self.raw.copy_within(from..from + tail, self.start);
            self.len = tail;
        }
    }
}

impl MessageLog {
    /// The log in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self> {
        tern_xmpp::private::private_dir(dir).map_err(|source| StorageError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            appender: Mutex::new(None),
            removal: RwLock::new(()),
        })
    }

    /// The segments on disk and their sizes, in order.
    pub fn segments(&self) -> Result<BTreeMap<u32, u64>> {
        let mut segments = BTreeMap::new();
        for file in std::fs::read_dir(&self.dir).map_err(io_error)? {
            let file = file.map_err(io_error)?;
            let name = file.file_name();
            let Some(segment) = name.to_str().and_then(segment_number) else {
                continue;
            };
            segments.insert(segment, file.metadata().map_err(io_error)?.len());
        }
        Ok(segments)
    }

    /// Appends `bytes` to the newest segment and syncs them to disk.
    pub async fn append(&self, bytes: Vec<u8>) -> Result<Appended> {
        self.on_appender(move |log| log.append(&bytes)).await
    }

    /// The segment the next append goes to.
    pub async fn newest(&self) -> Result<u32> {
        self.on_appender(|log| Ok(log.segment)).await
    }

    /// Starts a new segment for the next append, so that the one before
    /// can be compacted; returns the new one.
    pub async fn roll(&self) -> Result<u32> {
        self.on_appender(|log| {
            log.next_segment();
            Ok(log.segment)
        })
        .await
    }

    /// While the guard is held, no segment is removed: a reader takes it
    /// before reading chunks and keeps it until it has read their stanzas.
    pub async fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.removal.read().await
    }

    /// The stanzas at `places` of `segment`, in order.
    pub async fn read(&self, segment: u32, places: Vec<Place>) -> Result<Vec<String>> {
        let path = self.path(segment);
        blocking(move || {
            let file = File::open(&path)?;
            places
                .iter()
                .map(|place| {
                    let mut bytes = vec![0; place.len as usize];
                    file.read_exact_at(&mut bytes, place.offset)?;
                    String::from_utf8(bytes).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "a logged stanza is not UTF-8")
                    })
                })
                .collect()
        })
        .await
    }

    /// The whole of `segment`.
    pub async fn read_segment(&self, segment: u32) -> Result<Vec<u8>> {
        let path = self.path(segment);
        blocking(move || std::fs::read(path)).await
    }

    /// Removes segments, once no reader is between a chunk and the log.
    pub async fn remove(&self, segments: &[u32]) -> Result<()> {
        let _removing = self.removal.write().await;
        for &segment in segments {
            match std::fs::remove_file(self.path(segment)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Stops the appending thread (it finishes what it was given).
    pub fn close(&self) {
        if let Ok(mut appender) = self.appender.lock() {
            appender.take();
        }
    }

    fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// Runs `work` on the appending thread, starting it if needed.
    async fn on_appender<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Appending) -> io::Result<R> + Send + 'static,
    ) -> Result<R> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |log| {
            let _ = done.send(work(log));
        });
        self.appender_queue()?.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?.map_err(io_error)
    }

    fn appender_queue(&self) -> Result<mpsc::Sender<Job>> {
        let mut appender = self.appender.lock().map_err(|_| stopped())?;
        if let Some(queue) = appender.as_ref() {
            return Ok(queue.clone());
        }
        let newest = self.segments()?.keys().next_back().copied().unwrap_or(1);
        let mut state = Appending {
            dir: self.dir.clone(),
            segment: newest,
            file: None,
            len: 0,
            blocks: AlignedBuffer::default(),
        };
        let (queue, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(LOG_THREAD.to_owned())
            .spawn(move || {
                super::lower_priority_of_threads(LOG_THREAD, super::ARCHIVE_NICENESS);
                for job in jobs {
                    job(&mut state);
                }
            })
            .map_err(io_error)?;
        *appender = Some(queue.clone());
        Ok(queue)
    }
}

impl Appending {
    /// Appends `bytes` and syncs them; where they went.
    ///
    /// Writes bypass the page cache (O_DIRECT, where the file system
    /// allows it): filling new page-cache pages cost more than anything
    /// else in the write (on the development machine, buffered appends
    /// ran at 0.35 GB/s of CPU time, against 6 GB/s to overwrite cached
    /// pages), and nothing reads a message back soon. So every write
    /// covers whole blocks: it starts with the last partial block written
    /// (kept in memory) and ends with zeros, which the next append
    /// overwrites. Readers never look past the places chunks give.
    fn append(&mut self, bytes: &[u8]) -> io::Result<Appended> {
        if self.file.is_some() && self.len > 0 && self.len + bytes.len() as u64 > SEGMENT_BYTES {
            self.next_segment();
        }
        let segment = self.segment;
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let (file, len) = open_for_appending(&self.dir.join(segment_name(segment)))?;
                self.len = len;
                self.file.insert(file)
            }
        };
        let offset = self.len;
        // A segment just opened starts on a block: nothing kept applies.
        let tail = (offset % BLOCK as u64) as usize;
        self.blocks.make_room(tail, bytes.len());
        self.blocks.push(bytes);
        let written = file
            .write_all_at(self.blocks.padded(), offset - tail as u64)
            .and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                self.len += bytes.len() as u64;
                let tail = (self.len % BLOCK as u64) as usize;
                self.blocks.keep_tail(tail);
                Ok(Appended { segment, offset })
            }
            Err(e) => {
                // Part of it may be there: the next append reopens the
                // file and goes after whatever it holds.
                self.file = None;
                Err(e)
            }
        }
    }

    fn next_segment(&mut self) {
        self.segment += 1;
        self.file = None;
        self.len = 0;
    }
}

/// Opens a segment for writing, bypassing the page cache where the file
/// system allows it; returns it with where appends go: after what it
/// holds, rounded up to a whole block (the rest of a block written
/// otherwise, or a failed write, is never read).
fn open_for_appending(path: &Path) -> io::Result<(File, u64)> {
    let mut options = tern_xmpp::private::private_options();
    options.create(true).write(true);
    let file = match open_direct(&options, path)? {
        Some(file) => file,
        None => options.open(path)?,
    };
    let len = file.metadata()?.len().div_ceil(BLOCK as u64) * BLOCK as u64;
    Ok((file, len))
}

/// Opens `path` for writes that bypass the page cache; `None` where the
/// file system does not allow them (tmpfs before Linux 6.6, some FUSE
/// and network file systems).
#[cfg(target_os = "linux")]
fn open_direct(options: &OpenOptions, path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(flag) = i32::try_from(rustix::fs::OFlags::DIRECT.bits()) else {
        return Ok(None);
    };
    match options.clone().custom_flags(flag).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &OpenOptions, _: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// The file name of a segment.
fn segment_name(segment: u32) -> String {
    format!("{segment:08}.log")
}

/// The segment a file name names.
fn segment_number(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> io::Result<R> + Send + 'static,
) -> Result<R> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| stopped())?
        .map_err(io_error)
}

fn io_error(e: io::Error) -> StorageError {
    StorageError::Log(e)
}

fn stopped() -> StorageError {
    StorageError::Log(io::Error::other("the message log's thread stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(lens: &[u32], from: u64) -> Vec<Place> {
        let mut offset = from;
        lens.iter()
            .map(|&len| {
                let place = Place { offset, len };
                offset += u64::from(len);
                place
            })
            .collect()
    }

    #[tokio::test]
    async fn appended_stanzas_are_read_back_by_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = MessageLog::open(dir.path()).expect("log");
        let first = log.append(b"<a/><bb/>".to_vec()).await.expect("append");
        let second = log
            .append("<é/>".as_bytes().to_vec())
            .await
            .expect("append");
        assert_eq!(
            first,
            Appended {
                segment: 1,
                offset: 0
            }
        );
        assert_eq!(
            second,
            Appended {
                segment: 1,
                offset: 9
            }
        );
        let read = log.read(1, places(&[4, 5, 5], 0)).await.expect("read");
        assert_eq!(read, ["<a/>", "<bb/>", "<é/>"]);
        let end = BLOCK as u64;
        assert!(
            log.read(1, places(&[1], end)).await.is_err(),
            "past the end"
        );
        assert!(log.read(1, places(&[2], 9)).await.is_err(), "not UTF-8");
        log.close();

        // Reopened, the log goes on after the block it ended in.
        let log = MessageLog::open(dir.path()).expect("log");
        let third = log.append(b"<c/>".to_vec()).await.expect("append");
        assert_eq!(
            third,
            Appended {
                segment: 1,
                offset: end
            }
        );
        let read = log.read(1, places(&[4, 5, 5], 0)).await.expect("read");
        assert_eq!(read, ["<a/>", "<bb/>", "<é/>"], "still there");
        assert_eq!(
            log.read(1, places(&[4], end)).await.expect("read"),
            ["<c/>"]
        );
    }

    #[tokio::test]
    async fn appends_across_blocks_keep_every_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = MessageLog::open(dir.path()).expect("log");
        // Ends mid-block, on a block's end, one byte past it, and spans
        // several blocks; every write rewrites the partial block before.
        let sizes = [5000, 3192, 1, 4095, 9000, 3, BLOCK * 5 + 17];
        let mut expected = Vec::new();
        let mut offset = 0u64;
        for (n, &size) in sizes.iter().enumerate() {
            let letter = char::from(b'a' + n as u8);
            let text = letter.to_string().repeat(size);
            let appended = log.append(text.clone().into_bytes()).await.expect("append");
            assert_eq!(appended.offset, offset, "append {n}");
            offset += size as u64;
            expected.push(text);
        }
        let lens: Vec<u32> = sizes.iter().map(|&s| s as u32).collect();
        let read = log.read(1, places(&lens, 0)).await.expect("read");
        assert_eq!(read, expected);
        // A batch larger than what is kept between appends.
        let large = "z".repeat(AlignedBuffer::KEPT_BYTES + 10);
        let appended = log
            .append(large.clone().into_bytes())
            .await
            .expect("append");
        assert_eq!(appended.offset, offset);
        let after = log.append(b"<end/>".to_vec()).await.expect("append");
        let read = log
            .read(
                1,
                vec![Place {
                    offset: after.offset - 3,
                    len: 9,
                }],
            )
            .await
            .expect("read");
        assert_eq!(read, ["zzz<end/>"]);
    }

    #[tokio::test]
    async fn rolled_segments_are_removed_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = MessageLog::open(dir.path()).expect("log");
        log.append(b"one".to_vec()).await.expect("append");
        assert_eq!(log.roll().await.expect("roll"), 2);
        let two = log.append(b"two".to_vec()).await.expect("append");
        assert_eq!(
            two,
            Appended {
                segment: 2,
                offset: 0
            }
        );
        let numbers: Vec<_> = log.segments().expect("segments").into_keys().collect();
        assert_eq!(numbers, [1, 2]);
        let whole = log.read_segment(1).await.expect("read");
        assert!(whole.starts_with(b"one") && whole[3..].iter().all(|b| *b == 0));
        log.remove(&[1, 7]).await.expect("remove");
        assert_eq!(log.segments().expect("segments").len(), 1);
        assert!(log.read(1, places(&[3], 0)).await.is_err());
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        assert_eq!(log.segments().expect("segments").len(), 1, "other files");
    }
}
