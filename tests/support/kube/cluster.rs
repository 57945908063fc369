//! The cluster's state and the one place where it changes: the API writes (create, patch,
//! delete), the Job controller's reactions, the garbage collector, and what the kubelets
//! report. Every method runs under the cluster lock and does no I/O; what needs I/O or time
//! (start a pod's kubelet, fire a timer) comes back as [`Act`]s that the caller performs
//! once the lock is released ([`super::perform`]).
//!
//! A Job's life ([`JobPhase`]), and the events that move it:
//!
//! ```text
//!  created, suspend ─────────────▶ Suspended ──patch suspend=false──▶ Active
//!  created ──────────────────────▶ Active { pod } ──pod Succeeded/Failed──▶ Finished
//!  Active ──activeDeadlineSeconds passed──▶ Stopping { pod } ──pod Failed──▶ Finished
//!  Active ──patch suspend=true (pod deleted)──▶ Suspended
//!  Finished ──ttlSecondsAfterFinished passed──▶ deleted (Background)
//! ```
//!
//! Invariants: a Job has at most one pod at a time and never gets a second one for a failed
//! first (no retries, whatever `backoffLimit` says); a Job's status changes only here; a pod
//! object goes only when its kubelet says it is gone ([`Cluster::pod_gone`]), after its
//! containers were removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::jobs::{self, Failure};
use super::pod::{Phase, PodRecord, Stop};
use super::status::{self, ApiError};
use super::store::{Kind, Store};
use super::values::{
    base64_decode, base64_encode, hex_id, name_suffix, parse_rfc3339, rfc3339, uid,
};
use super::Seen;

/// Where a Job is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobPhase {
    /// `spec.suspend`: no pod.
    Suspended,
    /// Its pod is Pending or Running.
    Active {
        /// The pod.
        pod: String,
    },
    /// The deadline passed; its pod is being killed.
    Stopping {
        /// The pod.
        pod: String,
    },
    /// Complete or Failed.
    Finished,
}

/// The Job controller's record of one Job.
#[derive(Debug)]
pub struct JobRecord {
    /// The Job's uid (a name may be reused; a uid is not).
    pub uid: String,
    /// Where it is.
    pub phase: JobPhase,
}

/// A timer that fired.
#[derive(Clone, Debug)]
pub enum Happened {
    /// A Job's `activeDeadlineSeconds` may have passed.
    Deadline {
        /// The Job.
        job: String,
        /// Its uid when the timer was set.
        uid: String,
    },
    /// A finished Job's `ttlSecondsAfterFinished` passed.
    Ttl {
        /// The Job.
        job: String,
        /// Its uid when the timer was set.
        uid: String,
    },
}

/// What the caller must do once the lock is released.
#[must_use]
#[derive(Debug)]
pub enum Act {
    /// Start the kubelet of this pod.
    RunPod(String),
    /// Feed this to [`Cluster::handle`] after the delay.
    After(Duration, Happened),
}

/// `propagationPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents stay (their ownerReference goes); the batch/v1 Job default.
    Orphan,
    /// The object goes now, its dependents after it.
    Background,
    /// The dependents go first; the object waits with the `foregroundDeletion` finalizer.
    Foreground,
}

/// DeleteOptions, from the body and the query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `propagationPolicy` (or `orphanDependents`).
    pub propagation: Option<Propagation>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// Everything the fake holds.
pub struct Cluster {
    /// The only namespace.
    pub namespace: String,
    /// The objects.
    pub store: Store,
    /// The Job controller's records, by Job name.
    pub jobs: BTreeMap<String, JobRecord>,
    /// The kubelets' records, by pod name.
    pub pods: BTreeMap<String, PodRecord>,
    /// Every request.
    pub seen: Vec<Seen>,
    /// Every violation of the API subset.
    pub violations: Vec<String>,
    /// (verb, resource) pairs access reviews and requests are refused for.
    pub denied: BTreeSet<(String, String)>,
    /// Containers created so far.
    pub created_containers: usize,
    /// Container creations in flight (the cluster's drop waits for them).
    pub creating: usize,
    /// The fake cluster was dropped.
    pub closed: bool,
    /// Bumped when the API server "restarts": open watches end.
    pub watch_epoch: u64,
    /// Told whenever a container's output grows or a container changes state.
    pub output: watch::Sender<u64>,
    pods_dir: PathBuf,
}

/// The uid of `object`.
fn uid_of(object: &Value) -> String {
    object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The name of `object`.
fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether `object` has an ownerReference to `owner`.
fn owned_by(object: &Value, owner: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["uid"] == owner)
}

impl Cluster {
    /// An empty cluster.
    pub fn new(namespace: &str, history: usize, pods_dir: PathBuf) -> Self {
        Self {
            namespace: namespace.to_owned(),
            store: Store::new(history),
            jobs: BTreeMap::new(),
            pods: BTreeMap::new(),
            seen: Vec::new(),
            violations: Vec::new(),
            denied: BTreeSet::new(),
            created_containers: 0,
            creating: 0,
            closed: false,
            watch_epoch: 0,
            output: watch::Sender::new(0),
            pods_dir,
        }
    }

    /// Tells every reader of container output to look again.
    pub fn output_changed(&self) {
        self.output.send_modify(|n| *n += 1);
    }

    /// Stops everything: kubelets return, watches and log streams end.
    pub fn close(&mut self) {
        self.closed = true;
        for record in self.pods.values() {
            record.request_stop(Stop::Shutdown);
        }
        self.store.wake();
        self.output_changed();
    }

    fn metadata(&self, object: &mut Value, now: SystemTime) -> Result<String, ApiError> {
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let meta = &mut object["metadata"];
        if meta["name"].as_str().is_none_or(str::is_empty) {
            if let Some(generate) = meta["generateName"].as_str().filter(|g| !g.is_empty()) {
                meta["name"] = json!(format!("{generate}{}", name_suffix()));
            }
        }
        if let Some(ns) = meta["namespace"]
            .as_str()
            .filter(|ns| *ns != self.namespace)
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({ns}) does not match the namespace sent \
                 on the request ({})",
                self.namespace
            )));
        }
        meta["namespace"] = json!(self.namespace);
        meta["uid"] = json!(uid());
        meta["creationTimestamp"] = json!(rfc3339(now));
        Ok(name_of(object))
    }

    /// `POST` of a Job, Secret or ConfigMap; returns the object as stored.
    pub fn create(
        &mut self,
        kind: Kind,
        mut object: Value,
        dry_run: bool,
    ) -> Result<(Value, Vec<Act>), ApiError> {
        let now = SystemTime::now();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.name());
        let name = self.metadata(&mut object, now)?;
        if kind == Kind::Job {
            let causes = jobs::validate(&object);
            if !causes.is_empty() {
                return Err(ApiError::invalid(kind, &name, &causes));
            }
        } else if name.is_empty() {
            let cause = "Required value: name or generateName is required".to_owned();
            return Err(ApiError::invalid(
                kind,
                &name,
                &[("metadata.name".to_owned(), cause)],
            ));
        } else if !jobs::dns_subdomain(&name) {
            let cause = jobs::subdomain_message(&name);
            return Err(ApiError::invalid(
                kind,
                &name,
                &[("metadata.name".to_owned(), cause)],
            ));
        }
        if self.store.get(kind, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        match kind {
            Kind::Job => {
                let uid = uid_of(&object);
                jobs::prepare(&mut object, &self.namespace, &uid, now);
            }
            Kind::Secret => {
                let mut data = object["data"].as_object().cloned().unwrap_or_default();
                for (key, value) in object["stringData"].as_object().into_iter().flatten() {
                    let text = value.as_str().unwrap_or_default();
                    data.insert(key.clone(), json!(base64_encode(text.as_bytes())));
                }
                if let Some(o) = object.as_object_mut() {
                    o.remove("stringData");
                }
                if !data.is_empty() {
                    object["data"] = json!(data);
                }
                if object["type"].as_str().is_none_or(str::is_empty) {
                    object["type"] = json!("Opaque");
                }
            }
            _ => {}
        }
        if dry_run {
            return Ok((object, Vec::new()));
        }
        let stored = self.store.create(kind, object);
        let mut acts = Vec::new();
        if kind == Kind::Job {
            self.jobs.insert(
                name.clone(),
                JobRecord {
                    uid: uid_of(&stored),
                    phase: JobPhase::Suspended,
                },
            );
            if stored["spec"]["suspend"] == true {
                self.suspend(&name, now);
            } else {
                acts = self.start_job(&name, now);
            }
        }
        Ok((stored, acts))
    }

    /// Marks Job `name` suspended.
    fn suspend(&mut self, name: &str, now: SystemTime) {
        let Some(mut job) = self.store.get(Kind::Job, name).cloned() else {
            return;
        };
        job["status"] = jobs::status_suspended(&job["status"], now);
        self.store.update(Kind::Job, job);
        if let Some(record) = self.jobs.get_mut(name) {
            record.phase = JobPhase::Suspended;
        }
    }

    /// Creates the pod of Job `name` and counts it active.
    fn start_job(&mut self, name: &str, now: SystemTime) -> Vec<Act> {
        let Some(mut job) = self.store.get(Kind::Job, name).cloned() else {
            return Vec::new();
        };
        let (pod_name, generate) = loop {
            let (pod, generate) = jobs::pod_name(name, &name_suffix());
            if self.store.get(Kind::Pod, &pod).is_none() && !self.pods.contains_key(&pod) {
                break (pod, generate);
            }
        };
        let pod_uid = uid();
        let pod = jobs::pod_for(&job, &pod_name, &generate, &pod_uid, now);
        let dir = self.pods_dir.join(&pod_name);
        self.pods.insert(
            pod_name.clone(),
            PodRecord::new(&pod_uid, &pod["spec"], dir),
        );
        let pod = self.store.create(Kind::Pod, pod);
        job["status"] = jobs::status_started(&job["status"], now);
        let job = self.store.update(Kind::Job, job);
        let job_uid = uid_of(&job);
        if let Some(record) = self.jobs.get_mut(name) {
            record.phase = JobPhase::Active {
                pod: pod_name.clone(),
            };
        }
        self.event(
            &job,
            "Normal",
            "SuccessfulCreate",
            &format!("Created pod: {pod_name}"),
            "job-controller",
        );
        self.event(
            &pod,
            "Normal",
            "Scheduled",
            &format!(
                "Successfully assigned {}/{pod_name} to fake-node",
                self.namespace
            ),
            "default-scheduler",
        );
        let mut acts = vec![Act::RunPod(pod_name)];
        if let Some(seconds) = job["spec"]["activeDeadlineSeconds"].as_u64() {
            acts.push(Act::After(
                Duration::from_secs(seconds),
                Happened::Deadline {
                    job: name.to_owned(),
                    uid: job_uid,
                },
            ));
        }
        acts
    }

    /// `PATCH` of Job `name`, given the patched object; returns it as stored.
    pub fn patch_job(
        &mut self,
        name: &str,
        mut patched: Value,
        dry_run: bool,
    ) -> Result<(Value, Vec<Act>), ApiError> {
        let old = self
            .store
            .get(Kind::Job, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(Kind::Job, name))?;
        if let Some(rv) = patched["metadata"]["resourceVersion"].as_str() {
            if old["metadata"]["resourceVersion"] != rv {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on jobs.batch \"{name}\": the object has \
                         been modified; please apply your changes to the latest version and try \
                         again"
                    ),
                ));
            }
        }
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "finalizers",
            "ownerReferences",
        ] {
            match old["metadata"].get(field) {
                Some(v) => patched["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = patched["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        patched["status"] = old["status"].clone();
        patched["apiVersion"] = old["apiVersion"].clone();
        patched["kind"] = old["kind"].clone();
        let mut causes = Vec::new();
        for field in [
            "template",
            "selector",
            "completions",
            "completionMode",
            "podFailurePolicy",
        ] {
            if patched["spec"][field] != old["spec"][field] {
                causes.push((
                    format!("spec.{field}"),
                    format!(
                        "Invalid value: {}: field is immutable",
                        patched["spec"][field]
                    ),
                ));
            }
        }
        causes.extend(jobs::validate(&patched));
        if !causes.is_empty() {
            return Err(ApiError::invalid(Kind::Job, name, &causes));
        }
        if patched["spec"] != old["spec"] {
            patched["metadata"]["generation"] =
                json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
        }
        if dry_run {
            return Ok((patched, Vec::new()));
        }
        let stored = self.store.update(Kind::Job, patched);
        let now = SystemTime::now();
        let phase = self.jobs.get(name).map(|r| r.phase.clone());
        let suspend = stored["spec"]["suspend"] == true;
        let acts = match phase {
            Some(JobPhase::Suspended) if !suspend => self.start_job(name, now),
            Some(JobPhase::Active { pod }) if suspend => {
                if let Some(record) = self.pods.get(&pod) {
                    record.request_stop(Stop::Delete);
                }
                self.suspend(name, now);
                Vec::new()
            }
            Some(JobPhase::Active { .. })
                if stored["spec"]["activeDeadlineSeconds"]
                    != old["spec"]["activeDeadlineSeconds"] =>
            {
                vec![Act::After(
                    Duration::ZERO,
                    Happened::Deadline {
                        job: name.to_owned(),
                        uid: uid_of(&stored),
                    },
                )]
            }
            _ => Vec::new(),
        };
        let stored = self.store.get(Kind::Job, name).cloned().unwrap_or(stored);
        Ok((stored, acts))
    }

    /// `DELETE` of object `name` of `kind`; answers the object while it is being deleted, or
    /// a Success Status once it is gone.
    pub fn delete(
        &mut self,
        kind: Kind,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<(Value, Vec<Act>), ApiError> {
        let object = self
            .store
            .get(kind, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let uid = uid_of(&object);
        let conflict = |what: &str, wanted: &str, have: &str| {
            ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what}: \
                     {wanted}, {what} in object meta: {have}",
                    kind.qualified()
                ),
            )
        };
        if let Some(wanted) = options.uid.as_deref().filter(|w| *w != uid) {
            return Err(conflict("UID in precondition", wanted, &uid));
        }
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if let Some(wanted) = options.resource_version.as_deref().filter(|w| *w != rv) {
            return Err(conflict("ResourceVersion in precondition", wanted, rv));
        }
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return Ok((object, Vec::new()));
        }
        let default = if kind == Kind::Job {
            Propagation::Orphan
        } else {
            Propagation::Background
        };
        let propagation = options.propagation.unwrap_or(default);
        if options.dry_run {
            return Ok((status::deleted(kind, name, &uid), Vec::new()));
        }
        let now = SystemTime::now();
        let finalizer = match propagation {
            Propagation::Background => {
                self.remove(kind, name);
                self.collect_garbage(&uid, propagation);
                return Ok((status::deleted(kind, name, &uid), Vec::new()));
            }
            Propagation::Foreground => "foregroundDeletion",
            Propagation::Orphan => "orphan",
        };
        let mut marked = object;
        marked["metadata"]["deletionTimestamp"] = json!(rfc3339(now));
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        marked["metadata"]["finalizers"] = json!([finalizer]);
        let marked = self.store.update(kind, marked);
        self.collect_garbage(&uid, propagation);
        if propagation == Propagation::Orphan || !self.has_pods(&uid) {
            self.remove(kind, name);
        }
        Ok((marked, Vec::new()))
    }

    /// Whether a live pod is owned by `owner`.
    fn has_pods(&self, owner: &str) -> bool {
        self.store.list(Kind::Pod).any(|p| owned_by(p, owner))
    }

    /// Removes object `name` of `kind` (a pod only through [`Cluster::pod_gone`]).
    fn remove(&mut self, kind: Kind, name: &str) {
        self.store.remove(kind, name);
        if kind == Kind::Job {
            self.jobs.remove(name);
        }
    }

    /// The garbage collector, for the dependents of `owner` (which goes or went): orphaned
    /// (their reference to it dropped) or deleted (pods through their kubelet).
    fn collect_garbage(&mut self, owner: &str, propagation: Propagation) {
        for kind in [Kind::Pod, Kind::Secret, Kind::ConfigMap, Kind::Job] {
            let dependents: Vec<Value> = self
                .store
                .list(kind)
                .filter(|o| owned_by(o, owner))
                .cloned()
                .collect();
            for mut dependent in dependents {
                let name = name_of(&dependent);
                if propagation == Propagation::Orphan {
                    if let Some(refs) = dependent["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != owner);
                    }
                    self.store.update(kind, dependent);
                } else if kind == Kind::Pod {
                    if let Some(record) = self.pods.get(&name) {
                        record.request_stop(Stop::Delete);
                    }
                } else {
                    self.remove(kind, &name);
                    self.collect_garbage(&uid_of(&dependent), Propagation::Background);
                }
            }
        }
    }

    /// Writes pod `pod`'s status from its record, when it changed, and lets the Job
    /// controller react.
    pub fn publish_pod(&mut self, pod: &str) -> Vec<Act> {
        let (Some(record), Some(mut object)) =
            (self.pods.get(pod), self.store.get(Kind::Pod, pod).cloned())
        else {
            return Vec::new();
        };
        let status = record.status(&object["status"], SystemTime::now());
        if status == object["status"] {
            return Vec::new();
        }
        object["status"] = status;
        self.store.update(Kind::Pod, object);
        self.pod_changed(pod)
    }

    /// The Job controller, told that pod `pod`'s status changed.
    fn pod_changed(&mut self, pod: &str) -> Vec<Act> {
        let (Some(record), Some(object)) = (self.pods.get(pod), self.store.get(Kind::Pod, pod))
        else {
            return Vec::new();
        };
        let phase = record.phase();
        if !phase.terminal() {
            return Vec::new();
        }
        let Some(owner) = object["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["controller"] == true && r["kind"] == "Job")
        else {
            return Vec::new();
        };
        let job_name = owner["name"].as_str().unwrap_or_default().to_owned();
        let Some(job_record) = self.jobs.get(&job_name).filter(|r| r.uid == owner["uid"]) else {
            return Vec::new();
        };
        let failure = match (&job_record.phase, phase) {
            (JobPhase::Active { pod: p } | JobPhase::Stopping { pod: p }, _) if p != pod => {
                return Vec::new()
            }
            (JobPhase::Active { .. } | JobPhase::Stopping { .. }, Phase::Succeeded) => None,
            (JobPhase::Stopping { .. }, _) => Some(Failure::deadline()),
            (JobPhase::Active { .. }, _) => {
                let job = self.store.get(Kind::Job, &job_name).unwrap_or(&Value::Null);
                Some(jobs::failure_policy(job, object).unwrap_or_else(Failure::backoff_limit))
            }
            _ => return Vec::new(),
        };
        self.finish_job(&job_name, failure)
    }

    /// Job `name` ended: status, event, the TTL timer.
    fn finish_job(&mut self, name: &str, failure: Option<Failure>) -> Vec<Act> {
        let Some(mut job) = self.store.get(Kind::Job, name).cloned() else {
            return Vec::new();
        };
        job["status"] = jobs::status_finished(&job["status"], failure.as_ref(), SystemTime::now());
        let job = self.store.update(Kind::Job, job);
        if let Some(record) = self.jobs.get_mut(name) {
            record.phase = JobPhase::Finished;
        }
        match &failure {
            None => self.event(
                &job,
                "Normal",
                "Completed",
                "Job completed",
                "job-controller",
            ),
            Some(f) => self.event(&job, "Warning", f.reason, &f.message, "job-controller"),
        }
        job["spec"]["ttlSecondsAfterFinished"]
            .as_u64()
            .map(|ttl| {
                Act::After(
                    Duration::from_secs(ttl),
                    Happened::Ttl {
                        job: name.to_owned(),
                        uid: uid_of(&job),
                    },
                )
            })
            .into_iter()
            .collect()
    }

    /// Pod `pod`'s kubelet removed its containers: the pod object goes, and a Job deleted in
    /// the foreground with it once it has no pods left.
    pub fn pod_gone(&mut self, pod: &str) {
        self.pods.remove(pod);
        let Some(object) = self.store.remove_with(Kind::Pod, pod, |object| {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!(rfc3339(SystemTime::now()));
                object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
        }) else {
            return;
        };
        self.output_changed();
        let owners: Vec<String> = object["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["uid"].as_str().map(str::to_owned))
            .collect();
        for owner in owners {
            let waiting = self
                .store
                .by_uid(Kind::Job, &owner)
                .filter(|job| {
                    job["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f == "foregroundDeletion"))
                })
                .map(name_of);
            if let Some(job) = waiting {
                if !self.has_pods(&owner) {
                    self.remove(Kind::Job, &job);
                }
            }
        }
    }

    /// A timer fired.
    pub fn handle(&mut self, happened: Happened) -> Vec<Act> {
        match happened {
            Happened::Deadline { job, uid } => {
                let Some(record) = self.jobs.get(&job).filter(|r| r.uid == uid) else {
                    return Vec::new();
                };
                let JobPhase::Active { pod } = record.phase.clone() else {
                    return Vec::new();
                };
                let object = self.store.get(Kind::Job, &job).unwrap_or(&Value::Null);
                let (Some(started), Some(seconds)) = (
                    object["status"]["startTime"]
                        .as_str()
                        .and_then(parse_rfc3339),
                    object["spec"]["activeDeadlineSeconds"].as_u64(),
                ) else {
                    return Vec::new();
                };
                let deadline = started + Duration::from_secs(seconds);
                if let Ok(left) = deadline.duration_since(SystemTime::now()) {
                    // Early (a resumed Job's old timer, or a deadline raised by a patch).
                    return vec![Act::After(left, Happened::Deadline { job, uid })];
                }
                if let Some(record) = self.jobs.get_mut(&job) {
                    record.phase = JobPhase::Stopping { pod: pod.clone() };
                }
                if let Some(record) = self.pods.get(&pod) {
                    record.request_stop(Stop::Kill);
                }
                Vec::new()
            }
            Happened::Ttl { job, uid } => {
                let finished = self
                    .jobs
                    .get(&job)
                    .is_some_and(|r| r.uid == uid && r.phase == JobPhase::Finished);
                if !finished {
                    return Vec::new();
                }
                let options = DeleteOptions {
                    propagation: Some(Propagation::Background),
                    ..DeleteOptions::default()
                };
                self.delete(Kind::Job, &job, &options)
                    .map(|(_, acts)| acts)
                    .unwrap_or_default()
            }
        }
    }

    /// Records an Event about `involved` (a repeat of the same reason and message counts up).
    pub fn event(
        &mut self,
        involved: &Value,
        kind: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let now = rfc3339(SystemTime::now());
        let uid = uid_of(involved);
        let repeat = self
            .store
            .list(Kind::Event)
            .find(|e| {
                e["involvedObject"]["uid"] == uid.as_str()
                    && e["reason"] == reason
                    && e["message"] == message
            })
            .cloned();
        if let Some(mut event) = repeat {
            event["count"] = json!(event["count"].as_i64().unwrap_or(1) + 1);
            event["lastTimestamp"] = json!(now);
            self.store.update(Kind::Event, event);
            return;
        }
        let name = format!("{}.{}", name_of(involved), hex_id());
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": { "name": name, "namespace": self.namespace, "uid": super::values::uid(),
                          "creationTimestamp": now },
            "involvedObject": {
                "kind": involved["kind"], "namespace": self.namespace, "name": involved["metadata"]["name"],
                "uid": uid, "apiVersion": involved["apiVersion"],
                "resourceVersion": involved["metadata"]["resourceVersion"],
            },
            "reason": reason, "message": message, "type": kind,
            "source": { "component": component, "host": "fake-node" },
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": component, "reportingInstance": "fake-node",
        });
        self.store.create(Kind::Event, event);
    }

    /// The value of key `key` of Secret (or ConfigMap) `name`: `Err` names what is missing,
    /// in the kubelet's words.
    pub fn key(&self, kind: Kind, name: &str, key: &str) -> Result<Vec<u8>, String> {
        let (what, short) = match kind {
            Kind::Secret => ("Secret", "secret"),
            _ => ("ConfigMap", "configmap"),
        };
        let object = self
            .store
            .get(kind, name)
            .ok_or_else(|| format!("{short} \"{name}\" not found"))?;
        let missing = || {
            format!(
                "couldn't find key {key} in {what} {}/{name}",
                self.namespace
            )
        };
        if kind == Kind::Secret {
            let value = object["data"][key].as_str().ok_or_else(missing)?;
            return base64_decode(value).ok_or_else(missing);
        }
        if let Some(text) = object["data"][key].as_str() {
            return Ok(text.as_bytes().to_vec());
        }
        let value = object["binaryData"][key].as_str().ok_or_else(missing)?;
        base64_decode(value).ok_or_else(missing)
    }

    /// Every key of Secret (or ConfigMap) `name`, decoded.
    pub fn keys(&self, kind: Kind, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let object = self.store.get(kind, name)?;
        let mut out = Vec::new();
        for field in ["data", "binaryData"] {
            for (key, value) in object[field].as_object().into_iter().flatten() {
                let text = value.as_str().unwrap_or_default();
                let bytes = if kind == Kind::Secret || field == "binaryData" {
                    base64_decode(text).unwrap_or_default()
                } else {
                    text.as_bytes().to_vec()
                };
                out.push((key.clone(), bytes));
            }
        }
        Some(out)
    }
}
