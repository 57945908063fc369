//! A container's log under a size cap: the head and the tail of its output are kept, the
//! middle is cut, and the cut is said in the log itself and to the node ([`Cut`]).
//!
//! What it is for: a container may print without end (a flooding agent, a test suite in a
//! loop); its log must not fill the disk of the runner or the engine, and memory must not grow
//! with it, while the start (what it was asked, how it began) and the end (why it failed) stay
//! readable. What it is not for: reading logs (`mounted`), the engine's own copy of the output
//! (capped by the runtime with the same figure).
//!
//! Layout of one container's output in its log file, which may hold earlier containers'
//! output before `start` (a node's QA steps and fix attempts append to one log):
//!
//! ```text
//! start                 start + head            tail_at
//! | the first `head` bytes | marker line             | the last bytes (at most 2 * tail) |
//! ```
//!
//! Until the output passes `head` bytes it is written as it comes. Past that a marker line
//! says that output is being cut, and the rest is appended after it; once that tail region
//! holds twice `tail` bytes, its last `tail` bytes are moved to its start (each byte is moved
//! at most once on average, and the file never holds more than `head + 2 * tail` bytes of
//! this container). [`CappedLog::finish`] keeps exactly the last `tail` bytes and replaces the
//! marker with one that gives the figures. Memory stays at one copy buffer whatever the volume.
//!
//! The file is opened as [`super::mounted`] opens every file in a unit's `meta/`: never
//! through a link, never blocking on a FIFO, only a regular file.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::spec::values::Approx;

/// Where a container's output goes and how much of it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// The log file (in the unit's `meta/`).
    pub path: PathBuf,
    /// Most bytes of one container's output kept in the file (the spec's `resources.log`).
    pub limit: u64,
    /// The watchdog: the longest the container may print nothing before it is stopped
    /// ([`super::Exit::Idle`]; the spec's `idle_timeout`).
    pub idle: Option<std::time::Duration>,
    /// Where a copy of each line of output goes while the container runs, if anywhere.
    pub tap: Option<LineTap>,
}

/// Most bytes of one line a [`LineTap`] hands over; a longer line is dropped.
pub const TAP_LINE: usize = 256 * 1024;

/// Lines a [`LineTap`] holds for its reader before it drops new ones.
pub const TAP_LINES: usize = 1024;

/// A copy of a container's output, line by line, for a reader that follows it while the
/// container runs (the budget's meter). It never slows the container down: when the reader
/// falls [`TAP_LINES`] behind, new lines are dropped (the reader is told how many), and so is
/// a line longer than [`TAP_LINE`]. What the log file keeps is not affected.
#[derive(Clone, Debug)]
pub struct LineTap(pub tokio::sync::mpsc::Sender<TapLine>);

/// What a [`LineTap`] hands over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapLine {
    /// A line of output, without its newline.
    Line(String),
    /// Lines that were dropped since the last one handed over.
    Dropped(u64),
}

impl LineTap {
    /// A tap and the receiver its reader follows.
    pub fn new() -> (Self, tokio::sync::mpsc::Receiver<TapLine>) {
        let (tx, rx) = tokio::sync::mpsc::channel(TAP_LINES);
        (Self(tx), rx)
    }
}

impl PartialEq for LineTap {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl Eq for LineTap {}

/// Cuts output into lines for a [`LineTap`].
#[derive(Debug)]
struct Lines {
    tap: LineTap,
    partial: Vec<u8>,
    /// The current line passed [`TAP_LINE`]: it is dropped up to its end.
    overlong: bool,
    dropped: u64,
}

impl Lines {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (part, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], Some(at + 1)),
                None => (bytes, None),
            };
            if !self.overlong {
                if self.partial.len() + part.len() > TAP_LINE {
                    self.overlong = true;
                    self.partial.clear();
                } else {
                    self.partial.extend_from_slice(part);
                }
            }
            let Some(next) = ended else {
                return;
            };
            bytes = &bytes[next..];
            let line = std::mem::take(&mut self.partial);
            if std::mem::take(&mut self.overlong) {
                self.dropped += 1;
                continue;
            }
            self.send(String::from_utf8_lossy(&line).into_owned());
        }
    }

    fn send(&mut self, line: String) {
        use tokio::sync::mpsc::error::TrySendError;
        if self.dropped > 0 {
            match self.tap.0.try_send(TapLine::Dropped(self.dropped)) {
                Ok(()) => self.dropped = 0,
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                    self.dropped += 1;
                    return;
                }
            }
        }
        if self.tap.0.try_send(TapLine::Line(line)).is_err() {
            self.dropped += 1;
        }
    }

    /// The output ended: a last line without its newline is handed over too.
    fn finish(&mut self) {
        if !self.partial.is_empty() && !self.overlong {
            let line = std::mem::take(&mut self.partial);
            self.send(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// The figures of a log that was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Bytes the container printed.
    pub printed: u64,
    /// Bytes of it the log kept (the head and the tail).
    pub kept: u64,
    /// The cap.
    pub limit: u64,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "its output was cut: it printed {}, the log keeps the first and the last {} \
             (resources.log: {})",
            Approx(self.printed),
            Approx(self.kept / 2),
            Approx(self.limit)
        )
    }
}

/// The line that stands where output is being cut while the container runs.
const CUTTING: &[u8] =
    b"\n[dispatch: the output passed the log's cap; what follows is its end so far]\n";

/// Bytes moved per read and write when the tail region is compacted.
const COPY_CHUNK: usize = 64 * 1024;

/// The log of one container being written.
#[derive(Debug)]
pub struct CappedLog {
    file: File,
    path: PathBuf,
    limit: u64,
    /// Where this container's output starts in the file.
    start: u64,
    /// Bytes kept from the start of the output.
    head: u64,
    /// Bytes kept from its end.
    tail: u64,
    /// Bytes the container printed so far.
    printed: u64,
    /// Where the tail region starts, once the output passed `head` bytes.
    tail_at: Option<u64>,
    /// Bytes in the tail region now.
    tail_len: u64,
    /// The copy of the output for the log's [`LineTap`].
    lines: Option<Lines>,
}

impl CappedLog {
    /// Opens `log.path` for a container's output, which goes after what the file holds, or
    /// after its first `keep` bytes when given (the rest is dropped: `Some(0)` starts the file
    /// afresh). Refuses a link, a FIFO, a device or a directory there (a container can write
    /// `meta/`).
    pub fn open(log: &Log, keep: Option<u64>) -> io::Result<Self> {
        let path = &log.path;
        if let Ok(found) = std::fs::symlink_metadata(path) {
            // Said by name before the open (which fails on a link and returns at once on a
            // FIFO), and checked again on what was opened.
            if !found.is_symlink() {
                super::mounted::regular(&found, path)?;
            }
        }
        let file = super::mounted::std_open_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        super::mounted::regular(&file.metadata()?, path)?;
        let start = match keep {
            Some(keep) => {
                file.set_len(keep)?;
                keep
            }
            None => file.metadata()?.len(),
        };
        let limit = log.limit.max(2);
        let head = limit / 2;
        Ok(Self {
            file,
            path: path.clone(),
            limit,
            start,
            head,
            tail: limit - head,
            printed: 0,
            tail_at: None,
            tail_len: 0,
            lines: log.tap.clone().map(|tap| Lines {
                tap,
                partial: Vec::new(),
                overlong: false,
                dropped: 0,
            }),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where this container's output starts in the file.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Adds a chunk of output.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if let Some(lines) = &mut self.lines {
            lines.write(bytes);
        }
        let written_head = self.printed.min(self.head);
        self.printed += bytes.len() as u64;
        let tail_at = match self.tail_at {
            Some(at) => at,
            None => {
                let room = usize::try_from(self.head - written_head).unwrap_or(usize::MAX);
                let (now, rest) = bytes.split_at(room.min(bytes.len()));
                self.file.write_all_at(now, self.start + written_head)?;
                if rest.is_empty() {
                    return Ok(());
                }
                bytes = rest;
                let marker_at = self.start + self.head;
                self.file.write_all_at(CUTTING, marker_at)?;
                let at = marker_at + CUTTING.len() as u64;
                self.tail_at = Some(at);
                at
            }
        };
        let tail = usize::try_from(self.tail).unwrap_or(usize::MAX);
        if bytes.len() >= tail {
            // The chunk alone fills the tail: what the region held is older than all of it.
            self.file
                .write_all_at(&bytes[bytes.len() - tail..], tail_at)?;
            self.tail_len = self.tail;
            self.file.set_len(tail_at + self.tail_len)?;
            return Ok(());
        }
        self.file.write_all_at(bytes, tail_at + self.tail_len)?;
        self.tail_len += bytes.len() as u64;
        if self.tail_len >= 2 * self.tail {
            self.keep_last_tail(tail_at)?;
        }
        Ok(())
    }

    /// Moves the last `tail` bytes of the tail region to its start and drops the rest.
    fn keep_last_tail(&mut self, tail_at: u64) -> io::Result<()> {
        if self.tail_len > self.tail {
            let from = tail_at + self.tail_len - self.tail;
            move_within(&self.file, from, tail_at, self.tail)?;
            self.tail_len = self.tail;
        }
        self.file.set_len(tail_at + self.tail_len)
    }

    /// Ends the log: when the output passed the cap, keeps its last `tail` bytes and puts the
    /// figures in the marker line; returns them then.
    pub fn finish(mut self) -> io::Result<Option<Cut>> {
        if let Some(lines) = &mut self.lines {
            lines.finish();
        }
        let Some(tail_at) = self.tail_at else {
            return Ok(None);
        };
        self.keep_last_tail(tail_at)?;
        let kept = self.head + self.tail_len;
        let cut = self.printed - kept;
        let marker_at = self.start + self.head;
        if cut == 0 {
            // The output fits the cap after all: no marker, the tail follows the head.
            move_within(&self.file, tail_at, marker_at, self.tail_len)?;
            self.file.set_len(marker_at + self.tail_len)?;
            return Ok(None);
        }
        let marker = format!(
            "\n[dispatch: {cut} bytes of output cut here ({}); the log keeps the first {} and \
             the last {} bytes of the {} printed; raise resources.log ({}) to keep more]\n",
            Approx(cut),
            self.head,
            self.tail_len,
            self.printed,
            Approx(self.limit)
        );
        let new_tail_at = marker_at + marker.len() as u64;
        move_within(&self.file, tail_at, new_tail_at, self.tail_len)?;
        self.file.write_all_at(marker.as_bytes(), marker_at)?;
        self.file.set_len(new_tail_at + self.tail_len)?;
        Ok(Some(Cut {
            printed: self.printed,
            kept,
            limit: self.limit,
        }))
    }
}

/// Copies `len` bytes of `file` at `from` to `to` (the ranges may overlap), in chunks.
fn move_within(file: &File, from: u64, to: u64, len: u64) -> io::Result<()> {
    if from == to || len == 0 {
        return Ok(());
    }
    let mut buffer = vec![0u8; COPY_CHUNK.min(usize::try_from(len).unwrap_or(usize::MAX))];
    let chunk = buffer.len() as u64;
    let mut done = 0;
    while done < len {
        let n = chunk.min(len - done);
        // Moving down, copy from the front; moving up, from the back: no byte is overwritten
        // before it is read.
        let offset = if to < from { done } else { len - done - n };
        let part = &mut buffer[..n as usize];
        file.read_exact_at(part, from + offset)?;
        file.write_all_at(part, to + offset)?;
        done += n;
    }
    Ok(())
}

/// Opens a container's log (see [`CappedLog::open`]) on the blocking pool.
pub(crate) async fn open_log(
    log: &Log,
    keep: Option<u64>,
) -> Result<CappedLog, super::RuntimeError> {
    let path = log.path.clone();
    let log = log.clone();
    tokio::task::spawn_blocking(move || CappedLog::open(&log, keep))
        .await
        .map_err(std::io::Error::other)
        .and_then(|opened| opened)
        .map_err(|error| super::RuntimeError::Log { path, error })
}

/// When a container last printed: its log's writer stamps it, the watchdog reads it.
#[derive(Clone, Debug)]
pub(crate) struct LastOutput(std::sync::Arc<std::sync::Mutex<tokio::time::Instant>>);

impl LastOutput {
    /// Stamped now.
    pub(crate) fn now() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(
            tokio::time::Instant::now(),
        )))
    }

    pub(crate) fn stamp(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
    }

    pub(crate) fn get(&self) -> tokio::time::Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Resolves once the container has printed nothing for `idle` (the watchdog of [`Log::idle`]);
/// never without one. It sleeps until the moment the silence would be long enough, and again
/// from the newest output when there was some meanwhile: no polling.
pub(crate) async fn silent(watchdog: Option<(LastOutput, std::time::Duration)>) {
    let Some((last, idle)) = watchdog else {
        return std::future::pending().await;
    };
    loop {
        let due = last.get() + idle;
        tokio::time::sleep_until(due).await;
        if last.get() + idle <= tokio::time::Instant::now() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(name: &str, limit: u64) -> Log {
        let dir = std::env::temp_dir().join(format!("dispatch-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Log {
            path: dir.join("agent.log"),
            limit,
            idle: None,
            tap: None,
        }
    }

    /// Output of `n` bytes that shows where each byte came from.
    fn output(n: usize) -> Vec<u8> {
        (0..n).map(|i| b'a' + (i % 23) as u8).collect()
    }

    #[test]
    fn output_under_the_cap_is_kept_whole_after_what_the_file_held() {
        let log = log("under", 100);
        std::fs::write(&log.path, "earlier attempt\n").unwrap();
        let mut capped = CappedLog::open(&log, None).unwrap();
        capped.write(b"hello ").unwrap();
        capped.write(b"world\n").unwrap();
        assert_eq!(capped.finish().unwrap(), None);
        assert_eq!(
            std::fs::read_to_string(&log.path).unwrap(),
            "earlier attempt\nhello world\n"
        );
    }

    #[test]
    fn output_that_fills_the_cap_exactly_is_kept_whole() {
        for chunk in [1usize, 30, 100] {
            let log = log("exact", 100);
            let printed = output(100);
            let mut capped = CappedLog::open(&log, Some(0)).unwrap();
            for part in printed.chunks(chunk) {
                capped.write(part).unwrap();
            }
            assert_eq!(capped.finish().unwrap(), None, "chunks of {chunk}");
            assert_eq!(std::fs::read(&log.path).unwrap(), printed);
        }
    }

    #[test]
    fn a_flood_keeps_its_head_and_tail_and_says_what_was_cut() {
        let printed = output(10_000);
        // Chunk sizes that cross the head, fill the tail region, and exceed the tail at once.
        for chunks in [vec![1usize], vec![7, 13, 97], vec![3_000], vec![10_000]] {
            let log = log("flood", 200);
            std::fs::write(&log.path, "before\n").unwrap();
            let mut capped = CappedLog::open(&log, None).unwrap();
            let mut at = 0;
            let mut sizes = chunks.iter().cycle();
            while at < printed.len() {
                let n = (*sizes.next().unwrap()).min(printed.len() - at);
                capped.write(&printed[at..at + n]).unwrap();
                at += n;
                let on_disk = std::fs::metadata(&log.path).unwrap().len();
                assert!(on_disk <= 7 + 100 + CUTTING.len() as u64 + 200, "{on_disk}");
            }
            let cut = capped.finish().unwrap().expect("cut");
            assert_eq!(
                cut,
                Cut {
                    printed: 10_000,
                    kept: 200,
                    limit: 200
                }
            );
            let text = std::fs::read(&log.path).unwrap();
            let (before, rest) = text.split_at(7);
            assert_eq!(before, b"before\n");
            assert_eq!(&rest[..100], &printed[..100], "the head, chunks {chunks:?}");
            assert!(rest.ends_with(&printed[printed.len() - 100..]), "the tail");
            let marker = String::from_utf8_lossy(&rest[100..rest.len() - 100]).into_owned();
            assert!(
                marker.contains("9800 bytes of output cut here")
                    && marker.contains("the last 100 bytes of the 10000 printed"),
                "{marker}"
            );
        }
    }

    #[test]
    fn the_tap_hands_over_whole_lines_and_drops_what_its_reader_cannot_take() {
        let (tap, mut rx) = LineTap::new();
        let mut log = log("tap", 1 << 20);
        log.tap = Some(tap);
        let mut capped = CappedLog::open(&log, Some(0)).unwrap();
        capped.write(b"{\"a\":").unwrap();
        capped.write(b"1}\nsecond\n").unwrap();
        capped.write(&vec![b'x'; TAP_LINE + 1]).unwrap();
        capped.write(b"\nthird").unwrap();
        for _ in 0..TAP_LINES + 10 {
            capped.write(b"flood\n").unwrap();
        }
        capped.finish().unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            TapLine::Line("{\"a\":1}".to_owned())
        );
        assert_eq!(rx.try_recv().unwrap(), TapLine::Line("second".to_owned()));
        // The overlong line is dropped; the reader hears of it with the next line.
        assert_eq!(rx.try_recv().unwrap(), TapLine::Dropped(1));
        assert_eq!(
            rx.try_recv().unwrap(),
            TapLine::Line("thirdflood".to_owned())
        );
        let mut handed = 4;
        while rx.try_recv().is_ok() {
            handed += 1;
        }
        assert_eq!(handed, TAP_LINES, "a full tap drops, never blocks");
        assert_eq!(
            std::fs::read(&log.path).unwrap().len(),
            "{\"a\":1}\nsecond\n".len() + TAP_LINE + 1 + "\nthird".len() + 6 * (TAP_LINES + 10),
            "the log keeps everything"
        );
    }

    #[test]
    fn a_reopen_drops_what_followed_the_bytes_it_keeps() {
        let log = log("restart", 10);
        std::fs::write(&log.path, "kept\n").unwrap();
        let mut capped = CappedLog::open(&log, None).unwrap();
        let start = capped.start();
        capped.write(&output(50)).unwrap();
        drop(capped);
        let mut capped = CappedLog::open(&log, Some(start)).unwrap();
        capped.write(b"again\n").unwrap();
        assert_eq!(capped.finish().unwrap(), None);
        assert_eq!(std::fs::read_to_string(&log.path).unwrap(), "kept\nagain\n");
    }

    #[test]
    fn a_planted_link_or_fifo_is_refused() {
        let log = log("planted", 10);
        let victim = log.path.with_file_name("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, &log.path).unwrap();
        assert!(CappedLog::open(&log, Some(0)).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        std::fs::remove_file(&log.path).unwrap();
        let name = std::ffi::CString::new(log.path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that lives for the call.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        let error = CappedLog::open(&log, None).expect_err("a FIFO");
        assert!(error.to_string().contains("is a FIFO"), "{error}");
    }

    #[test]
    fn overlapping_moves_copy_every_byte_once() {
        let log = log("move", 10);
        let bytes = output(300_000);
        for (from, to) in [(1000u64, 0u64), (0, 1000), (5, 70_000), (70_000, 5)] {
            std::fs::write(&log.path, &bytes).unwrap();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&log.path)
                .unwrap();
            move_within(&file, from, to, 200_000).unwrap();
            let after = std::fs::read(&log.path).unwrap();
            assert_eq!(
                &after[to as usize..to as usize + 200_000],
                &bytes[from as usize..from as usize + 200_000],
                "{from} -> {to}"
            );
        }
    }
}
