//! What the API server and the Job controller do to a Job's JSON, as pure functions: the
//! validation that answers 422, the defaults and labels a created Job reads back with, the pod
//! made from its template, and its status at start and at the end.
//!
//! Not here: when these happen (that is [`super::cluster`]) or how pods run
//! ([`super::kubelet`]).

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::values::{parse_quantity, rfc3339};

/// The labels the Job strategy adds (new and legacy spelling).
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// See [`JOB_NAME`].
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";

/// Whether `name` is a DNS label (RFC 1123): lowercase alphanumerics and `-`, at most 63.
pub fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `name` is a DNS subdomain: dot-separated DNS labels, at most 253.
pub fn dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(dns_label)
}

/// The message of a name that is no DNS subdomain.
pub fn subdomain_message(name: &str) -> String {
    format!(
        "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
         alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
         character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )
}

/// The causes of a 422 for a Job as sent (after defaults), empty when it is valid.
pub fn validate(job: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let mut cause = |field: &str, message: String| causes.push((field.to_owned(), message));
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        cause(
            "metadata.name",
            "Required value: name or generateName is required".to_owned(),
        );
    } else if !dns_subdomain(name) {
        cause("metadata.name", subdomain_message(name));
    } else if name.len() > 63 {
        cause(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be no more than 63 characters"),
        );
    }
    let spec = &job["spec"];
    for field in [
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "parallelism",
        "completions",
    ] {
        if spec[field].as_i64().is_some_and(|n| n < 0) {
            cause(
                &format!("spec.{field}"),
                format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    spec[field]
                ),
            );
        }
    }
    if spec["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|n| n <= 0)
    {
        cause(
            "spec.activeDeadlineSeconds",
            format!(
                "Invalid value: {}: must be greater than 0",
                spec["activeDeadlineSeconds"]
            ),
        );
    }
    if spec["manualSelector"] == true && spec["selector"].is_null() {
        cause("spec.selector", "Required value".to_owned());
    }
    let pod = &spec["template"]["spec"];
    match pod["restartPolicy"].as_str() {
        Some("Never" | "OnFailure") => {}
        Some(other) => cause(
            "spec.template.spec.restartPolicy",
            format!("Unsupported value: \"{other}\": supported values: \"OnFailure\", \"Never\""),
        ),
        None => cause(
            "spec.template.spec.restartPolicy",
            "Required value: valid values: \"OnFailure\", \"Never\"".to_owned(),
        ),
    }
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for (i, volume) in volumes.iter().enumerate() {
        if volumes[..i].contains(volume) {
            cause(
                &format!("spec.template.spec.volumes[{i}].name"),
                format!("Duplicate value: \"{volume}\""),
            );
        }
    }
    if pod["containers"].as_array().is_none_or(Vec::is_empty) {
        cause("spec.template.spec.containers", "Required value".to_owned());
    }
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in pod[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.template.spec.{list}[{i}]");
            let name = c["name"].as_str().unwrap_or_default();
            if !dns_label(name) {
                cause(
                    &format!("{at}.name"),
                    format!("Invalid value: \"{name}\": a lowercase RFC 1123 label is required"),
                );
            } else if names.contains(&name) {
                cause(
                    &format!("{at}.name"),
                    format!("Duplicate value: \"{name}\""),
                );
            }
            names.push(name);
            if c["image"].as_str().is_none_or(str::is_empty) {
                cause(&format!("{at}.image"), "Required value".to_owned());
            }
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let volume = m["name"].as_str().unwrap_or_default();
                if !volumes.contains(&volume) {
                    cause(
                        &format!("{at}.volumeMounts[{j}].name"),
                        format!("Not found: \"{volume}\""),
                    );
                }
                let sub = m["subPath"].as_str().unwrap_or_default();
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    cause(
                        &format!("{at}.volumeMounts[{j}].subPath"),
                        format!("Invalid value: \"{sub}\": must be a relative path without '..'"),
                    );
                }
            }
            for kind in ["limits", "requests"] {
                for (resource, q) in c["resources"][kind].as_object().into_iter().flatten() {
                    let text = match q {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if parse_quantity(&text).is_none() {
                        cause(
                            &format!("{at}.resources.{kind}[{resource}]"),
                            format!("Invalid value: \"{text}\": must be a quantity"),
                        );
                    }
                }
            }
        }
    }
    causes
}

fn default(object: &mut Value, key: &str, value: Value) {
    if object.get(key).is_none_or(Value::is_null) {
        object[key] = value;
    }
}

/// `imagePullPolicy`'s default: Always for `:latest` or no tag, else IfNotPresent.
fn pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if name.contains('@') {
        return "IfNotPresent";
    }
    match name.split_once(':') {
        None | Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// The defaults the API server sets on a pod spec (as `kubectl get -o json` shows them).
fn default_pod_spec(spec: &mut Value) {
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    // `get_mut`, not `[]`: indexing a missing field mutably would add it as null.
    let list = |spec: &mut Value, key: &str| -> Vec<Value> {
        spec.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for key in ["initContainers", "containers"] {
        let mut containers = list(spec, key);
        if containers.is_empty() {
            continue;
        }
        for c in &mut containers {
            default(c, "terminationMessagePath", json!("/dev/termination-log"));
            default(c, "terminationMessagePolicy", json!("File"));
            let image = c["image"].as_str().unwrap_or_default().to_owned();
            default(c, "imagePullPolicy", json!(pull_policy(&image)));
            default(c, "resources", json!({}));
            for env in c
                .get_mut("env")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(field) = env.pointer_mut("/valueFrom/fieldRef") {
                    default(field, "apiVersion", json!("v1"));
                }
            }
        }
        spec[key] = json!(containers);
    }
    for volume in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let sources = [
            "emptyDir",
            "secret",
            "configMap",
            "projected",
            "persistentVolumeClaim",
        ];
        if sources.iter().all(|s| volume.get(*s).is_none()) {
            // The server's default for a volume with no source (e.g. one whose source an
            // unknown-field drop removed).
            volume["emptyDir"] = json!({});
        }
        for source in ["secret", "configMap", "projected"] {
            if let Some(s) = volume.get_mut(source) {
                default(s, "defaultMode", json!(420));
            }
        }
    }
}

/// Makes a valid Job as sent into the Job as stored: metadata, defaults, the generated
/// selector and the labels the strategy adds, an empty status.
pub fn prepare(job: &mut Value, namespace: &str, uid: &str, now: SystemTime) {
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    job["apiVersion"] = json!("batch/v1");
    job["kind"] = json!("Job");
    let meta = &mut job["metadata"];
    meta["namespace"] = json!(namespace);
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(rfc3339(now));
    meta["generation"] = json!(1);
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "selfLink",
        "managedFields",
    ] {
        if let Some(m) = meta.as_object_mut() {
            m.remove(field);
        }
    }
    let template_labels = job["spec"]["template"]["metadata"]["labels"].clone();
    if job["metadata"]["labels"]
        .as_object()
        .is_none_or(Map::is_empty)
        && template_labels.is_object()
    {
        job["metadata"]["labels"] = template_labels;
    }
    let spec = &mut job["spec"];
    default(spec, "parallelism", json!(1));
    default(spec, "completions", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    if spec["podFailurePolicy"].is_null() {
        default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    if spec["manualSelector"] != true {
        spec["selector"] = json!({ "matchLabels": { CONTROLLER_UID: uid } });
        let labels = &mut spec["template"]["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        for (key, value) in [
            (CONTROLLER_UID, uid),
            (JOB_NAME, name.as_str()),
            ("controller-uid", uid),
            ("job-name", name.as_str()),
        ] {
            labels[key] = json!(value);
        }
    }
    default_pod_spec(&mut spec["template"]["spec"]);
    job["status"] = json!({});
}

/// The name of the next pod of Job `job`: the name cut so name and suffix fit 63 characters.
pub fn pod_name(job: &str, suffix: &str) -> (String, String) {
    let base: String = job.chars().take(63 - 6).collect();
    let generate = format!("{base}-");
    (format!("{generate}{suffix}"), generate)
}

/// The pod the Job controller creates for `job`.
pub fn pod_for(job: &Value, name: &str, generate_name: &str, uid: &str, now: SystemTime) -> Value {
    let template = &job["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!("fake-node");
    default(&mut spec, "serviceAccountName", json!("default"));
    default(&mut spec, "priority", json!(0));
    default(&mut spec, "enableServiceLinks", json!(true));
    let qos = qos_class(&spec);
    let mut meta = json!({
        "name": name, "generateName": generate_name,
        "namespace": job["metadata"]["namespace"], "uid": uid,
        "creationTimestamp": rfc3339(now),
        "labels": template["metadata"]["labels"],
        "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
        }],
    });
    if let Some(annotations) = template["metadata"].get("annotations") {
        meta["annotations"] = annotations.clone();
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
        "status": { "phase": "Pending", "qosClass": qos },
    })
}

/// BestEffort without requests or limits, Guaranteed when every container limits cpu and
/// memory at its requests, Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let resources = |c: &Value, kind: &str| {
        c["resources"][kind]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    if containers
        .iter()
        .all(|c| resources(c, "limits").is_empty() && resources(c, "requests").is_empty())
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = resources(c, "limits");
        let requests = resources(c, "requests");
        ["cpu", "memory"].iter().all(|r| {
            limits.contains_key(*r) && requests.get(*r).is_none_or(|q| Some(q) == limits.get(*r))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Why a Job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The condition's reason.
    pub reason: &'static str,
    /// The condition's message.
    pub message: String,
}

impl Failure {
    /// The pod failed and there are no retries.
    pub fn backoff_limit() -> Self {
        Self {
            reason: "BackoffLimitExceeded",
            message: "Job has reached the specified backoff limit".to_owned(),
        }
    }

    /// `activeDeadlineSeconds` passed.
    pub fn deadline() -> Self {
        Self {
            reason: "DeadlineExceeded",
            message: "Job was active longer than specified deadline".to_owned(),
        }
    }
}

/// The first `podFailurePolicy` rule with action FailJob whose `onExitCodes` matches a
/// container of the failed `pod` (exit 0 skipped, as upstream); other actions count as usual.
pub fn failure_policy(job: &Value, pod: &Value) -> Option<Failure> {
    let rules = job["spec"]["podFailurePolicy"]["rules"].as_array()?;
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let exits: Vec<(&str, i64)> = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|l| pod["status"][*l].as_array().into_iter().flatten())
        .filter_map(|s| {
            let code = s["state"]["terminated"]["exitCode"].as_i64()?;
            (code != 0).then(|| (s["name"].as_str().unwrap_or_default(), code))
        })
        .collect();
    for (index, rule) in rules.iter().enumerate() {
        let codes = &rule["onExitCodes"];
        if codes.is_null() {
            continue;
        }
        let values: Vec<i64> = codes["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        let hit = exits.iter().find(|(container, code)| {
            codes["containerName"]
                .as_str()
                .is_none_or(|wanted| wanted == *container)
                && match codes["operator"].as_str() {
                    Some("In") => values.contains(code),
                    Some("NotIn") => !values.contains(code),
                    _ => false,
                }
        });
        if let Some((container, code)) = hit {
            if rule["action"] != "FailJob" {
                return None;
            }
            return Some(Failure {
                reason: "PodFailurePolicy",
                message: format!(
                    "Container {container} for pod {namespace}/{name} failed with exit code \
                     {code} matching FailJob rule at index {index}"
                ),
            });
        }
    }
    None
}

fn condition(kind: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": now,
    })
}

/// The conditions of `status` other than the terminal ones (a past `Suspended` stays).
fn kept_conditions(status: &Value) -> Vec<Value> {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "Suspended")
        .cloned()
        .collect()
}

/// The status of a Job whose pod was just created (resumed: `Suspended` turns False).
pub fn status_started(status: &Value, now: SystemTime) -> Value {
    let now = rfc3339(now);
    let mut conditions = kept_conditions(status);
    for c in &mut conditions {
        c["status"] = json!("False");
        c["reason"] = json!("JobResumed");
        c["message"] = json!("Job resumed");
        c["lastTransitionTime"] = json!(now);
    }
    let mut status = json!({
        "startTime": now, "active": 1, "ready": 0, "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    status
}

/// The status of a Job created or turned suspended.
pub fn status_suspended(status: &Value, now: SystemTime) -> Value {
    let now = rfc3339(now);
    let mut status = status.clone();
    if let Some(s) = status.as_object_mut() {
        for field in ["startTime", "active", "ready"] {
            s.remove(field);
        }
    }
    status["conditions"] = json!([condition(
        "Suspended",
        "JobSuspended",
        "Job suspended",
        &now
    )]);
    status
}

/// The status of a finished Job: both the early and the terminal condition at once (1.31+
/// sets them in turn; one update is enough for a client that waits for the terminal one).
pub fn status_finished(status: &Value, failure: Option<&Failure>, now: SystemTime) -> Value {
    let now = rfc3339(now);
    let mut conditions = kept_conditions(status);
    let mut status = json!({
        "startTime": status["startTime"], "ready": 0, "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    match failure {
        None => {
            let message = "Reached expected number of succeeded pods";
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                message,
                &now,
            ));
            conditions.push(condition("Complete", "CompletionsReached", message, &now));
            status["succeeded"] = json!(1);
            status["completionTime"] = json!(now);
        }
        Some(failure) => {
            conditions.push(condition(
                "FailureTarget",
                failure.reason,
                &failure.message,
                &now,
            ));
            conditions.push(condition("Failed", failure.reason, &failure.message, &now));
            status["failed"] = json!(1);
        }
    }
    status["conditions"] = json!(conditions);
    status
}
