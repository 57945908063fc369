//! The fake kubelet: one task per pod runs its containers for real on the Docker engine.
//!
//! A pod's task, in order:
//! 1. volumes: `emptyDir` is a fresh host directory (0777); `secret`, `configMap` and
//!    `projected` (secret, configMap, downwardAPI sources) are host directories with the
//!    files written from the objects (`items` {key, path, mode}, `defaultMode`; with
//!    `fsGroup` owned by that group and group-readable). A missing Secret, ConfigMap or
//!    claim keeps the pod **Pending** with a `FailedMount` Warning Event, and the kubelet
//!    tries again whenever the store changes (as kubelet retries), until the pod is stopped;
//! 2. init containers one after the other, each to its end; one that exits non-zero fails
//!    the pod and later ones never run. A sidecar (`restartPolicy: Always`) is started and
//!    not waited for, and is killed once the regular containers have ended;
//! 3. the regular containers, concurrently; the pod's status is published when each init
//!    container starts (with the end of the one before), once when the regular ones have all
//!    started (Running) and once when they have ended (Succeeded/Failed).
//!
//! Each container is created, attached (before it starts: no output is lost), started and
//! waited for through the Engine API (the fake's `docker create/start/wait`): the image must
//! exist locally (the API never pulls; a missing image is `ErrImageNeverPull`, the pod stays
//! Pending), `command`/`args` become entrypoint/cmd with `$(VAR)` expanded, `env` comes from
//! values, `secretKeyRef`, `configMapKeyRef`, `fieldRef` and `envFrom` (a missing one is
//! `CreateContainerConfigError`, retried on store changes), `runAsUser`/`runAsGroup` (the
//! container's, else the pod's) are the user, `fsGroup`/`supplementalGroups` extra groups,
//! `runAsNonRoot` is enforced against the image's user, `readOnlyRootFilesystem` and
//! `capabilities.add` are honoured, every container drops ALL other capabilities and runs with
//! no-new-privileges, `resources.limits` memory and cpu are limits, `hostAliases` are extra
//! hosts, the network is the cluster's, the hostname the pod's name. Volume mounts are typed
//! bind mounts (a source path is never parsed, so commas or colons cannot split it; a missing
//! source fails the create instead of being made by the engine); `subPath`/`subPathExpr`
//! directories are made when missing, as kubelet does. The termination message file is a bind
//! of a host file (read back, 4096 bytes at most; `FallbackToLogsOnError` takes the log's tail).
//!
//! Stopping ([`Stop`], which only escalates): `Kill` (the Job's deadline) kills what runs
//! (SIGKILL at once: no grace period) and the pod ends Failed and stays; `Delete` kills,
//! removes the containers and the pod's directories, then the pod object goes; `Shutdown`
//! (the cluster is dropped) returns at once and leaves the removal to the cluster's drop.
//!
//! Not done: probes, lifecycle hooks, restarts (OnFailure is treated as Never), a pod-level
//! network namespace shared by its containers, pod `activeDeadlineSeconds`, image pulls,
//! service account tokens, ephemeral containers.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::cluster::Cluster;
use super::logs::Stream;
use super::pod::{ContainerKind, ContainerState, Stop, Terminated};
use super::store::Kind;
use super::values::parse_quantity;
use super::{perform, Shared, LABEL_CLUSTER, LABEL_CONTAINER, LABEL_POD, LABEL_PROCESS};

/// How long a container's output may keep coming after it stopped (it ends at once normally).
const DRAIN: Duration = Duration::from_secs(10);

/// How long a killed container may take to report its end.
const KILL_WAIT: Duration = Duration::from_secs(20);

/// The kubelet's cap on a termination message.
const MESSAGE_CAP: usize = 4096;

/// One file of a volume: path inside it, content, mode.
#[derive(Clone, Debug)]
struct File {
    path: String,
    bytes: Vec<u8>,
    mode: u32,
}

/// Which keys of a Secret or ConfigMap a volume takes.
#[derive(Clone, Debug)]
struct KeysOf {
    kind: Kind,
    name: String,
    /// (key, path, mode); empty: every key, at its own name.
    items: Vec<(String, String, Option<u32>)>,
    optional: bool,
}

/// What a volume is made from.
#[derive(Clone, Debug)]
enum Source {
    EmptyDir,
    Keys(KeysOf),
    Projected(Vec<Projection>),
    Claim(String),
}

/// One source of a projected volume.
#[derive(Clone, Debug)]
enum Projection {
    Keys(KeysOf),
    /// (path, fieldPath, mode)
    Fields(Vec<(String, String, Option<u32>)>),
}

/// A volume of the pod spec.
#[derive(Clone, Debug)]
struct Volume {
    name: String,
    source: Source,
    default_mode: u32,
}

impl Volume {
    /// Secret, ConfigMap and projected volumes are always mounted read-only.
    fn read_only(&self) -> bool {
        !matches!(self.source, Source::EmptyDir | Source::Claim(_))
    }
}

/// A volumeMount.
#[derive(Clone, Debug)]
struct MountPlan {
    volume: String,
    path: String,
    read_only: bool,
    sub_path: Option<String>,
    sub_path_expr: Option<String>,
}

/// One container of the pod spec, its values typed.
#[derive(Clone, Debug)]
struct ContainerPlan {
    name: String,
    kind: ContainerKind,
    image: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    working_dir: Option<String>,
    env: Vec<Value>,
    env_from: Vec<Value>,
    mounts: Vec<MountPlan>,
    user: Option<i64>,
    group: Option<i64>,
    non_root: bool,
    read_only_root: bool,
    cap_add: Vec<String>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    resources: Value,
    termination_path: String,
    fallback_to_logs: bool,
}

/// The pod spec, typed once when the kubelet starts.
#[derive(Clone, Debug)]
struct PodPlan {
    name: String,
    uid: String,
    namespace: String,
    object: Value,
    dir: PathBuf,
    containers: Vec<ContainerPlan>,
    volumes: Vec<Volume>,
    host_aliases: Vec<String>,
    groups: Vec<String>,
    fs_group: Option<u32>,
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| {
        a.iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

fn mode(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|m| u32::try_from(m).ok())
}

fn quantity(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn keys_of(kind: Kind, source: &Value) -> KeysOf {
    let name = source
        .get("secretName")
        .or_else(|| source.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let items = source["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["key"].as_str().unwrap_or_default().to_owned(),
                i["path"].as_str().unwrap_or_default().to_owned(),
                mode(&i["mode"]),
            )
        })
        .collect();
    KeysOf {
        kind,
        name,
        items,
        optional: source["optional"] == true,
    }
}

impl PodPlan {
    fn parse(object: &Value, dir: PathBuf) -> Self {
        let spec = &object["spec"];
        let pod_security = &spec["securityContext"];
        let mut containers = Vec::new();
        for (list, regular) in [("initContainers", false), ("containers", true)] {
            for c in spec[list].as_array().into_iter().flatten() {
                let kind = match (regular, c["restartPolicy"].as_str()) {
                    (true, _) => ContainerKind::Regular,
                    (false, Some("Always")) => ContainerKind::Sidecar,
                    (false, _) => ContainerKind::Init,
                };
                let security = &c["securityContext"];
                let either = |field: &str| {
                    let own = &security[field];
                    if own.is_null() {
                        pod_security[field].clone()
                    } else {
                        own.clone()
                    }
                };
                let limits = &c["resources"]["limits"];
                containers.push(ContainerPlan {
                    name: c["name"].as_str().unwrap_or_default().to_owned(),
                    kind,
                    image: c["image"].as_str().unwrap_or_default().to_owned(),
                    command: strings(&c["command"]),
                    args: strings(&c["args"]),
                    working_dir: c["workingDir"].as_str().map(str::to_owned),
                    env: c["env"].as_array().cloned().unwrap_or_default(),
                    env_from: c["envFrom"].as_array().cloned().unwrap_or_default(),
                    mounts: c["volumeMounts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| MountPlan {
                            volume: m["name"].as_str().unwrap_or_default().to_owned(),
                            path: m["mountPath"].as_str().unwrap_or_default().to_owned(),
                            read_only: m["readOnly"] == true,
                            sub_path: m["subPath"]
                                .as_str()
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned),
                            sub_path_expr: m["subPathExpr"]
                                .as_str()
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned),
                        })
                        .collect(),
                    user: either("runAsUser").as_i64(),
                    group: either("runAsGroup").as_i64(),
                    non_root: either("runAsNonRoot") == true,
                    read_only_root: security["readOnlyRootFilesystem"] == true,
                    cap_add: strings(&security["capabilities"]["add"]).unwrap_or_default(),
                    memory: quantity(&limits["memory"]).map(|b| b.ceil() as i64),
                    nano_cpus: quantity(&limits["cpu"]).map(|c| (c * 1e9).round() as i64),
                    resources: c["resources"].clone(),
                    termination_path: c["terminationMessagePath"]
                        .as_str()
                        .unwrap_or("/dev/termination-log")
                        .to_owned(),
                    fallback_to_logs: c["terminationMessagePolicy"] == "FallbackToLogsOnError",
                });
            }
        }
        let volumes = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let (source, default_mode) = if let Some(s) = v.get("secret") {
                    (
                        Source::Keys(keys_of(Kind::Secret, s)),
                        mode(&s["defaultMode"]),
                    )
                } else if let Some(s) = v.get("configMap") {
                    (
                        Source::Keys(keys_of(Kind::ConfigMap, s)),
                        mode(&s["defaultMode"]),
                    )
                } else if let Some(s) = v.get("projected") {
                    let sources = s["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| {
                            if let Some(secret) = p.get("secret") {
                                Some(Projection::Keys(keys_of(Kind::Secret, secret)))
                            } else if let Some(map) = p.get("configMap") {
                                Some(Projection::Keys(keys_of(Kind::ConfigMap, map)))
                            } else {
                                p.get("downwardAPI").map(|d| {
                                    Projection::Fields(
                                        d["items"]
                                            .as_array()
                                            .into_iter()
                                            .flatten()
                                            .map(|i| {
                                                (
                                                    i["path"]
                                                        .as_str()
                                                        .unwrap_or_default()
                                                        .to_owned(),
                                                    i["fieldRef"]["fieldPath"]
                                                        .as_str()
                                                        .unwrap_or_default()
                                                        .to_owned(),
                                                    mode(&i["mode"]),
                                                )
                                            })
                                            .collect(),
                                    )
                                })
                            }
                        })
                        .collect();
                    (Source::Projected(sources), mode(&s["defaultMode"]))
                } else if let Some(claim) = v.get("persistentVolumeClaim") {
                    let name = claim["claimName"].as_str().unwrap_or_default();
                    (Source::Claim(name.to_owned()), None)
                } else {
                    (Source::EmptyDir, None)
                };
                Volume {
                    name: v["name"].as_str().unwrap_or_default().to_owned(),
                    source,
                    default_mode: default_mode.unwrap_or(0o644),
                }
            })
            .collect();
        let pod_security = &spec["securityContext"];
        let fs_group = pod_security["fsGroup"]
            .as_u64()
            .and_then(|g| u32::try_from(g).ok());
        let mut groups: Vec<String> = pod_security["supplementalGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .map(|g| g.to_string())
            .collect();
        groups.extend(fs_group.map(|g| g.to_string()));
        let host_aliases = spec["hostAliases"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| {
                let ip = a["ip"].as_str().unwrap_or_default().to_owned();
                strings(&a["hostnames"])
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |h| format!("{h}:{ip}"))
            })
            .collect();
        let meta = &object["metadata"];
        Self {
            name: meta["name"].as_str().unwrap_or_default().to_owned(),
            uid: meta["uid"].as_str().unwrap_or_default().to_owned(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_owned(),
            object: object.clone(),
            dir,
            containers,
            volumes,
            host_aliases,
            groups,
            fs_group,
        }
    }

    fn volume_dir(&self, volume: &str) -> PathBuf {
        self.dir.join("volumes").join(volume)
    }

    fn termination_file(&self, container: &str) -> PathBuf {
        self.dir.join("termination").join(container)
    }

    /// A downward API value (`metadata.name`, `metadata.labels['k']`, …).
    fn field(&self, path: &str) -> Option<String> {
        let meta = &self.object["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let keyed = |map: &str| {
            let rest = path.strip_prefix(&format!("metadata.{map}['"))?;
            let key = rest.strip_suffix("']")?;
            Some(text(&meta[map][key]))
        };
        match path {
            "metadata.name" | "metadata.namespace" | "metadata.uid" => {
                Some(text(&meta[&path["metadata.".len()..]]))
            }
            "spec.nodeName" => Some(text(&self.object["spec"]["nodeName"])),
            "spec.serviceAccountName" => Some(text(&self.object["spec"]["serviceAccountName"])),
            "status.hostIP" | "status.hostIPs" => Some("127.0.0.1".to_owned()),
            "status.podIP" | "status.podIPs" => Some(String::new()),
            "metadata.labels" | "metadata.annotations" => Some(
                meta[&path["metadata.".len()..]]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}=\"{}\"\n", v.as_str().unwrap_or_default()))
                    .collect(),
            ),
            _ => keyed("labels").or_else(|| keyed("annotations")),
        }
    }
}

/// Why a container cannot be configured yet.
#[derive(Debug)]
enum ConfigError {
    /// Something it references is missing: try again when the store changes.
    Missing(String),
    /// It cannot run as specified.
    Invalid(String),
}

/// Expands `$(NAME)` from `env` (`$$` is a literal `$`; unknown names stay as written).
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match env.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in order (envFrom first, then env; later ones win).
fn environment(
    cluster: &Cluster,
    pod: &PodPlan,
    c: &ContainerPlan,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut known = BTreeMap::new();
    let set = |env: &mut Vec<(String, String)>,
               known: &mut BTreeMap<String, String>,
               k: String,
               v: String| {
        env.retain(|(name, _)| *name != k);
        known.insert(k.clone(), v.clone());
        env.push((k, v));
    };
    for from in &c.env_from {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (kind, reference) = match (from.get("secretRef"), from.get("configMapRef")) {
            (Some(r), _) => (Kind::Secret, r),
            (_, Some(r)) => (Kind::ConfigMap, r),
            _ => continue,
        };
        let name = reference["name"].as_str().unwrap_or_default();
        match cluster.keys(kind, name) {
            Some(keys) => {
                for (k, v) in keys {
                    set(
                        &mut env,
                        &mut known,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if reference["optional"] == true => {}
            None => {
                let short = if kind == Kind::Secret {
                    "secret"
                } else {
                    "configmap"
                };
                return Err(ConfigError::Missing(format!(
                    "{short} \"{name}\" not found"
                )));
            }
        }
    }
    for entry in &c.env {
        let name = entry["name"].as_str().unwrap_or_default().to_owned();
        let from = &entry["valueFrom"];
        let value = if from.is_null() {
            expand(entry["value"].as_str().unwrap_or_default(), &known)
        } else if let Some((kind, r)) = from
            .get("secretKeyRef")
            .map(|r| (Kind::Secret, r))
            .or_else(|| from.get("configMapKeyRef").map(|r| (Kind::ConfigMap, r)))
        {
            let source = r["name"].as_str().unwrap_or_default();
            let key = r["key"].as_str().unwrap_or_default();
            match cluster.key(kind, source, key) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) if r["optional"] == true => continue,
                Err(message) => return Err(ConfigError::Missing(message)),
            }
        } else if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
            pod.field(field)
                .ok_or_else(|| ConfigError::Invalid(format!("unsupported fieldPath: {field}")))?
        } else if let Some(resource) = from["resourceFieldRef"]["resource"].as_str() {
            let (kind, what) = resource.split_once('.').unwrap_or(("limits", resource));
            let divisor = quantity(&from["resourceFieldRef"]["divisor"]).unwrap_or(1.0);
            let amount = quantity(&c.resources[kind][what])
                .or_else(|| quantity(&c.resources["limits"][what]))
                .unwrap_or(if what == "cpu" {
                    2.0
                } else {
                    8.0 * 1024f64.powi(3)
                });
            format!("{}", (amount / divisor).ceil() as i64)
        } else {
            return Err(ConfigError::Invalid(format!(
                "env {name}: unsupported valueFrom"
            )));
        };
        set(&mut env, &mut known, name, value);
    }
    Ok(env)
}

/// The files of `keys`, in the kubelet's words when something is missing.
fn key_files(cluster: &Cluster, keys: &KeysOf, default_mode: u32) -> Result<Vec<File>, String> {
    let Some(all) = cluster.keys(keys.kind, &keys.name) else {
        if keys.optional {
            return Ok(Vec::new());
        }
        let short = if keys.kind == Kind::Secret {
            "secret"
        } else {
            "configmap"
        };
        return Err(format!("{short} \"{}\" not found", keys.name));
    };
    if keys.items.is_empty() {
        return Ok(all
            .into_iter()
            .map(|(path, bytes)| File {
                path,
                bytes,
                mode: default_mode,
            })
            .collect());
    }
    let mut files = Vec::new();
    for (key, path, mode) in &keys.items {
        match all.iter().find(|(k, _)| k == key) {
            Some((_, bytes)) => files.push(File {
                path: path.clone(),
                bytes: bytes.clone(),
                mode: mode.unwrap_or(default_mode),
            }),
            None if keys.optional => {}
            None => {
                let what = if keys.kind == Kind::Secret {
                    "secret"
                } else {
                    "configmap"
                };
                return Err(format!("{what} references non-existent {what} key: {key}"));
            }
        }
    }
    Ok(files)
}

/// Each volume with what it holds (`None`: an empty directory).
type Contents = Vec<(Volume, Option<Vec<File>>)>;

/// What each volume holds, or the message of the first that cannot be set up.
fn resolve_volumes(cluster: &Cluster, pod: &PodPlan) -> Result<Contents, String> {
    let mut out = Vec::new();
    for volume in &pod.volumes {
        let files = match &volume.source {
            Source::EmptyDir => None,
            Source::Claim(claim) => {
                return Err(format!(
                    "MountVolume.SetUp failed for volume \"{}\" : persistentvolumeclaim \"{claim}\" not found",
                    volume.name
                ))
            }
            Source::Keys(keys) => Some(key_files(cluster, keys, volume.default_mode).map_err(|m| {
                format!("MountVolume.SetUp failed for volume \"{}\" : {m}", volume.name)
            })?),
            Source::Projected(sources) => {
                let mut files = Vec::new();
                for source in sources {
                    match source {
                        Projection::Keys(keys) => {
                            files.extend(key_files(cluster, keys, volume.default_mode).map_err(|m| {
                                format!("MountVolume.SetUp failed for volume \"{}\" : {m}", volume.name)
                            })?)
                        }
                        Projection::Fields(items) => {
                            for (path, field, mode) in items {
                                files.push(File {
                                    path: path.clone(),
                                    bytes: pod.field(field).unwrap_or_default().into_bytes(),
                                    mode: mode.unwrap_or(volume.default_mode),
                                });
                            }
                        }
                    }
                }
                Some(files)
            }
        };
        out.push((volume.clone(), files));
    }
    Ok(out)
}

/// Whether `path` stays inside the directory it is joined to.
fn inside(path: &str) -> bool {
    !path.is_empty() && !path.starts_with('/') && path.split('/').all(|p| p != "..")
}

/// Writes the pod's volumes and termination files (a blocking thread runs it).
fn write_volumes(pod: &PodPlan, volumes: &Contents) -> std::io::Result<()> {
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    };
    for (volume, files) in volumes {
        let dir = pod.volume_dir(&volume.name);
        std::fs::create_dir_all(&dir)?;
        match files {
            None => {
                chmod(&dir, 0o777)?;
                if let Some(group) = pod.fs_group {
                    std::os::unix::fs::chown(&dir, None, Some(group))?;
                    chmod(&dir, 0o2777)?;
                }
            }
            Some(files) => {
                chmod(&dir, 0o755)?;
                for file in files {
                    if !inside(&file.path) {
                        return Err(std::io::Error::other(format!(
                            "volume {}: path {:?} leaves the volume",
                            volume.name, file.path
                        )));
                    }
                    let path = dir.join(&file.path);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&path, &file.bytes)?;
                    let mut mode = file.mode & 0o7777;
                    if let Some(group) = pod.fs_group {
                        std::os::unix::fs::chown(&path, Some(0), Some(group))?;
                        mode |= 0o440;
                    }
                    chmod(&path, mode)?;
                }
            }
        }
    }
    let termination = pod.dir.join("termination");
    std::fs::create_dir_all(&termination)?;
    for c in &pod.containers {
        let file = pod.termination_file(&c.name);
        std::fs::write(&file, b"")?;
        chmod(&file, 0o666)?;
    }
    Ok(())
}

/// How a container ended, as its waiter saw it.
#[derive(Debug)]
struct Exited {
    index: usize,
    code: i64,
    oom: bool,
    message: Option<String>,
    start_error: Option<String>,
    started_at: SystemTime,
    finished_at: SystemTime,
}

/// One pod's kubelet.
struct Kubelet {
    shared: Arc<Shared>,
    plan: PodPlan,
    stop: watch::Receiver<Option<Stop>>,
    exits_tx: mpsc::UnboundedSender<Exited>,
    exits: mpsc::UnboundedReceiver<Exited>,
    /// Containers started and not yet ended, by index: their engine ids.
    running: BTreeMap<usize, String>,
    /// Every container created, to remove.
    created: Vec<String>,
    /// The last problem an Event was recorded for (a retry records no repeat).
    last_problem: Option<String>,
}

/// Runs pod `pod` until it is deleted or the cluster is dropped.
pub async fn run(shared: Arc<Shared>, pod: String) {
    let (plan, stop) = {
        let cluster = shared.lock();
        let (Some(object), Some(record)) =
            (cluster.store.get(Kind::Pod, &pod), cluster.pods.get(&pod))
        else {
            return;
        };
        (
            PodPlan::parse(object, record.dir.clone()),
            record.stop.subscribe(),
        )
    };
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let kubelet = Kubelet {
        shared,
        plan,
        stop,
        exits_tx,
        exits,
        running: BTreeMap::new(),
        created: Vec::new(),
        last_problem: None,
    };
    kubelet.live().await;
}

/// Waits until the stop request is greater than `above`.
async fn stopped(stop: &mut watch::Receiver<Option<Stop>>, above: Option<Stop>) -> Stop {
    loop {
        let current = *stop.borrow_and_update();
        if let Some(current) = current.filter(|c| Some(*c) > above) {
            return current;
        }
        if stop.changed().await.is_err() {
            return Stop::Shutdown;
        }
    }
}

/// The engine's HTTP status of an error, when it answered with one.
fn engine_status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl Kubelet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.shared.lock()
    }

    /// Runs the pod, then waits to be deleted.
    async fn live(mut self) {
        {
            let mut cluster = self.lock();
            if let Some(record) = cluster.pods.get_mut(&self.plan.name) {
                record.started_at = Some(SystemTime::now());
            }
        }
        let mut stop = match self.work().await {
            Ok(()) => stopped(&mut self.stop, None).await,
            Err(stop) => stop,
        };
        loop {
            match stop {
                Stop::Kill => {
                    let ended = {
                        let cluster = self.lock();
                        cluster
                            .pods
                            .get(&self.plan.name)
                            .is_none_or(|r| r.phase().terminal())
                    };
                    if !ended {
                        self.kill_running().await;
                        if let Some(record) = self.lock().pods.get_mut(&self.plan.name) {
                            record.killed = true;
                        }
                        self.publish();
                    }
                    stop = stopped(&mut self.stop, Some(Stop::Kill)).await;
                }
                Stop::Delete => {
                    self.kill_running().await;
                    self.remove_all().await;
                    self.lock().pod_gone(&self.plan.name);
                    return;
                }
                Stop::Shutdown => return,
            }
        }
    }

    /// Volumes, init containers, regular containers; `Err` when stopped on the way.
    async fn work(&mut self) -> Result<(), Stop> {
        let volumes = self.prepare_volumes().await?;
        let plan = self.plan.clone();
        let write = tokio::task::spawn_blocking(move || write_volumes(&plan, &volumes)).await;
        let written = write.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = written {
            self.warn("FailedMount", &format!("MountVolume.SetUp failed: {e}"));
            return Err(stopped(&mut self.stop, None).await);
        }
        let kinds: Vec<ContainerKind> = self.plan.containers.iter().map(|c| c.kind).collect();
        let indexes = |wanted: &[ContainerKind]| -> Vec<usize> {
            (0..kinds.len())
                .filter(|i| wanted.contains(&kinds[*i]))
                .collect()
        };
        for index in indexes(&[ContainerKind::Init, ContainerKind::Sidecar]) {
            self.start(index).await?;
            if self.plan.containers[index].kind == ContainerKind::Sidecar {
                continue;
            }
            // As kubelet's status manager does on each container's start: the earlier init
            // container's end and this one running, in one update.
            self.publish();
            loop {
                let exited = self.next().await?;
                let (which, code) = (exited.index, exited.code);
                self.record_exit(exited);
                if which == index {
                    if code != 0 {
                        self.end_sidecars().await;
                        self.publish();
                        return Ok(());
                    }
                    break;
                }
            }
        }
        let regular = indexes(&[ContainerKind::Regular]);
        for &index in &regular {
            self.start(index).await?;
        }
        self.publish();
        while regular
            .iter()
            .any(|i| self.running.contains_key(i) || self.pending_exit(*i))
        {
            let exited = self.next().await?;
            self.record_exit(exited);
        }
        self.end_sidecars().await;
        self.publish();
        Ok(())
    }

    /// Whether container `index` started (or failed to) and its end is not recorded yet.
    fn pending_exit(&self, index: usize) -> bool {
        let cluster = self.lock();
        cluster
            .pods
            .get(&self.plan.name)
            .is_some_and(|r| matches!(r.containers[index].state, ContainerState::Running { .. }))
    }

    /// The next container end, or the stop request.
    async fn next(&mut self) -> Result<Exited, Stop> {
        tokio::select! {
            biased;
            stop = stopped(&mut self.stop, None) => Err(stop),
            exited = self.exits.recv() => Ok(exited.expect("invariant: the kubelet holds a sender")),
        }
    }

    /// Waits for the store to change, or the stop request.
    async fn retry_later(&mut self, mut changed: watch::Receiver<u64>) -> Result<(), Stop> {
        tokio::select! {
            biased;
            stop = stopped(&mut self.stop, None) => Err(stop),
            _ = changed.changed() => Ok(()),
        }
    }

    /// Records an Event about the pod once per distinct problem.
    fn warn(&mut self, reason: &str, message: &str) {
        let key = format!("{reason}: {message}");
        if self.last_problem.as_deref() == Some(key.as_str()) {
            return;
        }
        self.last_problem = Some(key);
        self.event("Warning", reason, message);
    }

    fn event(&self, kind: &str, reason: &str, message: &str) {
        let mut cluster = self.lock();
        if let Some(object) = cluster.store.get(Kind::Pod, &self.plan.name).cloned() {
            cluster.event(&object, kind, reason, message, "kubelet");
        }
    }

    fn publish(&self) {
        let acts = self.lock().publish_pod(&self.plan.name);
        perform(&self.shared, acts);
    }

    fn set_state(&self, index: usize, state: ContainerState) {
        let mut cluster = self.lock();
        if let Some(record) = cluster.pods.get_mut(&self.plan.name) {
            record.containers[index].state = state;
        }
        cluster.output_changed();
    }

    /// Container `index` cannot start: it waits with `reason`, the pod's status says so.
    fn wait_with(&mut self, index: usize, reason: &str, message: &str) {
        self.set_state(
            index,
            ContainerState::Waiting {
                reason: reason.to_owned(),
                message: Some(message.to_owned()),
            },
        );
        self.publish();
        let event = if reason == "ErrImageNeverPull" {
            reason
        } else {
            "Failed"
        };
        self.warn(event, &format!("Error: {message}"));
    }

    /// The volumes' content, waiting (Pending, FailedMount) while something is missing.
    async fn prepare_volumes(&mut self) -> Result<Contents, Stop> {
        loop {
            let (resolved, changed) = {
                let cluster = self.lock();
                (
                    resolve_volumes(&cluster, &self.plan),
                    cluster.store.subscribe(),
                )
            };
            match resolved {
                Ok(volumes) => return Ok(volumes),
                Err(message) => {
                    self.warn("FailedMount", &message);
                    // Subscribed before the event's own write: that write wakes us once.
                    self.retry_later(changed).await?;
                }
            }
        }
    }

    /// Creates, attaches and starts container `index`; its end arrives on the exits channel.
    /// `Err` when stopped while it could not be created.
    async fn start(&mut self, index: usize) -> Result<(), Stop> {
        if let Some(stop) = *self.stop.borrow() {
            return Err(stop);
        }
        let c = self.plan.containers[index].clone();
        let env = loop {
            let (env, changed) = {
                let cluster = self.lock();
                (
                    environment(&cluster, &self.plan, &c),
                    cluster.store.subscribe(),
                )
            };
            match env {
                Ok(env) => break env,
                Err(ConfigError::Missing(message)) => {
                    self.wait_with(index, "CreateContainerConfigError", &message);
                    self.retry_later(changed).await?;
                }
                Err(ConfigError::Invalid(message)) => {
                    self.wait_with(index, "CreateContainerConfigError", &message);
                    return Err(stopped(&mut self.stop, None).await);
                }
            }
        };
        let config = match self.container_config(&c, env).await {
            Ok(config) => config,
            Err((reason, message)) => {
                self.wait_with(index, reason, &message);
                return Err(stopped(&mut self.stop, None).await);
            }
        };
        let docker = self.shared.docker.clone();
        let name = format!("fkube-{}-{}-{}", self.shared.id, self.plan.name, c.name);
        {
            let mut cluster = self.lock();
            if cluster.closed {
                return Err(Stop::Shutdown);
            }
            cluster.creating += 1;
        }
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker.create_container(Some(options), config).await;
        let closed = {
            let mut cluster = self.lock();
            cluster.creating -= 1;
            if let Ok(created) = &created {
                cluster.created_containers += 1;
                if let Some(record) = cluster.pods.get_mut(&self.plan.name) {
                    record.containers[index].docker_id = Some(created.id.clone());
                }
            }
            cluster.closed
        };
        self.shared.idle.notify_all();
        let id = match created {
            Ok(created) => created.id,
            Err(e) => {
                self.wait_with(index, "CreateContainerError", &e.to_string());
                return Err(stopped(&mut self.stop, None).await);
            }
        };
        self.created.push(id.clone());
        if closed {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
            return Err(Stop::Shutdown);
        }
        self.event(
            "Normal",
            "Pulled",
            &format!("Container image \"{}\" already present on machine", c.image),
        );
        self.event(
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
        );

        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = match docker.attach_container(&id, Some(options)).await {
            Ok(attached) => attached,
            Err(e) => {
                self.start_failed(index, format!("attaching: {e}"));
                return Ok(());
            }
        };
        let reader = tokio::spawn(read_output(
            self.shared.clone(),
            self.plan.name.clone(),
            self.plan.uid.clone(),
            index,
            attached.output,
        ));
        let started_at = SystemTime::now();
        if let Err(e) = docker.start_container(&id, None).await {
            reader.abort();
            self.start_failed(index, e.to_string());
            return Ok(());
        }
        self.set_state(index, ContainerState::Running { started_at });
        self.event(
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        );
        self.running.insert(index, id.clone());
        tokio::spawn(wait_exit(
            docker,
            id,
            reader,
            index,
            started_at,
            self.plan.termination_file(&c.name),
            self.exits_tx.clone(),
        ));
        Ok(())
    }

    /// The engine refused to start container `index`: it ends at once (exit 128, StartError).
    fn start_failed(&mut self, index: usize, message: String) {
        let now = SystemTime::now();
        let _ = self.exits_tx.send(Exited {
            index,
            code: 128,
            oom: false,
            message: None,
            start_error: Some(message),
            started_at: now,
            finished_at: now,
        });
        // Recorded as running until its end is processed, so the loops wait for it.
        self.set_state(index, ContainerState::Running { started_at: now });
    }

    /// The engine's configuration of container `c`; `Err` is a waiting reason and message.
    async fn container_config(
        &self,
        c: &ContainerPlan,
        env: Vec<(String, String)>,
    ) -> Result<ContainerCreateBody, (&'static str, String)> {
        let docker = &self.shared.docker;
        let image = match docker.inspect_image(&c.image).await {
            Ok(image) => image,
            Err(e) if engine_status(&e) == Some(404) => {
                return Err((
                    "ErrImageNeverPull",
                    format!(
                        "Container image \"{}\" is not present with pull policy of Never \
                         (the fake cluster never pulls)",
                        c.image
                    ),
                ))
            }
            Err(e) => {
                return Err((
                    "CreateContainerError",
                    format!("inspecting image {}: {e}", c.image),
                ))
            }
        };
        let image_user = image.config.and_then(|c| c.user).unwrap_or_default();
        let image_uid = image_user.split(':').next().unwrap_or_default().to_owned();
        if c.non_root {
            let pod = format!(
                "{}_{}({})",
                self.plan.name, self.plan.namespace, self.plan.uid
            );
            match c.user {
                Some(0) => {
                    return Err(("CreateContainerConfigError", format!(
                        "container's runAsUser breaks non-root policy (pod: \"{pod}\", container: {})",
                        c.name
                    )))
                }
                Some(_) => {}
                None if image_uid.is_empty() || image_uid == "0" || image_uid == "root" => {
                    return Err(("CreateContainerConfigError", format!(
                        "container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: {})",
                        c.name
                    )))
                }
                None if image_uid.parse::<u32>().is_err() => {
                    return Err(("CreateContainerConfigError", format!(
                        "container has runAsNonRoot and image has non-numeric user ({image_uid}), cannot verify user is non-root (pod: \"{pod}\", container: {})",
                        c.name
                    )))
                }
                None => {}
            }
        }
        let user = match (c.user, c.group) {
            (Some(u), Some(g)) => Some(format!("{u}:{g}")),
            (Some(u), None) => Some(u.to_string()),
            (None, Some(g)) if image_uid.is_empty() => Some(format!("0:{g}")),
            (None, Some(g)) => Some(format!("{image_uid}:{g}")),
            (None, None) => None,
        };
        let known: BTreeMap<String, String> = env.iter().cloned().collect();
        let mut mounts = Vec::new();
        for m in &c.mounts {
            let volume = self
                .plan
                .volumes
                .iter()
                .find(|v| v.name == m.volume)
                .ok_or_else(|| {
                    (
                        "CreateContainerConfigError",
                        format!("volume \"{}\" not found", m.volume),
                    )
                })?;
            let mut source = self.plan.volume_dir(&volume.name);
            let sub = m
                .sub_path
                .clone()
                .or_else(|| m.sub_path_expr.as_deref().map(|e| expand(e, &known)));
            if let Some(sub) = sub {
                if !inside(&sub) {
                    return Err((
                        "CreateContainerConfigError",
                        format!(
                            "failed to prepare subPath for volumeMount \"{}\" of container \"{}\"",
                            m.volume, c.name
                        ),
                    ));
                }
                source = source.join(&sub);
                if tokio::fs::symlink_metadata(&source).await.is_err() {
                    tokio::fs::create_dir_all(&source).await.map_err(|e| {
                        ("CreateContainerConfigError", format!("failed to create subPath directory for volumeMount \"{}\" of container \"{}\": {e}", m.volume, c.name))
                    })?;
                    if !volume.read_only() {
                        let _ = tokio::fs::set_permissions(
                            &source,
                            std::fs::Permissions::from_mode(0o777),
                        )
                        .await;
                    }
                }
            }
            mounts.push(Mount {
                target: Some(m.path.clone()),
                source: Some(source.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only || volume.read_only()),
                ..Default::default()
            });
        }
        mounts.push(Mount {
            target: Some(c.termination_path.clone()),
            source: Some(
                self.plan
                    .termination_file(&c.name)
                    .to_string_lossy()
                    .into_owned(),
            ),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        });
        let network = self.shared.options.network.clone();
        let labels = [
            (LABEL_POD, self.plan.name.clone()),
            (LABEL_CONTAINER, c.name.clone()),
            (LABEL_CLUSTER, self.shared.id.clone()),
            (LABEL_PROCESS, std::process::id().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let host_config = HostConfig {
            mounts: Some(mounts),
            network_mode: Some(network.clone()),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!c.cap_add.is_empty()).then(|| c.cap_add.clone()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            memory: c.memory,
            memory_swap: c.memory,
            nano_cpus: c.nano_cpus,
            extra_hosts: (!self.plan.host_aliases.is_empty())
                .then(|| self.plan.host_aliases.clone()),
            group_add: (!self.plan.groups.is_empty()).then(|| self.plan.groups.clone()),
            readonly_rootfs: Some(c.read_only_root),
            ..Default::default()
        };
        let hostname: String = self.plan.name.chars().take(63).collect();
        Ok(ContainerCreateBody {
            image: Some(c.image.clone()),
            entrypoint: c
                .command
                .as_ref()
                .map(|cmd| cmd.iter().map(|a| expand(a, &known)).collect()),
            cmd: c
                .args
                .as_ref()
                .map(|args| args.iter().map(|a| expand(a, &known)).collect()),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: c.working_dir.clone(),
            user,
            hostname: Some(hostname),
            labels: Some(labels),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// Records the end of a container.
    fn record_exit(&mut self, exited: Exited) {
        self.running.remove(&exited.index);
        let mut cluster = self.lock();
        let Some(record) = cluster.pods.get_mut(&self.plan.name) else {
            return;
        };
        let c = &self.plan.containers[exited.index];
        let container = &mut record.containers[exited.index];
        let mut message = exited.start_error.clone().or(exited.message);
        if message.is_none() && c.fallback_to_logs && exited.code != 0 {
            message = Some(container.log.tail(80, 2048)).filter(|m| !m.is_empty());
        }
        let reason = if exited.start_error.is_some() {
            "StartError"
        } else if exited.oom {
            "OOMKilled"
        } else if exited.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        container.state = ContainerState::Terminated(Terminated {
            exit_code: exited.code,
            reason: reason.to_owned(),
            message,
            started_at: exited.started_at,
            finished_at: exited.finished_at,
        });
        cluster.output_changed();
    }

    /// Kills every running container and records their ends.
    async fn kill_running(&mut self) {
        let ids: Vec<(usize, String)> = self
            .running
            .iter()
            .map(|(i, id)| (*i, id.clone()))
            .collect();
        for (index, id) in &ids {
            let name = &self.plan.containers[*index].name;
            self.event("Normal", "Killing", &format!("Stopping container {name}"));
            let options = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            let _ = self.shared.docker.kill_container(id, Some(options)).await;
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exited)) => self.record_exit(exited),
                _ => break,
            }
        }
    }

    /// Kills the running sidecars (the regular containers have ended).
    async fn end_sidecars(&mut self) {
        let sidecars: BTreeSet<usize> = self
            .running
            .keys()
            .copied()
            .filter(|i| self.plan.containers[*i].kind == ContainerKind::Sidecar)
            .collect();
        if sidecars.is_empty() {
            return;
        }
        for index in sidecars.iter().rev() {
            let options = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            let _ = self
                .shared
                .docker
                .kill_container(&self.running[index], Some(options))
                .await;
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while sidecars.iter().any(|i| self.running.contains_key(i)) {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exited)) => self.record_exit(exited),
                _ => break,
            }
        }
    }

    /// Removes the pod's containers and directory.
    async fn remove_all(&mut self) {
        for id in &self.created {
            let options = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            let _ = self.shared.docker.remove_container(id, Some(options)).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.plan.dir).await;
    }
}

/// Copies a container's output into its record.
async fn read_output(
    shared: Arc<Shared>,
    pod: String,
    uid: String,
    index: usize,
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, EngineError>> + Send>,
    >,
) {
    while let Some(Ok(chunk)) = output.next().await {
        let (stream, bytes) = match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (Stream::Stdout, message)
            }
            LogOutput::StdErr { message } => (Stream::Stderr, message),
            LogOutput::StdIn { .. } => continue,
        };
        let mut cluster = shared.lock();
        if let Some(record) = cluster.pods.get_mut(&pod).filter(|r| r.uid == uid) {
            record.containers[index]
                .log
                .append(stream, &bytes, SystemTime::now());
        }
        cluster.output_changed();
    }
}

/// Waits for a container's end (its output drained) and reports it.
async fn wait_exit(
    docker: bollard::Docker,
    id: String,
    reader: tokio::task::JoinHandle<()>,
    index: usize,
    started_at: SystemTime,
    termination_file: PathBuf,
    exits: mpsc::UnboundedSender<Exited>,
) {
    let waited = docker
        .wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>)
        .next()
        .await;
    let mut code = match waited {
        Some(Ok(response)) => Some(response.status_code),
        Some(Err(EngineError::DockerContainerWaitError { code, .. })) => Some(code),
        _ => None,
    };
    let finished_at = SystemTime::now();
    let _ = tokio::time::timeout(DRAIN, reader).await;
    let state = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|i| i.state);
    let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
    if code.is_none() {
        code = state.and_then(|s| s.exit_code);
    }
    let message = tokio::fs::read(&termination_file)
        .await
        .ok()
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(&m[..m.len().min(MESSAGE_CAP)]).into_owned());
    let _ = exits.send(Exited {
        index,
        code: code.unwrap_or(137),
        oom,
        message,
        start_error: None,
        started_at,
        finished_at,
    });
}
