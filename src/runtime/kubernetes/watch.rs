//! What the cluster says of one run's Jobs and pods, kept current by two watches.
//!
//! A run has one [`RunWatch`]: a watch of the Jobs and one of the pods labelled
//! `dispatch.run=<run>` (kube's watcher: a list, then a watch from its resource version with
//! bookmarks moving it on, and a fresh list when the server answers 410 Gone; other errors
//! are retried with a backoff). Every event updates the picture and wakes the waiters, which
//! look again at the one Job they wait for ([`RunWatch::until`]). Nothing polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use tokio::sync::watch;

use crate::runtime::LABEL_RUN;

/// What the watches know of one Job.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The Job, while it exists.
    pub job: Option<Job>,
    /// Its pod, while it exists.
    pub pod: Option<Pod>,
}

#[derive(Default)]
struct Picture {
    jobs: HashMap<String, Job>,
    /// Pods by the name of their Job.
    pods: HashMap<String, Pod>,
    /// Whether each watch has listed once (before that, a Job missing from the picture may
    /// only be not listed yet).
    jobs_listed: bool,
    pods_listed: bool,
    /// Listed again, buffered until the list is complete.
    relisting_jobs: Option<HashMap<String, Job>>,
    relisting_pods: Option<HashMap<String, Pod>>,
}

/// The watches of one run.
pub struct RunWatch {
    picture: Arc<Mutex<Picture>>,
    changed: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The name of the Job a pod belongs to.
fn job_of(pod: &Pod) -> Option<String> {
    let meta = pod.meta();
    let labels = meta.labels.as_ref();
    labels
        .and_then(|l| {
            l.get("batch.kubernetes.io/job-name")
                .or_else(|| l.get("job-name"))
        })
        .cloned()
        .or_else(|| {
            meta.owner_references
                .as_ref()?
                .iter()
                .find(|o| o.kind == "Job")
                .map(|o| o.name.clone())
        })
}

fn name_of<K: Resource>(object: &K) -> Option<String> {
    object.meta().name.clone()
}

impl RunWatch {
    /// Starts the watches of run `run` in the namespace of the two APIs.
    pub fn start(jobs: Api<Job>, pods: Api<Pod>, run: &str) -> Self {
        let picture = Arc::new(Mutex::new(Picture::default()));
        let (tx, changed) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let selector = format!("{LABEL_RUN}={run}");
        let config = watcher::Config::default().labels(&selector);
        let tasks = vec![
            follow(
                jobs,
                config.clone(),
                picture.clone(),
                tx.clone(),
                apply_job,
                "Jobs",
            ),
            follow(pods, config, picture.clone(), tx, apply_pod, "pods"),
        ];
        Self {
            picture,
            changed,
            tasks,
        }
    }

    /// What is known of Job `job` now, and whether both watches have listed (so that a Job
    /// missing is gone, not unseen).
    pub fn seen(&self, job: &str) -> (Seen, bool) {
        let p = self.picture.lock().unwrap_or_else(|e| e.into_inner());
        (
            Seen {
                job: p.jobs.get(job).cloned(),
                pod: p.pods.get(job).cloned(),
            },
            p.jobs_listed && p.pods_listed,
        )
    }

    /// Waits until `done` says something of Job `job` (given what is known and whether both
    /// watches listed), and returns it.
    pub async fn until<T>(&self, job: &str, mut done: impl FnMut(&Seen, bool) -> Option<T>) -> T {
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            let (seen, listed) = self.seen(job);
            if let Some(answer) = done(&seen, listed) {
                return answer;
            }
            if changed.changed().await.is_err() {
                // The watches ended (they never do while this exists): nothing more comes.
                return std::future::pending().await;
            }
        }
    }
}

/// A task that applies every event of the watch of `api` to the picture (with `apply`) and
/// wakes the waiters; the watch's errors are retried with a backoff.
fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    picture: Arc<Mutex<Picture>>,
    tx: Arc<watch::Sender<u64>>,
    apply: fn(&mut Picture, Event<K>),
    what: &'static str,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => apply(
                    &mut picture.lock().unwrap_or_else(|e| e.into_inner()),
                    event,
                ),
                Err(error) => {
                    tracing::warn!(%error, "watching the run's {what}");
                    continue;
                }
            }
            tx.send_modify(|v| *v += 1);
        }
    })
}

fn apply_job(p: &mut Picture, event: Event<Job>) {
    match event {
        Event::Apply(job) => {
            if let Some(name) = name_of(&job) {
                p.jobs.insert(name, job);
            }
        }
        Event::Delete(job) => {
            if let Some(name) = name_of(&job) {
                p.jobs.remove(&name);
            }
        }
        Event::Init => p.relisting_jobs = Some(HashMap::new()),
        Event::InitApply(job) => {
            if let (Some(list), Some(name)) = (p.relisting_jobs.as_mut(), name_of(&job)) {
                list.insert(name, job);
            }
        }
        Event::InitDone => {
            if let Some(list) = p.relisting_jobs.take() {
                p.jobs = list;
            }
            p.jobs_listed = true;
        }
    }
}

fn apply_pod(p: &mut Picture, event: Event<Pod>) {
    match event {
        Event::Apply(pod) => {
            if let Some(job) = job_of(&pod) {
                p.pods.insert(job, pod);
            }
        }
        Event::Delete(pod) => {
            if let Some(job) = job_of(&pod) {
                // Only the pod that was deleted (a Job has one pod here).
                if p.pods.get(&job).and_then(name_of) == name_of(&pod) {
                    p.pods.remove(&job);
                }
            }
        }
        Event::Init => p.relisting_pods = Some(HashMap::new()),
        Event::InitApply(pod) => {
            if let (Some(list), Some(job)) = (p.relisting_pods.as_mut(), job_of(&pod)) {
                list.insert(job, pod);
            }
        }
        Event::InitDone => {
            if let Some(list) = p.relisting_pods.take() {
                p.pods = list;
            }
            p.pods_listed = true;
        }
    }
}
