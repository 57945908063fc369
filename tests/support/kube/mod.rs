//! A fake Kubernetes API server for the Kubernetes runtime's tests: axum on 127.0.0.1:0 (plain
//! HTTP, bearer token), one namespace, Jobs whose pods run for real as local Docker
//! containers.
//!
//! # Architecture
//!
//! ```text
//!  HTTP ──▶ api (check against the subset, auth, route) ──▶ Cluster (under one lock)
//!                 │ watch / log streams: tasks woken by        │  store: objects, rv, history
//!                 │ the store's and the output's channels      │  job controller, GC, events
//!                 ▼                                            ▼ Act: RunPod / After(timer)
//!             watch.rs, logs.rs                       kubelet task per pod ──▶ Docker
//!                                                      (reports back: states, output, gone)
//! ```
//!
//! - [`openapi`]: every request checked against `../shared/reference/kubernetes-api-subset.json`
//!   (paths, methods, query parameters, bodies recursively, unknown fields refused); the
//!   violations are kept for the test to assert on.
//! - [`store`]: objects, the global resourceVersion, per-kind watch history.
//! - [`cluster`]: every state change (API writes, Job controller, garbage collector, what
//!   kubelets report) in plain methods under the lock; I/O and timers come back as `Act`s.
//! - [`kubelet`]: a task per pod: volumes, init containers in order, the regular ones, kill and
//!   removal. [`pod`]: what the kubelet knows of a pod, from which its status is derived.
//! - [`watch`], [`logs`]: the streaming answers.
//!
//! # Invariants
//!
//! - The lock is never held across an `.await`; nothing polls: watches, log follows, retries
//!   of a pod waiting for a Secret and the kubelets wait on channels or the engine.
//! - Every container the fake creates carries `dispatch.fake-kube=<pod>` and the cluster's
//!   and process's labels; dropping the [`FakeCluster`] removes them all and its temporary
//!   directories (a later cluster also removes those of dead test processes).
//! - A Job gets at most one pod and no retries (this backend runs `backoffLimit: 0`).
//!
//! # Deliberate differences from a real cluster
//!
//! - Stricter: unknown body fields are violations (and dropped, as `fieldValidation=Warn`
//!   does; `Strict` answers 400).
//! - Simpler: one namespace, one node (`fake-node`); no pod IPs; pods of a Job deleted
//!   without a grace period (SIGKILL); no `job-tracking` finalizer on pods, `status.ready` of a
//!   Job stays 0 and a finished Job gets its early and terminal conditions in one update (the
//!   fewest watch events); a Job past its deadline keeps its Failed pod (upstream deletes it);
//!   `podFailurePolicy` knows only `onExitCodes` with `FailJob` (other actions count as a
//!   failure); a pod's deletion is one DELETED event (no MODIFIED with a deletionTimestamp
//!   first); list pages are not a snapshot. `pods/log` follows the kubelet: `container` may be
//!   left out when the pod has exactly one regular container (init containers are named in
//!   the 400 but do not count). A missing Secret or ConfigMap (volume or env) keeps the pod
//!   Pending with a Warning Event, retried whenever the store changes; a missing image keeps
//!   it Pending with `ErrImageNeverPull` (nothing is ever pulled). resourceVersions are one
//!   counter (clients must still treat them as opaque). PATCH takes merge, strategic-merge
//!   (as merge: lists replaced) and JSON patches.
//! - Not served: anything outside the subset, server-side apply (415), Pod creation or
//!   deletion by the client, other namespaces (404).

mod api;
mod cluster;
mod jobs;
mod kubelet;
mod logs;
mod openapi;
mod pod;
mod selector;
mod status;
mod store;
mod values;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use serde_json::Value;

use cluster::{Act, Cluster};
use store::Kind;

/// Label on every container the fake starts: the pod's name.
pub const LABEL_POD: &str = "dispatch.fake-kube";
/// Label: the container's name in the pod.
pub const LABEL_CONTAINER: &str = "dispatch.fake-kube.container";
/// Label: the fake cluster's id.
pub const LABEL_CLUSTER: &str = "dispatch.fake-kube.cluster";
/// Label: the test process's pid (leftovers of dead processes are removed).
pub const LABEL_PROCESS: &str = "dispatch.fake-kube.process";

/// How a fake cluster is set up.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The one namespace that exists.
    pub namespace: String,
    /// The bearer token every request must carry.
    pub token: String,
    /// The Docker network pod containers join (`none` for none).
    pub network: String,
    /// Watch events kept per resource kind.
    pub history: usize,
    /// Whether watches that allow bookmarks get them.
    pub bookmarks: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            namespace: "dispatch".to_owned(),
            token: "fake-kube-token".to_owned(),
            network: "none".to_owned(),
            history: 1000,
            bookmarks: true,
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query.
    pub query: String,
    /// The status answered.
    pub status: u16,
    /// Whether it is a watch.
    pub watch: bool,
    /// Watch events sent on it so far (bookmarks and errors included).
    pub events: usize,
}

/// What the server's tasks share.
struct Shared {
    options: ClusterOptions,
    /// Names this cluster's containers and directories.
    id: String,
    root: PathBuf,
    docker: bollard::Docker,
    description: openapi::Description,
    cluster: Mutex<Cluster>,
    /// Told when a container creation in flight finished.
    idle: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster
            .lock()
            .expect("invariant: nothing panics while holding the fake cluster's lock")
    }
}

/// Does what the cluster asked for once its lock was released.
fn perform(shared: &Arc<Shared>, acts: Vec<Act>) {
    for act in acts {
        match act {
            Act::RunPod(pod) => {
                tokio::spawn(kubelet::run(shared.clone(), pod));
            }
            Act::After(delay, happened) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let acts = {
                        let mut cluster = shared.lock();
                        if cluster.closed {
                            return;
                        }
                        cluster.handle(happened)
                    };
                    perform(&shared, acts);
                });
            }
        }
    }
}

/// A running fake cluster. Dropping it removes its containers and directories.
pub struct FakeCluster {
    shared: Arc<Shared>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

/// The engine, with the API version negotiated.
async fn engine() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults()
        .expect("the fake cluster runs pods on the local Docker engine")
        .negotiate_version()
        .await
        .expect("the fake cluster runs pods on the local Docker engine, which does not answer")
}

/// Removes the containers of fake clusters whose test process has ended.
async fn remove_dead_leftovers(docker: &bollard::Docker) {
    let filters = HashMap::from([("label", vec![LABEL_PROCESS.to_owned()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(found) = docker.list_containers(Some(options)).await else {
        return;
    };
    for container in found {
        let pid = container
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_PROCESS))
            .cloned()
            .unwrap_or_default();
        if Path::new("/proc").join(&pid).exists() {
            continue;
        }
        if let Some(id) = container.id {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&id, Some(options)).await;
        }
    }
}

impl FakeCluster {
    /// Starts a fake cluster on the current tokio runtime; the Docker engine must answer.
    pub async fn start(options: ClusterOptions) -> Self {
        let docker = engine().await;
        remove_dead_leftovers(&docker).await;
        let id = values::hex_id()[..10].to_owned();
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-kube-{id}"));
        tokio::fs::create_dir_all(root.join("pods"))
            .await
            .unwrap_or_else(|e| panic!("the fake cluster's directory {}: {e}", root.display()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("a local address"));
        let cluster = Cluster::new(&options.namespace, options.history, root.join("pods"));
        let shared = Arc::new(Shared {
            options,
            id,
            root,
            docker,
            description: openapi::Description::load(),
            cluster: Mutex::new(cluster),
            idle: Condvar::new(),
        });
        let router = Router::new()
            .fallback(api::handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the fake cluster serves");
        });
        Self {
            shared,
            url,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Writes a kubeconfig: cluster `fake` at [`FakeCluster::url`], user `fake` with the
    /// token, context `fake` (current) with the namespace.
    pub fn write_kubeconfig(&self, path: &Path) {
        let quote = |s: &str| serde_json::to_string(s).expect("invariant: strings serialize");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {}\n\
             current-context: fake\npreferences: {{}}\n",
            quote(&self.url),
            quote(&self.shared.options.token),
            quote(&self.shared.options.namespace),
        );
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("writing the kubeconfig {}: {e}", path.display()));
    }

    /// Every violation of the API subset so far.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// HTTP requests plus watch events sent so far.
    pub fn request_count(&self) -> usize {
        let cluster = self.shared.lock();
        cluster.seen.len() + cluster.seen.iter().map(|s| s.events).sum::<usize>()
    }

    fn objects(&self, kind: Kind) -> Vec<Value> {
        self.shared.lock().store.list(kind).cloned().collect()
    }

    /// The live Jobs, as the server holds them.
    pub fn jobs(&self) -> Vec<Value> {
        self.objects(Kind::Job)
    }

    /// The live Pods.
    pub fn pods(&self) -> Vec<Value> {
        self.objects(Kind::Pod)
    }

    /// The live Secrets.
    pub fn secrets(&self) -> Vec<Value> {
        self.objects(Kind::Secret)
    }

    /// The Events recorded (and not expired: they never expire here).
    pub fn events(&self) -> Vec<Value> {
        self.objects(Kind::Event)
    }

    /// Drops the watch history: a watch from an older resourceVersion then gets the 410
    /// ERROR event.
    pub fn forget_history(&self) {
        self.shared.lock().store.forget();
    }

    /// As an API server that restarted: every open watch ends (cleanly, as on a dropped
    /// connection), and the history starts afresh, so the clients' watches from where they
    /// were get the 410 ERROR event and must list again.
    pub fn restart_watches(&self) {
        let mut cluster = self.shared.lock();
        cluster.watch_epoch += 1;
        cluster.store.restart();
    }

    /// Docker containers the fake created so far.
    pub fn created_containers(&self) -> usize {
        self.shared.lock().created_containers
    }

    /// From now on, refuses `verb` (`create`, `get`, `list`, `watch`, `delete`, `patch`) on
    /// `resource` (`jobs`, `pods/log`, …) with 403, and access reviews say `allowed: false`.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared
            .lock()
            .denied
            .insert((verb.to_owned(), resource.to_owned()));
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.server.abort();
        let mut cluster = self.shared.lock();
        cluster.close();
        // A creation in flight finishes on another worker and removes its container itself;
        // a current-thread runtime cannot run it while this thread waits, so it is not waited
        // for there (the label sweep of a later cluster removes such a leftover).
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            let (waited, _) = self
                .shared
                .idle
                .wait_timeout_while(cluster, Duration::from_secs(10), |c| c.creating > 0)
                .expect("invariant: nothing panics while holding the fake cluster's lock");
            drop(waited);
        } else {
            drop(cluster);
        }
        let id = self.shared.id.clone();
        let swept = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the fake cluster's cleanup")
                .block_on(async move {
                    let docker = engine().await;
                    let filters = HashMap::from([("label", vec![format!("{LABEL_CLUSTER}={id}")])]);
                    let options = ListContainersOptionsBuilder::default()
                        .all(true)
                        .filters(&filters)
                        .build();
                    for container in docker
                        .list_containers(Some(options))
                        .await
                        .unwrap_or_default()
                    {
                        if let Some(id) = container.id {
                            let options = RemoveContainerOptionsBuilder::default()
                                .force(true)
                                .v(true)
                                .build();
                            let _ = docker.remove_container(&id, Some(options)).await;
                        }
                    }
                })
        })
        .join();
        if swept.is_err() && !std::thread::panicking() {
            panic!("the fake cluster could not remove its containers");
        }
        let _ = std::fs::remove_dir_all(&self.shared.root);
    }
}
