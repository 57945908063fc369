//! The Docker runtime: [`Runtime`] on a local Docker engine, through bollard.
//!
//! What it is for: turning a [`ContainerSpec`] into a locked-down container (the defaults of
//! DESIGN.md "Container defaults" live in [`container_config`], the one place that builds a
//! container config), running it with its output streamed into a log file, and finding it
//! again by its labels. What it is not for: images (see [`super::image`]), specs or nodes.
//!
//! Lifecycle of one container in [`Docker::run`]:
//!
//! 1. the log file is opened (the output goes after what it holds) and the container's
//!    streams are attached *before* it starts, so no output is lost;
//! 2. the container starts; a feeder task writes the stdin bytes and closes the write half
//!    (the container sees end of file); a writer task copies every output chunk into the log
//!    as it comes, keeping its head and tail under the log's cap ([`super::log`]), so memory
//!    and disk stay bounded whatever the container prints (the engine's own copy is capped
//!    too: [`engine_log`]);
//! 3. the engine's wait API is raced against the deadline, the watchdog (no output for the
//!    log's idle time, [`Log::idle`]) and the cancel signal; on any of the latter the
//!    container is stopped (SIGTERM, [`STOP_GRACE`], SIGKILL);
//! 4. the writer task is awaited (the attach stream ends when the container does), so the log
//!    is complete when `run` returns; a stream the engine keeps open after the container
//!    stopped is given up after [`DRAIN`] and the log rewritten from the engine's stored output.
//!
//! A container an earlier (killed) runner started is collected by [`Runtime::reattach`] from
//! the engine's stored output, followed while it runs.
//!
//! Invariants: no shell ever wraps the argv; nothing polls (every wait is on the engine or a
//! future); an engine failure is an error of the node, never a panic.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig,
    ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, ContainerArchiveInfoOptionsBuilder,
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::log::{open_log, silent, CappedLog, LastOutput};
use super::{
    cancelled, AbortOnDrop, Cancel, ContainerSpec, Cut, Exit, Listed, Log, Ran, Runtime,
    RuntimeError, LABEL_NODE, LABEL_RUN, STOP_GRACE,
};

/// An image and the programs asked of it.
type ProgramsKey = (String, Vec<String>);

/// The `PATH` of an image that sets none (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Label of the containers [`Runtime::missing_programs`] creates to look into an image.
const LABEL_PROBE: &str = "dispatch.probe";

/// Whether a Go file mode (the engine's path stat) is a program: a link (to one, presumably),
/// or a file that is not a directory with an execute bit.
fn is_program(mode: u32) -> bool {
    const DIR: u32 = 1 << 31;
    const LINK: u32 = 1 << 27;
    mode & LINK != 0 || (mode & DIR == 0 && mode & 0o111 != 0)
}

/// The socket used when `DOCKER_HOST` is not set.
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Seconds a single engine request may take before its response headers arrive. Long waits
/// (the wait and attach streams) are not bounded by it: the engine answers their headers at
/// once and the body streams for as long as the container runs.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A connection to a local Docker engine, with the API version negotiated.
#[derive(Clone, Debug)]
pub struct Docker {
    engine: bollard::Docker,
    /// Ids of images seen present, by name: each image is inspected once per process, not once
    /// per container or cache key. An image someone else rebuilds during a run keeps its old
    /// id here; only the agent-output cache key would see it.
    images: std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>,
    /// What [`Runtime::missing_programs`] found, by image and programs.
    programs: std::sync::Arc<std::sync::Mutex<HashMap<ProgramsKey, Vec<String>>>>,
    /// Held while an image is looked into: units starting at once wait for the first one's
    /// answer instead of each creating a probe container.
    probing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Docker {
    /// Connects to the engine on the local socket (`DOCKER_HOST` when it is a `unix://` path,
    /// else `/var/run/docker.sock`), negotiates the API version down to the engine's and pings
    /// it. Every failure is [`RuntimeError::Unreachable`] with the engine's message.
    pub async fn connect() -> Result<Docker, RuntimeError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        let Some(path) = host.strip_prefix("unix://") else {
            return Err(RuntimeError::Unreachable(format!(
                "DOCKER_HOST={host} is not a unix socket; dispatch talks to a local engine, \
                 set DOCKER_HOST=unix:///path/to/docker.sock or unset it"
            )));
        };
        let unreachable = |e: EngineError| RuntimeError::Unreachable(format!("{path}: {e}"));
        let engine = bollard::Docker::connect_with_unix(
            &host,
            REQUEST_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(unreachable)?;
        let engine = engine.negotiate_version().await.map_err(unreachable)?;
        engine.ping().await.map_err(unreachable)?;
        tracing::debug!(socket = path, version = %engine.client_version(), "connected to Docker");
        Ok(Docker {
            engine,
            images: Default::default(),
            programs: Default::default(),
            probing: Default::default(),
        })
    }

    /// The bollard client, for the image builder of this module's parent.
    pub(crate) fn engine(&self) -> &bollard::Docker {
        &self.engine
    }

    /// Removes probe containers ([`Runtime::missing_programs`]) created more than a minute ago:
    /// what a runner killed while it looked into an image left behind (a probe lives for
    /// milliseconds). Failures are only logged.
    async fn remove_stale_probes(&self) {
        let filters = HashMap::from([("label", vec![LABEL_PROBE.to_owned()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(found) = self.engine.list_containers(Some(options)).await else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for probe in found {
            let (Some(id), Some(created)) = (probe.id, probe.created) else {
                continue;
            };
            if now - created > 60 {
                if let Err(error) = self.remove(&id).await {
                    tracing::debug!(container = %id, %error, "cannot remove a stale probe");
                }
            }
        }
    }

    /// Whether a network of this name exists in the engine.
    pub async fn network_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self
            .engine
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(RuntimeError::Engine(format!(
                "inspecting network `{name}`: {e}"
            ))),
        }
    }

    /// Records that `tag` names image `id` now (the image builder just made it), so a cached
    /// older id is never given out.
    pub(crate) fn remember_image(&self, tag: &str, id: &str) {
        if let Ok(mut images) = self.images.lock() {
            images.insert(tag.to_owned(), id.to_owned());
        }
    }
}

/// Builds the engine's container config from a spec: the only place that decides what a
/// container may do.
///
/// The argv becomes Entrypoint (its first element) and Cmd (the rest), so an image's own
/// ENTRYPOINT never wraps it and no shell is involved. An empty network means `none`.
///
/// A container on network `none` is created with networking disabled: it gets a network
/// namespace of its own with only loopback (up, so QA's local servers work), and the engine
/// builds no network sandbox for it. That is the same isolation as `--network none` without
/// the engine's network hook, which re-executes the whole daemon for every container and was
/// a third of the engine's CPU time per trivial container here (Docker 20.10).
fn container_config(spec: &ContainerSpec) -> Result<ContainerCreateBody, RuntimeError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(RuntimeError::Engine(format!(
            "container `{}` has an empty argv; there is nothing to run",
            spec.name
        )));
    };
    let binds = spec
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only { "ro" } else { "rw" };
            format!("{}:{}:{mode}", m.source.display(), m.target)
        })
        .collect::<Vec<_>>();
    let network = if spec.network.is_empty() {
        "none"
    } else {
        spec.network.as_str()
    };
    let host_config = HostConfig {
        binds: Some(binds),
        network_mode: Some(network.to_string()),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        pids_limit: (spec.resources.pids > 0).then_some(spec.resources.pids),
        memory: spec
            .resources
            .memory_bytes
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        nano_cpus: spec.resources.cpus.map(|c| (c * 1e9).round() as i64),
        extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
        auto_remove: Some(false),
        log_config: Some(engine_log(spec.resources.log_bytes)),
        ulimits: spec.resources.file_bytes.map(|bytes| {
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            vec![ResourcesUlimits {
                name: Some("fsize".to_owned()),
                soft: Some(bytes),
                hard: Some(bytes),
            }]
        }),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(vec![program.clone()]),
        cmd: Some(args.to_vec()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: (!spec.workdir.is_empty()).then(|| spec.workdir.clone()),
        user: spec.user.clone(),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        attach_stdin: Some(spec.stdin),
        open_stdin: Some(spec.stdin),
        stdin_once: Some(spec.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        network_disabled: Some(network == "none"),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// The engine's own copy of a container's output: its `json-file` driver (whatever the
/// daemon's default, so the output can be read back), in two files of half the log's cap
/// each. The engine then keeps the last half to all of the cap (its JSON framing included)
/// on its disk, not everything a flood prints; a re-attached container's log is written from
/// that copy.
fn engine_log(log_bytes: u64) -> HostConfigLogConfig {
    let half = (log_bytes / 2).max(1 << 20);
    HostConfigLogConfig {
        typ: Some("json-file".to_owned()),
        config: Some(HashMap::from([
            ("max-size".to_owned(), half.to_string()),
            ("max-file".to_owned(), "2".to_owned()),
        ])),
    }
}

/// The HTTP status of an engine error, when the engine answered with one.
fn status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An engine error about one container, in words that name it.
fn engine_error(what: &str, id: &str, e: EngineError) -> RuntimeError {
    RuntimeError::Engine(format!("{what} container {id}: {e}"))
}

/// How long a container's output stream may stay open after the container stopped (it
/// normally ends at once).
const DRAIN: Duration = Duration::from_secs(10);

/// Copies every output chunk of the container into its log as it comes, and ends the log
/// when the stream ends: the figures when it was cut.
///
/// The writes are plain writes on this task, not hand-offs to the blocking pool: a chunk (tens
/// of KiB) goes to the page cache in microseconds, and the task is then only ever suspended
/// waiting on the stream, with nothing written halfway, which [`Docker::drain`] relies on
/// when it gives the stream up.
async fn write_log<S>(
    mut output: S,
    mut log: CappedLog,
    last: LastOutput,
) -> Result<Option<Cut>, RuntimeError>
where
    S: Stream<Item = Result<LogOutput, EngineError>> + Unpin,
{
    let path = log.path().to_path_buf();
    let log_error = |error| RuntimeError::Log {
        path: path.clone(),
        error,
    };
    while let Some(chunk) = output.next().await {
        let chunk =
            chunk.map_err(|e| RuntimeError::Engine(format!("reading container output: {e}")))?;
        let bytes = match &chunk {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => message,
            LogOutput::StdIn { .. } => continue,
        };
        last.stamp();
        log.write(bytes).map_err(log_error)?;
    }
    log.finish().map_err(log_error)
}

/// Writes the stdin bytes (if any) and closes the write half so the container reads end of
/// file. A container that exits without reading its input is not an error.
async fn feed_stdin<W: AsyncWrite + Unpin>(mut input: W, bytes: Option<Vec<u8>>) {
    if let Some(bytes) = bytes {
        if let Err(e) = input.write_all(&bytes).await {
            tracing::debug!(error = %e, "container stopped reading its stdin");
        }
    }
    if let Err(e) = input.shutdown().await {
        tracing::debug!(error = %e, "closing container stdin");
    }
}

impl Docker {
    /// Completes the log of a stopped container: waits for its writer, whose stream ends with
    /// the container. A stream the engine keeps open past [`DRAIN`] is dropped, and the log
    /// from byte `from` on is rewritten from the engine's stored output instead, so a node
    /// never hangs on it.
    async fn drain(
        &self,
        id: &str,
        mut writer: AbortOnDrop<Result<Option<Cut>, RuntimeError>>,
        log: &Log,
        from: u64,
    ) -> Result<Option<Cut>, RuntimeError> {
        let writer_failed = |e: tokio::task::JoinError| {
            RuntimeError::Engine(format!("log writer of container {id} failed: {e}"))
        };
        if let Ok(written) = tokio::time::timeout(DRAIN, &mut writer.0).await {
            return written.map_err(writer_failed)?;
        }
        tracing::warn!(
            container = id,
            "the engine kept the output stream open after the container stopped; \
             reading its stored output instead"
        );
        // The writer waits on the stream with every chunk written: nothing of it is in flight.
        writer.0.abort();
        let _ = (&mut writer.0).await;
        let file = open_log(log, Some(from)).await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let output = self.engine.logs(id, Some(options)).boxed();
        write_log(output, file, LastOutput::now()).await
    }

    /// Waits for the container to stop by itself, past `timeout`, when the watchdog finds it
    /// silent for too long, or on cancel; stops it in the latter three cases.
    async fn wait_or_stop(
        &self,
        id: &str,
        timeout: Duration,
        watchdog: Option<(LastOutput, Duration)>,
        cancel: Cancel,
    ) -> Result<Exit, RuntimeError> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = self.engine.wait_container(id, Some(options));
        let stopped_because = tokio::select! {
            waited = wait.next() => {
                return match waited {
                    Some(Ok(response)) => Ok(Exit::Code(response.status_code)),
                    Some(Err(EngineError::DockerContainerWaitError { code, .. })) => Ok(Exit::Code(code)),
                    Some(Err(e)) => Err(engine_error("waiting for", id, e)),
                    None => Err(RuntimeError::Engine(format!(
                        "waiting for container {id}: the engine ended the wait without a status"
                    ))),
                };
            }
            () = tokio::time::sleep(timeout) => Exit::TimedOut,
            () = silent(watchdog) => Exit::Idle,
            () = cancelled(cancel) => Exit::Cancelled,
        };
        drop(wait);
        tracing::debug!(container = id, reason = ?stopped_because, "stopping container");
        let grace = i32::try_from(STOP_GRACE.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(grace).build();
        match self.engine.stop_container(id, Some(options)).await {
            Ok(()) => Ok(stopped_because),
            // Gone or already stopped between the deadline and the stop: stopped all the same.
            Err(e) if matches!(status(&e), Some(404 | 304)) => Ok(stopped_because),
            Err(e) => Err(engine_error("stopping", id, e)),
        }
    }
}

impl Runtime for Docker {
    async fn reattach(
        &self,
        id: &str,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<Option<Ran>, RuntimeError> {
        let inspected = match self.engine.inspect_container(id, None).await {
            Ok(inspected) => inspected,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine_error("inspecting", id, e)),
        };
        let state = inspected.state.unwrap_or_default();
        let never_started = state
            .started_at
            .as_deref()
            .is_none_or(|s| s.starts_with("0001-"));
        if never_started && state.running != Some(true) {
            return Ok(None);
        }
        // The engine's stored log replays the whole output and follows it while the container
        // runs, ending when it stops; for a stopped container it is what was printed. One path
        // for both, and no race: an attach to a container that stopped after the inspect
        // above never ends on Docker 20.10.
        let file = open_log(log, Some(0)).await?;
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let output = self.engine.logs(id, Some(options)).boxed();
        let last = LastOutput::now();
        let writer = AbortOnDrop(tokio::spawn(write_log(output, file, last.clone())));
        // A stopped container's wait answers at once, with its exit code.
        let watchdog = log.idle.map(|idle| (last, idle));
        let exit = self.wait_or_stop(id, timeout, watchdog, cancel).await?;
        let cut = self.drain(id, writer, log, 0).await?;
        Ok(Some(Ran { exit, cut }))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if self.image_id(&spec.image).await?.is_none() {
            return Err(RuntimeError::ImageMissing(spec.image.clone()));
        }
        let config = container_config(spec)?;
        let options = (!spec.name.is_empty()).then(|| {
            CreateContainerOptionsBuilder::default()
                .name(&spec.name)
                .build()
        });
        let created = self
            .engine
            .create_container(options, config)
            .await
            .map_err(|e| match status(&e) {
                // The image vanished between the check and the create.
                Some(404) => RuntimeError::ImageMissing(spec.image.clone()),
                _ => RuntimeError::Engine(format!("creating container `{}`: {e}", spec.name)),
            })?;
        for warning in &created.warnings {
            tracing::warn!(container = %created.id, "engine: {warning}");
        }
        Ok(created.id)
    }

    async fn run(
        &self,
        id: &str,
        stdin: Option<Vec<u8>>,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<Ran, RuntimeError> {
        if *cancel.borrow() {
            return Ok(Ran {
                exit: Exit::Cancelled,
                cut: None,
            });
        }
        let file = open_log(log, None).await?;
        let from = file.start();

        // Attach before start: the stream sees everything from the first byte. Stdin is always
        // attached; the engine ignores it for a container created without `stdin`.
        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .engine
            .attach_container(id, Some(options))
            .await
            .map_err(|e| engine_error("attaching to", id, e))?;
        let last = LastOutput::now();
        let writer = AbortOnDrop(tokio::spawn(write_log(attached.output, file, last.clone())));
        let feeder = AbortOnDrop(tokio::spawn(feed_stdin(attached.input, stdin)));

        self.engine
            .start_container(id, None)
            .await
            .map_err(|e| engine_error("starting", id, e))?;

        let watchdog = log.idle.map(|idle| (last, idle));
        let exit = self.wait_or_stop(id, timeout, watchdog, cancel).await?;
        drop(feeder);
        // The attach stream ends with the container: the log is complete once the writer is.
        let cut = self.drain(id, writer, log, from).await?;
        Ok(Ran { exit, cut })
    }

    async fn missing_programs(
        &self,
        image: &str,
        programs: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        let key = (image.to_owned(), programs.to_vec());
        let _probing = self.probing.lock().await;
        if let Some(known) = self.programs.lock().ok().and_then(|p| p.get(&key).cloned()) {
            return Ok(known);
        }
        self.remove_stale_probes().await;
        let inspected = self
            .engine
            .inspect_image(image)
            .await
            .map_err(|e| match status(&e) {
                Some(404) => RuntimeError::ImageMissing(image.to_owned()),
                _ => RuntimeError::Engine(format!("inspecting image `{image}`: {e}")),
            })?;
        let path = inspected
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .find_map(|e| e.strip_prefix("PATH=").map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_PATH.to_owned());
        // A container that is created, never started, only looked into, then removed.
        let probe = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["/dispatch-never-runs".to_owned()]),
            network_disabled: Some(true),
            labels: Some(HashMap::from([(LABEL_PROBE.to_owned(), "1".to_owned())])),
            ..Default::default()
        };
        let created = self
            .engine
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                probe,
            )
            .await
            .map_err(|e| RuntimeError::Engine(format!("looking into image `{image}`: {e}")))?;
        let mut missing = Vec::new();
        let mut failed = None;
        for program in programs {
            let candidates: Vec<String> = if program.starts_with('/') {
                vec![program.clone()]
            } else {
                path.split(':')
                    .filter(|dir| dir.starts_with('/'))
                    .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
                    .collect()
            };
            let mut found = false;
            for candidate in candidates {
                let options = ContainerArchiveInfoOptionsBuilder::default()
                    .path(&candidate)
                    .build();
                match self
                    .engine
                    .get_container_archive_info(&created.id, Some(options))
                    .await
                {
                    Ok(stat) if is_program(stat.file_mode) => {
                        found = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if status(&e) == Some(404) => {}
                    Err(e) => {
                        failed = Some(engine_error("looking into", &created.id, e));
                        break;
                    }
                }
            }
            if !found {
                missing.push(program.clone());
            }
        }
        self.remove(&created.id).await?;
        if let Some(error) = failed {
            return Err(error);
        }
        if let Ok(mut known) = self.programs.lock() {
            known.insert(key, missing.clone());
        }
        Ok(missing)
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self.engine.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone, or not running (409): stopped all the same.
            Err(e) if matches!(status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(engine_error("killing", id, e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.engine.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine_error("removing", id, e)),
        }
    }

    async fn list(&self, run: &str) -> Result<Vec<Listed>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_RUN}={run}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .engine
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::Engine(format!("listing containers of run {run}: {e}")))?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let node = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_NODE))
                    .cloned()
                    .unwrap_or_default();
                let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                Some(Listed { id, node, running })
            })
            .collect())
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        let known = self
            .images
            .lock()
            .ok()
            .and_then(|images| images.get(image).cloned());
        if known.is_some() {
            return Ok(known);
        }
        match self.engine.inspect_image(image).await {
            Ok(inspect) => {
                let id = inspect.id.unwrap_or_default();
                if let Ok(mut images) = self.images.lock() {
                    images.insert(image.to_owned(), id.clone());
                }
                Ok(Some(id))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(RuntimeError::Engine(format!(
                "inspecting image `{image}`: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Carry, Mount, Resources};

    #[test]
    fn config_never_wraps_the_argv_in_a_shell_or_the_image_entrypoint() {
        let spec = ContainerSpec {
            argv: vec!["agent".into(), "--flag".into(), "a b".into()],
            ..Default::default()
        };
        let config = container_config(&spec).expect("non-empty argv");
        assert_eq!(config.entrypoint, Some(vec!["agent".to_string()]));
        assert_eq!(
            config.cmd,
            Some(vec!["--flag".to_string(), "a b".to_string()])
        );
    }

    #[test]
    fn config_applies_the_container_defaults() {
        let spec = ContainerSpec {
            argv: vec!["true".into()],
            mounts: vec![
                Mount {
                    source: "/w".into(),
                    target: "/workspace".into(),
                    read_only: false,
                    carry: Carry::In,
                },
                Mount {
                    source: "/c".into(),
                    target: "/cfg".into(),
                    read_only: true,
                    carry: Carry::In,
                },
            ],
            resources: Resources {
                memory_bytes: Some(1 << 30),
                cpus: Some(1.5),
                pids: 64,
                log_bytes: 8 << 20,
                file_bytes: Some(5 << 30),
            },
            stdin: true,
            ..Default::default()
        };
        let config = container_config(&spec).expect("non-empty argv");
        let host = config.host_config.expect("host config");
        assert_eq!(
            host.binds,
            Some(vec![
                "/w:/workspace:rw".to_string(),
                "/c:/cfg:ro".to_string()
            ])
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(config.network_disabled, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.memory, Some(1 << 30));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        let log = host.log_config.expect("the engine's copy is configured");
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let options = log.config.expect("with options");
        assert_eq!(options["max-size"], (4u64 << 20).to_string());
        assert_eq!(options["max-file"], "2");
        let fsize = &host.ulimits.expect("a file size limit")[0];
        assert_eq!(fsize.name.as_deref(), Some("fsize"));
        assert_eq!(fsize.hard, Some(5 << 30));
        assert_eq!(config.open_stdin, Some(true));
        assert_eq!(config.stdin_once, Some(true));
        assert_eq!(config.tty, Some(false));
    }

    #[test]
    fn only_a_container_without_network_has_networking_disabled() {
        for (network, disabled) in [
            ("", true),
            ("none", true),
            ("bridge", false),
            ("host", false),
        ] {
            let spec = ContainerSpec {
                argv: vec!["true".into()],
                network: network.into(),
                ..Default::default()
            };
            let config = container_config(&spec).expect("non-empty argv");
            assert_eq!(
                config.network_disabled,
                Some(disabled),
                "network `{network}`"
            );
        }
    }

    #[test]
    fn a_program_is_a_link_or_an_executable_file_never_a_directory() {
        assert!(is_program(0o755), "an executable file");
        assert!(is_program((1 << 27) | 0o777), "a link");
        assert!(!is_program(0o644), "a file nobody may run");
        assert!(!is_program((1 << 31) | 0o755), "a directory");
    }

    #[test]
    fn empty_argv_is_an_error() {
        assert!(container_config(&ContainerSpec::default()).is_err());
    }
}
