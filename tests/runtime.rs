//! The Docker runtime against the real engine, with the busybox image built once per test
//! binary.
//!
//! Every test skips (with a note) when no engine answers, and fails instead when
//! `DISPATCH_REQUIRE_DOCKER=1`. Each test labels its containers with its own run id, removes
//! them at the end and checks that none is left.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch::runtime::docker::Docker;
use dispatch::runtime::image::{busybox_image_tag, ensure_image_with_files};
use dispatch::runtime::{
    ContainerSpec, Cut, Exit, Log, Runtime, RuntimeError, LABEL_NODE, LABEL_RUN,
};

use crate::support::docker::available;

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// One test's run: its own label, its own log directory, the busybox image ready.
struct Run {
    docker: Docker,
    id: String,
    dir: PathBuf,
}

impl Run {
    async fn start() -> Option<Run> {
        if !available() {
            return None;
        }
        let docker = Docker::connect().await.expect("the engine answers");
        let id = format!(
            "rt-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("dispatch-{id}"));
        std::fs::create_dir_all(&dir).expect("log directory");
        Some(Run { docker, id, dir })
    }

    /// A spec for node `node` running `argv` in the busybox image, with no network.
    fn spec(&self, node: &str, argv: &[&str]) -> ContainerSpec {
        let mut spec = ContainerSpec {
            name: format!("dispatch-{}-{node}", self.id),
            image: busybox_image_tag().to_string(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            workdir: "/workspace".to_string(),
            network: "none".to_string(),
            ..Default::default()
        };
        spec.labels.insert(LABEL_RUN.to_string(), self.id.clone());
        spec.labels.insert(LABEL_NODE.to_string(), node.to_string());
        spec
    }

    /// The log of node `node`, under the default cap.
    fn log(&self, node: &str) -> Log {
        Log {
            path: self.dir.join(format!("{node}.log")),
            limit: 16 << 20,
            idle: None,
            tap: None,
        }
    }

    /// Creates and runs the container; returns how it ended.
    async fn exec(&self, spec: &ContainerSpec, stdin: Option<Vec<u8>>, timeout: Duration) -> Exit {
        let node = &spec.labels[LABEL_NODE];
        let (exit, cut) = self
            .exec_logged(spec, stdin, timeout, &self.log(node))
            .await;
        assert_eq!(cut, None, "a log under its cap is never cut");
        exit
    }

    /// Creates and runs the container with its output in `log`; how it ended, and the cut.
    async fn exec_logged(
        &self,
        spec: &ContainerSpec,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        log: &Log,
    ) -> (Exit, Option<Cut>) {
        let (_cancel, rx) = tokio::sync::watch::channel(false);
        let id = self.docker.create(spec).await.expect("container created");
        let ran = self
            .docker
            .run(&id, stdin, log, timeout, rx)
            .await
            .expect("container ran");
        (ran.exit, ran.cut)
    }

    fn read_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.log(node).path).expect("log written")
    }

    /// Removes every container of the run and checks that none is left.
    async fn finish(self) {
        for listed in self.docker.list(&self.id).await.expect("list") {
            self.docker.remove(&listed.id).await.expect("remove");
        }
        assert_eq!(
            self.docker.list(&self.id).await.expect("list"),
            vec![],
            "containers left behind"
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn echo_hello_lands_in_the_log() {
    let Some(run) = Run::start().await else {
        return;
    };
    let exit = run
        .exec(&run.spec("echo", &["echo", "hello"]), None, LONG)
        .await;
    assert_eq!(exit, Exit::Code(0));
    assert_eq!(run.read_log("echo"), "hello\n");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_propagates() {
    let Some(run) = Run::start().await else {
        return;
    };
    let exit = run
        .exec(
            &run.spec("three", &["sh", "-c", "echo failing >&2; exit 3"]),
            None,
            LONG,
        )
        .await;
    assert_eq!(exit, Exit::Code(3));
    assert_eq!(
        run.read_log("three"),
        "failing\n",
        "stderr goes to the log too"
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_reaches_the_container_and_is_closed() {
    let Some(run) = Run::start().await else {
        return;
    };
    let mut spec = run.spec("stdin", &["wc", "-c"]);
    spec.stdin = true;
    let input = vec![b'x'; 300 * 1024];
    let exit = run.exec(&spec, Some(input), LONG).await;
    assert_eq!(exit, Exit::Code(0));
    assert_eq!(run.read_log("stdin").trim(), "307200");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_past_its_deadline_is_stopped() {
    let Some(run) = Run::start().await else {
        return;
    };
    let exit = run
        .exec(
            &run.spec("sleepy", &["sleep", "30"]),
            None,
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(exit, Exit::TimedOut);
    let listed = run.docker.list(&run.id).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].running, "the container was stopped");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_container() {
    let Some(run) = Run::start().await else {
        return;
    };
    let spec = run.spec("cancelled", &["sleep", "30"]);
    let id = run.docker.create(&spec).await.expect("container created");
    let (cancel, rx) = tokio::sync::watch::channel(false);
    let log = run.log("cancelled");
    let docker = run.docker.clone();
    let running = tokio::spawn(async move { docker.run(&id, None, &log, LONG, rx).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.send(true).expect("run still listening");
    let exit = running.await.expect("run task").expect("container ran");
    assert_eq!(exit.exit, Exit::Cancelled);
    let listed = run.docker.list(&run.id).await.expect("list");
    assert!(
        listed.iter().all(|c| !c.running),
        "the container was stopped"
    );
    run.finish().await;
}

/// Starts `spec`'s container through `run` and abandons the runner once the container printed
/// its first line, as a killed dispatch does: the container goes on without it. Its id.
async fn abandon(run: &Run, spec: &ContainerSpec) -> String {
    let id = run.docker.create(spec).await.expect("container created");
    let log = run.log(&spec.labels[LABEL_NODE]);
    let (docker, started, path) = (run.docker.clone(), id.clone(), log.clone());
    let runner = tokio::spawn(async move {
        let (_cancel, rx) = tokio::sync::watch::channel(false);
        docker.run(&started, None, &path, LONG, rx).await
    });
    for _ in 0..3000 {
        if std::fs::read_to_string(&log.path).is_ok_and(|text| !text.is_empty()) {
            runner.abort();
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("container {id} printed nothing within a minute");
}

/// Reattaches as a resumed run does; a reattach that never ends fails the test.
async fn reattach(run: &Run, id: &str, node: &str) -> Exit {
    let (_cancel, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(LONG, run.docker.reattach(id, &run.log(node), LONG, rx))
        .await
        .unwrap_or_else(|_| panic!("reattaching to {node} hung"))
        .expect("reattached")
        .expect("the container was started")
        .exit
}

#[tokio::test(flavor = "multi_thread")]
async fn reattach_collects_a_container_that_runs_stops_meanwhile_or_stopped() {
    let Some(run) = Run::start().await else {
        return;
    };
    let spec = |node: &str, pause: &str| {
        let script = format!("echo start; sleep {pause}; echo end; exit 3");
        run.spec(node, &["sh", "-c", &script])
    };
    // Stopped before the reattach.
    let stopped = abandon(&run, &spec("stopped", "0")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Still running when it reattaches, stopping while it follows.
    let running = abandon(&run, &spec("running", "2")).await;
    // Stopping around the moment of the reattach: each reattach begins 10 ms later relative to
    // its container's end than the one before, so some land between the engine's look at the
    // container and the start of the stream (an attach there never ended on Docker 20.10).
    let racing = futures_util::future::join_all((0..12).map(|i| {
        let node = format!("racing{i}");
        let spec = spec(&node, "0.5");
        let run = &run;
        async move {
            let id = abandon(run, &spec).await;
            tokio::time::sleep(Duration::from_millis(440 + 10 * i)).await;
            (reattach(run, &id, &node).await, node)
        }
    }));
    let racing = racing.await;
    assert_eq!(reattach(&run, &running, "running").await, Exit::Code(3));
    assert_eq!(reattach(&run, &stopped, "stopped").await, Exit::Code(3));
    for (exit, node) in racing
        .iter()
        .map(|(e, n)| (e, n.as_str()))
        .chain([(&Exit::Code(3), "running"), (&Exit::Code(3), "stopped")])
    {
        assert_eq!(*exit, Exit::Code(3), "{node}");
        assert_eq!(
            run.read_log(node),
            "start\nend\n",
            "{node}: the whole output, once"
        );
    }
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_megabytes_of_output_arrive_whole() {
    let Some(run) = Run::start().await else {
        return;
    };
    let size = 50 * 1024 * 1024;
    // `yes | head -c` would do too, but busybox `yes` inside a container crawls (50 s here,
    // with the docker CLI as well); the engine and the runtime see the same 50 MB burst.
    let size_arg = size.to_string();
    let argv = ["head", "-c", size_arg.as_str(), "/dev/zero"];
    let log = Log {
        limit: 64 << 20,
        ..run.log("loud")
    };
    let (exit, cut) = run
        .exec_logged(&run.spec("loud", &argv), None, LONG, &log)
        .await;
    assert_eq!((exit, cut), (Exit::Code(0), None));
    let written = std::fs::metadata(&log.path).expect("log written");
    assert_eq!(written.len(), size);
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_past_the_log_cap_keeps_its_head_and_tail() {
    let Some(run) = Run::start().await else {
        return;
    };
    let script = "echo START; head -c 30000000 /dev/zero; echo; echo END";
    let log = Log {
        limit: 1 << 20,
        ..run.log("flood")
    };
    std::fs::write(&log.path, "an earlier step\n").expect("earlier output");
    let (exit, cut) = run
        .exec_logged(&run.spec("flood", &["sh", "-c", script]), None, LONG, &log)
        .await;
    assert_eq!(exit, Exit::Code(0));
    let printed = 6 + 30_000_000 + 1 + 4;
    assert_eq!(
        cut,
        Some(Cut {
            printed,
            kept: 1 << 20,
            limit: 1 << 20
        })
    );
    let text = std::fs::read(&log.path).expect("log written");
    assert!(text.len() < (1 << 20) + 16 + 400, "{} bytes", text.len());
    assert!(text.starts_with(b"an earlier step\nSTART\n"));
    assert!(text.ends_with(b"\nEND\n"));
    let marker = format!("{} bytes of output cut here", printed - (1 << 20));
    let shown = String::from_utf8_lossy(&text);
    assert!(shown.contains(&marker), "the log says what was cut");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_is_named() {
    let Some(run) = Run::start().await else {
        return;
    };
    let mut spec = run.spec("missing", &["true"]);
    spec.image = "dispatch-no-such-image:never".to_string();
    match run.docker.create(&spec).await {
        Err(RuntimeError::ImageMissing(image)) => assert_eq!(image, "dispatch-no-such-image:never"),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
    assert_eq!(
        run.docker
            .image_id("dispatch-no-such-image:never")
            .await
            .expect("inspect"),
        None
    );
    assert!(run
        .docker
        .image_id(busybox_image_tag())
        .await
        .expect("inspect")
        .is_some());
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_are_locked_down() {
    let Some(run) = Run::start().await else {
        return;
    };
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // Only loopback, and loopback up: QA's own servers on 127.0.0.1 work without a network.
    // The client tries until the listener has received a line and gone (a client whose peer
    // closed first may exit non-zero, so its status says nothing).
    let script = "id -u; id -g; ls /sys/class/net; grep CapEff /proc/self/status; \
                  nc -l -p 7000 127.0.0.1 & listener=$!; \
                  for i in $(seq 150); do \
                    kill -0 $listener 2>/dev/null || break; \
                    echo loopback works | nc 127.0.0.1 7000 2>/dev/null; sleep 0.2; \
                  done; wait";
    for (node, user) in [
        ("invoker", format!("{uid}:{gid}")),
        ("nobody", "65534:65534".to_string()),
    ] {
        let mut spec = run.spec(node, &["sh", "-c", script]);
        spec.user = Some(user.clone());
        assert_eq!(run.exec(&spec, None, LONG).await, Exit::Code(0));
        let log = run.read_log(node);
        let lines: Vec<&str> = log.lines().collect();
        let (want_uid, want_gid) = user.split_once(':').expect("uid:gid");
        assert_eq!(
            lines,
            vec![
                want_uid,
                want_gid,
                "lo",
                "CapEff:\t0000000000000000",
                "loopback works"
            ],
            "{node}"
        );
    }
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_find_the_containers_of_a_run() {
    let Some(run) = Run::start().await else {
        return;
    };
    let first = run
        .docker
        .create(&run.spec("first", &["true"]))
        .await
        .expect("created");
    let second = run
        .docker
        .create(&run.spec("second", &["true"]))
        .await
        .expect("created");
    let mut listed = run.docker.list(&run.id).await.expect("list");
    listed.sort_by(|a, b| a.node.cmp(&b.node));
    let found: Vec<(&str, &str, bool)> = listed
        .iter()
        .map(|c| (c.id.as_str(), c.node.as_str(), c.running))
        .collect();
    assert_eq!(
        found,
        vec![
            (first.as_str(), "first", false),
            (second.as_str(), "second", false)
        ]
    );
    assert_eq!(
        run.docker.list("rt-no-such-run").await.expect("list"),
        vec![]
    );
    run.docker.remove(&first).await.expect("remove");
    run.docker
        .remove(&first)
        .await
        .expect("removing a removed container is fine");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn images_with_files_run_their_scripts_and_are_rebuilt_when_they_change() {
    let Some(run) = Run::start().await else {
        return;
    };
    let tag = "dispatch-rt-test-files:latest";
    let agent = b"#!/bin/sh\necho agent says $1\n".as_slice();
    let first =
        ensure_image_with_files(&run.docker, tag, &[("/usr/local/bin/agent", agent, 0o755)])
            .await
            .expect("image with files builds");
    let again =
        ensure_image_with_files(&run.docker, tag, &[("/usr/local/bin/agent", agent, 0o755)])
            .await
            .expect("image with files is found");
    assert_eq!(first, again, "same files, same image");

    let mut spec = run.spec("agent", &["/usr/local/bin/agent", "hi"]);
    spec.image = tag.to_string();
    assert_eq!(run.exec(&spec, None, LONG).await, Exit::Code(0));
    assert_eq!(run.read_log("agent"), "agent says hi\n");

    let changed = b"#!/bin/sh\necho changed\n".as_slice();
    let rebuilt = ensure_image_with_files(
        &run.docker,
        tag,
        &[("/usr/local/bin/agent", changed, 0o755)],
    )
    .await
    .expect("image with other files builds");
    assert_ne!(first, rebuilt, "changed files, new image");
    assert_eq!(
        run.docker.image_id(tag).await.expect("inspect"),
        Some(rebuilt)
    );
    run.finish().await;
}
