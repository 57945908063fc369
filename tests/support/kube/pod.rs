//! What the fake kubelet knows of a pod: each container's state and output, and whether the
//! pod was asked to stop. The pod object's `status` is *derived* from this record
//! ([`PodRecord::status`]) and written only when the kubelet publishes, so the record may run
//! ahead of the object (pods/log reads the record: an init container's output is readable
//! while the published status still says Pending).
//!
//! Lifecycle of a container: `Waiting` (PodInitializing / ContainerCreating, or an error
//! reason such as ErrImageNeverPull) -> `Running` -> `Terminated`; never backwards (no
//! restarts: restartPolicy Never, backoffLimit 0).
//!
//! The pod's phase follows from the containers: Failed once a plain init container exited
//! non-zero or the Job's deadline killed it; Succeeded or Failed once every regular container
//! has terminated (Failed when any exited non-zero); Running once a regular container started;
//! Pending before. Sidecars (init containers with `restartPolicy: Always`) never decide it.

use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::logs::Log;
use super::values::rfc3339;

/// What an entry of the pod spec is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    /// `initContainers[]`, run to its end before the next.
    Init,
    /// `initContainers[]` with `restartPolicy: Always`: started, not waited for.
    Sidecar,
    /// `containers[]`.
    Regular,
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    /// The exit code (137 when killed).
    pub exit_code: i64,
    /// `Completed`, `Error`, `OOMKilled` or `StartError`.
    pub reason: String,
    /// The termination message, when there is one.
    pub message: Option<String>,
    /// When it started.
    pub started_at: SystemTime,
    /// When it ended.
    pub finished_at: SystemTime,
}

/// Where a container is.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerState {
    /// Not started (yet).
    Waiting {
        /// `PodInitializing`, `ContainerCreating`, `ErrImageNeverPull`, ...
        reason: String,
        /// Details, for the error reasons.
        message: Option<String>,
    },
    /// Started, not ended.
    Running {
        /// When it started.
        started_at: SystemTime,
    },
    /// Ended.
    Terminated(Terminated),
}

/// One container of a pod.
#[derive(Debug)]
pub struct ContainerRecord {
    /// Its name.
    pub name: String,
    /// Which list it is from.
    pub kind: ContainerKind,
    /// Its image.
    pub image: String,
    /// Its state.
    pub state: ContainerState,
    /// The engine's id, once created.
    pub docker_id: Option<String>,
    /// Its output, stdout and stderr interleaved.
    pub log: Log,
}

/// Why the kubelet must stop a pod. Ordered: a request only ever escalates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// The Job's deadline passed: kill what runs; the pod stays, Failed.
    Kill,
    /// The pod is deleted: kill, remove its containers and directories, then it goes.
    Delete,
    /// The fake cluster is dropped: stop at once; the cluster removes the containers.
    Shutdown,
}

/// A pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not all regular containers started.
    Pending,
    /// Running.
    Running,
    /// Every regular container exited 0.
    Succeeded,
    /// An init container or a regular one failed, or the deadline killed it.
    Failed,
}

impl Phase {
    /// The status field.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Succeeded or Failed.
    pub fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The kubelet's record of one pod.
#[derive(Debug)]
pub struct PodRecord {
    /// The pod's uid.
    pub uid: String,
    /// Init containers (and sidecars) in order, then the regular ones.
    pub containers: Vec<ContainerRecord>,
    /// The stop request, which the pod's kubelet task waits on.
    pub stop: watch::Sender<Option<Stop>>,
    /// The Job's deadline killed it.
    pub killed: bool,
    /// When the kubelet began (`status.startTime`).
    pub started_at: Option<SystemTime>,
    /// Its directory on the host (volumes, termination messages).
    pub dir: PathBuf,
}

impl PodRecord {
    /// A record for `spec`, nothing started.
    pub fn new(uid: &str, spec: &Value, dir: PathBuf) -> Self {
        let init = spec["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let waiting = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let record = |c: &Value, kind| ContainerRecord {
            name: c["name"].as_str().unwrap_or_default().to_owned(),
            kind,
            image: c["image"].as_str().unwrap_or_default().to_owned(),
            state: ContainerState::Waiting {
                reason: waiting.to_owned(),
                message: None,
            },
            docker_id: None,
            log: Log::default(),
        };
        let mut containers: Vec<ContainerRecord> = init
            .iter()
            .map(|c| {
                let kind = if c["restartPolicy"] == "Always" {
                    ContainerKind::Sidecar
                } else {
                    ContainerKind::Init
                };
                record(c, kind)
            })
            .collect();
        containers.extend(
            spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| record(c, ContainerKind::Regular)),
        );
        Self {
            uid: uid.to_owned(),
            containers,
            stop: watch::Sender::new(None),
            killed: false,
            started_at: None,
            dir,
        }
    }

    /// Asks the kubelet to stop; a smaller request than one already made is ignored.
    pub fn request_stop(&self, stop: Stop) {
        self.stop.send_if_modified(|current| {
            if current.is_none_or(|c| c < stop) {
                *current = Some(stop);
                true
            } else {
                false
            }
        });
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerRecord> {
        self.containers.iter().find(|c| c.name == name)
    }

    fn regular(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.containers
            .iter()
            .filter(|c| c.kind == ContainerKind::Regular)
    }

    /// The phase the containers give.
    pub fn phase(&self) -> Phase {
        let failed_init = self.containers.iter().any(|c| {
            c.kind == ContainerKind::Init
                && matches!(&c.state, ContainerState::Terminated(t) if t.exit_code != 0)
        });
        if self.killed || failed_init {
            return Phase::Failed;
        }
        let ended: Vec<Option<i64>> = self
            .regular()
            .map(|c| match &c.state {
                ContainerState::Terminated(t) => Some(t.exit_code),
                _ => None,
            })
            .collect();
        if !ended.is_empty() && ended.iter().all(Option::is_some) {
            return if ended.iter().all(|e| *e == Some(0)) {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
        if self
            .regular()
            .any(|c| !matches!(c.state, ContainerState::Waiting { .. }))
        {
            Phase::Running
        } else {
            Phase::Pending
        }
    }

    /// The pod's `status` as of now; `previous` is the published one (its `qosClass` and
    /// its conditions' transition times are kept).
    pub fn status(&self, previous: &Value, now: SystemTime) -> Value {
        let phase = self.phase();
        let initialized = self.containers.iter().all(|c| match c.kind {
            ContainerKind::Init => {
                matches!(&c.state, ContainerState::Terminated(t) if t.exit_code == 0)
            }
            ContainerKind::Sidecar => !matches!(c.state, ContainerState::Waiting { .. }),
            ContainerKind::Regular => true,
        });
        let ready = phase == Phase::Running
            && self
                .regular()
                .all(|c| matches!(c.state, ContainerState::Running { .. }));
        let not_ready = if phase.terminal() {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let condition = |kind: &str, status: bool, reason: &str| {
            let status = if status { "True" } else { "False" };
            let kept = previous["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == kind && c["status"] == status)
                .map(|c| c["lastTransitionTime"].clone());
            let mut c = json!({
                "type": kind, "status": status, "lastProbeTime": null,
                "lastTransitionTime": kept.unwrap_or_else(|| json!(rfc3339(now))),
            });
            if status == "False" {
                c["reason"] = json!(reason);
            }
            c
        };
        let statuses = |kinds: &[ContainerKind]| -> Vec<Value> {
            self.containers
                .iter()
                .filter(|c| kinds.contains(&c.kind))
                .map(container_status)
                .collect()
        };
        let mut status = json!({
            "phase": phase.as_str(),
            "conditions": [
                condition("PodReadyToStartContainers", true, ""),
                condition("Initialized", initialized, "ContainersNotInitialized"),
                condition("Ready", ready, not_ready),
                condition("ContainersReady", ready, not_ready),
                condition("PodScheduled", true, ""),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{ "ip": "127.0.0.1" }],
            "qosClass": previous["qosClass"].clone(),
            "containerStatuses": statuses(&[ContainerKind::Regular]),
        });
        let init = statuses(&[ContainerKind::Init, ContainerKind::Sidecar]);
        if !init.is_empty() {
            status["initContainerStatuses"] = json!(init);
        }
        if let Some(started) = self.started_at {
            status["startTime"] = json!(rfc3339(started));
        }
        status
    }
}

/// One entry of `containerStatuses` / `initContainerStatuses`.
fn container_status(c: &ContainerRecord) -> Value {
    let id = c.docker_id.as_ref().map(|id| format!("docker://{id}"));
    let state = match &c.state {
        ContainerState::Waiting { reason, message } => {
            let mut waiting = json!({ "reason": reason });
            if let Some(message) = message {
                waiting["message"] = json!(message);
            }
            json!({ "waiting": waiting })
        }
        ContainerState::Running { started_at } => {
            json!({ "running": { "startedAt": rfc3339(*started_at) } })
        }
        ContainerState::Terminated(t) => {
            let mut terminated = json!({
                "exitCode": t.exit_code, "reason": t.reason,
                "startedAt": rfc3339(t.started_at), "finishedAt": rfc3339(t.finished_at),
            });
            if let Some(message) = &t.message {
                terminated["message"] = json!(message);
            }
            if let Some(id) = &id {
                terminated["containerID"] = json!(id);
            }
            json!({ "terminated": terminated })
        }
    };
    let running = matches!(c.state, ContainerState::Running { .. });
    let mut status = json!({
        "name": c.name, "state": state, "lastState": {}, "ready": running,
        "restartCount": 0, "image": c.image, "imageID": "", "started": running,
    });
    if let Some(id) = id {
        status["containerID"] = json!(id);
    }
    status
}
