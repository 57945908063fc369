//! The spec's directory tree: the only files a spec may make dispatch read.
//!
//! A spec may come from a pull request that CI validates, so every file it names (a Nickel
//! import, the `templates:` directory, the template files in it) is hostile input. Such a file
//! must resolve, with every symlink followed, to a path inside the canonical directory of the
//! spec file: an absolute path, a `..` that climbs out, or a link that points out is refused
//! before anything is read. What is read must be a regular file (a FIFO would block, a device
//! would never end) of at most [`SOURCE_MAX_BYTES`]. A refusal names the path as the spec wrote
//! it and never quotes what is outside the tree.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Most bytes of one file a spec is made of: the spec itself, a file it imports, a template.
/// A spec of 10,000 repositories is about 60 KiB.
pub const SOURCE_MAX_BYTES: u64 = 4 << 20;

/// Why a file a spec names is not read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The spec wrote an absolute path.
    #[error("`{0}` is an absolute path; a spec reads only files inside its own directory")]
    Absolute(String),
    /// The path resolves (through `..` or a symlink) to a place outside the tree.
    #[error("`{0}` is outside the spec's directory; a spec reads only files inside it")]
    Outside(String),
    /// The file cannot be read (missing, not a regular file, too large).
    #[error("cannot read `{written}`: {error}")]
    Unreadable {
        /// The path as written.
        written: String,
        /// What went wrong.
        error: io::Error,
    },
}

/// The directory tree of one spec file.
#[derive(Clone, Debug)]
pub struct SpecTree {
    root: PathBuf,
}

impl SpecTree {
    /// The tree of the spec at `spec`: its directory, canonical.
    pub fn of(spec: &Path) -> io::Result<Self> {
        let dir = match spec.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Ok(Self {
            root: dir.canonicalize()?,
        })
    }

    /// A tree rooted at `root` as it is (already canonical: it comes from [`Self::root`]).
    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    /// The canonical directory of the spec.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The canonical path of `path` (which the spec wrote as `written`), when it is inside the
    /// tree. A path that does not exist is an [`TreeError::Unreadable`] error.
    pub fn inside(&self, path: &Path, written: &str) -> Result<PathBuf, TreeError> {
        if Path::new(written).is_absolute() {
            return Err(TreeError::Absolute(written.to_owned()));
        }
        self.holds(path, written)
    }

    /// The canonical path of `path`, a path dispatch composed from the spec's directory (the
    /// template directory and what is found in it) and names `shown` in errors, when it is
    /// inside the tree. Unlike [`Self::inside`] it may be absolute, as it is when the spec's
    /// own path is (`dispatch validate /src/spec.yaml`, or `resume`, which loads the spec by
    /// the canonical path its run recorded): only where it resolves to decides.
    pub fn holds(&self, path: &Path, shown: &str) -> Result<PathBuf, TreeError> {
        let canonical = path.canonicalize().map_err(|error| TreeError::Unreadable {
            written: shown.to_owned(),
            error,
        })?;
        if canonical.starts_with(&self.root) {
            Ok(canonical)
        } else {
            Err(TreeError::Outside(shown.to_owned()))
        }
    }

    /// Reads the file at `path` (written as `written`) when it is inside the tree.
    pub fn read(&self, path: &Path, written: &str) -> Result<String, TreeError> {
        let canonical = self.inside(path, written)?;
        Self::read_canonical(&canonical, written)
    }

    /// Reads the file at `path`, composed by dispatch ([`Self::holds`]), when it is inside
    /// the tree.
    pub fn read_held(&self, path: &Path, shown: &str) -> Result<String, TreeError> {
        let canonical = self.holds(path, shown)?;
        Self::read_canonical(&canonical, shown)
    }

    fn read_canonical(canonical: &Path, shown: &str) -> Result<String, TreeError> {
        read_bounded(canonical).map_err(|error| TreeError::Unreadable {
            written: shown.to_owned(),
            error,
        })
    }
}

/// Reads a regular file of at most [`SOURCE_MAX_BYTES`], without blocking on a FIFO.
pub fn read_bounded(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    crate::runtime::mounted::regular(&file.metadata()?, path)?;
    let mut text = String::new();
    file.take(SOURCE_MAX_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > SOURCE_MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file is larger than {} MiB; dispatch does not read it",
                SOURCE_MAX_BYTES >> 20
            ),
        ));
    }
    Ok(text)
}
