//! `dispatch mcp` driven by the official MCP Python SDK's client: `tests/mcp/client.py` runs
//! in the venv `scripts/mcp-client` makes (the SDK installed from PyPI, once per machine),
//! starts `dispatch mcp` over stdio in the fixture's directory with the fixture's environment,
//! and answers the test's requests one JSON line each.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::Test;

/// The venv's python, made once per test binary by `scripts/mcp-client`.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mcp-client");
        let out = Command::new(script)
            .output()
            .expect("scripts/mcp-client runs");
        assert!(
            out.status.success(),
            "scripts/mcp-client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// An MCP client session with `dispatch mcp`.
pub struct McpClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What a tool call answered.
#[derive(Debug)]
pub struct Called {
    /// `isError`.
    pub is_error: bool,
    /// The structured content (validated by the SDK against the tool's output schema).
    pub structured: Value,
    /// The text content.
    pub text: String,
}

impl McpClient {
    /// Starts the client, which starts `dispatch mcp ARGS` in `t`'s directory.
    pub fn start(t: &Test, args: &[&str]) -> Self {
        let mut command = Command::new(python());
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py"))
            .arg(env!("CARGO_BIN_EXE_dispatch"))
            .args(args)
            .current_dir(t.path(""))
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in t.envs() {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the MCP client starts");
        let stdin = child.stdin.take().expect("its stdin");
        let stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// One request and its answer.
    pub fn request(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").expect("the request is sent");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("an answer");
        assert!(
            !line.is_empty(),
            "the MCP client ended before answering {request}"
        );
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Calls tool `name`; panics on a schema mismatch or an exception of the SDK.
    pub fn call(&mut self, name: &str, arguments: Value) -> Called {
        let answer = self.request(json!({ "call": name, "arguments": arguments }));
        assert!(
            answer.get("schema_error").is_none() && answer.get("exception").is_none(),
            "{name}: {answer}"
        );
        Called {
            is_error: answer["is_error"].as_bool().unwrap_or(false),
            structured: answer["structured"].clone(),
            text: answer["text"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// The tools as the SDK lists them.
    pub fn tools(&mut self) -> Vec<Value> {
        self.request(json!({ "list_tools": true }))["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The MCP server's process id.
    pub fn server_pid(&mut self) -> i32 {
        self.request(json!({ "server_pid": true }))["pid"]
            .as_i64()
            .expect("the server runs") as i32
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
