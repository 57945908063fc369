//! The container runtime: what the executor needs from an engine, and nothing about specs.
//!
//! A node that runs a container goes through [`Runtime::create`] (the journal records the
//! returned id before anything else happens), [`Runtime::run`] (start, feed stdin, stream the
//! output to a log file, wait with a deadline and a cancel signal) and [`Runtime::remove`].
//! Containers carry the labels `dispatch.run` and `dispatch.node` so a restarted runner can find
//! them with [`Runtime::list`].
//!
//! The trait does not assume bind mounts: a [`Mount`] names what a container needs at a path,
//! and a [`Checkout`] the git work tree it works in. The Docker runtime binds both; the
//! Kubernetes runtime ([`kubernetes`]) runs the container in a pod far away, where the
//! checkout is cloned from the forge and its result pushed back, and other mounts are carried
//! in (and back) as their [`Carry`] says.

pub mod any;
pub mod docker;
pub mod image;
pub mod kubernetes;
pub mod log;
pub mod mounted;
pub mod noop;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use log::{Cut, Log};

/// Label holding the run id.
pub const LABEL_RUN: &str = "dispatch.run";
/// Label holding the node id.
pub const LABEL_NODE: &str = "dispatch.node";
/// Time a container gets between SIGTERM and SIGKILL when stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Everything needed to create one container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    /// Container name (unique per run and node attempt).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Argv; the first element is the program. Never passed through a shell by the runtime.
    pub argv: Vec<String>,
    /// Environment, resolved values (only the names the agent is allowed).
    pub env: Vec<(String, String)>,
    /// Working directory inside the container.
    pub workdir: String,
    /// What the container sees at which path.
    pub mounts: Vec<Mount>,
    /// `uid:gid` to run as.
    pub user: Option<String>,
    /// Network mode: `none`, `bridge`, `host` or a network name.
    pub network: String,
    /// Labels (always including [`LABEL_RUN`] and [`LABEL_NODE`]).
    pub labels: BTreeMap<String, String>,
    /// Whether the container reads standard input (fed by [`Runtime::run`]).
    pub stdin: bool,
    /// Resource limits.
    pub resources: Resources,
    /// Extra `/etc/hosts` entries, e.g. `host.docker.internal:host-gateway`.
    pub extra_hosts: Vec<String>,
    /// The git work tree the container works in (its mounts are among `mounts`), for a
    /// runtime that cannot bind it; set by the node that runs the container.
    pub checkout: Option<Checkout>,
}

/// A path the container sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// What a runtime that copies rather than binds carries (read-only mounts: always in).
    pub carry: Carry,
}

/// What a runtime that runs containers far away (Kubernetes) carries for a mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Carry {
    /// What the host holds there goes in; what the container changes stays with it (an
    /// agent's home: it holds credentials, which must not travel back through the forge).
    #[default]
    In,
    /// What the host holds goes in and what the container leaves comes back (`meta/`), both
    /// through the forge, as the checkout does: so it must hold no credential.
    Both,
}

/// A git work tree on this machine that a container works in: a runtime that cannot bind it
/// pushes its state (HEAD and what is not committed) to a scratch ref of `remote`, has the
/// container's side clone that, and brings the container's result back into `dir` the same
/// way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    /// The work tree (bound at [`crate::agents::WORKDIR`]).
    pub dir: PathBuf,
    /// Where this machine pushes and fetches the scratch refs (a path or a URL).
    pub remote: String,
    /// Where the container's side clones and pushes the same repository (an HTTP(S) URL).
    pub remote_there: String,
}

/// Resource limits of a container.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPUs (fractional).
    pub cpus: Option<f64>,
    /// Most processes.
    pub pids: i64,
    /// Most bytes of the container's output the engine keeps (its own copy, which
    /// [`Runtime::reattach`] reads); the log dispatch writes is capped by [`Log::limit`].
    pub log_bytes: u64,
    /// Largest file a process in the container may write (`RLIMIT_FSIZE`), when limited.
    pub file_bytes: Option<u64>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            memory_bytes: None,
            cpus: None,
            pids: 512,
            log_bytes: crate::spec::model::Resources::DEFAULT_LOG.bytes(),
            file_bytes: None,
        }
    }
}

/// How a container ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited by itself with this code.
    Code(i64),
    /// It ran past its deadline and was stopped.
    TimedOut,
    /// The cancel signal stopped it.
    Cancelled,
    /// It printed nothing for its log's idle time ([`Log::idle`]) and was stopped.
    Idle,
}

/// How a container ended, and whether its log was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ran {
    /// How it ended.
    pub exit: Exit,
    /// The figures of its output when it passed the log's cap.
    pub cut: Option<Cut>,
}

/// Errors of the engine, each a transient or infrastructure problem of one node.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached at all.
    #[error("cannot reach the Docker engine: {0}")]
    Unreachable(String),
    /// The cluster cannot be reached, or refuses what dispatch needs of it.
    #[error("Kubernetes: {0}")]
    Cluster(String),
    /// The image is not present (and cannot be pulled here).
    #[error("image `{0}` is not present in the engine; build or load it first")]
    ImageMissing(String),
    /// Any other engine error.
    #[error("container engine error: {0}")]
    Engine(String),
    /// Writing the log failed.
    #[error("cannot write container log {path}: {error}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
}

/// A cancel signal: becomes `true` once, when the node must stop.
pub type Cancel = tokio::sync::watch::Receiver<bool>;

/// Resolves when the cancel signal is (or already was) true; never when its sender is gone.
pub async fn cancelled(mut cancel: Cancel) {
    if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Aborts a spawned task when dropped, so a dropped `run` leaves no task behind.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A container with its labels, as [`Runtime::list`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Container id.
    pub id: String,
    /// The `dispatch.node` label.
    pub node: String,
    /// Whether it is running.
    pub running: bool,
}

/// A container engine.
pub trait Runtime: Send + Sync + 'static {
    /// Creates (does not start) a container; returns its id.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Starts the container, writes `stdin` (then closes it) when given, streams stdout and
    /// stderr into `log` as they come, after what the file holds (its head and tail under
    /// the log's cap: see [`log`]; memory stays bounded whatever the volume), and waits:
    /// past `timeout` it stops the container (SIGTERM, [`STOP_GRACE`], SIGKILL) and returns
    /// [`Exit::TimedOut`]; after [`Log::idle`] without output, [`Exit::Idle`]; when `cancel`
    /// turns true it does the same and returns [`Exit::Cancelled`].
    fn run(
        &self,
        id: &str,
        stdin: Option<Vec<u8>>,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> impl Future<Output = Result<Ran, RuntimeError>> + Send;

    /// Collects a container that an earlier runner (since killed) created: while it still runs,
    /// re-attaches (its whole output is written to `log` afresh) and waits as [`Runtime::run`]
    /// does, with a fresh `timeout`; when it already exited, writes its output to `log` and
    /// returns its exit code. `None` when the container is gone or was never started.
    fn reattach(
        &self,
        id: &str,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> impl Future<Output = Result<Option<Ran>, RuntimeError>> + Send;

    /// Kills the container at once (SIGKILL, no grace: it must not go on writing); one that
    /// already stopped or is gone is not an error. [`Runtime::run`] then returns as it does
    /// for a container that exited by itself.
    fn kill(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes the container (forcefully); a container that is already gone is not an error.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Containers labelled with this run id, running or not.
    fn list(&self, run: &str) -> impl Future<Output = Result<Vec<Listed>, RuntimeError>> + Send;

    /// Of `programs` (names looked up in the image's `PATH`, or absolute paths), the ones the
    /// image lacks, looked up in its filesystem without running anything in it. Asked once per
    /// image and list in a process (the answer is kept).
    fn missing_programs(
        &self,
        image: &str,
        programs: &[String],
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;

    /// Whether the image exists locally; its id when it does.
    fn image_id(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
}
