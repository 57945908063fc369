//! A test double of [`Runtime`]: no engine, no containers, only bookkeeping.
//!
//! It is for unit tests and the scheduler benchmark, never for real runs. [`Noop::create`]
//! records each container's run and node labels (what [`Runtime::list`] reports; nothing more,
//! so 100,000 containers of a benchmark cost a few megabytes) and returns ids `noop-1`,
//! `noop-2`, ...; [`Noop::run`] returns at once (or after the delay of [`Noop::with_delay`])
//! with exit code 0 or the code set for the node with [`Noop::set_exit`], honouring the
//! deadline and the cancel signal like a real runtime would; it writes nothing to the log
//! unless [`Noop::with_output`] says what to write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::log::CappedLog;
use super::{
    cancelled, Cancel, ContainerSpec, Exit, Listed, Log, Ran, Runtime, RuntimeError, LABEL_NODE,
    LABEL_RUN,
};

/// A runtime that runs nothing (test double).
#[derive(Debug, Default)]
pub struct Noop {
    next_id: AtomicU64,
    delay: Duration,
    output: Option<Vec<u8>>,
    created: Mutex<Vec<Created>>,
    exits: Mutex<HashMap<String, i64>>,
}

/// What the double remembers of a created container.
#[derive(Debug)]
struct Created {
    id: String,
    run: Option<String>,
    node: Option<String>,
}

/// Locks a mutex of the double; a poisoned lock only means another test thread panicked, and
/// the bookkeeping inside is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Noop {
    /// A runtime whose containers exit with 0 at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runtime whose containers take `delay` before they exit.
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Makes every run write these bytes to its log.
    pub fn with_output(mut self, output: impl Into<Vec<u8>>) -> Self {
        self.output = Some(output.into());
        self
    }

    /// Makes containers whose `dispatch.node` label is `node` exit with `code`.
    pub fn set_exit(&self, node: &str, code: i64) {
        lock(&self.exits).insert(node.to_string(), code);
    }

    /// The exit code configured for the container with this id.
    fn exit_code(&self, id: &str) -> i64 {
        // Ids are `noop-N`, minted under the lock in push order: entry N-1 (no linear search,
        // so benchmarks with 100,000 containers stay linear).
        let index = id
            .strip_prefix("noop-")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1));
        let node = index.and_then(|i| {
            lock(&self.created)
                .get(i)
                .filter(|created| created.id == id)
                .and_then(|created| created.node.clone())
        });
        node.and_then(|n| lock(&self.exits).get(&n).copied())
            .unwrap_or(0)
    }
}

impl Runtime for Noop {
    async fn reattach(
        &self,
        id: &str,
        _log: &Log,
        _timeout: Duration,
        _cancel: Cancel,
    ) -> Result<Option<Ran>, RuntimeError> {
        let known = lock(&self.created).iter().any(|created| created.id == id);
        Ok(known.then(|| Ran {
            exit: Exit::Code(self.exit_code(id)),
            cut: None,
        }))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut created = lock(&self.created);
        let id = format!("noop-{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        created.push(Created {
            id: id.clone(),
            run: spec.labels.get(LABEL_RUN).cloned(),
            node: spec.labels.get(LABEL_NODE).cloned(),
        });
        Ok(id)
    }

    async fn run(
        &self,
        id: &str,
        _stdin: Option<Vec<u8>>,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<Ran, RuntimeError> {
        let ran = |exit| Ran { exit, cut: None };
        if *cancel.borrow() {
            return Ok(ran(Exit::Cancelled));
        }
        let mut cut = None;
        if let Some(output) = &self.output {
            // Through the capped log a real runtime writes with, so its cut is the real one.
            let written = CappedLog::open(log, None).and_then(|mut capped| {
                capped.write(output)?;
                capped.finish()
            });
            cut = written.map_err(|error| RuntimeError::Log {
                path: log.path.clone(),
                error,
            })?;
        }
        let code = self.exit_code(id);
        let exit = if self.delay.is_zero() {
            Exit::Code(code)
        } else {
            tokio::select! {
                () = tokio::time::sleep(self.delay.min(timeout)) => {
                    if self.delay > timeout { Exit::TimedOut } else { Exit::Code(code) }
                }
                () = cancelled(cancel) => Exit::Cancelled,
            }
        };
        Ok(Ran { exit, cut })
    }

    async fn missing_programs(
        &self,
        _image: &str,
        _programs: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }

    async fn kill(&self, _id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn remove(&self, _id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn list(&self, run: &str) -> Result<Vec<Listed>, RuntimeError> {
        Ok(lock(&self.created)
            .iter()
            .filter(|created| created.run.as_deref() == Some(run))
            .map(|created| Listed {
                id: created.id.clone(),
                node: created.node.clone().unwrap_or_default(),
                running: false,
            })
            .collect())
    }

    async fn image_id(&self, _image: &str) -> Result<Option<String>, RuntimeError> {
        Ok(Some("sha256:noop".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(node: &str) -> ContainerSpec {
        let mut spec = ContainerSpec {
            argv: vec!["true".into()],
            ..Default::default()
        };
        spec.labels.insert(LABEL_RUN.into(), "r1".into());
        spec.labels.insert(LABEL_NODE.into(), node.into());
        spec
    }

    #[tokio::test]
    async fn records_specs_and_returns_configured_exits() {
        let noop = Noop::new();
        noop.set_exit("b", 7);
        let a = noop.create(&spec("a")).await.expect("noop create");
        let b = noop.create(&spec("b")).await.expect("noop create");
        assert_eq!((a.as_str(), b.as_str()), ("noop-1", "noop-2"));
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let log = Log {
            path: std::env::temp_dir().join(format!("dispatch-noop-{}.log", std::process::id())),
            limit: 1 << 20,
            idle: None,
            tap: None,
        };
        let exit_a = noop
            .run(&a, None, &log, Duration::from_secs(1), rx.clone())
            .await;
        let exit_b = noop.run(&b, None, &log, Duration::from_secs(1), rx).await;
        assert_eq!(exit_a.expect("noop run").exit, Exit::Code(0));
        assert_eq!(exit_b.expect("noop run").exit, Exit::Code(7));
        assert!(!log.path.exists(), "no output configured, no log written");
        let listed = noop.list("r1").await.expect("noop list");
        let nodes: Vec<&str> = listed.iter().map(|l| l.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b"], "both containers, with their nodes");
        assert!(noop.list("r2").await.expect("noop list").is_empty());
    }

    #[tokio::test]
    async fn delay_honours_deadline_and_cancel() {
        let noop = Noop::with_delay(Duration::from_secs(3600));
        let id = noop.create(&spec("a")).await.expect("noop create");
        let log = &Log {
            path: "/nonexistent/never-written.log".into(),
            limit: 1 << 20,
            idle: None,
            tap: None,
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let timed_out = noop
            .run(&id, None, log, Duration::from_millis(10), rx.clone())
            .await;
        assert_eq!(timed_out.expect("noop run").exit, Exit::TimedOut);
        tx.send(true).expect("receiver alive");
        let cancelled = noop
            .run(&id, None, log, Duration::from_secs(3600), rx)
            .await;
        assert_eq!(cancelled.expect("noop run").exit, Exit::Cancelled);
    }
}
