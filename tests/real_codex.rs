//! The real codex-cli 0.163.0 (`dispatch-codex:0.163.0`) against the scripted Responses API
//! ([`OpenAiServer`]) on an internal Docker network: what `codex exec --json` does with a
//! scripted edit, as root and as an ordinary uid, and with a key the API refuses. These run
//! `docker run` directly; they pin down the protocol dispatch's `codex` preset relies on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::docker;
use crate::support::model::openai::{ApiError, OpenAiServer, Seen, Step, Usage};
use crate::support::model::preset::{self, PresetRun, PresetSpec};
use crate::support::model::{agent_image, ModelNetwork};

const KEY: &str = "sk-dispatch-test-0123456789";
const PROMPT: &str = "Make file.txt say fixed.\n";

/// A repository and a `CODEX_HOME` in a fresh temporary directory.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    /// `repo/` with `file.txt` ("broken") committed, and `codex-home/config.toml` pointing
    /// codex at `server`; both owned by `owner` when one is given.
    fn new(name: &str, server: &OpenAiServer, owner: Option<(u32, u32)>) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dispatch-real-codex-{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = dir.join("repo");
        let home = dir.join("codex-home");
        std::fs::create_dir_all(&repo).expect("the repository's directory");
        std::fs::create_dir_all(&home).expect("CODEX_HOME");
        std::fs::write(repo.join("file.txt"), "broken\n").expect("file.txt");
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        git(&repo, &["add", "--all"]);
        git(&repo, &["commit", "--quiet", "-m", "Initial commit"]);
        std::fs::write(
            home.join("config.toml"),
            format!("openai_base_url = \"{}\"\n", server.base_url),
        )
        .expect("config.toml");
        if let Some((uid, gid)) = owner {
            chown_all(&dir, uid, gid);
        }
        Self { dir }
    }

    fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    fn home(&self) -> PathBuf {
        self.dir.join("codex-home")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_all(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_all(&entry.expect("entry").path(), uid, gid);
        }
    }
}

/// The uid an ordinary user runs as: 1000 when the tests run as root (who can hand the
/// fixture to it), the tests' own uid otherwise.
fn ordinary_user() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        (1000, 1000)
    } else {
        (uid, gid)
    }
}

/// What one `codex exec --json` printed.
struct Codex {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    events: Vec<Value>,
}

impl Codex {
    fn event(&self, kind: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["type"] == kind)
    }
}

/// Runs `codex exec --json` with `key` on `network` in the fixture, as `user` if given, with
/// the prompt on stdin; kills it after three minutes.
fn codex(network: &ModelNetwork, fixture: &Fixture, key: &str, user: Option<(u32, u32)>) -> Codex {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "dispatch-real-codex-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    let mut command = Command::new("docker");
    command.args([
        "run",
        "--rm",
        "-i",
        "--name",
        &name,
        "--network",
        &network.name,
    ]);
    command.args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]);
    if let Some((uid, gid)) = user {
        command.args(["--user", &format!("{uid}:{gid}")]);
    }
    command
        .args(["-e", &format!("CODEX_API_KEY={key}")])
        .args(["-e", "CODEX_HOME=/home/agent/.codex"])
        .args([
            "-v",
            &format!("{}:/home/agent/.codex", fixture.home().display()),
        ])
        .args([
            "-v",
            &format!("{}:/workspace/repo", fixture.repo().display()),
        ])
        .arg(agent_image("codex"))
        .args([
            "codex",
            "exec",
            "--dangerously-bypass-approvals-and-sandbox",
            "--skip-git-repo-check",
            "--json",
            "-C",
            "/workspace/repo",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("docker runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(PROMPT.as_bytes())
        .expect("the prompt is written");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for docker") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = Command::new("docker").args(["kill", &name]).output();
            panic!("codex ran for more than three minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().expect("the stdout reader");
    let stderr = stderr.join().expect("the stderr reader");
    let events = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    Codex {
        status,
        stdout,
        stderr,
        events,
    }
}

/// The scripted edit then a final message, run as `user`; asserts what a user would check.
fn edits_the_file_as(test: &str, user: Option<(u32, u32)>) {
    if !docker::available() {
        return;
    }
    let network = ModelNetwork::create(test);
    let server = OpenAiServer::start(
        &network,
        KEY,
        vec![
            Step::shell("printf 'fixed\\n' > file.txt").with_usage(Usage {
                input_tokens: 1200,
                cached_tokens: 1000,
                output_tokens: 30,
            }),
            Step::message("file.txt now says fixed.").with_usage(Usage {
                input_tokens: 1300,
                cached_tokens: 1200,
                output_tokens: 12,
            }),
        ],
    );
    let fixture = Fixture::new(test, &server, user);
    let run = codex(&network, &fixture, KEY, user);
    let context = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);

    assert!(run.status.success(), "codex exits 0; {context}");
    assert_eq!(
        std::fs::read_to_string(fixture.repo().join("file.txt")).expect("file.txt"),
        "fixed\n",
        "{context}"
    );
    assert!(run.event("thread.started").is_some(), "{context}");
    let completed = run.event("turn.completed").expect("turn.completed");
    assert_eq!(completed["usage"]["input_tokens"], 2500, "{context}");
    assert_eq!(completed["usage"]["cached_input_tokens"], 2200, "{context}");
    assert_eq!(completed["usage"]["output_tokens"], 42, "{context}");
    let command = run
        .events
        .iter()
        .find(|e| e["type"] == "item.completed" && e["item"]["type"] == "command_execution")
        .unwrap_or_else(|| panic!("a command_execution item; {context}"));
    assert_eq!(command["item"]["exit_code"], 0, "{context}");
    let message = run
        .events
        .iter()
        .find(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
        .unwrap_or_else(|| panic!("an agent_message item; {context}"));
    assert_eq!(message["item"]["text"], "file.txt now says fixed.");

    let requests = server.requests();
    assert!(
        requests.iter().all(|r| r.authorized),
        "every request carries the key: {requests:?}"
    );
    let responses = server.responses();
    assert_eq!(responses.len(), 2, "two model calls: {requests:?}");
    assert!(
        responses[0].offers_tool("exec"),
        "codex 0.163 offers the code-mode tool `exec`: {:?}",
        responses[0].body
    );
    let output = responses[1].inputs("custom_tool_call_output");
    assert_eq!(output.len(), 1, "{:?}", responses[1].body);
    assert_eq!(output[0]["call_id"], "call_0");
    assert!(
        output[0]["output"]
            .to_string()
            .contains(r#"\"exit_code\":0"#),
        "the exec call's result reaches the model: {}",
        output[0]["output"]
    );
}

#[test]
fn real_codex_edits_the_repository_as_root() {
    edits_the_file_as("codex-root", None);
}

#[test]
fn real_codex_edits_the_repository_as_an_ordinary_uid() {
    edits_the_file_as("codex-uid", Some(ordinary_user()));
}

#[test]
fn real_codex_with_a_refused_key_exits_non_zero_naming_the_api_message() {
    if !docker::available() {
        return;
    }
    let network = ModelNetwork::create("codex-401");
    let server = OpenAiServer::start(&network, KEY, vec![Step::message("never sent")]);
    let fixture = Fixture::new("codex-401", &server, None);
    let run = codex(&network, &fixture, "sk-wrong-key-0123456789", None);
    let context = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);

    assert!(!run.status.success(), "codex fails; {context}");
    let failed = run.event("turn.failed").expect("turn.failed");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("401 Unauthorized") && message.contains("Incorrect API key provided"),
        "{context}"
    );
    assert!(
        !run.stdout.contains("sk-wrong-key-0123456789"),
        "the API shows the key masked; {context}"
    );
    assert_eq!(
        std::fs::read_to_string(fixture.repo().join("file.txt")).expect("file.txt"),
        "broken\n"
    );
    let requests = server.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| !r.authorized && r.status == 401));
    assert_eq!(server.steps_taken(), 0, "a refused request takes no step");
}

#[test]
fn real_codex_retries_rate_limits_and_server_errors_then_edits() {
    if !docker::available() {
        return;
    }
    let network = ModelNetwork::create("codex-retry");
    let server = OpenAiServer::start(
        &network,
        KEY,
        vec![
            Step::Error(ApiError::RateLimited {
                retry_after_secs: 2,
            }),
            Step::Error(ApiError::ServerError),
            Step::shell("printf 'fixed\\n' > file.txt"),
            Step::message("Done."),
        ],
    );
    let fixture = Fixture::new("codex-retry", &server, None);
    let started = Instant::now();
    let run = codex(&network, &fixture, KEY, None);
    let context = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);

    assert!(run.status.success(), "codex exits 0; {context}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "codex waits out retry-after"
    );
    assert_eq!(
        std::fs::read_to_string(fixture.repo().join("file.txt")).expect("file.txt"),
        "fixed\n",
        "{context}"
    );
    let statuses: Vec<u16> = server.responses().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 500, 200, 200], "{context}");
}

/// One raw HTTP/1.1 exchange with the server; `None` when no answer came within `wait`.
fn exchange(server: &OpenAiServer, request: &str, wait: Duration) -> Option<String> {
    use std::io::Read;
    let address = server
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the server");
    stream.set_read_timeout(Some(wait)).expect("a read timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) if answer.is_empty() => None,
        Err(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
    }
}

#[test]
fn real_codex_server_refuses_bad_requests_hangs_and_drops_cleanly() {
    if !docker::available() {
        return;
    }
    let network = ModelNetwork::create("codex-server");
    let server = OpenAiServer::start(
        &network,
        KEY,
        vec![
            Step::message("hi"),
            Step::Error(ApiError::InvalidApiKey),
            Step::Hang,
        ],
    );
    let post = |auth: &str, body: &str| {
        format!(
            "POST /v1/responses HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let bearer = format!("authorization: Bearer {KEY}\r\n");

    let missing = exchange(&server, &post("", "{}"), Duration::from_secs(5)).expect("an answer");
    assert!(missing.starts_with("HTTP/1.1 401"), "{missing}");
    assert!(
        missing.contains("You didn't provide an API key"),
        "{missing}"
    );
    let wrong = exchange(
        &server,
        &post("authorization: Bearer sk-not-the-key-at-all\r\n", "{}"),
        Duration::from_secs(5),
    )
    .expect("an answer");
    assert!(wrong.contains(r#""code":"invalid_api_key""#), "{wrong}");
    assert!(!wrong.contains("sk-not-the-key-at-all"), "{wrong}");
    let unknown = exchange(
        &server,
        &format!("GET /v1/models HTTP/1.1\r\nhost: x\r\n{bearer}connection: close\r\n\r\n"),
        Duration::from_secs(5),
    )
    .expect("an answer");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let upgrade = exchange(
        &server,
        &format!(
            "GET /v1/responses HTTP/1.1\r\nhost: x\r\n{bearer}connection: Upgrade\r\n\
             upgrade: websocket\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
        Duration::from_secs(5),
    )
    .expect("an answer");
    assert!(upgrade.starts_with("HTTP/1.1 426"), "{upgrade}");

    let malformed =
        exchange(&server, &post(&bearer, "{not json"), Duration::from_secs(5)).expect("an answer");
    assert!(malformed.starts_with("HTTP/1.1 200"), "{malformed}");
    assert!(
        malformed.contains("event: response.completed"),
        "{malformed}"
    );
    let revoked =
        exchange(&server, &post(&bearer, "{}"), Duration::from_secs(5)).expect("an answer");
    assert!(revoked.starts_with("HTTP/1.1 401"), "{revoked}");
    assert!(revoked.contains(r#""code":"invalid_api_key""#), "{revoked}");
    let hung = exchange(&server, &post(&bearer, "{}"), Duration::from_secs(2));
    assert_eq!(hung, None, "a hang answers nothing");
    let exhausted =
        exchange(&server, &post(&bearer, "{}"), Duration::from_secs(5)).expect("an answer");
    assert!(exhausted.starts_with("HTTP/1.1 400"), "{exhausted}");

    let requests = server.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 404, 426, 200, 401, 0, 400]);
    let upgrades: Vec<bool> = requests.iter().map(|r| r.websocket).collect();
    assert_eq!(
        upgrades,
        [false, false, false, true, false, false, false, false]
    );
    assert_eq!(
        server.steps_taken(),
        3,
        "an exhausted script stays exhausted"
    );
    let dropped = Instant::now();
    drop(server);
    assert!(
        dropped.elapsed() < Duration::from_secs(5),
        "dropping the server ends the hung request"
    );
}

/// A spec running the `codex` preset through `dispatch run`: the real codex in its image on
/// the model's network, `CODEX_API_KEY` from dispatch's environment, and the user's
/// `~/.codex/config.toml` (naming the scripted server as `openai_base_url`) copied into the
/// unit's agent home by dispatch; one repository `t/r1` with `file.txt` = `broken`.
type Preset = preset::Preset<OpenAiServer>;

/// The `codex` preset's spec with job `fix` (QA `qa`, the watchdog at 20 s: codex prints as it
/// works, and is silent when its API is) against a server playing `script`, dispatch run as
/// `user` when given; `None` when the test skips.
fn codex_preset(test: &str, script: Vec<Step>, qa: &str, user: Option<u32>) -> Option<Preset> {
    codex_preset_with(test, script, qa, user, "")
}

/// [`codex_preset`] with more of the job (`, budget: ...`).
fn codex_preset_with(
    test: &str,
    script: Vec<Step>,
    qa: &str,
    user: Option<u32>,
    job_extra: &str,
) -> Option<Preset> {
    codex_preset_on(test, script, qa, user, job_extra, &[], false)
}

/// [`codex_preset_with`] on `repos` (none: `r1`), every conversation playing `script` from its
/// start when `each` (many units at once).
fn codex_preset_on(
    test: &str,
    script: Vec<Step>,
    qa: &str,
    user: Option<u32>,
    job_extra: &str,
    repos: &[&str],
    each: bool,
) -> Option<Preset> {
    if !docker::available() {
        return None;
    }
    let image = agent_image("codex");
    let network = ModelNetwork::create(test);
    let server = match each {
        true => OpenAiServer::start_each(&network, KEY, script),
        false => OpenAiServer::start(&network, KEY, script),
    };
    let config = format!("openai_base_url = \"{}\"\n", server.base_url);
    let spec = PresetSpec {
        test,
        agent: "codex",
        image: &image,
        agent_extra: "",
        qa,
        job_extra: &format!(", idle_timeout: 20s{job_extra}"),
        home_files: &[(".codex/config.toml", &config)],
        user,
        repos,
    };
    Preset::new(&spec, network, server, &[("CODEX_API_KEY", KEY)])
}

#[test]
fn dispatch_runs_the_codex_preset_and_the_edit_lands_as_root() {
    codex_preset_edit_lands(None);
}

#[test]
fn dispatch_runs_the_codex_preset_and_the_edit_lands_as_uid_1000() {
    codex_preset_edit_lands(Some(1000));
}

/// The edit through codex's `exec` tool, then a message: the unit ends `changed` and the
/// branch dispatch published holds the edit; codex's state is in the unit's agent home.
fn codex_preset_edit_lands(user: Option<u32>) {
    let script = vec![
        Step::shell("printf 'fixed\\n' > file.txt"),
        Step::message("file.txt now says fixed."),
    ];
    let name = format!("codex-preset-{}", user.unwrap_or(0));
    let Some(p) = codex_preset(&name, script, "[]", user) else {
        return;
    };
    let report = p.run(0);
    let responses = edit_landed(&p, &report);
    assert!(responses.iter().all(|seen| seen.authorized));
    assert!(
        responses[0]
            .body
            .as_ref()
            .expect("a JSON body")
            .to_string()
            .contains("Make file.txt say fixed"),
        "the rendered prompt reached the model"
    );
    let state = p.t.path(".dispatch/workspaces/t/r1/fix/home/codex/.codex");
    assert!(
        state.join("sessions").exists(),
        "codex kept its session in the unit's home"
    );
    let mut user_files: Vec<String> = std::fs::read_dir(p.home.join(".codex"))
        .expect("the user's .codex")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    user_files.sort();
    assert_eq!(
        user_files,
        ["config.toml"],
        "the user's CODEX_HOME is never written"
    );
}

/// The one agent run's edit landed (`changed`, the branch published, the two scripted
/// responses played) and its events were kept ([`events_kept`]); the responses.
fn edit_landed(p: &Preset, report: &Value) -> Vec<Seen> {
    assert_eq!(PresetRun::outcome(report).0, "changed", "{report}");
    assert_eq!(p.published(), "fixed");
    let responses = p.server.responses();
    assert_eq!(responses.len(), 2, "the scripted responses were played");
    events_kept(p, report, "file.txt now says fixed.");
    responses
}

/// The raw events of the one agent run are kept, the readable log is made from them (the
/// command, the final `message`), and the unit's `status.json` counts the run's usage.
fn events_kept(p: &PresetRun, report: &Value, message: &str) {
    let meta = p.t.meta("r1", "fix");
    let raw = std::fs::read_to_string(meta.join("agent.jsonl")).unwrap();
    assert!(raw.contains("\"thread.started\""), "{raw}");
    let run = report["run"].as_str().expect("the run id");
    let shown = p.t.run(&["logs", run, "fix/t/r1:agent", "--raw"]);
    assert_eq!(shown.stdout, raw, "`logs --raw` shows the raw events");
    let log = std::fs::read_to_string(meta.join("agent.log")).unwrap();
    assert!(
        log.contains("$ ") && log.contains("printf"),
        "the command is shown: {log}"
    );
    assert!(log.contains(message), "{log}");
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(meta.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["usage"]["runs"], 1, "{status}");
}

/// The fix attempt continues codex's own thread (`exec resume`) with the QA failure as the
/// new message, and its running token totals are counted once.
#[test]
fn dispatch_gives_the_qa_failure_back_to_codex_and_the_fix_lands() {
    let usage = |input, cached, output| Usage {
        input_tokens: input,
        cached_tokens: cached,
        output_tokens: output,
    };
    let script = vec![
        Step::shell("printf 'half fixed\\n' > file.txt").with_usage(usage(1000, 100, 10)),
        Step::message("Done.").with_usage(usage(1100, 900, 20)),
        Step::shell("printf 'fixed\\n' > file.txt").with_usage(usage(1300, 1000, 30)),
        Step::message("Fixed for real.").with_usage(usage(1400, 1200, 40)),
    ];
    let qa = r#"[{ run: "grep -qx fixed file.txt || { echo \"qa: file.txt is $(cat file.txt)\"; exit 1; }" }]"#;
    let Some(p) = codex_preset("codex-qa", script, qa, None) else {
        return;
    };
    let report = p.run(0);
    assert_eq!(PresetRun::outcome(&report).0, "changed", "{report}");
    let responses = p.server.responses();
    assert_eq!(responses.len(), 4, "two agent runs of two responses each");
    let retry = responses[2].body.as_ref().expect("a JSON body").to_string();
    assert!(
        retry.contains("qa: file.txt is half fixed"),
        "the fix attempt's message carries the QA failure"
    );
    assert!(
        retry.contains("Make file.txt say fixed"),
        "the continued thread holds the first prompt as its history"
    );
    let log = std::fs::read_to_string(p.t.meta("r1", "fix").join("agent.log")).unwrap();
    assert!(log.contains("continuing the agent's session"), "{log}");
    // Each response's usage counted once: 4800 in, 3200 cached, 100 out.
    let unit = crate::support::unit(&report, "fix/t/r1");
    assert_eq!(unit["usage"]["runs"], 2, "{unit}");
    assert_eq!(unit["usage"]["input_tokens"], 4800, "{unit}");
    assert_eq!(unit["usage"]["cached_tokens"], 3200, "{unit}");
    assert_eq!(unit["usage"]["output_tokens"], 100, "{unit}");
    // codex 0.163's default model has no built-in price: no cost is made up.
    assert!(unit["usage"].get("cost_usd").is_none(), "{unit}");
    assert_eq!(unit["usage"]["cost_unknown_runs"], 2, "{unit}");
    let status = p.t.run(&["status", "--json"]).json();
    let agent = &status["units"][0]["nodes"][1]["agent"];
    assert!(
        agent["session"].as_str().is_some_and(|s| !s.is_empty()),
        "{agent}"
    );
    assert_eq!(agent["final_message"], "Fixed for real.", "{agent}");
    assert_eq!(agent["model"], "gpt-6.1-sol", "{agent}");
    assert_eq!(status["usage"]["input_tokens"], 4800, "{status}");
}

/// Rate limited past codex's own retries: the API's side, `infra_error` after the job's two
/// retries, with codex's own words in the reason.
#[test]
fn dispatch_retries_codex_then_ends_infra_error_on_a_429() {
    let limited = vec![
        Step::Error(ApiError::RateLimited {
            retry_after_secs: 0
        });
        40
    ];
    let Some(p) = codex_preset("codex-429", limited, "[]", None) else {
        return;
    };
    let report = p.run(1);
    let (outcome, reason) = PresetRun::outcome(&report);
    assert_eq!(outcome, "infra_error", "{report}");
    assert!(reason.contains("429"), "codex's own error line: {reason}");
    let status = p.t.run(&["status", "--json"]).json();
    let agent = &status["units"][0]["nodes"][1]["agent"];
    assert_eq!(agent["usage"]["runs"], 3, "three attempts: {agent}");
}

#[test]
fn dispatch_ends_codex_agent_failed_with_the_apis_message_on_a_401() {
    let Some(p) = codex_preset("codex-401", vec![Step::message("never sent")], "[]", None) else {
        return;
    };
    let p = p.env("CODEX_API_KEY", "sk-wrong-key-000000000000");
    let report = p.run(1);
    let (outcome, reason) = PresetRun::outcome(&report);
    assert_eq!(outcome, "agent_failed", "{report}");
    assert!(
        reason.contains("Incorrect API key provided"),
        "the API's message is in the reason: {reason}"
    );
    assert!(
        !reason.contains("sk-wrong-key-000000000000"),
        "the key itself is never shown: {reason}"
    );
}

#[test]
fn dispatch_runs_codex_review_on_the_published_change() {
    let script = vec![
        Step::shell("printf 'fixed\\n' > file.txt"),
        Step::message("file.txt now says fixed."),
        // What codex's review mode asks the model for: its review as JSON, which codex
        // renders into its final message.
        Step::message(
            &serde_json::json!({
                "findings": [{
                    "title": "Say why the file changed",
                    "body": "file.txt says fixed without a reason.",
                    "confidence_score": 0.8,
                    "priority": 2,
                    "code_location": {
                        "absolute_file_path": "/workspace/repo/file.txt",
                        "line_range": { "start": 1, "end": 1 }
                    }
                }],
                "overall_correctness": "patch is correct",
                "overall_explanation": "The change looks right: file.txt says fixed.",
                "overall_confidence_score": 0.9
            })
            .to_string(),
        ),
    ];
    let Some(p) = codex_preset("codex-review", script, "[]", None) else {
        return;
    };
    let spec = p.t.read("spec.yaml");
    let reviewed = spec.replace(
        "idle_timeout: 20s }",
        "idle_timeout: 20s, review: { agent: \"codex:review\" } }",
    );
    assert_ne!(spec, reviewed, "the job gets its review");
    std::fs::write(p.t.path("spec.yaml"), reviewed).expect("the spec");
    let report = p.run(0);
    assert_eq!(PresetRun::outcome(&report).0, "changed", "{report}");
    let responses = p.server.responses();
    assert_eq!(
        responses.len(),
        3,
        "the agent's two responses, then the review's"
    );
    let review = responses[2].body.as_ref().expect("a JSON body").to_string();
    assert!(
        review.contains("fixed"),
        "the review request carries the change codex read with git"
    );
    let log = std::fs::read_to_string(p.t.meta("r1", "fix").join("review.log"))
        .expect("the review's log");
    assert!(
        log.contains("The change looks right"),
        "the review's verdict is in its log: {log}"
    );
    // The finding codex rendered is read as one and posted on the PR.
    assert!(log.contains("the review has 1 finding(s)"), "{log}");
    let prs = p.t.run(&["prs", "--json"]).json();
    let comment = prs[0]["comments"][0]["body"].as_str().unwrap_or_default();
    assert!(
        comment.contains("Say why the file changed") && comment.contains("The change looks right"),
        "the review is on the PR: {prs}"
    );
}

#[test]
fn dispatch_stops_codex_when_the_api_stops_answering_mid_run() {
    // The edit's command runs, then the server takes the next request and never answers:
    // codex waits on it in silence until the watchdog (idle_timeout 20s) stops it.
    let script = vec![Step::shell("printf 'half\\n' > file.txt"), Step::Hang];
    let Some(p) = codex_preset("codex-hang", script, "[]", None) else {
        return;
    };
    let report = p.run(1);
    let (outcome, reason) = PresetRun::outcome(&report);
    assert_eq!(outcome, "timed_out", "{report}");
    assert!(
        reason.contains("printed nothing for 20s (idle_timeout)"),
        "the watchdog stopped it, not the 3m timeout: {reason}"
    );
    assert_eq!(p.server.steps_taken(), 2, "the hang was reached");
}

/// The `local` preset through `dispatch run`: the real codex with `--oss --local-provider
/// ollama` reaches the host's Ollama at `host.docker.internal:11434` (the preset's
/// `host-gateway` entry), here a scripted Ollama-compatible server that lists the preset's
/// default model; the model's `exec_command` call edits the file and the edit lands.
#[test]
fn dispatch_runs_the_local_preset_against_the_hosts_ollama() {
    if !docker::available() {
        return;
    }
    let image = agent_image("codex");
    let server = OpenAiServer::start_ollama(
        "devstral-24b",
        vec![
            Step::command("printf 'fixed\\n' > file.txt"),
            Step::message("file.txt now says fixed."),
        ],
    );
    let network = ModelNetwork::create("local");
    let spec = PresetSpec {
        test: "local-preset",
        agent: "local",
        image: &image,
        agent_extra: "",
        qa: "[]",
        job_extra: ", idle_timeout: 20s",
        home_files: &[],
        user: None,
        repos: &[],
    };
    let Some(p) = preset::Preset::new(&spec, network, server, &[]) else {
        return;
    };
    let report = p.run(0);
    let responses = edit_landed(&p, &report);
    let usage = &crate::support::unit(&report, "fix/t/r1")["usage"];
    assert_eq!(
        usage["cost_usd"], 0.0,
        "a local model costs nothing: {usage}"
    );
    let first = responses[0].body.as_ref().expect("a JSON body");
    assert_eq!(first["model"], "devstral-24b", "the preset's default model");
    let paths: Vec<String> = p.server.requests().iter().map(|r| r.path.clone()).collect();
    for asked in ["/v1/models", "/api/version", "/api/tags"] {
        assert!(
            paths.iter().any(|p| p == asked),
            "codex asks Ollama {asked} first: {paths:?}"
        );
    }
}

/// A scripted command with 2000 tokens of usage.
fn costly(command: &str) -> Step {
    Step::shell(command).with_usage(Usage {
        input_tokens: 1900,
        cached_tokens: 0,
        output_tokens: 100,
    })
}

#[test]
fn dispatch_stops_codex_mid_run_once_the_unit_passes_its_token_cap() {
    // Each model response costs 2000 tokens; the cap is 3000: the second response passes it,
    // and codex is stopped before it gets through the script.
    let mut script: Vec<Step> = (0..6)
        .map(|i| costly(&format!("printf 'step {i}\\n' >> file.txt")))
        .collect();
    script.push(Step::message("done."));
    let Some(p) = codex_preset_with(
        "codex-budget",
        script,
        "[]",
        None,
        ", budget: { per_unit: { max_tokens: 3000 } }",
    ) else {
        return;
    };
    let report = p.run(1);
    let (outcome, reason) = PresetRun::outcome(&report);
    assert_eq!(outcome, "budget_exceeded", "{report}");
    assert!(
        reason.starts_with("budget: the unit spent ")
            && reason.ends_with(
                "tokens of its cap of 3000 tokens (jobs.fix.budget.per_unit.max_tokens)"
            ),
        "{reason}"
    );
    let taken = p.server.steps_taken();
    assert!(
        (2..=4).contains(&taken),
        "stopped within a response or two of passing the cap, not at the script's end: {taken} of 7"
    );
    // Nothing of a stopped agent is committed or published.
    let unit = crate::support::unit(&report, "fix/t/r1");
    assert!(unit.get("pr").is_none_or(Value::is_null), "{unit}");
    let agent_log =
        std::fs::read_to_string(p.t.meta("r1", "fix").join("agent.log")).unwrap_or_default();
    assert!(
        agent_log.contains("[dispatch: stopped: the unit spent"),
        "{agent_log}"
    );
}

#[test]
fn real_codex_units_reserve_their_token_caps_and_the_last_is_held_back_until_resume() {
    // Every unit's codex spends 3000 tokens (2000 + 1000 over its two responses); each unit
    // may spend 5000 and the job 12000: two units hold their caps at once, the third waits
    // for room, the fourth is held back once nothing it could wait for runs.
    let script = vec![
        costly("printf 'fixed\\n' > file.txt"),
        Step::message("file.txt now says fixed.").with_usage(Usage {
            input_tokens: 900,
            cached_tokens: 0,
            output_tokens: 100,
        }),
    ];
    let repos = ["r1", "r2", "r3", "r4"];
    let Some(p) = codex_preset_on(
        "codex-reserve",
        script,
        "[]",
        None,
        ", budget: { per_unit: { max_tokens: 5000 }, total: { max_tokens: 12000 } }",
        &repos,
        true,
    ) else {
        return;
    };
    let out = p.t.run(&["run", "spec.yaml", "--output", "json"]);
    assert_eq!(out.status, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    for repo in ["r1", "r2", "r3"] {
        let unit = crate::support::unit(&report, &format!("fix/t/{repo}"));
        assert_eq!(unit["outcome"], "changed", "{unit}");
        assert_eq!(unit["usage"]["input_tokens"], 2800, "{unit}");
        assert_eq!(unit["usage"]["output_tokens"], 200, "{unit}");
    }
    let held = crate::support::unit(&report, "fix/t/r4");
    assert_eq!(held["held"], "budget", "{held}");
    assert_eq!(
        held["reason"],
        "budget: the unit needs 5000 tokens (jobs.fix.budget.per_unit.max_tokens) but jobs.fix.budget.total.max_tokens has 3000 tokens left of 12000 tokens (9000 tokens spent)",
        "{held}"
    );
    // From the journal: spent + held never passed the total; two units held at once.
    let db = rusqlite::Connection::open(p.t.path(".dispatch/dispatch.db")).expect("the journal");
    let mut statement = db
        .prepare(
            "SELECT kind, detail FROM events WHERE kind IN ('reserved', 'released') ORDER BY seq",
        )
        .expect("a query");
    let events: Vec<(String, Value)> = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .expect("rows")
        .map(|row| {
            let (kind, detail) = row.expect("a row");
            (kind, serde_json::from_str(&detail).expect("JSON"))
        })
        .collect();
    let (mut holding, mut spent, mut most) = (std::collections::HashMap::new(), 0, 0);
    for (kind, detail) in &events {
        let unit = detail["unit"].as_str().expect("a unit").to_owned();
        let tokens = detail["tokens"].as_u64().expect("tokens");
        if kind == "reserved" {
            holding.insert(unit, tokens);
        } else {
            holding.remove(&unit).expect("released after reserved");
            spent += tokens;
        }
        let held: u64 = holding.values().sum();
        assert!(spent + held <= 12_000, "{spent} + {held}: {events:?}");
        most = most.max(holding.len());
    }
    assert_eq!(most, 2, "{events:?}");
    assert_eq!(spent, 9000, "{events:?}");

    // Raised, the held unit runs on resume.
    let spec = std::fs::read_to_string(p.t.path("spec.yaml")).expect("the spec");
    std::fs::write(
        p.t.path("spec.yaml"),
        spec.replace("max_tokens: 12000", "max_tokens: 20000"),
    )
    .expect("the spec");
    let run = report["run"].as_str().expect("a run id");
    let out = p.t.run(&["resume", run, "--output", "json"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let unit = crate::support::unit(&out.json(), "fix/t/r4").clone();
    assert_eq!(unit["outcome"], "changed", "{unit}");
}
