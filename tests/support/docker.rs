//! The Docker engine of the tests. Without it the Docker tests skip, unless CI sets
//! `DISPATCH_REQUIRE_DOCKER=1`: then they fail. The busybox image is built once per test
//! binary, before the first test that needs the engine; the git image of the Kubernetes pods'
//! clone and push steps is built beforehand by `scripts/agent-images` ([`git_image`]).

use std::sync::OnceLock;

use dispatch::runtime::docker::Docker;
use dispatch::runtime::image::{busybox_image_tag, ensure_busybox_image};
use dispatch::runtime::Runtime;

/// Whether the engine answers; the busybox image is ready when it does.
pub fn available() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        block_on(async {
            let docker = Docker::connect().await.map_err(|e| e.to_string())?;
            ensure_busybox_image(&docker, busybox_image_tag())
                .await
                .unwrap_or_else(|e| panic!("the busybox image does not build: {e}"));
            Ok(())
        })
    });
    match ready {
        Ok(()) => true,
        Err(error) if std::env::var("DISPATCH_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("DISPATCH_REQUIRE_DOCKER=1 but the engine is unreachable: {error}")
        }
        Err(error) => {
            eprintln!("skipped: no Docker engine ({error})");
            false
        }
    }
}

/// The tag of the image the Kubernetes pods' clone and push steps run in (`sh` and `git` over
/// HTTP(S), any uid with a writable `HOME`), which `scripts/agent-images` builds; panics, saying
/// how to build it, when the engine does not have it.
pub fn git_image() -> &'static str {
    const TAG: &str = "dispatch-git:latest";
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let out = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", TAG])
            .output()
            .map_err(|e| format!("docker: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    });
    match checked {
        Ok(()) => TAG,
        Err(error) => panic!(
            "the image {TAG} is missing: run `scripts/install-deps --agent-images` \
             (or `scripts/agent-images git`) to build it ({error})"
        ),
    }
}

/// The containers of `run` that still exist in the engine.
pub fn leftovers(run: &str) -> usize {
    let run = run.to_owned();
    block_on(async move {
        let docker = Docker::connect().await.expect("the engine answers");
        docker.list(&run).await.expect("list").len()
    })
}

/// Runs `future` on a runtime of its own, on a thread of its own (so async tests can call it).
fn block_on<T: Send + 'static>(future: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(future)
    })
    .join()
    .expect("the engine's thread")
}
