//! What one container becomes on the cluster: a `batch/v1` Job and the Secret its pod reads.
//!
//! The pod runs, in order:
//!
//! 1. `clone` (the git image): fetches the unit's scratch ref `in` into the `work` volume and
//!    leaves HEAD where the host's HEAD was, with what was not committed there as changes, and
//!    the `in-N` refs into the volumes of the directories carried both ways (`meta/`). It
//!    alone sees the read credential (`git-read`).
//! 2. `seed` (the git image, only when the container has writable directories to fill, an
//!    agent's home): copies their files from the Secret into their volumes.
//! 3. `step`: the container itself (the agent, the reviewer, a QA step), with its argv,
//!    environment (every value from the Secret, on this container only), the work tree
//!    writable and its `.git` read-only, read-only files as files of the Secret, and no forge
//!    credential at all.
//! 4. `push` (the git image, the pod's one regular container, so it runs only after `step`
//!    exited 0): commits the tree `step` left and each output directory, and pushes them to
//!    the scratch refs `out` and `out-N`. It alone sees the write credential (`git-write`).
//!
//! Every container meets the "restricted" Pod Security Standard: a non-root uid, no
//! privilege escalation, every capability dropped, the runtime's default seccomp profile; the
//! pod mounts no service account token and gets no service links. The Job never retries
//! (`backoffLimit: 0`: retries are dispatch's), ends at `activeDeadlineSeconds` and is deleted
//! by the cluster [`TTL`] after it finished if dispatch never comes back for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HostAlias, KeyToPath,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use super::carry::Sent;
use crate::runtime::{Carry, ContainerSpec, RuntimeError, LABEL_NODE, LABEL_RUN};

/// The annotation holding the node id (a label value cannot: it has `/` and `:`).
pub const ANNOTATION_NODE: &str = "dispatch.node";
/// The annotation holding what was sent ([`Sent`], JSON), for a runner that collects the Job
/// after a crash.
pub const ANNOTATION_SENT: &str = "dispatch.sent";
/// How long the cluster keeps a finished Job that dispatch never came back for.
pub const TTL: Duration = Duration::from_secs(6 * 3600);
/// What the deadline of a Job adds to its step's timeout: scheduling, the image pulls, the
/// clone and the push.
pub const DEADLINE_ALLOWANCE: Duration = Duration::from_secs(15 * 60);
/// Most bytes a Job's Secret carries (the API's limit is 1 MiB).
pub const SECRET_LIMIT: usize = 900 << 10;

/// The container names of a pod.
pub const CLONE: &str = "clone";
/// See [`CLONE`].
pub const SEED: &str = "seed";
/// See [`CLONE`].
pub const STEP: &str = "step";
/// See [`CLONE`].
pub const PUSH: &str = "push";

/// Where the pod settings come from (the spec's `runtime:`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSettings {
    /// The service account the pods run as.
    pub service_account: Option<String>,
    /// Node labels.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    pub tolerations: Vec<crate::spec::model::Toleration>,
    /// Image pull secrets.
    pub image_pull_secrets: Vec<String>,
    /// The clone, seed and push steps' image.
    pub git_image: String,
    /// The uid and gid of every container.
    pub run_as: u32,
}

/// The files a container gets from the host, read before its Job is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Secret key, path in the `inputs` volume, content.
    pub files: Vec<(String, String, Vec<u8>)>,
    /// Per mount (by index in `spec.mounts`): how it is carried.
    pub mounts: Vec<Carried>,
}

/// How one mount of a container is carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Carried {
    /// The checkout (or below it): the `work` volume.
    Checkout,
    /// A read-only file or directory: `inputs` at this path.
    ReadOnly(String),
    /// A writable directory filled from `inputs` at this path, by `seed`: volume `in-N`.
    Filled(usize),
    /// A directory that goes in and comes back through the forge (`meta/`): volume `out-N`.
    Out(usize),
}

/// Reads what `spec`'s mounts carry in (on the blocking pool: they are small files).
pub async fn inputs(spec: &ContainerSpec) -> Result<Inputs, RuntimeError> {
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || gather(&spec))
        .await
        .map_err(|e| RuntimeError::Cluster(e.to_string()))?
}

fn gather(spec: &ContainerSpec) -> Result<Inputs, RuntimeError> {
    let checkout = spec.checkout.as_ref().map(|c| c.dir.clone());
    let mut inputs = Inputs::default();
    let (mut filled, mut outs) = (0, 0);
    let mut total = 0usize;
    let mut add = |inputs: &mut Inputs, path: String, bytes: Vec<u8>| -> Result<(), RuntimeError> {
        total += bytes.len() + path.len();
        if total > SECRET_LIMIT {
            return Err(RuntimeError::Cluster(format!(
                "the files container {} takes from this machine pass {} KiB, more than a \
                 Secret carries; mount less into it",
                spec.name,
                SECRET_LIMIT >> 10
            )));
        }
        let key = format!("file-{}", inputs.files.len());
        inputs.files.push((key, path, bytes));
        Ok(())
    };
    for mount in &spec.mounts {
        if checkout
            .as_ref()
            .is_some_and(|dir| mount.source.starts_with(dir))
        {
            inputs.mounts.push(Carried::Checkout);
            continue;
        }
        let is_dir = mount.source.is_dir();
        if !mount.read_only && mount.carry == Carry::Both {
            inputs.mounts.push(Carried::Out(outs));
            outs += 1;
            continue;
        }
        if !is_dir || mount.read_only {
            let at = format!("ro-{}", inputs.mounts.len());
            if is_dir {
                for (relative, bytes) in regular_files(&mount.source)? {
                    add(&mut inputs, format!("{at}/{relative}"), bytes)?;
                }
            } else {
                let bytes = read_regular(&mount.source)?;
                add(&mut inputs, at.clone(), bytes)?;
            }
            inputs.mounts.push(Carried::ReadOnly(at));
            continue;
        }
        let at = format!("in-{filled}");
        let mut dirs = Vec::new();
        for (relative, bytes) in regular_files(&mount.source)? {
            add(&mut inputs, format!("{at}/{relative}"), bytes)?;
        }
        directories(&mount.source, Path::new(""), &mut dirs)?;
        let listing = dirs.join("\n").into_bytes();
        add(&mut inputs, format!("{at}.dirs"), listing)?;
        inputs.mounts.push(Carried::Filled(filled));
        filled += 1;
    }
    Ok(inputs)
}

/// A regular file that is not a link, at most a Secret's worth.
fn read_regular(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| RuntimeError::Cluster(format!("reading {}: {e}", path.display()));
    let file = crate::runtime::mounted::std_open_options()
        .read(true)
        .open(path)
        .map_err(cannot)?;
    crate::runtime::mounted::regular(&file.metadata().map_err(cannot)?, path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(SECRET_LIMIT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    Ok(bytes)
}

/// The regular files below `dir` (links and anything else skipped), relative paths, sorted.
fn regular_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, RuntimeError> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let at = dir.join(&relative);
        let entries = std::fs::read_dir(&at)
            .map_err(|e| RuntimeError::Cluster(format!("reading {}: {e}", at.display())))?;
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let Some(text) = path.to_str().map(str::to_owned) else {
                    continue;
                };
                found.push((text, read_regular(&dir.join(&path))?));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The directories below `dir` (relative, parents first).
fn directories(dir: &Path, relative: &Path, out: &mut Vec<String>) -> Result<(), RuntimeError> {
    let at = dir.join(relative);
    let entries = std::fs::read_dir(&at)
        .map_err(|e| RuntimeError::Cluster(format!("reading {}: {e}", at.display())))?;
    let mut names: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|k| k.is_dir()))
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let path = relative.join(name);
        if let Some(text) = path.to_str() {
            out.push(text.to_owned());
        }
        directories(dir, &path, out)?;
    }
    Ok(())
}

/// The clone step: fetch the `in` ref (and the `in-N` refs of the directories carried both
/// ways), then HEAD back to the host's HEAD with the rest as changes, and each directory's
/// files into its volume. The remote, the refs and the token come from the environment;
/// nothing is spliced.
const CLONE_SCRIPT: &str = r#"set -eu
set -o pipefail
cd /dispatch/work
git init --quiet repo
cd repo
set -- "+$DISPATCH_REF_IN:refs/dispatch/in"
i=0
while [ "$i" -lt "$DISPATCH_DIRS" ]; do
    set -- "$@" "+$DISPATCH_REF_IN-$i:refs/dispatch/in-$i"
    i=$((i + 1))
done
git -c protocol.allow=never -c protocol.https.allow=always -c protocol.http.allow=always \
    -c core.hooksPath=/dev/null \
    -c 'credential.helper=!f() { test "$1" = get || exit 0; echo username=dispatch; echo "password=${DISPATCH_GIT_TOKEN:-}"; }; f' \
    fetch --quiet --no-tags --depth=2 "$DISPATCH_REMOTE" "$@"
git -c core.hooksPath=/dev/null -c advice.detachedHead=false checkout --quiet --detach refs/dispatch/in
git reset --quiet --mixed HEAD~1
git update-ref -d refs/dispatch/in
i=0
while [ "$i" -lt "$DISPATCH_DIRS" ]; do
    git archive --format=tar "refs/dispatch/in-$i" | tar -x -C "/dispatch/out-$i"
    git update-ref -d "refs/dispatch/in-$i"
    i=$((i + 1))
done
"#;

/// The seed step: the writable directories' files and directories, from the Secret.
const SEED_SCRIPT: &str = r#"set -eu
for d in "$@"; do
    while IFS= read -r p; do
        [ -n "$p" ] && mkdir -p "/dispatch/$d/$p"
    done < "/dispatch/inputs/$d.dirs"
    if [ -d "/dispatch/inputs/$d" ]; then cp -RL "/dispatch/inputs/$d/." "/dispatch/$d/"; fi
done
"#;

/// The push step: the tree `step` left as a commit on HEAD, each output directory as a
/// commit of its own, pushed to the scratch refs in one push.
const PUSH_SCRIPT: &str = r#"set -eu
g() {
    git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c protocol.allow=never \
        -c protocol.https.allow=always -c protocol.http.allow=always \
        -c user.name=dispatch -c user.email=dispatch@localhost -c commit.gpgsign=false \
        -c 'credential.helper=!f() { test "$1" = get || exit 0; echo username=dispatch; echo "password=${DISPATCH_GIT_TOKEN:-}"; }; f' \
        "$@"
}
cd /dispatch/work/repo
g add --all -- .
g commit --quiet --allow-empty --no-verify -m "dispatch: the work tree the step left"
set -- "+HEAD:$DISPATCH_REF_OUT"
n=0
while [ -d "/dispatch/out-$n" ]; do
    (
        cd "/dispatch/out-$n"
        export GIT_DIR=/dispatch/work/repo/.git GIT_INDEX_FILE="/tmp/out-$n.index"
        g --work-tree=. add --all -- .
        tree=$(g --work-tree=. write-tree)
        g commit-tree -m "dispatch: output directory $n" "$tree" > "/tmp/out-$n.commit"
    )
    set -- "$@" "+$(cat "/tmp/out-$n.commit"):$DISPATCH_REF_OUT-$n"
    n=$((n + 1))
done
g push --quiet --no-verify "$DISPATCH_REMOTE" "$@"
"#;

/// Feeds the step its standard input from the Secret (a constant script: the argv follows it
/// as arguments).
const STDIN_SCRIPT: &str = r#"exec "$@" < /dispatch/stdin"#;

/// The Job that runs `spec`, for run `run`: what was sent, the step's deadline, whether the
/// Secret holds the git tokens.
pub struct JobPlan<'a> {
    /// The container.
    pub spec: &'a ContainerSpec,
    /// The carried mounts ([`inputs`]).
    pub inputs: &'a Inputs,
    /// The pod settings.
    pub settings: &'a PodSettings,
    /// What was sent.
    pub sent: &'a Sent,
    /// The URL the pod clones and pushes.
    pub remote_there: &'a str,
    /// The step's timeout.
    pub timeout: Duration,
    /// Whether the Secret has `git-read` and `git-write`.
    pub tokens: (bool, bool),
}

/// The label value of a node id: a hash (label values cannot hold `/` or `:`).
pub fn node_label(node: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The labels of a Job, its pod and its Secret.
pub fn labels(spec: &ContainerSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if let Some(run) = spec.labels.get(LABEL_RUN) {
        labels.insert(LABEL_RUN.to_owned(), run.clone());
    }
    if let Some(node) = spec.labels.get(LABEL_NODE) {
        labels.insert(LABEL_NODE.to_owned(), node_label(node));
    }
    labels
}

fn secret_env(secret: &str, name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

fn mount(volume: &str, at: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: at.to_owned(),
        sub_path: sub_path.map(str::to_owned),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..Default::default()
    }
}

fn empty_dir(name: &str, size: Option<u64>) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: size.map(|s| Quantity(s.to_string())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A step of the git image running `script`, with `env`, and the git token of the Secret's key
/// `token` (`(secret, key)`) as `DISPATCH_GIT_TOKEN` when it has one.
fn git_step(
    name: &str,
    settings: &PodSettings,
    script: &str,
    env: Vec<EnvVar>,
    token: Option<(&str, &str)>,
) -> Container {
    let mut env = env;
    if let Some((secret, key)) = token {
        env.push(secret_env(secret, "DISPATCH_GIT_TOKEN", key));
    }
    env.push(plain_env("HOME", "/tmp"));
    env.push(plain_env("GIT_CONFIG_NOSYSTEM", "1"));
    env.push(plain_env("GIT_TERMINAL_PROMPT", "0"));
    Container {
        name: name.to_owned(),
        image: Some(settings.git_image.clone()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            "sh".to_owned(),
        ]),
        env: Some(env),
        security_context: Some(restricted()),
        ..Default::default()
    }
}

/// The Job (see the module doc).
pub fn job(plan: &JobPlan<'_>) -> Result<Job, RuntimeError> {
    let spec = plan.spec;
    let name = spec.name.clone();
    let labels = labels(spec);
    let (read, write) = plan.tokens;
    let checkout = spec.checkout.as_ref().ok_or_else(|| {
        RuntimeError::Cluster(format!(
            "container {name} names no checkout; the Kubernetes backend needs one"
        ))
    })?;
    let work_target = spec
        .mounts
        .iter()
        .find(|m| m.source == checkout.dir)
        .map(|m| m.target.clone())
        .unwrap_or_else(|| crate::agents::WORKDIR.to_owned());
    let mut volumes = vec![empty_dir("work", spec.resources.file_bytes)];
    let mut step_mounts = vec![
        mount("work", &work_target, Some("repo"), false),
        mount(
            "work",
            &format!("{work_target}/.git"),
            Some("repo/.git"),
            true,
        ),
    ];
    let mut push_mounts = vec![mount("work", "/dispatch/work", None, false)];
    let mut clone_mounts = vec![mount("work", "/dispatch/work", None, false)];
    let mut both = 0usize;
    let mut seed_mounts = vec![mount("inputs", "/dispatch/inputs", None, true)];
    let mut filled = Vec::new();
    for (mount_spec, carried) in spec.mounts.iter().zip(&plan.inputs.mounts) {
        match carried {
            Carried::Checkout => {}
            Carried::ReadOnly(at) => {
                step_mounts.push(mount("inputs", &mount_spec.target, Some(at), true));
            }
            Carried::Filled(n) => {
                let volume = format!("in-{n}");
                volumes.push(empty_dir(&volume, None));
                step_mounts.push(mount(&volume, &mount_spec.target, None, false));
                seed_mounts.push(mount(&volume, &format!("/dispatch/{volume}"), None, false));
                filled.push(volume);
            }
            Carried::Out(n) => {
                let volume = format!("out-{n}");
                volumes.push(empty_dir(&volume, None));
                step_mounts.push(mount(&volume, &mount_spec.target, None, false));
                let there = format!("/dispatch/{volume}");
                clone_mounts.push(mount(&volume, &there, None, false));
                push_mounts.push(mount(&volume, &there, None, true));
                both += 1;
            }
        }
    }
    let mut items: Vec<KeyToPath> = plan
        .inputs
        .files
        .iter()
        .map(|(key, path, _)| KeyToPath {
            key: key.clone(),
            path: path.clone(),
            mode: None,
        })
        .collect();
    if spec.stdin {
        items.push(KeyToPath {
            key: "stdin".to_owned(),
            path: "stdin".to_owned(),
            mode: None,
        });
        step_mounts.push(mount("inputs", "/dispatch/stdin", Some("stdin"), true));
    }
    volumes.push(Volume {
        name: "inputs".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.clone()),
            items: Some(items),
            // Read by the pod's group (fsGroup) only.
            default_mode: Some(0o440),
            optional: None,
        }),
        ..Default::default()
    });

    // A name given twice has its last value, as with Docker.
    let last: BTreeMap<&str, usize> = spec
        .env
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (key.as_str(), i))
        .collect();
    let env: Vec<EnvVar> = last
        .iter()
        .map(|(key, i)| secret_env(&name, key, &format!("env-{i}")))
        .collect();
    let (program, args) = match spec.argv.split_first() {
        Some((program, args)) if !spec.stdin => (vec![program.clone()], args.to_vec()),
        _ => (
            vec![
                "sh".to_owned(),
                "-c".to_owned(),
                STDIN_SCRIPT.to_owned(),
                "sh".to_owned(),
            ],
            spec.argv.clone(),
        ),
    };
    let mut limits = BTreeMap::new();
    if let Some(memory) = spec.resources.memory_bytes {
        limits.insert("memory".to_owned(), Quantity(memory.to_string()));
    }
    if let Some(cpus) = spec.resources.cpus {
        let millis = (cpus * 1000.0).round().max(1.0) as u64;
        limits.insert("cpu".to_owned(), Quantity(format!("{millis}m")));
    }
    let step = Container {
        name: STEP.to_owned(),
        image: Some(spec.image.clone()),
        command: Some(program),
        args: Some(args),
        working_dir: (!spec.workdir.is_empty()).then(|| spec.workdir.clone()),
        env: Some(env),
        volume_mounts: Some(step_mounts),
        security_context: Some(restricted()),
        resources: (!limits.is_empty()).then(|| ResourceRequirements {
            limits: Some(limits),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refs = &plan.sent.refs;
    let mut clone = git_step(
        CLONE,
        plan.settings,
        CLONE_SCRIPT,
        vec![
            plain_env("DISPATCH_REMOTE", plan.remote_there),
            plain_env("DISPATCH_REF_IN", &format!("{refs}/in")),
            plain_env("DISPATCH_DIRS", &both.to_string()),
        ],
        read.then_some((name.as_str(), "git-read")),
    );
    clone.volume_mounts = Some(clone_mounts);
    let mut init = vec![clone];
    if !filled.is_empty() {
        let mut seed = git_step(SEED, plan.settings, SEED_SCRIPT, Vec::new(), None);
        seed.command.get_or_insert_with(Vec::new).extend(filled);
        seed.volume_mounts = Some(seed_mounts);
        init.push(seed);
    }
    init.push(step);
    let mut push = git_step(
        PUSH,
        plan.settings,
        PUSH_SCRIPT,
        vec![
            plain_env("DISPATCH_REMOTE", plan.remote_there),
            plain_env("DISPATCH_REF_OUT", &format!("{refs}/out")),
        ],
        write.then_some((name.as_str(), "git-write")),
    );
    push.volume_mounts = Some(push_mounts);

    let settings = plan.settings;
    let uid = i64::from(settings.run_as);
    let host_aliases: Vec<HostAlias> = spec
        .extra_hosts
        .iter()
        .filter_map(|entry| {
            let (host, ip) = entry.split_once(':')?;
            ip.parse::<std::net::IpAddr>().ok().map(|_| HostAlias {
                hostnames: Some(vec![host.to_owned()]),
                ip: ip.to_owned(),
            })
        })
        .collect();
    let pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        service_account_name: settings.service_account.clone(),
        node_selector: (!settings.node_selector.is_empty()).then(|| settings.node_selector.clone()),
        tolerations: (!settings.tolerations.is_empty())
            .then(|| settings.tolerations.iter().map(toleration).collect()),
        image_pull_secrets: (!settings.image_pull_secrets.is_empty()).then(|| {
            settings
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        host_aliases: (!host_aliases.is_empty()).then_some(host_aliases),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            fs_group: Some(uid),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        init_containers: Some(init),
        containers: vec![push],
        volumes: Some(volumes),
        ..Default::default()
    };
    let sent =
        serde_json::to_string(plan.sent).map_err(|e| RuntimeError::Cluster(e.to_string()))?;
    let mut annotations = BTreeMap::from([(ANNOTATION_SENT.to_owned(), sent)]);
    if let Some(node) = spec.labels.get(LABEL_NODE) {
        annotations.insert(ANNOTATION_NODE.to_owned(), node.clone());
    }
    let deadline = plan.timeout + DEADLINE_ALLOWANCE;
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::try_from(deadline.as_secs()).unwrap_or(i64::MAX)),
            ttl_seconds_after_finished: Some(i32::try_from(TTL.as_secs()).unwrap_or(i32::MAX)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    })
}

fn toleration(t: &crate::spec::model::Toleration) -> Toleration {
    Toleration {
        key: t.key.clone(),
        operator: t.operator.map(|o| format!("{o:?}")),
        value: t.value.clone(),
        effect: t.effect.map(|e| format!("{e:?}")),
        toleration_seconds: t.toleration_seconds,
    }
}

/// The Secret of the Job of `spec` (its owner reference to the Job is set once the Job exists,
/// so the cluster deletes it with the Job): the step's environment, the carried files, its
/// stdin and the git tokens.
pub fn secret(
    spec: &ContainerSpec,
    inputs: &Inputs,
    stdin: Option<&[u8]>,
    tokens: (Option<&str>, Option<&str>),
) -> Secret {
    let mut data = BTreeMap::new();
    for (i, (_, value)) in spec.env.iter().enumerate() {
        data.insert(format!("env-{i}"), ByteString(value.clone().into_bytes()));
    }
    for (key, _, bytes) in &inputs.files {
        data.insert(key.clone(), ByteString(bytes.clone()));
    }
    if spec.stdin {
        data.insert(
            "stdin".to_owned(),
            ByteString(stdin.unwrap_or_default().to_vec()),
        );
    }
    if let Some(read) = tokens.0 {
        data.insert("git-read".to_owned(), ByteString(read.as_bytes().to_vec()));
    }
    if let Some(write) = tokens.1 {
        data.insert(
            "git-write".to_owned(),
            ByteString(write.as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels(spec)),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Checkout, Mount};

    fn container(dir: &Path) -> ContainerSpec {
        let repo = dir.join("repo");
        let meta = dir.join("meta");
        let home = dir.join("home/codex");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::create_dir_all(home.join(".codex/sessions")).unwrap();
        std::fs::write(home.join(".codex/auth.json"), "{\"login\": 1}").unwrap();
        std::fs::write(meta.join("prompt.md"), "Fix the tests").unwrap();
        std::fs::write(meta.join("agent.log"), "an earlier log").unwrap();
        let m = |source: PathBuf, target: &str, read_only, carry| Mount {
            source,
            target: target.to_owned(),
            read_only,
            carry,
        };
        ContainerSpec {
            name: "dispatch-20261204-010203-42-00000000000000ab-1-0".to_owned(),
            image: "codex-image".to_owned(),
            argv: vec!["codex".to_owned(), "exec".to_owned(), "-".to_owned()],
            env: vec![
                ("OPENAI_API_KEY".to_owned(), "sk-secret".to_owned()),
                ("HOME".to_owned(), "/home/agent".to_owned()),
                ("OPENAI_API_KEY".to_owned(), "sk-later".to_owned()),
            ],
            workdir: "/workspace/repo".to_owned(),
            mounts: vec![
                m(repo.clone(), "/workspace/repo", false, Carry::In),
                m(repo.join(".git"), "/workspace/repo/.git", true, Carry::In),
                m(meta.clone(), "/workspace/.meta", false, Carry::Both),
                m(
                    meta.join("prompt.md"),
                    "/workspace/.meta/prompt.md",
                    true,
                    Carry::In,
                ),
                m(home, "/home/agent", false, Carry::In),
            ],
            user: Some("0:0".to_owned()),
            network: "bridge".to_owned(),
            labels: BTreeMap::from([
                (LABEL_RUN.to_owned(), "20261204-010203-42".to_owned()),
                (LABEL_NODE.to_owned(), "fix/core/go-io:agent".to_owned()),
            ]),
            stdin: true,
            resources: crate::runtime::Resources {
                memory_bytes: Some(2 << 30),
                cpus: Some(1.5),
                ..Default::default()
            },
            extra_hosts: vec![
                "model:10.0.0.5".to_owned(),
                "host.docker.internal:host-gateway".to_owned(),
            ],
            checkout: Some(Checkout {
                dir: repo,
                remote: "/forge/core/go-io.git".to_owned(),
                remote_there: "http://git.example/core/go-io.git".to_owned(),
            }),
        }
    }

    fn sent() -> Sent {
        Sent {
            dir: PathBuf::from("/w/repo"),
            remote: "/forge/core/go-io.git".to_owned(),
            refs: "refs/dispatch/j".to_owned(),
            head: "a".repeat(40),
            snapshot: "b".repeat(40),
            outs: Vec::new(),
        }
    }

    fn containers(job: &Job) -> Vec<Container> {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let mut all = pod.init_containers.clone().unwrap_or_default();
        all.extend(pod.containers.clone());
        all
    }

    fn secret_keys(c: &Container) -> Vec<String> {
        c.env
            .iter()
            .flatten()
            .filter_map(|e| Some(e.value_from.as_ref()?.secret_key_ref.as_ref()?.key.clone()))
            .collect()
    }

    fn built() -> (Job, Inputs, ContainerSpec) {
        let dir = std::env::temp_dir().join(format!("dispatch-pod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = container(&dir);
        let inputs = gather(&spec).expect("the inputs are small");
        let settings = PodSettings {
            git_image: "dispatch-git:latest".to_owned(),
            run_as: 1000,
            ..Default::default()
        };
        let sent = sent();
        let job = job(&JobPlan {
            spec: &spec,
            inputs: &inputs,
            settings: &settings,
            sent: &sent,
            remote_there: "http://git.example/core/go-io.git",
            timeout: Duration::from_secs(600),
            tokens: (true, true),
        })
        .expect("a job");
        let _ = std::fs::remove_dir_all(&dir);
        (job, inputs, spec)
    }

    #[test]
    fn every_container_meets_the_restricted_pod_security_standard() {
        let (job, _, _) = built();
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let context = pod.security_context.as_ref().unwrap();
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(
            context.run_as_user,
            Some(1000),
            "never the invoking user's 0"
        );
        assert_eq!(
            context.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        for c in containers(&job) {
            let sc = c.security_context.as_ref().expect("a security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_owned()]),
                "{}",
                c.name
            );
            assert!(sc.privileged.is_none() && sc.run_as_user.is_none());
        }
        for volume in pod.volumes.iter().flatten() {
            assert!(
                volume.empty_dir.is_some() || volume.secret.is_some(),
                "only emptyDir and secret volumes: {}",
                volume.name
            );
        }
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0), "retries are dispatch's");
        assert_eq!(spec.active_deadline_seconds, Some(600 + 15 * 60));
        assert_eq!(spec.ttl_seconds_after_finished, Some(6 * 3600));
    }

    #[test]
    fn each_credential_reaches_one_container_only() {
        let (job, _, _) = built();
        let by_name: BTreeMap<String, Container> = containers(&job)
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let names: Vec<&str> = by_name.keys().map(String::as_str).collect();
        assert_eq!(names, ["clone", "push", "seed", "step"]);
        assert_eq!(secret_keys(&by_name["clone"]), ["git-read"]);
        assert_eq!(secret_keys(&by_name["push"]), ["git-write"]);
        assert!(secret_keys(&by_name["seed"]).is_empty());
        let step = secret_keys(&by_name["step"]);
        assert!(step.iter().all(|k| k.starts_with("env-")), "{step:?}");
        assert_eq!(
            step,
            ["env-1", "env-2"],
            "HOME, then the last OPENAI_API_KEY"
        );
        // Files of the Secret: only the step (its read-only files) and seed (the home) mount it.
        for (name, c) in &by_name {
            let mounts_inputs = c.volume_mounts.iter().flatten().any(|m| m.name == "inputs");
            assert_eq!(mounts_inputs, name == "step" || name == "seed", "{name}");
        }
        let step = &by_name["step"];
        let git = step
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/workspace/repo/.git")
            .expect("the .git mount");
        assert_eq!(git.read_only, Some(true), "the step cannot change .git");
        assert_eq!(git.sub_path.as_deref(), Some("repo/.git"));
        assert_eq!(
            step.command.as_deref().unwrap()[..3],
            ["sh".to_owned(), "-c".to_owned(), STDIN_SCRIPT.to_owned()],
            "stdin through a constant script"
        );
        assert_eq!(step.args.as_deref().unwrap(), ["codex", "exec", "-"]);
    }

    #[test]
    fn the_secret_holds_the_values_and_the_job_only_their_names() {
        let (job, inputs, spec) = built();
        let text = serde_json::to_string(&job).unwrap();
        for secret in ["sk-secret", "sk-later", "login", "Fix the tests", "tok-"] {
            assert!(!text.contains(secret), "{secret} is in the Job");
        }
        let secret = secret(
            &spec,
            &inputs,
            Some(b"the prompt"),
            (Some("tok-r"), Some("tok-w")),
        );
        let data = secret.data.unwrap();
        assert_eq!(data["git-read"].0, b"tok-r");
        assert_eq!(data["git-write"].0, b"tok-w");
        assert_eq!(data["stdin"].0, b"the prompt");
        let paths: Vec<&str> = inputs.files.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(paths, ["ro-3", "in-0/.codex/auth.json", "in-0.dirs"]);
        assert!(
            !paths.iter().any(|p| p.contains("agent.log")),
            "meta/ is not carried in"
        );
        let listing = &inputs.files[2].2;
        assert_eq!(String::from_utf8_lossy(listing), ".codex\n.codex/sessions");
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_NODE], node_label("fix/core/go-io:agent"));
        assert_eq!(
            job.metadata.annotations.unwrap()[ANNOTATION_NODE],
            "fix/core/go-io:agent"
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let aliases = pod.host_aliases.unwrap();
        assert_eq!(aliases.len(), 1, "host-gateway has no meaning on a cluster");
        assert_eq!(aliases[0].ip, "10.0.0.5");
    }
}
