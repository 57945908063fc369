//! The parts of the Kubernetes tests, proven with the real Docker engine: the pod network
//! reaches a server on its gateway and no other network; in a container of the git image on it,
//! as a pod's steps will, git clones a unit's repository from the git server with the read
//! token, commits, and pushes to a scratch ref with the write token, while the read token
//! cannot push and no token cannot clone. And, with the host's git, the request bodies git
//! streams: gzip-encoded (a fetch of many refs) and chunked (a large push).
//!
//! The tokens reach git only through `$TOKEN` and a constant credential helper, never in a URL
//! or a program's arguments, as in the pods.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch::runtime::image::busybox_image_tag;
use tokio::io::AsyncBufReadExt;

use crate::support::docker::{available, git_image};
use crate::support::githttp::{GitRequest, GitServer, TokenKind};
use crate::support::network::network;

const READ: &str = "read-7d1c0e52";
const WRITE: &str = "write-4b9a2f17";

/// The pod steps' git: `git_with TOKEN ARGS…` runs git with a credential helper that answers
/// `$TOKEN` (a constant script; the token is in its environment only).
const GIT_WITH: &str = r#"
git_with() {
    token=$1
    shift
    TOKEN=$token git -c credential.helper='!f() { if [ "$1" = get ]; then echo username=pod; echo "password=$TOKEN"; fi; }; f' "$@"
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_network_reaches_the_gateway_and_no_other_network() {
    if !available() {
        return;
    }
    let network = network();
    let listener = tokio::net::TcpListener::bind((network.gateway, 0))
        .await
        .expect("bind on the gateway");
    let port = listener.local_addr().expect("an address").port();
    let accepted = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("a connection");
        let mut line = String::new();
        tokio::io::BufReader::new(socket)
            .read_line(&mut line)
            .await
            .expect("a line");
        line
    });
    let out = container(
        busybox_image_tag(),
        &network.name,
        &format!("echo hello | nc -w 5 {} {port}", network.gateway),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line = tokio::time::timeout(Duration::from_secs(10), accepted)
        .await
        .expect("the host's listener got the connection")
        .expect("the accept task");
    assert_eq!(line, "hello\n");

    // A server on another network (Docker's default bridge), reached from there and not from
    // the pod network.
    let name = format!("dispatch-githttp-listener-{}", std::process::id());
    let started = docker(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--network",
        "bridge",
        busybox_image_tag(),
        "nc",
        "-l",
        "-p",
        "8080",
    ])
    .await;
    assert!(started.status.success(), "{}", stderr(&started));
    let inspected = docker(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        &name,
    ])
    .await;
    let address = String::from_utf8_lossy(&inspected.stdout).trim().to_owned();
    let connect = format!("echo knock | nc -w 3 {address} 8080");
    let from_pod = container(busybox_image_tag(), &network.name, &connect).await;
    let from_bridge = container(busybox_image_tag(), "bridge", &connect).await;
    let _ = docker(&["rm", "--force", &name]).await;
    assert!(
        !from_pod.status.success(),
        "a container on {} reached {address} on the default bridge",
        network.name
    );
    assert!(
        from_bridge.status.success(),
        "the listener on the default bridge is not reachable even from there: {}",
        stderr(&from_bridge)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_clones_with_the_read_token_and_pushes_with_the_write_token() {
    if !available() {
        return;
    }
    let image = git_image();
    let fixture = Fixture::new("pod");
    let bare = fixture.repo("org", "repo", &["main"]).await;
    let main = git(&bare, &["rev-parse", "refs/heads/main"]).await;
    let server = GitServer::start(&fixture.root, network().gateway, READ, WRITE).await;
    let upload =
        |token, status| exchange("GET", "info/refs?service=git-upload-pack", token, status);
    let receive =
        |token, status| exchange("GET", "info/refs?service=git-receive-pack", token, status);

    // The clone with the read token, the push with the write token (one container plays the
    // pod's first and last steps).
    let mark = server.seen().len();
    let out = pod_step(
        image,
        &server,
        r#"
        git_with "$READ_TOKEN" clone -q "$REPO" /tmp/unit
        cd /tmp/unit
        echo "written in the pod" > RESULT.md
        git add RESULT.md
        git -c user.name=pod -c user.email=pod@localhost commit -q -m "The unit's result"
        git_with "$WRITE_TOKEN" push -q origin HEAD:refs/dispatch/test/out
        "#,
    )
    .await;
    assert!(out.status.success(), "the pod's steps: {}", stderr(&out));
    assert_eq!(
        git(&bare, &["show", "refs/dispatch/test/out:RESULT.md"]).await,
        "written in the pod"
    );
    assert_eq!(
        git(&bare, &["rev-parse", "refs/dispatch/test/out^"]).await,
        main
    );
    assert_eq!(
        exchanges(&server.seen()[mark..]),
        [
            upload(TokenKind::None, 401),
            upload(TokenKind::Read, 200),
            exchange("POST", "git-upload-pack", TokenKind::Read, 200),
            receive(TokenKind::None, 401),
            receive(TokenKind::Write, 200),
            exchange("POST", "git-receive-pack", TokenKind::Write, 200),
        ]
    );

    // The read token cannot push.
    let mark = server.seen().len();
    let out = pod_step(
        image,
        &server,
        r#"
        git_with "$READ_TOKEN" clone -q "$REPO" /tmp/unit
        cd /tmp/unit
        git -c user.name=pod -c user.email=pod@localhost commit -q --allow-empty -m "Denied"
        git_with "$READ_TOKEN" push -q origin HEAD:refs/dispatch/test/denied
        "#,
    )
    .await;
    assert!(!out.status.success(), "the read token pushed");
    assert!(
        stderr(&out).contains("403"),
        "the push is not refused with 403: {}",
        stderr(&out)
    );
    assert_eq!(
        git_status(
            &bare,
            &["rev-parse", "--verify", "-q", "refs/dispatch/test/denied"]
        )
        .await,
        Some(1),
        "the denied ref exists"
    );
    assert_eq!(
        exchanges(&server.seen()[mark..]),
        [
            upload(TokenKind::None, 401),
            upload(TokenKind::Read, 200),
            exchange("POST", "git-upload-pack", TokenKind::Read, 200),
            receive(TokenKind::None, 401),
            receive(TokenKind::Read, 403),
        ]
    );

    // Without credentials, or with a wrong token, nothing is served.
    for (script, error) in [
        (
            r#"git clone -q "$REPO" /tmp/unit"#,
            "could not read Username",
        ),
        (
            r#"git_with not-a-token clone -q "$REPO" /tmp/unit"#,
            "Authentication failed",
        ),
    ] {
        let mark = server.seen().len();
        let out = pod_step(image, &server, script).await;
        assert!(!out.status.success(), "{script} succeeded");
        assert!(stderr(&out).contains(error), "{script}: {}", stderr(&out));
        let seen = &server.seen()[mark..];
        assert!(!seen.is_empty(), "{script} sent no request");
        assert!(
            seen.iter()
                .all(|r| r.token == TokenKind::None && r.status == 401),
            "{script}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn host_git_streams_gzipped_fetches_and_chunked_pushes() {
    let fixture = Fixture::new("bodies");
    // Enough refs that the fetch's request (a want line per branch) passes git's 1 KiB gzip
    // threshold.
    let branches: Vec<String> = (0..64).map(|i| format!("branch-{i:02}")).collect();
    let mut refs: Vec<&str> = branches.iter().map(String::as_str).collect();
    refs.push("main");
    let bare = fixture.repo("org", "many", &refs).await;
    let server = GitServer::start(&fixture.root, IpAddr::from([127, 0, 0, 1]), READ, WRITE).await;
    let repo = format!("{}/org/many.git", server.url());
    let work = fixture.root.join("work");
    let helper = r#"credential.helper=!f() { if [ "$1" = get ]; then echo username=host; echo "password=$TOKEN"; fi; }; f"#;

    let cloned = host_git(&fixture.root, READ)
        .args(["-c", helper, "clone", &repo, "work"])
        .output()
        .await
        .expect("git runs");
    assert!(cloned.status.success(), "clone: {}", stderr(&cloned));
    assert!(
        stderr(&cloned).contains("Content-Encoding: gzip"),
        "the fetch was not gzip-encoded, so this test proves nothing about it"
    );
    let remote = git(&work, &["branch", "--remotes"]).await;
    assert_eq!(remote.lines().filter(|l| l.contains("branch-")).count(), 64);

    // Incompressible, and larger than git's biggest post buffer: the pack goes chunked.
    let mut noise = Vec::with_capacity(1 << 20);
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    while noise.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(work.join("noise.bin"), &noise).expect("write the noise");
    git(&work, &["add", "noise.bin"]).await;
    git(&work, &["commit", "-q", "-m", "Noise"]).await;
    let pushed = host_git(&work, WRITE)
        .args(["-c", helper, "-c", "http.postBuffer=65536"])
        .args(["push", "origin", "HEAD:refs/dispatch/test/noise"])
        .output()
        .await
        .expect("git runs");
    assert!(pushed.status.success(), "push: {}", stderr(&pushed));
    assert!(
        stderr(&pushed).contains("Transfer-Encoding: chunked"),
        "the push was not chunked, so this test proves nothing about it"
    );
    assert_eq!(
        git(&bare, &["rev-parse", "refs/dispatch/test/noise"]).await,
        git(&work, &["rev-parse", "HEAD"]).await
    );
    assert!(server
        .seen()
        .iter()
        .any(|r| r.path.ends_with("/git-receive-pack")
            && r.token == TokenKind::Write
            && r.status == 200));
}

/// A directory of bare repositories (`ORG/REPO.git`), removed when dropped.
struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "dispatch-githttp-{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("fixture directory");
        Self { root }
    }

    /// The bare repository `ORG/REPO.git` with a commit of its own on each of `branches`.
    async fn repo(&self, org: &str, repo: &str, branches: &[&str]) -> PathBuf {
        let bare = self.root.join(org).join(format!("{repo}.git"));
        std::fs::create_dir_all(&bare).expect("the repository's directory");
        git(&bare, &["init", "-q", "--bare", "--initial-branch=main"]).await;
        let mut stream = String::new();
        for branch in branches {
            let message = format!("Seed {branch}\n");
            let readme = format!("# {repo} ({branch})\n");
            stream += &format!(
                "commit refs/heads/{branch}\ncommitter seed <seed@localhost> 1700000000 +0000\n\
                 data {}\n{message}M 644 inline README.md\ndata {}\n{readme}\n",
                message.len(),
                readme.len()
            );
        }
        let mut import = host_git(&bare, "")
            .args(["fast-import", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("git fast-import runs");
        let mut stdin = import.stdin.take().expect("a piped stdin");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, stream.as_bytes())
            .await
            .expect("feed git fast-import");
        drop(stdin);
        let status = import.wait().await.expect("git fast-import ends");
        assert!(status.success(), "git fast-import in {}", bare.display());
        bare
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `script` (after [`GIT_WITH`]) with `sh -e` in a container of `image` on the pod
/// network, as uid 1000 with `HOME=/tmp`, given `$REPO` (`org/repo` on `server`) and the two
/// tokens as `$READ_TOKEN` and `$WRITE_TOKEN`.
async fn pod_step(image: &str, server: &GitServer, script: &str) -> Output {
    let name = container_name();
    let mut command = tokio::process::Command::new("docker");
    command
        .args(["run", "--rm", "--name", &name, "--network", &network().name])
        .args(["--user", "1000:1000", "--env", "HOME=/tmp"])
        .args(["--env", "GIT_TERMINAL_PROMPT=0"])
        .args(["--env", &format!("REPO={}/org/repo.git", server.url())])
        // Without a value: docker takes them from its own environment, not its arguments.
        .args(["--env", "READ_TOKEN", "--env", "WRITE_TOKEN"])
        .env("READ_TOKEN", READ)
        .env("WRITE_TOKEN", WRITE)
        .args([image, "sh", "-ec", &format!("{GIT_WITH}\n{script}")]);
    finish(command, &name).await
}

/// Runs `script` with `sh` in a container of `image` on `network`.
async fn container(image: &str, network: &str, script: &str) -> Output {
    let name = container_name();
    let mut command = tokio::process::Command::new("docker");
    command
        .args(["run", "--rm", "--name", &name, "--network", network])
        .args([image, "sh", "-c", script]);
    finish(command, &name).await
}

/// The output of `docker run` `command` of container `name`, which is removed if it takes
/// longer than a minute.
async fn finish(mut command: tokio::process::Command, name: &str) -> Output {
    let run = command.kill_on_drop(true).output();
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(out) => out.expect("docker runs"),
        Err(_) => {
            let _ = docker(&["rm", "--force", name]).await;
            panic!("the container {name} did not finish within a minute");
        }
    }
}

fn container_name() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "dispatch-githttp-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn docker(args: &[&str]) -> Output {
    tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("docker runs")
}

/// The requests, with the repeats protocol v2 makes (one POST per command) folded.
fn exchanges(seen: &[GitRequest]) -> Vec<GitRequest> {
    let mut folded = seen.to_vec();
    folded.dedup();
    folded
}

/// A request to `org/repo`'s `rest` as the server records it.
fn exchange(method: &str, rest: &str, token: TokenKind, status: u16) -> GitRequest {
    GitRequest {
        method: method.to_owned(),
        path: format!("/org/repo.git/{rest}"),
        token,
        status,
    }
}

/// The host's git in `dir`, away from the host's configuration, with `$TOKEN` and the trace of
/// its HTTP headers (on stderr, the credentials redacted).
fn host_git(dir: &Path, token: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .env("TOKEN", token)
        .args(["-c", "user.name=host", "-c", "user.email=host@localhost"]);
    command
}

/// `git ARGS` in `dir`: its trimmed stdout; panics when it fails.
async fn git(dir: &Path, args: &[&str]) -> String {
    let out = host_git(dir, "")
        .env_remove("GIT_TRACE_CURL")
        .args(args)
        .output()
        .await
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The exit code of `git ARGS` in `dir`.
async fn git_status(dir: &Path, args: &[&str]) -> Option<i32> {
    let out = host_git(dir, "")
        .env_remove("GIT_TRACE_CURL")
        .args(args)
        .output()
        .await
        .expect("git runs");
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
