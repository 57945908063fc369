//! [`AnyRuntime`], the one runtime a run uses whatever `runtime.kind` (or `--runtime`) says:
//! one type for the executor's `R: Runtime`. Every method is forwarded unchanged.

use std::time::Duration;

use super::docker::Docker;
use super::kubernetes::Kubernetes;
use super::{Cancel, ContainerSpec, Listed, Log, Ran, Runtime, RuntimeError};

/// The runtime of a run: the Docker engine or a Kubernetes cluster.
#[derive(Debug)]
pub enum AnyRuntime {
    /// The Docker engine.
    Docker(Docker),
    /// A Kubernetes cluster.
    Kubernetes(Box<Kubernetes>),
}

/// `$body` with `$r` bound to the runtime of whichever variant `$runtime` is.
macro_rules! each {
    ($runtime:expr, $r:ident => $body:expr) => {
        match $runtime {
            AnyRuntime::Docker($r) => $body,
            AnyRuntime::Kubernetes($r) => $body,
        }
    };
}

impl AnyRuntime {
    /// The Docker engine, when that is the runtime (the busybox image is built there).
    pub fn docker(&self) -> Option<&Docker> {
        match self {
            Self::Docker(docker) => Some(docker),
            Self::Kubernetes(_) => None,
        }
    }
}

impl Runtime for AnyRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        each!(self, r => r.create(spec).await)
    }

    async fn run(
        &self,
        id: &str,
        stdin: Option<Vec<u8>>,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<Ran, RuntimeError> {
        each!(self, r => r.run(id, stdin, log, timeout, cancel).await)
    }

    async fn reattach(
        &self,
        id: &str,
        log: &Log,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<Option<Ran>, RuntimeError> {
        each!(self, r => r.reattach(id, log, timeout, cancel).await)
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        each!(self, r => r.kill(id).await)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        each!(self, r => r.remove(id).await)
    }

    async fn list(&self, run: &str) -> Result<Vec<Listed>, RuntimeError> {
        each!(self, r => r.list(run).await)
    }

    async fn missing_programs(
        &self,
        image: &str,
        programs: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        each!(self, r => r.missing_programs(image, programs).await)
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        each!(self, r => r.image_id(image).await)
    }
}
