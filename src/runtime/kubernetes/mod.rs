//! The Kubernetes backend: every container a node runs becomes one `batch/v1` Job.
//!
//! The CLI stays the controller (the DAG, the limits, the journal, the commits and publish
//! stay where they are); only the container runs elsewhere, and this module makes that look
//! to the nodes exactly like a bound Docker container:
//!
//! - [`Runtime::create`] only names the Job (the journal records the name before anything
//!   exists on the cluster); [`Runtime::run`] sends the unit's work tree to its scratch ref
//!   ([`carry::send`]), creates the Job ([`pod::job`]; a 409 means a runner before this one
//!   created it, and it is taken as it is) and its Secret (owned by the Job: the cluster
//!   deletes it with the Job), streams the step's log into the unit's `meta/` log as it
//!   comes, takes the exit code from the pod's container statuses, and brings the result back
//!   ([`carry::bring_back`]) before it returns.
//! - Past its timeout, on cancel, or silent past the log's idle time, the Job is deleted with
//!   foreground propagation (its pod goes first), as a Docker container is stopped.
//! - [`Runtime::reattach`] (a resumed run) finds the Job by name and follows or collects it;
//!   [`Runtime::remove`] deletes it and its scratch refs; [`Runtime::list`] lists a run's
//!   Jobs by label.
//! - Jobs and pods are watched ([`watch`]), never polled.
//!
//! Images are the cluster's business: `missing_programs` cannot look into them from here
//! (nothing is reported missing), and an image is identified (for the agent result cache)
//! only by a digest reference.

pub mod carry;
pub mod doctor;
pub mod pod;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::AsyncReadExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};

use self::carry::{OutDir, Sent};
use self::pod::{Carried, PodSettings};
use self::watch::{RunWatch, Seen};
use super::log::{open_log, silent, LastOutput};
use super::{
    cancelled, AbortOnDrop, Cancel, ContainerSpec, Cut, Exit, Listed, Log, Ran, Runtime,
    RuntimeError, LABEL_RUN,
};
use crate::forge::http::Secret as Token;
use crate::spec::model::RuntimeSpec;

/// The clone and push steps' image when the spec names none.
pub const DEFAULT_GIT_IMAGE: &str = "dispatch-git:latest";
/// The uid and gid of the pods' containers when the spec names none.
pub const DEFAULT_RUN_AS: u32 = 1000;
/// How long the log stream may stay open once the step ended before it is read afresh.
const DRAIN: Duration = Duration::from_secs(10);
/// How long [`Runtime::remove`] waits for a deleted Job to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(60);

/// The forge credentials the pods get: `read` for the clone step, `write` for the push
/// step (each only in its own container), and `write` for this machine's pushes and fetches
/// of the scratch refs.
#[derive(Clone, Debug, Default)]
pub struct GitTokens {
    /// Read access.
    pub read: Option<Token>,
    /// Write access.
    pub write: Option<Token>,
}

/// A cluster, as the runtime of a run.
pub struct Kubernetes {
    client: Client,
    namespace: String,
    settings: PodSettings,
    tokens: GitTokens,
    /// Containers created (named) and not run yet.
    pending: Mutex<HashMap<String, ContainerSpec>>,
    /// What was sent per Job, for its removal.
    sent: Mutex<HashMap<String, Sent>>,
    /// The run of each Job this process ran or collected (whose watch says when it is gone).
    runs: Mutex<HashMap<String, String>>,
    /// Jobs [`Runtime::kill`] deleted: their step ended as a killed container does.
    killed: Mutex<std::collections::HashSet<String>>,
    /// The watches, per run.
    watches: tokio::sync::Mutex<HashMap<String, Arc<RunWatch>>>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn cluster_error(what: &str, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Cluster(format!("{what}: {error}"))
}

/// Whether a kube error is the API's answer with this HTTP status.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl Kubernetes {
    /// Connects to the cluster of the kubeconfig (`$KUBECONFIG`, else `~/.kube/config`; the
    /// spec's `runtime.context`, else the current one; the in-cluster account when there is no
    /// kubeconfig and no context is named), in the spec's namespace, else the context's, else
    /// `default`.
    pub async fn connect(spec: &RuntimeSpec, tokens: GitTokens) -> Result<Self, RuntimeError> {
        let config = match &spec.context {
            Some(context) => {
                let options = kube::config::KubeConfigOptions {
                    context: Some(context.clone()),
                    ..Default::default()
                };
                kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| cluster_error(&format!("the kubeconfig context `{context}`"), e))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| cluster_error("no kubeconfig and not in a cluster", e))?,
        };
        let namespace = spec
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| cluster_error("the client", e))?;
        Ok(Self {
            client,
            namespace,
            settings: PodSettings {
                service_account: spec.service_account.clone(),
                node_selector: spec.node_selector.clone(),
                tolerations: spec.tolerations.clone(),
                image_pull_secrets: spec.image_pull_secrets.clone(),
                git_image: spec
                    .git_image
                    .clone()
                    .unwrap_or_else(|| DEFAULT_GIT_IMAGE.to_owned()),
                run_as: spec.run_as.unwrap_or(DEFAULT_RUN_AS),
            },
            tokens,
            pending: Mutex::default(),
            sent: Mutex::default(),
            killed: Mutex::default(),
            runs: Mutex::default(),
            watches: tokio::sync::Mutex::default(),
        })
    }

    /// The namespace the Jobs go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The client (for `dispatch doctor`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The watches of run `run`, started on first use.
    async fn watch(&self, run: &str) -> Arc<RunWatch> {
        let mut watches = self.watches.lock().await;
        watches
            .entry(run.to_owned())
            .or_insert_with(|| Arc::new(RunWatch::start(self.jobs(), self.pods(), run)))
            .clone()
    }

    /// Deletes Job `name` (its pod first with `Foreground`); one that is gone is no error.
    async fn delete_job(&self, name: &str, foreground: bool) -> Result<(), RuntimeError> {
        let params = if foreground {
            DeleteParams::foreground()
        } else {
            DeleteParams::background()
        };
        match self.jobs().delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(cluster_error(&format!("deleting Job {name}"), e)),
        }
    }

    /// Creates the Job and then its Secret, owned by it; either one that exists already (a
    /// runner before this one made it) is taken as it is.
    async fn submit(&self, job: &Job, secret: Secret) -> Result<(), RuntimeError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let created = match self.jobs().create(&PostParams::default(), job).await {
            Ok(created) => created,
            Err(e) if is_status(&e, 409) => self
                .jobs()
                .get(&name)
                .await
                .map_err(|e| cluster_error(&format!("reading Job {name}"), e))?,
            Err(e) => return Err(cluster_error(&format!("creating Job {name}"), e)),
        };
        let owner = OwnerReference {
            api_version: "batch/v1".to_owned(),
            kind: "Job".to_owned(),
            name: name.clone(),
            uid: created.metadata.uid.clone().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        };
        let mut secret = secret;
        secret.metadata.owner_references = Some(vec![owner]);
        match self.secrets().create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => {
                let _ = self.delete_job(&name, false).await;
                Err(cluster_error(
                    &format!("creating the Secret of Job {name}"),
                    e,
                ))
            }
        }
    }

    /// The last lines of a container of Job `job`'s pod, for an error message.
    async fn tail(&self, seen: &Seen, container: &str) -> String {
        let Some(pod) = seen.pod.as_ref().and_then(|p| p.metadata.name.clone()) else {
            return String::new();
        };
        let params = LogParams {
            container: Some(container.to_owned()),
            tail_lines: Some(20),
            ..Default::default()
        };
        let text = self.pods().logs(&pod, &params).await.unwrap_or_default();
        let text = match &self.tokens.write {
            Some(token) => token.redact(&text),
            None => text,
        };
        match &self.tokens.read {
            Some(token) => token.redact(&text),
            None => text,
        }
    }

    fn was_killed(&self, job: &str) -> bool {
        self.killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(job)
    }

    /// Follows Job `job` to its end (see [`Runtime::run`]): `keep` is where its output starts
    /// in the log (`Some(0)`: the log is written afresh, for a Job collected again).
    // One call per container, from `run` and `reattach`, each with all of these at hand: a
    // struct would only be built to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    async fn follow(
        &self,
        watch: &RunWatch,
        job: &str,
        sent: &Sent,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
        keep: Option<u64>,
    ) -> Result<Ran, RuntimeError> {
        let stopped = |exit| Ran { exit, cut: None };
        // 1. Until the step runs (or the pod ended without it). A Job just created may not
        // have reached the watch yet: it is gone only once it was seen.
        let mut appeared = false;
        let waiting = watch.until(job, |seen, listed| {
            appeared |= seen.job.is_some();
            match stage(seen, listed && appeared) {
                Stage::Before => None,
                stage => Some(stage),
            }
        });
        let stage = tokio::select! {
            stage = waiting => stage,
            () = tokio::time::sleep(timeout + pod::DEADLINE_ALLOWANCE) => {
                self.delete_job(job, true).await?;
                return Err(RuntimeError::Cluster(format!(
                    "the pod of Job {job} never started its step (pending, or its images could not be pulled)"
                )));
            }
            () = cancelled(cancel.clone()) => {
                self.delete_job(job, true).await?;
                return Ok(stopped(Exit::Cancelled));
            }
        };
        let pod_name = match &stage {
            Stage::Gone if self.was_killed(job) => return Ok(stopped(Exit::Code(137))),
            Stage::Gone => {
                return Err(RuntimeError::Cluster(format!(
                    "Job {job} is gone from the cluster (deleted, or its TTL passed)"
                )))
            }
            Stage::Failed(why, step) => {
                let (seen, _) = watch.seen(job);
                let tail = match step {
                    Some(step) => self.tail(&seen, step).await,
                    None => String::new(),
                };
                return Err(RuntimeError::Cluster(format!(
                    "Job {job} failed before its step ran: {why}{}",
                    match (step, tail.is_empty()) {
                        (Some(step), false) => format!("; its {step} step printed:\n{tail}"),
                        _ => String::new(),
                    }
                )));
            }
            Stage::Step(pod) => pod.clone(),
            // The wait ends only past this stage.
            Stage::Before => {
                return Err(RuntimeError::Cluster(format!(
                    "Job {job}: the wait for its step ended early"
                )))
            }
        };

        // 2. The step: its log streamed while it runs.
        let file = open_log(log, keep).await?;
        let from = file.start();
        let last = LastOutput::now();
        let params = LogParams {
            container: Some(pod::STEP.to_owned()),
            follow: true,
            ..Default::default()
        };
        let stream = self
            .pods()
            .log_stream(&pod_name, &params)
            .await
            .map_err(|e| cluster_error(&format!("reading the log of pod {pod_name}"), e))?;
        let writer = tokio::spawn(write_log(Box::pin(stream), file, last.clone()));
        let writer = AbortOnDrop(writer);
        let started = tokio::time::Instant::now();
        let exited = watch.until(job, step_exit);
        let watchdog = log.idle.map(|idle| (last, idle));
        let exit = tokio::select! {
            exit = exited => match exit {
                Ok(code) => Exit::Code(code),
                // What a killed container answers (SIGKILL).
                Err(_) if self.was_killed(job) => Exit::Code(137),
                Err(why) => return Err(RuntimeError::Cluster(format!("Job {job}: {why}"))),
            },
            () = tokio::time::sleep_until(started + timeout) => Exit::TimedOut,
            () = silent(watchdog) => Exit::Idle,
            () = cancelled(cancel.clone()) => Exit::Cancelled,
        };
        let stopped_here = !matches!(exit, Exit::Code(_)) || self.was_killed(job);
        if !matches!(exit, Exit::Code(_)) {
            self.delete_job(job, true).await?;
        }
        let cut = match self.drain(writer, &pod_name, log, from).await {
            Ok(cut) => cut,
            // The pod of a step stopped here may go before its log was read to the end.
            Err(error) if stopped_here => {
                tracing::debug!(job, %error, "the log of a stopped step ended early");
                None
            }
            Err(error) => return Err(error),
        };
        let ran = Ran { exit, cut };
        if exit != Exit::Code(0) || stopped_here {
            return Ok(ran);
        }

        // 3. The push, and the result brought back.
        let pushed = watch.until(job, push_exit);
        let pushed = tokio::select! {
            pushed = pushed => pushed,
            () = tokio::time::sleep(pod::DEADLINE_ALLOWANCE) => Err("its push step did not end".to_owned()),
            () = cancelled(cancel.clone()) => {
                self.delete_job(job, true).await?;
                return Ok(stopped(Exit::Cancelled));
            }
        };
        match pushed {
            Ok(0) => {}
            Ok(code) => {
                let (seen, _) = watch.seen(job);
                let tail = self.tail(&seen, pod::PUSH).await;
                return Err(RuntimeError::Cluster(format!(
                    "the push step of Job {job} exited {code}; it printed:\n{tail}"
                )));
            }
            Err(why) => return Err(RuntimeError::Cluster(format!("Job {job}: {why}"))),
        }
        carry::bring_back(sent, self.tokens.write.as_ref()).await?;
        Ok(ran)
    }

    /// Waits for the log writer to see the stream's end; a stream the server keeps open is
    /// given up and the stored log read instead.
    async fn drain(
        &self,
        mut writer: AbortOnDrop<Result<Option<Cut>, RuntimeError>>,
        pod_name: &str,
        log: &Log,
        from: u64,
    ) -> Result<Option<Cut>, RuntimeError> {
        let joined = |e: tokio::task::JoinError| cluster_error("the log writer", e);
        if let Ok(written) = tokio::time::timeout(DRAIN, &mut writer.0).await {
            return written.map_err(joined)?;
        }
        writer.0.abort();
        let _ = (&mut writer.0).await;
        let file = open_log(log, Some(from)).await?;
        let params = LogParams {
            container: Some(pod::STEP.to_owned()),
            ..Default::default()
        };
        let stream = self
            .pods()
            .log_stream(pod_name, &params)
            .await
            .map_err(|e| cluster_error(&format!("reading the log of pod {pod_name}"), e))?;
        write_log(Box::pin(stream), file, LastOutput::now()).await
    }
}

/// Where a Job's pod is.
#[derive(Clone, Debug)]
enum Stage {
    /// Not at its step yet.
    Before,
    /// Its step runs or ran, in this pod.
    Step(String),
    /// It ended before its step ran: why, and the step that failed when one did.
    Failed(String, Option<&'static str>),
    /// The Job is gone.
    Gone,
}

fn status_of<'a>(
    statuses: Option<&'a Vec<ContainerStatus>>,
    name: &str,
) -> Option<&'a ContainerStatus> {
    statuses?.iter().find(|s| s.name == name)
}

fn terminated(status: Option<&ContainerStatus>) -> Option<&ContainerStateTerminated> {
    status?.state.as_ref()?.terminated.as_ref()
}

/// The Job's terminal condition (`Failed` or `Complete`, or the early `FailureTarget`), with
/// its reason.
fn job_end(job: &Job) -> Option<(String, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| {
            c.status == "True"
                && matches!(c.type_.as_str(), "Failed" | "FailureTarget" | "Complete")
        })
        .map(|c| {
            (
                c.type_.clone(),
                c.reason
                    .clone()
                    .or_else(|| c.message.clone())
                    .unwrap_or_default(),
            )
        })
}

fn stage(seen: &Seen, listed: bool) -> Stage {
    let Some(job) = &seen.job else {
        return if listed { Stage::Gone } else { Stage::Before };
    };
    if let Some(pod) = &seen.pod {
        let status = pod.status.as_ref();
        let init = status.and_then(|s| s.init_container_statuses.as_ref());
        let step = status_of(init, pod::STEP);
        let step_state = step.and_then(|s| s.state.as_ref());
        if step_state.is_some_and(|s| s.running.is_some() || s.terminated.is_some()) {
            return Stage::Step(pod.metadata.name.clone().unwrap_or_default());
        }
        for before in [pod::CLONE, pod::SEED] {
            if let Some(t) = terminated(status_of(init, before)).filter(|t| t.exit_code != 0) {
                return Stage::Failed(
                    format!("its {before} step exited {}", t.exit_code),
                    Some(before),
                );
            }
        }
        match status.and_then(|s| s.phase.as_deref()) {
            Some("Failed") => {
                let why = status
                    .and_then(|s| s.reason.clone())
                    .unwrap_or_else(|| "its pod failed".to_owned());
                return Stage::Failed(why, None);
            }
            Some("Succeeded") => {}
            // The pod's own end is still to come (the two watches do not keep each other's
            // order): it says more than the Job's.
            _ => return Stage::Before,
        }
    }
    match job_end(job) {
        Some((_, reason)) => Stage::Failed(format!("the Job ended ({reason})"), None),
        None => Stage::Before,
    }
}

/// The step's exit code once it exited; an error when the Job ended or went without one.
fn step_exit(seen: &Seen, listed: bool) -> Option<Result<i64, String>> {
    let Some(job) = &seen.job else {
        return listed.then(|| Err("the Job is gone from the cluster".to_owned()));
    };
    let pod_status = seen.pod.as_ref().and_then(|p| p.status.as_ref());
    let init = pod_status.and_then(|s| s.init_container_statuses.as_ref());
    if let Some(t) = terminated(status_of(init, pod::STEP)) {
        return Some(Ok(i64::from(t.exit_code)));
    }
    if seen.pod.is_none() || pod_status.and_then(|s| s.phase.as_deref()) == Some("Failed") {
        if let Some((_, reason)) = job_end(job) {
            return Some(Err(format!("the Job ended while its step ran ({reason})")));
        }
    }
    None
}

/// The push step's exit code once it exited; an error when the Job ended or went without one.
fn push_exit(seen: &Seen, listed: bool) -> Option<Result<i64, String>> {
    let Some(job) = &seen.job else {
        return listed.then(|| Err("the Job is gone from the cluster".to_owned()));
    };
    let pod_status = seen.pod.as_ref().and_then(|p| p.status.as_ref());
    let regular = pod_status.and_then(|s| s.container_statuses.as_ref());
    if let Some(t) = terminated(status_of(regular, pod::PUSH)) {
        return Some(Ok(i64::from(t.exit_code)));
    }
    match job_end(job) {
        Some((kind, reason)) if kind != "Complete" && seen.pod.is_none() => Some(Err(format!(
            "the Job ended before its push step did ({reason})"
        ))),
        _ => None,
    }
}

/// Copies the log stream into the capped log as it comes; the figures when it was cut.
async fn write_log<S>(
    mut stream: S,
    mut log: super::log::CappedLog,
    last: LastOutput,
) -> Result<Option<Cut>, RuntimeError>
where
    S: futures_util::AsyncBufRead + Unpin,
{
    let path = log.path().to_path_buf();
    let log_error = |error| RuntimeError::Log {
        path: path.clone(),
        error,
    };
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|e| cluster_error("reading a pod's log", e))?;
        if read == 0 {
            break;
        }
        last.stamp();
        log.write(&buffer[..read]).map_err(log_error)?;
    }
    log.finish().map_err(log_error)
}

/// The output directories of `spec` (its [`Carried::Out`] mounts) with what is not taken back
/// from them: where its other mounts sit below them, and the node's own log.
fn out_dirs(spec: &ContainerSpec, carried: &[Carried], log: &Log) -> Vec<OutDir> {
    spec.mounts
        .iter()
        .zip(carried)
        .filter(|(_, c)| matches!(c, Carried::Out(_)))
        .map(|(mount, _)| {
            let mut skip: Vec<String> = spec
                .mounts
                .iter()
                .filter_map(|other| {
                    let below = std::path::Path::new(&other.target)
                        .strip_prefix(&mount.target)
                        .ok()?;
                    (!below.as_os_str().is_empty()).then(|| below.to_string_lossy().into_owned())
                })
                .collect();
            if let Ok(own) = log.path.strip_prefix(&mount.source) {
                skip.push(own.to_string_lossy().into_owned());
            }
            OutDir {
                host: mount.source.clone(),
                skip,
                sent: String::new(),
            }
        })
        .collect()
}

impl Runtime for Kubernetes {
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let name = &spec.name;
        let label = name.len() <= 57
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !label {
            return Err(RuntimeError::Cluster(format!(
                "`{name}` cannot name a Job (lower-case letters, digits and `-`, at most 57)"
            )));
        }
        if spec.checkout.is_none() {
            return Err(RuntimeError::Cluster(format!(
                "container {name} names no checkout; the Kubernetes backend clones one"
            )));
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), spec.clone());
        Ok(name.clone())
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
        let spec = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .ok_or_else(|| RuntimeError::Cluster(format!("Job {id} was never created")))?;
        let checkout = spec
            .checkout
            .clone()
            .ok_or_else(|| RuntimeError::Cluster(format!("container {id} names no checkout")))?;
        let run = spec.labels.get(LABEL_RUN).cloned().unwrap_or_default();
        let inputs = pod::inputs(&spec).await?;
        let outs = out_dirs(&spec, &inputs.mounts, log);
        let sent = carry::send(&checkout, id, outs, self.tokens.write.as_ref()).await?;
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), sent.clone());
        let tokens = (self.tokens.read.is_some(), self.tokens.write.is_some());
        let job = pod::job(&pod::JobPlan {
            spec: &spec,
            inputs: &inputs,
            settings: &self.settings,
            sent: &sent,
            remote_there: &checkout.remote_there,
            timeout,
            tokens,
        })?;
        let secret = pod::secret(
            &spec,
            &inputs,
            stdin.as_deref(),
            (
                self.tokens.read.as_ref().map(Token::expose),
                self.tokens.write.as_ref().map(Token::expose),
            ),
        );
        let watch = self.watch(&run).await;
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), run);
        self.submit(&job, secret).await?;
        self.follow(&watch, id, &sent, log, timeout, cancel, None)
            .await
    }

    async fn reattach(
        &self,
        id: &str,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<Option<Ran>, RuntimeError> {
        let job = match self.jobs().get(id).await {
            Ok(job) => job,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(cluster_error(&format!("reading Job {id}"), e)),
        };
        // A runner killed between the Job and its Secret left a pod that waits for ever: it
        // goes, and the container starts afresh.
        match self.secrets().get(id).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {
                self.delete_job(id, true).await?;
                return Ok(None);
            }
            Err(e) => return Err(cluster_error(&format!("reading the Secret of Job {id}"), e)),
        }
        let annotations = job.metadata.annotations.clone().unwrap_or_default();
        let sent: Sent = annotations
            .get(pod::ANNOTATION_SENT)
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or_else(|| {
                RuntimeError::Cluster(format!("Job {id} does not say what was sent to it"))
            })?;
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), sent.clone());
        let run = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_RUN).cloned())
            .unwrap_or_default();
        let watch = self.watch(&run).await;
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), run);
        self.follow(&watch, id, &sent, log, timeout, cancel, Some(0))
            .await
            .map(Some)
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned());
        self.delete_job(id, true).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let known = self
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        // A Job an earlier runner made says what was sent to it.
        let sent = match known {
            Some(sent) => Some(sent),
            None => match self.jobs().get(id).await {
                Ok(job) => job
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(pod::ANNOTATION_SENT))
                    .and_then(|text| serde_json::from_str::<Sent>(text).ok()),
                Err(e) if is_status(&e, 404) => None,
                Err(e) => return Err(cluster_error(&format!("reading Job {id}"), e)),
            },
        };
        self.delete_job(id, false).await?;
        // Gone once the watch says so (its pod first, when a kill deleted it in the
        // foreground): a run that ends leaves no Job behind.
        let run = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(run) = run {
            let watch = self.watch(&run).await;
            let gone = watch.until(id, |seen, listed| {
                (listed && seen.job.is_none()).then_some(())
            });
            if tokio::time::timeout(GONE_WITHIN, gone).await.is_err() {
                tracing::warn!(job = id, "the Job is still being deleted");
            }
        }
        if let Some(sent) = sent {
            let prefix = format!("{}/", sent.refs);
            carry::forget(&sent.dir, &sent.remote, &prefix, self.tokens.write.as_ref()).await?;
        }
        Ok(())
    }

    async fn list(&self, run: &str) -> Result<Vec<Listed>, RuntimeError> {
        let params = ListParams::default().labels(&format!("{LABEL_RUN}={run}"));
        let jobs = self
            .jobs()
            .list(&params)
            .await
            .map_err(|e| cluster_error("listing the run's Jobs", e))?;
        Ok(jobs
            .items
            .into_iter()
            .map(|job| Listed {
                running: job_end(&job).is_none(),
                node: job
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(pod::ANNOTATION_NODE).cloned())
                    .unwrap_or_default(),
                id: job.metadata.name.unwrap_or_default(),
            })
            .collect())
    }

    async fn missing_programs(
        &self,
        _image: &str,
        _programs: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        Ok(image.contains("@sha256:").then(|| image.to_owned()))
    }
}
