//! Helpers shared by the integration tests: run the real binary and look at what a user sees.

#![allow(dead_code)] // each test file uses a different subset of these helpers

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of `dispatch` printed.
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `dispatch ARGS` in the repository root with colour off.
pub fn dispatch(args: &[&str]) -> Output {
    dispatch_in(&root(), args)
}

/// Runs `dispatch ARGS` in `dir`.
pub fn dispatch_in(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .arg("--color")
        .arg("never")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("the dispatch binary runs");
    let out = Output {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !out.stderr.contains("panicked"),
        "dispatch panicked on {args:?}:\n{}",
        out.stderr
    );
    out
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dispatch-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    /// Writes `text` to `relative` (creating directories) and returns the path.
    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the Docker engine answers. Without it the Docker tests skip, unless CI sets
/// DISPATCH_REQUIRE_DOCKER=1: then they fail.
pub fn docker_available() -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(dispatch::runtime::docker::Docker::connect()) {
        Ok(_) => true,
        Err(error) if std::env::var("DISPATCH_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("DISPATCH_REQUIRE_DOCKER=1 but the engine is unreachable: {error}")
        }
        Err(error) => {
            eprintln!("skipped: no Docker engine ({error})");
            false
        }
    }
}

/// Containers of a run that still exist in the engine.
pub fn leftovers(run: &str) -> usize {
    use dispatch::runtime::Runtime;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let docker = dispatch::runtime::docker::Docker::connect().await.unwrap();
        docker.list(run).await.unwrap().len()
    })
}
