//! Room kept on the state directory's disk so the journal can always record how a run ends.
//!
//! The workspaces live in the state directory too (and often the engine's disk is the same),
//! so a unit that fills the disk would leave the journal unable to write the end of its node,
//! its unit and its run: `status` would show a run that never ends. So a journal keeps a file
//! of [`RESERVE_BYTES`] allocated there ([`keep`], when the journal starts); the first commit
//! that fails because the disk is full gives it back ([`release`]) and is tried again, and
//! the run's remaining records fit in what was freed. The next runner makes it again, or
//! refuses to start while the disk cannot hold it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The reserve's file name in the state directory.
pub const RESERVE_FILE: &str = "reserve";

/// The reserve's size: the records of a whole run's end (its nodes, units, events and the
/// write-ahead log's growth) fit many times over.
pub const RESERVE_BYTES: u64 = 32 << 20;

/// The reserve of the state directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(RESERVE_FILE)
}

/// Makes sure `dir` holds the reserve, allocated (not a sparse file): kept as it is when it
/// already is. An error when the disk cannot hold it (the half-made file is removed).
pub fn keep(dir: &Path) -> io::Result<()> {
    let path = path(dir);
    if let Ok(found) = std::fs::symlink_metadata(&path) {
        if found.is_file() && found.len() == RESERVE_BYTES && found.blocks() * 512 >= RESERVE_BYTES
        {
            return Ok(());
        }
        // Anything else there (a short file from a full disk, a link) is replaced.
        std::fs::remove_file(&path)?;
    }
    let made = allocate(&path);
    if made.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    made
}

/// Creates `path` with [`RESERVE_BYTES`] allocated: `posix_fallocate`, or zeros written where
/// the filesystem cannot allocate without writing.
fn allocate(path: &Path) -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let len = libc::off_t::try_from(RESERVE_BYTES).map_err(io::Error::other)?;
    // SAFETY: the descriptor is open for writing and lives for the call.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match code {
        0 => {}
        libc::EOPNOTSUPP | libc::EINVAL => {
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..RESERVE_BYTES / zeros.len() as u64 {
                file.write_all(&zeros)?;
            }
        }
        code => return Err(io::Error::from_raw_os_error(code)),
    }
    file.sync_all()
}

/// Gives the reserve of `dir` back to the disk; whether there was one to give.
pub fn release(dir: &Path) -> bool {
    std::fs::remove_file(path(dir)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_allocated_once_and_given_back_once() {
        let dir = std::env::temp_dir().join(format!("dispatch-reserve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        keep(&dir).unwrap();
        let made = std::fs::metadata(path(&dir)).unwrap();
        assert_eq!(made.len(), RESERVE_BYTES);
        assert!(
            made.blocks() * 512 >= RESERVE_BYTES,
            "allocated, not sparse"
        );
        keep(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(path(&dir)).unwrap().ino(),
            made.ino(),
            "kept as it is"
        );
        // A short one (a full disk cut it) is made again.
        std::fs::write(path(&dir), b"short").unwrap();
        keep(&dir).unwrap();
        assert_eq!(std::fs::metadata(path(&dir)).unwrap().len(), RESERVE_BYTES);
        assert!(release(&dir));
        assert!(!release(&dir), "nothing left to give");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
