//! The real Claude Code 2.1.332 (the `dispatch-claude` image) against the scripted Messages API
//! ([`AnthropicServer`]) on an internal Docker network: it edits a repository through its
//! Bash and Write tools, reports the scripted usage in its `result` line, refuses to skip
//! permissions as root without `IS_SANDBOX=1`, and ends with an error result on a wrong key.
//!
//! The container runs as `dispatch` will run it: `claude -p --output-format stream-json
//! --verbose --dangerously-skip-permissions`, the prompt on stdin, the repository at
//! `/workspace/repo` as working directory, a fresh HOME, `--cap-drop ALL`,
//! `--security-opt no-new-privileges`. Tests skip without a Docker engine (and fail under
//! `DISPATCH_REQUIRE_DOCKER=1`).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::docker::available;
use crate::support::model::anthropic::{
    Answer, AnthropicServer, ApiError, Credential, Step, Usage,
};
use crate::support::model::preset::{self, PresetRun, PresetSpec};
use crate::support::model::{agent_image, ModelNetwork};

/// The key the tests give both the server and the CLI.
const KEY: &str = "sk-ant-api03-dispatch-test-key";

/// How long one CLI run may take before the test kills it.
const DEADLINE: Duration = Duration::from_secs(180);

/// One test's world: the network, the server on it, a repository and a HOME on disk.
struct Fixture {
    network: ModelNetwork,
    server: AnthropicServer,
    dir: PathBuf,
    image: String,
}

/// What one `docker run` of the CLI gave.
struct Run {
    status: i32,
    lines: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The first line, `{"type":"system","subtype":"init",...}`.
    fn init(&self) -> &Value {
        let first = self.lines.first().expect("the CLI printed a line");
        assert_eq!(
            (&first["type"], &first["subtype"]),
            (&Value::from("system"), &Value::from("init")),
            "the first line is the init event: {first}"
        );
        first
    }

    /// The last line, `{"type":"result",...}`.
    fn result(&self) -> &Value {
        let last = self.lines.last().expect("the CLI printed a line");
        assert_eq!(
            last["type"], "result",
            "the last line is the result: {last}"
        );
        last
    }
}

impl Fixture {
    /// The network, a server answering `script` to `KEY`, and a git repository holding
    /// `file.txt` = `broken`; `None` (the test skips) without an engine.
    fn new(test: &str, script: Vec<Step>) -> Option<Self> {
        if !available() {
            return None;
        }
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let image = agent_image("claude");
        let network = ModelNetwork::create(test);
        let server = AnthropicServer::start(&network, KEY, script);
        let dir = std::env::temp_dir().join(format!(
            "dispatch-real-claude-{test}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).expect("the repository directory");
        std::fs::create_dir_all(dir.join("home")).expect("the HOME directory");
        std::fs::write(repo.join("file.txt"), "broken\n").expect("write file.txt");
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "."],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "init",
            ],
        ] {
            let git = Command::new("git")
                .args(args)
                .current_dir(&repo)
                .output()
                .expect("git runs");
            assert!(git.status.success(), "git {args:?}: {git:?}");
        }
        Some(Self {
            network,
            server,
            dir,
            image,
        })
    }

    fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    /// Gives the repository and HOME to `uid`:`uid` (through a container, so the test needs
    /// no privilege of its own).
    fn own(&self, uid: u32) {
        let chown = Command::new("docker")
            .args(["run", "--rm", "-v"])
            .arg(format!("{}:/d", self.dir.display()))
            .args([&self.image, "chown", "-R", &format!("{uid}:{uid}"), "/d"])
            .output()
            .expect("docker runs");
        assert!(chown.status.success(), "chown: {chown:?}");
    }

    /// Runs the CLI as `user` (`None`: the image's default, root) with `env` besides the
    /// base URL and `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`, the prompt on stdin.
    fn claude(&self, user: Option<&str>, env: &[(&str, &str)]) -> Run {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "dispatch-real-claude-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut docker = Command::new("docker");
        docker
            .args(["run", "--rm", "-i", "--name", &name])
            .args(["--network", &self.network.name])
            .args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges"])
            .arg("-v")
            .arg(format!("{}:/workspace/repo", self.repo().display()))
            .arg("-v")
            .arg(format!("{}:/home/agent", self.dir.join("home").display()))
            .args(["-w", "/workspace/repo"])
            .args([
                "-e",
                &format!("ANTHROPIC_BASE_URL={}", self.server.base_url()),
            ])
            .args(["-e", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"]);
        if let Some(user) = user {
            docker.args(["--user", user]);
        }
        for (name, value) in env {
            docker.args(["-e", &format!("{name}={value}")]);
        }
        docker
            .args([
                &self.image,
                "claude",
                "-p",
                "--output-format",
                "stream-json",
            ])
            .args(["--verbose", "--dangerously-skip-permissions"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = docker.spawn().expect("docker runs");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(b"Fix file.txt: it should say fixed.\n")
            .expect("the prompt goes to stdin");
        let started = Instant::now();
        while child.try_wait().expect("wait for docker").is_none() {
            if started.elapsed() > DEADLINE {
                let _ = Command::new("docker").args(["kill", &name]).output();
                panic!("Claude Code ran past {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = child.wait_with_output().expect("docker's output");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines = stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("a stream-json line is JSON ({e}): {line}"))
            })
            .collect();
        Run {
            status: output.status.code().unwrap_or(-1),
            lines,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The server saw exactly `turns` turns, all with the right key, and nothing else.
    fn assert_turns(&self, turns: usize) {
        let requests = self.server.requests();
        let answers = requests.iter().map(|r| r.answer).collect::<Vec<_>>();
        assert_eq!(answers, (0..turns).map(Answer::Step).collect::<Vec<_>>());
        for request in &requests {
            assert_eq!(request.credential, Credential::Right);
            assert_eq!(request.path, "/v1/messages?beta=true");
            for tool in ["Bash", "Write", "Edit", "Read"] {
                assert!(
                    request.tool_names().iter().any(|name| name == tool),
                    "Claude Code advertises {tool}: {:?}",
                    request.tool_names()
                );
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn usage(input: u64, output: u64, cache_read: u64, cache_creation: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_input_tokens: cache_read,
        cache_creation_input_tokens: cache_creation,
    }
}

/// The edit through Bash, then the final text, each with usage of its own.
fn bash_script() -> Vec<Step> {
    vec![
        Step::bash("printf 'fixed\\n' > file.txt").with_usage(usage(1200, 34, 500, 70)),
        Step::text("Fixed file.txt.").with_usage(usage(1300, 12, 800, 0)),
    ]
}

/// A successful run: init with a session id, a `result` of subtype success with the usage
/// summed over the turns, and the text of the last step.
fn assert_success(run: &Run, input: u64, output: u64, cache_read: u64, cache_creation: u64) {
    assert_eq!(run.status, 0, "exit status; stderr: {}", run.stderr);
    let session = run.init()["session_id"]
        .as_str()
        .expect("init carries a session id");
    assert!(!session.is_empty());
    let result = run.result();
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["session_id"], session);
    assert_eq!(result["result"], "Fixed file.txt.");
    assert_eq!(result["usage"]["input_tokens"], input);
    assert_eq!(result["usage"]["output_tokens"], output);
    assert_eq!(result["usage"]["cache_read_input_tokens"], cache_read);
    assert_eq!(
        result["usage"]["cache_creation_input_tokens"],
        cache_creation
    );
    assert!(result["total_cost_usd"]
        .as_f64()
        .is_some_and(|cost| cost > 0.0));
}

#[test]
fn real_claude_edits_through_bash_as_root_with_is_sandbox() {
    let Some(t) = Fixture::new("root", bash_script()) else {
        return;
    };
    let run = t.claude(None, &[("ANTHROPIC_API_KEY", KEY), ("IS_SANDBOX", "1")]);
    assert_success(&run, 2500, 46, 1300, 70);
    assert_eq!(
        std::fs::read_to_string(t.repo().join("file.txt")).expect("file.txt"),
        "fixed\n"
    );
    t.assert_turns(2);
    // The second turn carries the Bash tool's result for the first turn's tool_use.
    let turns = t.server.turns();
    let messages = turns[1].body.as_ref().expect("a JSON body")["messages"]
        .as_array()
        .expect("messages")
        .clone();
    let tool_use = &messages[messages.len() - 2]["content"][0];
    let tool_result = &messages[messages.len() - 1]["content"][0];
    assert_eq!(tool_use["type"], "tool_use");
    assert_eq!(tool_result["type"], "tool_result");
    assert_eq!(tool_result["tool_use_id"], tool_use["id"]);
    assert_eq!(tool_result["is_error"], false, "{tool_result}");
}

#[test]
fn real_claude_refuses_to_skip_permissions_as_root_without_is_sandbox() {
    let Some(t) = Fixture::new("nosandbox", bash_script()) else {
        return;
    };
    let run = t.claude(None, &[("ANTHROPIC_API_KEY", KEY)]);
    assert_eq!(run.status, 1, "stdout: {:?}", run.lines);
    assert!(
        run.stderr
            .contains("--dangerously-skip-permissions cannot be used with root/sudo privileges"),
        "{}",
        run.stderr
    );
    assert!(run.lines.is_empty(), "{:?}", run.lines);
    assert!(t.server.requests().is_empty());
    assert_eq!(
        std::fs::read_to_string(t.repo().join("file.txt")).expect("file.txt"),
        "broken\n"
    );
}

#[test]
fn real_claude_edits_through_bash_write_and_edit_as_uid_1000() {
    let mut script = bash_script();
    script.insert(
        1,
        Step::write("/workspace/repo/notes.txt", "written by Write\n")
            .with_usage(usage(1250, 20, 600, 5)),
    );
    // Edit needs the file read (or written) earlier in the session.
    script.insert(
        2,
        Step::edit("/workspace/repo/notes.txt", "by Write", "by Edit")
            .with_usage(usage(1270, 16, 700, 0)),
    );
    let Some(t) = Fixture::new("uid", script) else {
        return;
    };
    t.own(1000);
    let run = t.claude(Some("1000:1000"), &[("ANTHROPIC_API_KEY", KEY)]);
    assert_success(&run, 5020, 82, 2600, 75);
    let repo = t.repo();
    assert_eq!(
        std::fs::read_to_string(repo.join("file.txt")).expect("file.txt"),
        "fixed\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("notes.txt")).expect("notes.txt"),
        "written by Edit\n"
    );
    t.assert_turns(4);
    // What Claude Code keeps in HOME: its config and the session's transcript.
    let home = t.dir.join("home");
    assert!(home.join(".claude.json").is_file());
    let session = run.init()["session_id"].as_str().expect("a session id");
    assert!(
        home.join(format!(".claude/projects/-workspace-repo/{session}.jsonl"))
            .is_file(),
        "the transcript of the session is in HOME"
    );
}

#[test]
fn real_claude_with_a_wrong_key_ends_with_the_apis_401_message() {
    let Some(t) = Fixture::new("wrongkey", bash_script()) else {
        return;
    };
    // Claude Code retries a 401 ten times over about three minutes by default.
    let run = t.claude(
        None,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-wrong"),
            ("IS_SANDBOX", "1"),
            ("CLAUDE_CODE_MAX_RETRIES", "0"),
        ],
    );
    assert_eq!(run.status, 1, "stderr: {}", run.stderr);
    let result = run.result();
    // Surprising but so: the subtype stays `success`; `is_error` says it failed.
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["api_error_status"], 401, "{result}");
    assert_eq!(result["api_error_type"], "authentication_error", "{result}");
    // The real API's message for a bad key, `invalid x-api-key`, is recognised and replaced.
    assert_eq!(
        result["result"], "Invalid API key · Fix external API key",
        "{result}"
    );
    let requests = t.server.requests();
    assert_eq!(requests.len(), 1, "no retry with CLAUDE_CODE_MAX_RETRIES=0");
    assert_eq!(requests[0].credential, Credential::Wrong);
    assert_eq!(requests[0].answer, Answer::Unauthorized);
    assert_eq!(t.server.steps_taken(), 0);
    assert_eq!(
        std::fs::read_to_string(t.repo().join("file.txt")).expect("file.txt"),
        "broken\n"
    );
}

#[test]
fn real_claude_shows_another_401_message_as_the_api_gave_it() {
    let disabled = ApiError {
        message: "This API key has been disabled".to_owned(),
        ..ApiError::authentication()
    };
    let Some(t) = Fixture::new("disabled", vec![Step::Error(disabled)]) else {
        return;
    };
    let run = t.claude(
        None,
        &[
            ("ANTHROPIC_API_KEY", KEY),
            ("IS_SANDBOX", "1"),
            ("CLAUDE_CODE_MAX_RETRIES", "0"),
        ],
    );
    assert_eq!(run.status, 1, "stderr: {}", run.stderr);
    let result = run.result();
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(
        result["result"], "Failed to authenticate. API Error: 401 This API key has been disabled",
        "{result}"
    );
    assert_eq!(t.server.steps_taken(), 1);
}

#[test]
fn real_claude_retries_529_and_429_then_succeeds() {
    let mut script = vec![
        Step::Error(ApiError::overloaded()),
        Step::Error(ApiError::rate_limit(1)),
    ];
    script.extend(bash_script());
    let Some(t) = Fixture::new("retry", script) else {
        return;
    };
    let started = Instant::now();
    let run = t.claude(None, &[("ANTHROPIC_API_KEY", KEY), ("IS_SANDBOX", "1")]);
    let took = started.elapsed();
    assert_success(&run, 2500, 46, 1300, 70);
    assert_eq!(
        std::fs::read_to_string(t.repo().join("file.txt")).expect("file.txt"),
        "fixed\n"
    );
    let retries = run
        .lines
        .iter()
        .filter(|line| line["type"] == "system" && line["subtype"] == "api_retry")
        .map(|line| {
            (
                line["attempt"].as_u64().unwrap_or_default(),
                line["error_status"].as_u64().unwrap_or_default(),
                line["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        retries,
        [
            (1, 529, "overloaded".to_owned()),
            (2, 429, "rate_limit".to_owned())
        ]
    );
    t.assert_turns(4);
    eprintln!("two retries took {took:?} in all");
}

/// A raw HTTP/1.1 exchange with the server from the host: the status line and body.
fn exchange(server: &AnthropicServer, request: &str) -> std::io::Result<String> {
    let address = server.base_url().trim_start_matches("http://");
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn post(path: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n\
         {headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn real_claude_server_refuses_bad_requests_and_hangs_when_scripted() {
    let Some(t) = Fixture::new("server", vec![Step::Hang]) else {
        return;
    };
    let turn = r#"{"model":"m","stream":true,"tools":[{"name":"Bash"}],"messages":[]}"#;
    let key = format!("x-api-key: {KEY}\r\n");
    let unknown = exchange(
        &t.server,
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .expect("an answer");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let missing = exchange(&t.server, &post("/v1/messages", "", turn)).expect("an answer");
    assert!(missing.starts_with("HTTP/1.1 401"), "{missing}");
    assert!(
        missing.contains(r#""type":"authentication_error""#),
        "{missing}"
    );
    let bearer = format!("authorization: Bearer {KEY}\r\n");
    let malformed =
        exchange(&t.server, &post("/v1/messages", &bearer, "{not json")).expect("an answer");
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    let auxiliary = exchange(
        &t.server,
        &post("/v1/messages", &key, r#"{"model":"small","messages":[]}"#),
    )
    .expect("an answer");
    assert!(
        auxiliary.contains(r#""text":"Scripted reply""#),
        "{auxiliary}"
    );
    let hung = exchange(&t.server, &post("/v1/messages?beta=true", &key, turn));
    assert!(
        hung.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut),
        "the hang step answers nothing: {hung:?}"
    );
    let answers = t
        .server
        .requests()
        .iter()
        .map(|r| (r.answer, r.credential))
        .collect::<Vec<_>>();
    assert_eq!(
        answers,
        [
            (Answer::NotFound, Credential::Missing),
            (Answer::Unauthorized, Credential::Missing),
            (Answer::Malformed, Credential::Right),
            (Answer::Auxiliary, Credential::Right),
            (Answer::Step(0), Credential::Right),
        ]
    );
    // Dropping the server closes the hung connection.
}

/// A spec running the `claude` preset through `dispatch run`: the real Claude Code in its image
/// on the model's network, the key and the base URL from dispatch's environment, its home
/// seeded by dispatch, one repository `t/r1` with `file.txt` = `broken`.
type Preset = preset::Preset<AnthropicServer>;

/// The `claude` preset's spec with job `fix` (QA `qa`, more of `agents.claude` in `claude`)
/// against a server playing `script`, dispatch run as `user` when given; `None` when the test
/// skips.
fn claude_preset(
    test: &str,
    script: Vec<Step>,
    qa: &str,
    claude: &str,
    user: Option<u32>,
) -> Option<Preset> {
    claude_preset_with(test, script, qa, claude, user, "")
}

/// [`claude_preset`] with more of the job (`, budget: ...`).
fn claude_preset_with(
    test: &str,
    script: Vec<Step>,
    qa: &str,
    claude: &str,
    user: Option<u32>,
    job_extra: &str,
) -> Option<Preset> {
    if !available() {
        return None;
    }
    let image = agent_image("claude");
    let network = ModelNetwork::create(test);
    let server = AnthropicServer::start(&network, KEY, script);
    let url = server.base_url().to_owned();
    let spec = PresetSpec {
        test,
        agent: "claude",
        image: &image,
        agent_extra: claude,
        qa,
        job_extra,
        home_files: &[(".claude/settings.json", "{}\n")],
        user,
        repos: &[],
    };
    let env = [
        ("ANTHROPIC_API_KEY", KEY),
        ("ANTHROPIC_BASE_URL", url.as_str()),
    ];
    Preset::new(&spec, network, server, &env)
}

/// The `claude` preset through `dispatch run` ([`Preset`]): the edit is committed and
/// published as a PR on the local forge. As root (which Claude Code allows only with
/// `IS_SANDBOX=1`) and as a normal uid.
#[test]
fn dispatch_runs_the_claude_preset_and_the_edit_lands_as_root() {
    claude_preset_edit_lands(None);
}

#[test]
fn dispatch_runs_the_claude_preset_and_the_edit_lands_as_uid_1000() {
    claude_preset_edit_lands(Some(1000));
}

fn claude_preset_edit_lands(user: Option<u32>) {
    let name = format!("claude-preset-{}", user.unwrap_or(0));
    let Some(p) = claude_preset(&name, bash_script(), "[]", "", user) else {
        return;
    };
    let report = p.run(0);
    assert_eq!(PresetRun::outcome(&report).0, "changed", "{report}");
    assert_eq!(
        p.published(),
        "fixed",
        "the agent's edit is on the published branch"
    );
    let turns = p.server.turns();
    assert_eq!(turns.len(), 2, "the scripted turns were played");
    assert!(turns
        .iter()
        .all(|turn| turn.credential == Credential::Right && turn.method == "POST"));
    let first = turns[0].body.as_ref().expect("a JSON body").to_string();
    assert!(
        first.contains("Make file.txt say fixed"),
        "the rendered prompt reached the model"
    );
    // The CLI wrote its state in the unit's agent home, never in the user's.
    assert!(p
        .t
        .path(".dispatch/workspaces/t/r1/fix/home/claude/.claude.json")
        .exists());
    assert!(!p.home.join(".claude.json").exists());
}

#[test]
fn dispatch_gives_the_qa_failure_back_to_claude_and_the_fix_lands() {
    let script = vec![
        Step::bash("printf 'half fixed\\n' > file.txt"),
        Step::text("Done."),
        Step::bash("printf 'fixed\\n' > file.txt"),
        Step::text("Fixed for real."),
    ];
    let qa = r#"[{ run: "grep -qx fixed file.txt || { echo \"qa: file.txt is $(cat file.txt)\"; exit 1; }" }]"#;
    let Some(p) = claude_preset("claude-qa", script, qa, "", None) else {
        return;
    };
    let report = p.run(0);
    assert_eq!(PresetRun::outcome(&report).0, "changed", "{report}");
    assert_eq!(p.published(), "fixed");
    let turns = p.server.turns();
    assert_eq!(turns.len(), 4, "two agent runs of two turns each");
    let retry = turns[2].body.as_ref().expect("a JSON body").to_string();
    assert!(
        retry.contains("qa: file.txt is half fixed"),
        "the fix attempt's message carries the QA failure"
    );
    assert!(
        retry.contains("Make file.txt say fixed"),
        "the continued session (--resume) holds the first prompt as its history"
    );
    let log = std::fs::read_to_string(p.t.meta("r1", "fix").join("agent.log")).unwrap();
    assert!(log.contains("continuing the agent's session"), "{log}");
    // Claude Code reports its own cost: not an estimate.
    let unit = crate::support::unit(&report, "fix/t/r1");
    assert_eq!(unit["usage"]["runs"], 2, "{unit}");
    assert!(unit["usage"]["cost_usd"].as_f64().is_some(), "{unit}");
    assert!(unit["usage"].get("cost_estimated").is_none(), "{unit}");
    assert!(
        unit["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{unit}"
    );
}

#[test]
fn dispatch_ends_claude_agent_failed_with_the_apis_message_on_a_401() {
    let mut refused = ApiError::authentication();
    refused.message = "this key was revoked by the scripted server".to_owned();
    claude_api_error_fails_the_unit("claude-401", refused);
}

/// A 500 and a 429 are the API's side, not the agent's: `infra_error`, retried (the job's two
/// retries, each a fresh container) with the API's message in the reason.
#[test]
fn dispatch_retries_claude_then_ends_infra_error_on_a_500() {
    let mut broken = ApiError::internal();
    broken.message = "the scripted server is broken".to_owned();
    claude_api_error_ends_the_unit("claude-500", broken, "infra_error", 3);
}

#[test]
fn dispatch_retries_claude_then_ends_infra_error_on_a_429() {
    let mut limited = ApiError::rate_limit(0);
    limited.message = "the scripted server limits this key".to_owned();
    claude_api_error_ends_the_unit("claude-429", limited, "infra_error", 3);
}

/// The API answers `error` to every turn and Claude Code is told not to retry: the unit ends
/// `outcome` after `attempts` agent runs with the API's message in its reason.
fn claude_api_error_fails_the_unit(test: &str, error: ApiError) {
    claude_api_error_ends_the_unit(test, error, "agent_failed", 1);
}

fn claude_api_error_ends_the_unit(test: &str, error: ApiError, outcome: &str, attempts: usize) {
    let message = error.message.clone();
    // CLAUDE_CODE_MAX_RETRIES=0 (passed by name): Claude Code would retry ten times.
    let Some(p) = claude_preset(
        test,
        vec![Step::Error(error); attempts],
        "[]",
        ", env: [CLAUDE_CODE_MAX_RETRIES]",
        None,
    ) else {
        return;
    };
    let p = p.env("CLAUDE_CODE_MAX_RETRIES", "0");
    let report = p.run(1);
    let (ended, reason) = PresetRun::outcome(&report);
    assert_eq!(ended, outcome, "{report}");
    assert!(
        reason.contains(&message),
        "the API's message is in the reason: {reason}"
    );
    let turns = p.server.turns();
    let tried = turns
        .iter()
        .filter(|t| t.body.as_ref().is_some_and(|b| b["tools"].is_array()))
        .count();
    assert_eq!(tried, attempts, "one agent run per attempt");
    // Every run is in the journal with the CLI's own error.
    let status = p.t.run(&["status", "--json"]).json();
    let agent = &status["units"][0]["nodes"][1]["agent"];
    assert_eq!(agent["usage"]["runs"], attempts, "{agent}");
    assert!(
        agent["error"]
            .as_str()
            .is_some_and(|e| e.contains(&message)),
        "{agent}"
    );
}

#[test]
fn dispatch_passes_the_units_usd_cap_to_claude_which_stops_and_the_unit_ends_budget_exceeded() {
    // Three costly turns; the unit may spend $0.005, less than one of them costs at the
    // model's price (Claude Code prices it itself): claude's own --max-budget-usd stops it,
    // and its reported cost passes the unit's cap.
    let script = vec![
        Step::bash("printf 'one\\n' >> file.txt").with_usage(usage(1200, 34, 500, 70)),
        Step::bash("printf 'two\\n' >> file.txt").with_usage(usage(1300, 34, 800, 0)),
        Step::text("Done.").with_usage(usage(1300, 12, 800, 0)),
    ];
    let Some(p) = claude_preset_with(
        "claude-budget",
        script,
        "[]",
        "",
        None,
        ", budget: { per_unit: { max_usd: 0.005 } }",
    ) else {
        return;
    };
    let report = p.run(1);
    let (outcome, reason) = PresetRun::outcome(&report);
    assert_eq!(outcome, "budget_exceeded", "{report}");
    assert!(
        reason.contains("of its cap of $0.0050 (jobs.fix.budget.per_unit.max_usd)"),
        "{reason}"
    );
    let turns = p.server.turns().len();
    assert!(
        turns < 3,
        "claude's own cap stopped it before the script's end: {turns} turns"
    );
    let raw =
        std::fs::read_to_string(p.t.meta("r1", "fix").join("agent.jsonl")).unwrap_or_default();
    assert!(
        raw.contains("error_max_budget_usd"),
        "claude hit its own cap: {raw}"
    );
}

#[test]
fn dispatch_passes_the_units_turn_cap_to_claude_and_the_unit_ends_budget_exceeded() {
    let script = vec![
        Step::bash("printf 'one\\n' >> file.txt"),
        Step::bash("printf 'two\\n' >> file.txt"),
        Step::bash("printf 'three\\n' >> file.txt"),
        Step::text("Done."),
    ];
    let Some(p) = claude_preset_with(
        "claude-turns",
        script,
        "[]",
        "",
        None,
        ", budget: { per_unit: { max_turns: 2 } }",
    ) else {
        return;
    };
    let report = p.run(1);
    let (outcome, reason) = PresetRun::outcome(&report);
    let raw =
        std::fs::read_to_string(p.t.meta("r1", "fix").join("agent.jsonl")).unwrap_or_default();
    assert_eq!(outcome, "budget_exceeded", "{report}\n{raw}");
    assert!(
        reason.contains("(jobs.fix.budget.per_unit.max_turns)"),
        "{reason}"
    );
    let turns = p.server.turns().len();
    assert!(turns < 4, "stopped before the script's end: {turns} turns");
}
