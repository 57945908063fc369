//! Files in the directories a container can write: a unit's `repo/` and `meta/`.
//!
//! What runs in a container (an agent, the project's tests) can plant a symlink there, say
//! `meta/qa.log -> ~/.bashrc`. dispatch then must not follow it: every file it opens there is
//! opened with `O_NOFOLLOW` (a planted link makes the open fail), and every file it replaces
//! is written to a fresh temporary file (created exclusively, never through a link) and
//! renamed over the old one (a rename replaces a link, it never writes through it).
//! What dispatch must trust (the commit a unit started from, its base, the last QA failure)
//! does not live there at all.

use std::io;
use std::path::Path;

/// Options that open the last path component only when it is not a symlink.
pub fn open_options() -> tokio::fs::OpenOptions {
    let mut options = tokio::fs::OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW);
    options
}

/// The same for blocking code.
pub fn std_open_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW);
    options
}

/// Reads a file that is not a symlink.
pub async fn read_to_string(path: &Path) -> io::Result<String> {
    let mut file = open_options().read(true).open(path).await?;
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut file, &mut text).await?;
    Ok(text)
}

/// Reads up to the last `limit` bytes of a file that is not a symlink, from `from` on.
pub async fn read_tail(path: &Path, from: u64, limit: u64) -> io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = open_options().read(true).open(path).await?;
    let len = file.metadata().await?.len();
    let start = from.max(len.saturating_sub(limit));
    file.seek(io::SeekFrom::Start(start)).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    Ok(bytes)
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
    async fn the_tail_is_read_from_where_it_starts() {
        let dir = dir("tail");
        let log = dir.join("agent.log");
        std::fs::write(&log, "0123456789").unwrap();
        assert_eq!(read_tail(&log, 2, 100).await.unwrap(), b"23456789");
        assert_eq!(read_tail(&log, 0, 4).await.unwrap(), b"6789");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
