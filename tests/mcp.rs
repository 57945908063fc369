//! `dispatch mcp` driven by the official MCP Python SDK's client over stdio: the tools and
//! their schemas as a client sees them, a dispatched unit followed to its end, a blocked unit
//! answered, a running one cancelled, a runner that outlives a killed server, and bad inputs
//! that are tool errors with the command line's own words.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::docker::available;
use crate::support::mcp::McpClient;
use crate::support::Test;

/// A fixture with the scripted agent's defaults spec (`dispatch.yaml`) and repositories.
fn fixture(name: &str, repos: &[(&str, &str)]) -> Test {
    Test::new(name).scripted_repos(repos).scripted_defaults()
}

/// `status` of `run` until it is no longer running (at most a minute).
fn until_ended(client: &mut McpClient, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.call("status", json!({ "run": run }));
        assert!(!status.is_error, "{}", status.text);
        if status.structured["run"]["status"] != "running" || Instant::now() > deadline {
            return status.structured;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dispatch` of one task on `repo`; the run id.
fn dispatch(client: &mut McpClient, repo: &str, task: &str) -> String {
    let started = client.call(
        "dispatch",
        json!({ "org": "t", "repo": repo, "task": task }),
    );
    assert!(!started.is_error, "{}", started.text);
    let units = started.structured["units"].as_array().expect("units");
    assert_eq!(units.len(), 1, "{:?}", started.structured);
    assert!(
        matches!(units[0]["state"].as_str(), Some("queued" | "running")),
        "answered at once: {:?}",
        started.structured
    );
    let state_dir = started.structured["state_dir"].as_str().unwrap_or_default();
    assert!(
        state_dir.starts_with('/') && state_dir.ends_with(".dispatch"),
        "the run's state directory: {:?}",
        started.structured
    );
    started.structured["run"]
        .as_str()
        .expect("a run")
        .to_owned()
}

/// The outcome of the one unit of a status.
fn outcome(status: &Value) -> &str {
    status["units"][0]["outcome"].as_str().unwrap_or_default()
}

#[test]
fn the_tools_have_schemas_and_annotations_as_the_sdk_sees_them() {
    let t = fixture("mcp-tools", &[]);
    let mut client = McpClient::start(&t, &[]);
    let tools = client.tools();
    let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "answer", "cancel", "dispatch", "logs", "plan", "prs", "render", "retry", "status",
            "validate"
        ]
    );
    for tool in &tools {
        assert_eq!(tool["output_schema"]["type"], "object", "{tool}");
        assert_eq!(tool["input_schema"]["type"], "object", "{tool}");
    }
    let status = tools
        .iter()
        .find(|t| t["name"] == "status")
        .expect("status");
    assert_eq!(status["annotations"]["read_only_hint"], true, "{status}");
    let cancel = tools
        .iter()
        .find(|t| t["name"] == "cancel")
        .expect("cancel");
    assert_eq!(cancel["annotations"]["destructive_hint"], true, "{cancel}");
}

#[test]
fn a_dispatched_unit_is_followed_to_its_end_and_a_blocked_one_answered() {
    if !available() {
        return;
    }
    let t = fixture("mcp-run", &[("r1", "change"), ("ask1", "ask")]);
    let mut client = McpClient::start(&t, &[]);
    let run = dispatch(&mut client, "r1", "Change the file");
    let ended = until_ended(&mut client, &run);
    assert_eq!(outcome(&ended), "changed", "{ended}");
    let unit = ended["units"][0]["id"].as_str().expect("a unit").to_owned();
    let logs = client.call(
        "logs",
        json!({ "run": run, "node": format!("{unit}:agent") }),
    );
    assert!(!logs.is_error, "{}", logs.text);
    assert!(
        logs.structured["text"]
            .as_str()
            .unwrap_or_default()
            .contains("agent run: change"),
        "{:?}",
        logs.structured
    );
    let prs = client.call("prs", json!({}));
    assert_eq!(
        prs.structured["prs"][0]["repo"], "r1",
        "{:?}",
        prs.structured
    );

    // A blocked unit comes with its question; the answer runs it again to its end.
    let asked = dispatch(&mut client, "ask1", "Ask first");
    let blocked = until_ended(&mut client, &asked);
    assert_eq!(outcome(&blocked), "blocked", "{blocked}");
    let unit = blocked["units"][0]["id"]
        .as_str()
        .expect("a unit")
        .to_owned();
    assert_eq!(blocked["blocked"][0]["unit"], unit.as_str(), "{blocked}");
    assert!(
        blocked["blocked"][0]["question"]
            .as_str()
            .unwrap_or_default()
            .contains("Which port should the service use?"),
        "{blocked}"
    );
    let answered = client.call(
        "answer",
        json!({ "run": asked, "unit": unit, "text": "Port 8080" }),
    );
    assert!(!answered.is_error, "{}", answered.text);
    let ended = until_ended(&mut client, &asked);
    assert_eq!(outcome(&ended), "changed", "{ended}");
}

#[test]
fn a_running_unit_is_cancelled_and_a_runner_outlives_a_killed_server() {
    if !available() {
        return;
    }
    let t = fixture("mcp-cancel", &[("long1", "long"), ("nap1", "nap")]);
    let mut client = McpClient::start(&t, &[]);
    let run = dispatch(&mut client, "long1", "Take long");
    let cancelled = client.call("cancel", json!({ "run": run, "force": true }));
    assert!(!cancelled.is_error, "{}", cancelled.text);
    let ended = until_ended(&mut client, &run);
    assert_eq!(outcome(&ended), "cancelled", "{ended}");

    // The server dies right after it dispatched; the runner finishes, and a new server says so.
    let run = dispatch(&mut client, "nap1", "Nap");
    let server = client.server_pid();
    // SAFETY: kill with a pid and a signal has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
    drop(client);
    let mut again = McpClient::start(&t, &[]);
    let ended = until_ended(&mut again, &run);
    assert_eq!(outcome(&ended), "changed", "{ended}");
    let recent = again.call("status", json!({}));
    assert_eq!(
        recent.structured["recent"].as_array().map(Vec::len),
        Some(2),
        "{:?}",
        recent.structured
    );
}

#[test]
fn bad_inputs_are_tool_errors_with_the_command_lines_words() {
    let t = fixture("mcp-bad", &[("r1", "change")]).file(
        "bad.yaml",
        "version: 1\nname: bad\ndefaults: { org: t }\njobs:\n  - { id: a, task: x, repos: [r1], agent: codx }\n",
    );
    let mut client = McpClient::start(&t, &[]);
    let wrong_type = client.call("dispatch", json!({ "repo": 5, "task": "x" }));
    assert!(
        wrong_type.is_error && wrong_type.text.contains("invalid type"),
        "{}",
        wrong_type.text
    );
    let unknown = client.call("status", json!({ "run": "r", "colour": "red" }));
    assert!(
        unknown.is_error && unknown.text.contains("unknown field `colour`"),
        "{}",
        unknown.text
    );
    let agent = client.call(
        "dispatch",
        json!({ "org": "t", "repo": "r1", "task": "x", "agent": "codx" }),
    );
    assert!(
        agent.is_error
            && agent.text.contains("unknown agent `codx`")
            && agent.text.contains("the one-call task (command line):3:"),
        "{}",
        agent.text
    );
    let no_run = client.call("status", json!({ "run": "nope" }));
    assert!(
        no_run.is_error && no_run.text.contains("no state database"),
        "{}",
        no_run.text
    );
    let invalid = client.call("validate", json!({ "spec": "bad.yaml" }));
    assert!(!invalid.is_error, "{}", invalid.text);
    assert_eq!(invalid.structured["valid"], false);
    assert!(
        invalid.structured["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("bad.yaml:5:"),
        "{:?}",
        invalid.structured
    );
    let dry = client.call(
        "dispatch",
        json!({ "org": "t", "repo": "r1", "task": "Say hello", "dry_run": true }),
    );
    assert!(!dry.is_error, "{}", dry.text);
    assert!(
        dry.structured["prompts"][0]["prompt"]
            .as_str()
            .unwrap_or_default()
            .contains("Say hello"),
        "{:?}",
        dry.structured
    );
    // The server is still there after all of it.
    let plan = client.call("plan", json!({ "org": "t", "repo": "r1", "task": "x" }));
    assert!(!plan.is_error, "{}", plan.text);
    assert_eq!(
        plan.structured["plan"]["counts"]["units"], 1,
        "{:?}",
        plan.structured
    );
}
