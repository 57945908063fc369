//! Files in the directories a container can write: a unit's `repo/` and `meta/`.
//!
//! What runs in a container (an agent, the project's tests) can plant a symlink there, say
//! `meta/qa.log -> ~/.bashrc`. dispatch then must not follow it: every file it opens there is
//! opened with `O_NOFOLLOW` (a planted link makes the open fail), and every file it replaces
//! is written to a fresh temporary file (created exclusively, never through a link) and
//! renamed over the old one (a rename replaces a link, it never writes through it).
//! What dispatch must trust (the commit a unit started from, its base, the last QA failure)
//! does not live there at all.
//!
//! A container can also plant a FIFO, a socket or a device node where dispatch expects a file
//! (`BLOCKED.md` as a FIFO would block a plain open for good). So every open there is also
//! non-blocking (`O_NONBLOCK`: opening a FIFO returns at once), and what is read must then be
//! a regular file ([`regular`]); a text read is capped at [`TEXT_LIMIT`].

use std::io;
use std::path::Path;

/// Most bytes of a text file dispatch reads there (`BLOCKED.md`, a prompt, an answer).
pub const TEXT_LIMIT: u64 = 1 << 20;

/// The flags of every open there: never through a link, never waiting on a FIFO.
const FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// Options that open the last path component only when it is not a symlink, and return at
/// once on a FIFO (check what was opened with [`regular`]).
pub fn open_options() -> tokio::fs::OpenOptions {
    let mut options = tokio::fs::OpenOptions::new();
    options.custom_flags(FLAGS);
    options
}

/// The same for blocking code.
pub fn std_open_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.custom_flags(FLAGS);
    options
}

/// `Ok` when what was opened at `path` (its `metadata`) is a regular file, else an error that
/// says what it is instead.
pub fn regular(metadata: &std::fs::Metadata, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is {what}, not a regular file; dispatch does not read it",
            path.display()
        ),
    ))
}

/// Opens a regular file that is not a symlink for reading.
async fn open_regular(path: &Path) -> io::Result<tokio::fs::File> {
    let file = open_options().read(true).open(path).await?;
    regular(&file.metadata().await?, path)?;
    Ok(file)
}

/// Reads a regular file that is not a symlink, of at most [`TEXT_LIMIT`] bytes.
pub async fn read_to_string(path: &Path) -> io::Result<String> {
    use tokio::io::AsyncReadExt;
    let file = open_regular(path).await?;
    let mut text = String::new();
    file.take(TEXT_LIMIT + 1).read_to_string(&mut text).await?;
    if text.len() as u64 > TEXT_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {} KiB; dispatch does not read it",
                path.display(),
                TEXT_LIMIT / 1024
            ),
        ));
    }
    Ok(text)
}

/// Reads up to the last `limit` bytes of a regular file that is not a symlink, from `from` on.
pub async fn read_tail(path: &Path, from: u64, limit: u64) -> io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = open_regular(path).await?;
    let len = file.metadata().await?.len();
    let start = from.max(len.saturating_sub(limit));
    file.seek(io::SeekFrom::Start(start)).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// The least an entry counts for in [`disk_usage`]: a block, so that a million empty files
/// (each an inode, none a data block) count like the disk they take.
pub const ENTRY_BYTES: u64 = 4096;

/// The disk a directory tree takes: every entry below `dir` (and `dir`), links not followed,
/// each counted as its allocated blocks and at least [`ENTRY_BYTES`]; hard links count once
/// per name. The walk stops once the count passes `past` (what it returns then is past it).
/// An entry that vanishes during the walk is not counted; any other error is returned, so a
/// tree that cannot be measured (a directory its owner made unreadable, a path too long to
/// name) is never taken for a small one.
pub fn disk_usage(dir: &Path, past: u64) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let vanished = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let counted = |m: &std::fs::Metadata| (m.blocks() * 512).max(ENTRY_BYTES);
    let mut total = counted(&std::fs::symlink_metadata(dir)?);
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(e),
            };
            total = total.saturating_add(counted(&metadata));
            if total > past {
                return Ok(total);
            }
            // `DirEntry::metadata` does not follow a link: a link to a directory is not walked.
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// [`write_sync`] on the blocking pool: one hand-off for the whole replacement, not one per
/// file operation (a run writes a status file per unit).
pub async fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || write_sync(&path, &bytes))
        .await
        .map_err(io::Error::other)?
}

/// Replaces `path` with `bytes`: written to a fresh `<name>.tmp` beside it, then renamed.
pub fn write_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = temporary(path);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std_open_options().write(true).create_new(true).open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Most bytes of one line [`for_each_line`] hands over; the rest of a longer line is dropped.
pub const LINE_LIMIT: usize = 1 << 20;

/// Calls `line` with each line (lossy UTF-8, without its newline, cut at [`LINE_LIMIT`]) of a
/// regular file that is not a symlink, from byte `from` on. Memory stays at one line.
pub fn for_each_line(path: &Path, from: u64, mut line: impl FnMut(&str)) -> io::Result<()> {
    use std::io::{BufRead, Read, Seek};
    let mut file = std_open_options().read(true).open(path)?;
    regular(&file.metadata()?, path)?;
    file.seek(io::SeekFrom::Start(from))?;
    let mut reader = io::BufReader::new(file);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        let read = (&mut reader)
            .take(LINE_LIMIT as u64)
            .read_until(b'\n', &mut bytes)?;
        if read == 0 {
            return Ok(());
        }
        if bytes.last() != Some(&b'\n') && bytes.len() == LINE_LIMIT {
            // Past the limit: skip to the line's end.
            let mut rest = Vec::new();
            while reader.read_until(b'\n', &mut rest)? > 0 && rest.last() != Some(&b'\n') {
                rest.clear();
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        line(text.trim_end_matches(['\n', '\r']));
    }
}

/// Appends `bytes` to `path` (created when missing), never through a link and only to a
/// regular file.
pub fn append_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = std_open_options().append(true).create(true).open(path)?;
    regular(&file.metadata()?, path)?;
    file.write_all(bytes)
}

fn temporary(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dispatch-mounted-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_planted_symlink_is_never_followed() {
        let dir = dir("links");
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, "keep me\n").unwrap();
        // A link at the file itself: reads and appends fail, a write replaces the link.
        let log = dir.join("qa.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        assert!(read_to_string(&log).await.is_err());
        assert!(open_options()
            .append(true)
            .create(true)
            .open(&log)
            .await
            .is_err());
        write(&log, b"fresh\n").await.unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "fresh\n");
        assert!(!std::fs::symlink_metadata(&log).unwrap().is_symlink());
        // A link at the temporary name: removed, not written through.
        let status = dir.join("status.json");
        std::os::unix::fs::symlink(&victim, dir.join("status.json.tmp")).unwrap();
        write(&status, b"{}\n").await.unwrap();
        write_sync(&dir.join("ANSWER.md"), b"yes\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
        assert_eq!(std::fs::read_to_string(&status).unwrap(), "{}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_planted_fifo_or_an_oversized_file_is_refused_at_once() {
        let dir = dir("fifo");
        let blocked = dir.join("BLOCKED.md");
        let name = std::ffi::CString::new(blocked.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that lives for the call.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        let within = std::time::Duration::from_secs(10);
        let read = tokio::time::timeout(within, read_to_string(&blocked))
            .await
            .expect("no hang");
        let error = read.expect_err("a FIFO is not read");
        assert!(error.to_string().contains("is a FIFO"), "{error}");
        let tail = tokio::time::timeout(within, read_tail(&blocked, 0, 100))
            .await
            .expect("no hang");
        assert!(tail.is_err());
        // Writing replaces it, like a link.
        write(&blocked, b"a question\n").await.unwrap();
        assert_eq!(read_to_string(&blocked).await.unwrap(), "a question\n");

        let big = dir.join("prompt.md");
        std::fs::write(&big, vec![b'x'; TEXT_LIMIT as usize + 1]).unwrap();
        let error = read_to_string(&big).await.expect_err("too large");
        assert!(
            error.to_string().contains("larger than 1024 KiB"),
            "{error}"
        );
        std::fs::write(&big, vec![b'x'; TEXT_LIMIT as usize]).unwrap();
        assert_eq!(read_to_string(&big).await.unwrap().len() as u64, TEXT_LIMIT);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn disk_usage_counts_blocks_and_entries_and_stops_past_the_limit() {
        let dir = dir("usage");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/data"), vec![1u8; 100_000]).unwrap();
        for i in 0..10 {
            std::fs::write(dir.join(format!("empty-{i}")), "").unwrap();
        }
        std::os::unix::fs::symlink("/usr", dir.join("a/usr")).unwrap();
        let used = disk_usage(&dir, u64::MAX).unwrap();
        // The data's blocks, and a block at least for each of the 14 other entries; /usr is
        // never walked.
        assert!(used >= 100_000 + 14 * ENTRY_BYTES, "{used}");
        assert!(used < 100_000 + 14 * ENTRY_BYTES + 200_000, "{used}");
        let stopped = disk_usage(&dir, 20_000).unwrap();
        assert!(stopped > 20_000 && stopped <= used, "{stopped}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_tail_is_read_from_where_it_starts() {
        let dir = dir("tail");
        let log = dir.join("agent.log");
        std::fs::write(&log, "0123456789").unwrap();
        assert_eq!(read_tail(&log, 2, 100).await.unwrap(), b"23456789");
        assert_eq!(read_tail(&log, 0, 4).await.unwrap(), b"6789");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
