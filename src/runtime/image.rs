//! Building small local images: no image can be pulled on these machines, so tests and QA
//! nodes use images assembled here from the host's static busybox.
//!
//! One builder, [`RootFs`], lays out a root filesystem in memory (busybox and its applet
//! symlinks, `/tmp`, `/workspace`, a minimal `/etc`, plus any extra files), writes it as a tar
//! archive and imports it through the engine (`POST /images/create?fromSrc=-`). The image
//! carries a label with a digest of what went into it, so an image whose extra files changed
//! is rebuilt instead of silently reused.
//!
//! Not for: pulling, Dockerfiles, or anything bigger than a shell image with a few scripts.

use std::collections::BTreeMap;
use std::path::Path;

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::docker::Docker;
use super::RuntimeError;

/// Where the host's static busybox lives (Debian's `busybox-static`).
const HOST_BUSYBOX: &str = "/bin/busybox";
/// Image label holding the digest of the image's content.
const LABEL_CONTENT: &str = "dispatch.content";
/// Bumped whenever the layout of [`RootFs::busybox`] changes, so old images are rebuilt.
const LAYOUT_VERSION: &str = "busybox-root-v1";

/// The tag of the plain busybox image.
pub fn busybox_image_tag() -> &'static str {
    "dispatch-busybox:latest"
}

/// Makes sure the plain busybox image exists under `tag`; returns its id.
pub async fn ensure_busybox_image(docker: &Docker, tag: &str) -> Result<String, RuntimeError> {
    ensure_image_with_files(docker, tag, &[]).await
}

/// Makes sure an image with the busybox root plus `files` (absolute path, content, mode)
/// exists under `tag`; returns its id. An existing image is reused only when it was built from
/// the same files; otherwise it is rebuilt and the tag moves to the new image.
pub async fn ensure_image_with_files(
    docker: &Docker,
    tag: &str,
    files: &[(&str, &[u8], u32)],
) -> Result<String, RuntimeError> {
    let digest = content_digest(files);
    if let Some(id) = existing_image(docker, tag, &digest).await? {
        return Ok(id);
    }
    let owned: Vec<(String, Vec<u8>, u32)> = files
        .iter()
        .map(|(p, c, m)| (p.to_string(), c.to_vec(), *m))
        .collect();
    let archive = build_archive(tag, owned).await?;
    import(docker, tag, archive, &digest).await
}

/// The id of the image under `tag` when it carries this content digest.
async fn existing_image(
    docker: &Docker,
    tag: &str,
    digest: &str,
) -> Result<Option<String>, RuntimeError> {
    match docker.engine().inspect_image(tag).await {
        Ok(inspect) => {
            let same = inspect
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_CONTENT).cloned())
                .is_some_and(|d| d == digest);
            Ok(if same { inspect.id } else { None })
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(RuntimeError::Engine(format!(
            "inspecting image `{tag}`: {e}"
        ))),
    }
}

/// Reads the host's busybox and its applet list, and writes the archive on a blocking thread.
async fn build_archive(
    tag: &str,
    files: Vec<(String, Vec<u8>, u32)>,
) -> Result<Vec<u8>, RuntimeError> {
    let cannot = |why: String| RuntimeError::Engine(format!("cannot build image `{tag}`: {why}"));
    let busybox = match tokio::fs::read(HOST_BUSYBOX).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(cannot(format!(
                "{HOST_BUSYBOX} does not exist; install it with `apt-get install busybox-static`"
            )))
        }
        Err(e) => return Err(cannot(format!("reading {HOST_BUSYBOX}: {e}"))),
    };
    if has_interpreter(&busybox) {
        return Err(cannot(format!(
            "{HOST_BUSYBOX} is dynamically linked and would not run in an empty image; \
             install the static one with `apt-get install busybox-static`"
        )));
    }
    let listed = tokio::process::Command::new(HOST_BUSYBOX)
        .arg("--list")
        .output()
        .await
        .map_err(|e| cannot(format!("running `{HOST_BUSYBOX} --list`: {e}")))?;
    if !listed.status.success() {
        return Err(cannot(format!(
            "`{HOST_BUSYBOX} --list` failed with {}",
            listed.status
        )));
    }
    let applets: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_string)
        .collect();

    let mut root = RootFs::busybox(busybox, &applets);
    for (path, content, mode) in files {
        root.file(&path, content, mode);
    }
    tokio::task::spawn_blocking(move || root.into_tar())
        .await
        .map_err(|e| cannot(format!("archive writer failed: {e}")))?
        .map_err(|e| cannot(format!("writing the archive: {e}")))
}

/// Imports a root filesystem archive under `tag`; returns the new image id.
async fn import(
    docker: &Docker,
    tag: &str,
    archive: Vec<u8>,
    digest: &str,
) -> Result<String, RuntimeError> {
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(tag)
        .changes(vec![
            format!("LABEL {LABEL_CONTENT}={digest}"),
            "CMD [\"/bin/sh\"]".to_string(),
        ])
        .build();
    let mut progress = docker.engine().create_image(
        Some(options),
        Some(bollard::body_full(archive.into())),
        None,
    );
    while let Some(step) = progress.next().await {
        step.map_err(|e| RuntimeError::Engine(format!("importing image `{tag}`: {e}")))?;
    }
    match docker.engine().inspect_image(tag).await {
        Ok(inspect) => {
            let id = inspect.id.ok_or_else(|| {
                RuntimeError::Engine(format!(
                    "imported image `{tag}` but the engine reports no id"
                ))
            })?;
            docker.remember_image(tag, &id);
            Ok(id)
        }
        Err(e) => Err(RuntimeError::Engine(format!(
            "inspecting imported image `{tag}`: {e}"
        ))),
    }
}

/// A stable digest (FNV-1a, 64 bits) of the layout version and the extra files.
fn content_digest(files: &[(&str, &[u8], u32)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(LAYOUT_VERSION.as_bytes());
    for (path, content, mode) in files {
        eat(path.as_bytes());
        eat(content);
        eat(&mode.to_le_bytes());
    }
    format!("{hash:016x}")
}

/// Whether an ELF executable asks for a dynamic loader (has a `PT_INTERP` program header).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // Only 64-bit little-endian ELF is inspected; anything else is left to the engine.
    if elf.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        u32_at(at) == Some(PT_INTERP)
    })
}

/// One entry of the root filesystem.
#[derive(Debug)]
enum Node {
    Dir(u32),
    File(Vec<u8>, u32),
    Symlink(String),
}

/// A root filesystem laid out in memory, keyed by path without the leading `/`.
#[derive(Debug, Default)]
struct RootFs {
    entries: BTreeMap<String, Node>,
}

impl RootFs {
    /// The busybox root: the binary, a symlink per applet (`/bin/sh` among them), `/tmp`
    /// (1777), `/workspace`, and `/etc/passwd` and `/etc/group` with root and nobody.
    fn busybox(busybox: Vec<u8>, applets: &[String]) -> Self {
        let mut root = RootFs::default();
        for (dir, mode) in [
            ("bin", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("dev", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
        ] {
            root.entries.insert(dir.to_string(), Node::Dir(mode));
        }
        root.entries.insert("tmp".to_string(), Node::Dir(0o1777));
        // Writable by the invoking user's uid when nothing is mounted over it.
        root.entries
            .insert("workspace".to_string(), Node::Dir(0o777));
        root.file("/bin/busybox", busybox, 0o755);
        root.symlink("/bin/sh", "busybox");
        for applet in applets {
            root.symlink(&format!("/bin/{applet}"), "busybox");
        }
        root.file(
            "/etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
        );
        root.file(
            "/etc/group",
            b"root:x:0:\nnobody:x:65534:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        );
        root
    }

    /// Adds (or replaces) a file, creating its parent directories.
    fn file(&mut self, path: &str, content: Vec<u8>, mode: u32) {
        let key = self.parents(path);
        self.entries.insert(key, Node::File(content, mode));
    }

    /// Adds (or replaces) a symlink, creating its parent directories.
    fn symlink(&mut self, path: &str, target: &str) {
        let key = self.parents(path);
        self.entries.insert(key, Node::Symlink(target.to_string()));
    }

    /// Adds the missing parent directories of `path`; returns its key.
    fn parents(&mut self, path: &str) -> String {
        let key = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&key).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            self.entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Node::Dir(0o755));
            parent = dir.parent();
        }
        key
    }

    /// The tar archive of the tree, parents before children, owned by root.
    fn into_tar(self) -> std::io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, node) in self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match node {
                Node::Dir(mode) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Node::File(content, mode) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(mode);
                    header.set_size(content.len() as u64);
                    tar.append_data(&mut header, &path, content.as_slice())?;
                }
                Node::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, &path, &target)?;
                }
            }
        }
        tar.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_has_parents_before_children_and_extra_files_override() {
        let mut root = RootFs::busybox(b"elf".to_vec(), &["ls".to_string(), "echo".to_string()]);
        root.file("/usr/local/bin/agent", b"#!/bin/sh\n".to_vec(), 0o755);
        root.file("/etc/passwd", b"custom\n".to_vec(), 0o644);
        let tar = root.into_tar().expect("in-memory archive");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            if path == "etc/passwd" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).expect("passwd");
                assert_eq!(text, "custom\n");
            }
            if path == "tmp/" {
                assert_eq!(entry.header().mode().expect("mode"), 0o1777);
            }
            seen.push(path);
        }
        for wanted in [
            "bin/sh",
            "bin/ls",
            "bin/echo",
            "usr/",
            "usr/local/",
            "usr/local/bin/agent",
            "workspace/",
        ] {
            assert!(
                seen.iter().any(|p| p == wanted),
                "{wanted} missing from {seen:?}"
            );
        }
        let pos = |p: &str| seen.iter().position(|s| s == p).expect("present");
        assert!(pos("usr/local/") < pos("usr/local/bin/agent"));
    }

    #[test]
    fn digest_changes_with_the_files() {
        assert_eq!(content_digest(&[]), content_digest(&[]));
        assert_ne!(content_digest(&[]), content_digest(&[("/a", b"x", 0o644)]));
        assert_ne!(
            content_digest(&[("/a", b"x", 0o644)]),
            content_digest(&[("/a", b"x", 0o755)])
        );
    }

    #[test]
    fn dynamic_executables_are_detected() {
        assert!(!has_interpreter(b"not an elf"));
        if let Ok(sh) = std::fs::read("/bin/busybox") {
            assert!(
                !has_interpreter(&sh),
                "Debian's busybox-static has no interpreter"
            );
        }
        if let Ok(cat) = std::fs::read("/bin/cat") {
            assert!(
                has_interpreter(&cat),
                "coreutils' cat is dynamically linked"
            );
        }
    }
}
