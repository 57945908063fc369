//! The OpenAI Responses API as codex-cli 0.163.0 speaks it, scripted: each `POST /v1/responses`
//! takes the next [`Step`] of the script and is answered with server-sent events (or an API
//! error, or nothing at all). Credentials are checked like the real API: a request without
//! `Authorization: Bearer KEY` for the key the test set gets 401 `invalid_api_key`, and takes no
//! step. Every request is recorded ([`OpenAiServer::requests`]).
//!
//! What codex 0.163.0 does against it, as seen on the wire:
//!
//! - Headless it needs only `openai_base_url = "http://GATEWAY:PORT/v1"` in
//!   `$CODEX_HOME/config.toml` and the key in `CODEX_API_KEY`, sent as `Authorization: Bearer`
//!   (with `originator: codex_exec`, `user-agent: codex_exec/0.163.0 ...`).
//! - Per turn it first tries the Responses API over a WebSocket (`GET /v1/responses` with
//!   `Upgrade: websocket`, `OpenAI-Beta: responses_websockets=2026-02-06`). This server answers
//!   that 426 Upgrade Required, after which codex falls back to HTTP at once (one `ERROR
//!   codex_api::endpoint::responses_websocket` line on stderr). A 404 or 401 there instead costs
//!   seven upgrade attempts and ~7 s before the fallback.
//! - Then `POST /v1/responses` with `stream: true`, `store: false`, `model: "gpt-6.1-sol"` (the
//!   default) and no `tools` or `instructions` fields: the tools come as the first `input` item,
//!   `{"type": "additional_tools", "tools": [namespaces...]}`, and the system prompt as
//!   `developer` messages. It calls nothing else at startup (no `/v1/models`).
//! - The default model is in code mode: its one way to act is the freeform (`custom`) tool `exec`
//!   in namespace `functions`, whose input is JavaScript run in a V8 isolate with the nested
//!   tools on `tools` (`tools.exec_command({cmd})`, `tools.apply_patch(patch)`, ...) and `text()`
//!   to return output. A [`Step::Exec`] is therefore a `custom_tool_call` output item named
//!   `exec` whose `input` is that JavaScript ([`Step::shell`] writes it for one shell command);
//!   codex answers it in the next request with a `custom_tool_call_output` of the same
//!   `call_id`. `exec_command` runs the command as `/bin/sh -lc CMD` in the turn's directory,
//!   which `codex exec --json` reports as a `command_execution` item.
//! - `turn.completed.usage` is the sum of the `response.completed` usages of the turn's
//!   requests (`cached_tokens` becomes `cached_input_tokens`).
//! - It retries failed requests itself. A 429 ends the attempt at once ("exceeded retry limit,
//!   last status: 429 Too Many Requests") and the next one waits out `retry-after`: with every
//!   request refused, six POSTs and exit 1 after ~10 s (`retry-after: 1`). A 500 is retried
//!   quietly within the attempt; with every request failing, about thirty POSTs over ~25 s,
//!   reported as "We’re currently experiencing high demand, which may cause temporary errors."
//!   A 401 is retried too: seven WebSocket attempts, then six POSTs, exit 1 after ~17 s, with
//!   `turn.failed` "unexpected status 401 Unauthorized: Incorrect API key provided: ...".
//! - After `turn.completed` it takes ~5 s more to exit.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::ModelNetwork;

/// Token counts one scripted response reports in its `response.completed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// `usage.input_tokens` (cached ones included, as the API counts them).
    pub input_tokens: u64,
    /// `usage.input_tokens_details.cached_tokens`.
    pub cached_tokens: u64,
    /// `usage.output_tokens`.
    pub output_tokens: u64,
}

impl Usage {
    fn json(self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        })
    }
}

/// An error the real API answers, with its status and JSON body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 401 `invalid_api_key`.
    InvalidApiKey,
    /// 429 `rate_limit_exceeded` with `retry-after` in seconds.
    RateLimited {
        /// The `retry-after` header.
        retry_after_secs: u64,
    },
    /// 500 `server_error`.
    ServerError,
}

/// What the server answers to one `POST /v1/responses`.
#[derive(Clone, Debug)]
pub enum Step {
    /// A call of codex's code-mode tool `exec` with this JavaScript as its input.
    Exec {
        /// The JavaScript (see [`Step::shell`]).
        code: String,
        /// What the response reports.
        usage: Usage,
    },
    /// A call of a plain function tool (what codex offers a model outside code mode, such as
    /// an Ollama model: `exec_command` with `{"cmd": ...}`).
    Call {
        /// The function's name.
        name: String,
        /// Its arguments.
        arguments: Value,
        /// What the response reports.
        usage: Usage,
    },
    /// A final assistant message: the turn ends.
    Message {
        /// Its text.
        text: String,
        /// What the response reports.
        usage: Usage,
    },
    /// An HTTP error.
    Error(ApiError),
    /// Accept the request and never answer it.
    Hang,
}

impl Step {
    /// An `exec` call running `command` with `tools.exec_command` and returning its exit code
    /// and output as JSON (`{"exit_code":0,"output":"..."}`).
    pub fn shell(command: &str) -> Self {
        let cmd = Value::String(command.to_owned());
        Self::Exec {
            code: format!(
                "const r = await tools.exec_command({{cmd: {cmd}}});\n\
                 text(JSON.stringify({{exit_code: r.exit_code, output: r.output}}));\n"
            ),
            usage: Usage::default(),
        }
    }

    /// An `exec_command` function call running `command` (for models outside code mode).
    pub fn command(command: &str) -> Self {
        Self::Call {
            name: "exec_command".to_owned(),
            arguments: json!({ "cmd": command }),
            usage: Usage::default(),
        }
    }

    /// A final assistant message.
    pub fn message(text: &str) -> Self {
        Self::Message {
            text: text.to_owned(),
            usage: Usage::default(),
        }
    }

    /// The same step reporting `usage` (errors and hangs report none).
    pub fn with_usage(mut self, new: Usage) -> Self {
        if let Self::Exec { usage, .. } | Self::Call { usage, .. } | Self::Message { usage, .. } =
            &mut self
        {
            *usage = new;
        }
        self
    }
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path, without query.
    pub path: String,
    /// Whether it carried `Authorization: Bearer KEY` for the test's key.
    pub authorized: bool,
    /// Whether it asked to upgrade to a WebSocket.
    pub websocket: bool,
    /// The JSON body, when there was one that parsed.
    pub body: Option<Value>,
    /// The status answered (0 for a hang).
    pub status: u16,
    /// When it arrived (read by `benches/real_codex.rs`).
    #[allow(dead_code)]
    pub at: std::time::SystemTime,
}

impl Seen {
    /// Whether this is a `POST /v1/responses` (one model call).
    pub fn is_response(&self) -> bool {
        self.method == "POST" && self.path == "/v1/responses"
    }

    /// Whether the body offers a tool named `name`, at top level (`tools`) or in an
    /// `additional_tools` input item, inside namespaces too.
    pub fn offers_tool(&self, name: &str) -> bool {
        fn any(tools: Option<&Value>, name: &str) -> bool {
            tools.and_then(Value::as_array).is_some_and(|tools| {
                tools.iter().any(|tool| {
                    tool.get("name").and_then(Value::as_str) == Some(name)
                        && tool.get("type").and_then(Value::as_str) != Some("namespace")
                        || any(tool.get("tools"), name)
                })
            })
        }
        let Some(body) = &self.body else {
            return false;
        };
        any(body.get("tools"), name)
            || body
                .get("input")
                .and_then(Value::as_array)
                .is_some_and(|input| input.iter().any(|item| any(item.get("tools"), name)))
    }

    /// The `input` items of type `kind`.
    pub fn inputs(&self, kind: &str) -> Vec<Value> {
        self.body
            .as_ref()
            .and_then(|body| body.get("input"))
            .and_then(Value::as_array)
            .map(|input| {
                input
                    .iter()
                    .filter(|item| item.get("type").and_then(Value::as_str) == Some(kind))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Inner {
    /// The key requests must carry; `None` for an Ollama server, which asks for none.
    key: Option<String>,
    /// The models an Ollama server lists (`/v1/models`, `/api/tags`); empty for OpenAI.
    models: Vec<String>,
    script: Vec<Step>,
    /// Every conversation plays the script from its start ([`OpenAiServer::start_each`]).
    each: bool,
    next: usize,
    seen: Vec<Seen>,
}

type App = Arc<Mutex<Inner>>;

/// The scripted server, serving on a thread of its own until dropped.
pub struct OpenAiServer {
    /// `http://GATEWAY:PORT/v1`: codex's `openai_base_url`.
    pub base_url: String,
    app: App,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OpenAiServer {
    /// Starts on `network`'s gateway, accepting `key`, answering the `POST /v1/responses`
    /// requests with `script` in order.
    pub fn start(network: &ModelNetwork, key: &str, script: Vec<Step>) -> Self {
        Self::serve(network.listener(), Some(key), Vec::new(), script, false)
    }

    /// Like [`OpenAiServer::start`], but every conversation plays `script` from its start, so
    /// that many agents can share the server: a request takes the step whose index is the
    /// number of tool outputs in its input (the first request none, the one after one tool
    /// call one, ...). Used by `benches/real_codex.rs`.
    #[allow(dead_code)]
    pub fn start_each(network: &ModelNetwork, key: &str, script: Vec<Step>) -> Self {
        Self::serve(network.listener(), Some(key), Vec::new(), script, true)
    }

    /// Starts as an Ollama server would answer codex's `--oss` provider: on the host's address
    /// on Docker's default bridge (where `host.docker.internal:host-gateway` points), port
    /// 11434, asking for no key, listing `model` and reporting a version codex accepts
    /// (0.13.4), and answering `POST /v1/responses` with `script`.
    pub fn start_ollama(model: &str, script: Vec<Step>) -> Self {
        // The address `host-gateway` stands for, as the engine writes it into a container.
        let hosts = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--add-host",
                "host.docker.internal:host-gateway",
                "dispatch-busybox",
                "grep",
                "host.docker.internal",
                "/etc/hosts",
            ])
            .output()
            .expect("docker runs");
        let gateway: std::net::IpAddr = String::from_utf8_lossy(&hosts.stdout)
            .split_whitespace()
            .next()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no host-gateway address in {}",
                    String::from_utf8_lossy(&hosts.stdout)
                )
            });
        let listener = std::net::TcpListener::bind((gateway, 11434))
            .unwrap_or_else(|e| panic!("bind {gateway}:11434 for the scripted Ollama: {e}"));
        Self::serve(listener, None, vec![model.to_owned()], script, false)
    }

    fn serve(
        listener: std::net::TcpListener,
        key: Option<&str>,
        models: Vec<String>,
        script: Vec<Step>,
        each: bool,
    ) -> Self {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the listener's address");
        let app = Arc::new(Mutex::new(Inner {
            key: key.map(str::to_owned),
            models,
            script,
            each,
            next: 0,
            seen: Vec::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new().fallback(handle).with_state(app.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the model server");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                tokio::select! {
                    served = axum::serve(listener, router) => {
                        if let Err(error) = served {
                            eprintln!("openai model server: {error}");
                        }
                    }
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels the connections still open, hung ones included.
        });
        Self {
            base_url: format!("http://{address}/v1"),
            app,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A handler never panics while holding the lock, so poisoning means a bug here.
        self.app
            .lock()
            .expect("the model server's state is not poisoned")
    }

    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The `POST /v1/responses` requests, in arrival order.
    pub fn responses(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(Seen::is_response)
            .collect()
    }

    /// How many steps of the script were taken.
    pub fn steps_taken(&self) -> usize {
        self.lock().next
    }
}

impl Drop for OpenAiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The tool outputs in a request's input (codex sends the whole conversation each time).
fn tool_outputs(body: &Value) -> usize {
    body.get("input")
        .and_then(Value::as_array)
        .map_or(0, |input| {
            input
                .iter()
                .filter(|item| {
                    matches!(
                        item.get("type").and_then(Value::as_str),
                        Some("custom_tool_call_output" | "function_call_output")
                    )
                })
                .count()
        })
}

/// One request: checks the key, then answers by path.
async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let websocket = headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    if !body.is_empty() && parsed.is_none() {
        eprintln!(
            "openai model server: {method} {path}: a body of {} bytes that is not JSON ({:?})",
            body.len(),
            headers.get("content-encoding")
        );
    }

    let (index, key, step, models) = {
        let Ok(mut inner) = app.lock() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "lock",
            );
        };
        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
        let authorized = match &inner.key {
            Some(key) => authorization == Some(format!("Bearer {key}").as_str()),
            None => true,
        };
        let models = inner.models.clone();
        let takes_step = authorized && method == Method::POST && path == "/v1/responses";
        let step = if takes_step {
            let at = match inner.each {
                true => parsed.as_ref().map_or(0, tool_outputs),
                false => inner.next,
            };
            let step = inner.script.get(at).cloned();
            if step.is_some() {
                inner.next += 1;
            }
            Some(step)
        } else {
            None
        };
        let response_id = inner.seen.iter().filter(|s| s.is_response()).count();
        inner.seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            authorized,
            websocket,
            body: parsed,
            status: 0,
            at: std::time::SystemTime::now(),
        });
        let key = (!authorized).then(|| authorization.map(str::to_owned));
        (
            inner.seen.len() - 1,
            key,
            step.map(|s| (s, response_id)),
            models,
        )
    };

    let ollama = |body: Value| {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    let response = if !models.is_empty() && method == Method::GET && path == "/v1/models" {
        ollama(json!({"object": "list", "data": models.iter()
            .map(|m| json!({"id": m, "object": "model", "owned_by": "library"}))
            .collect::<Vec<_>>()}))
    } else if !models.is_empty() && method == Method::GET && path == "/api/version" {
        ollama(json!({"version": "0.13.4"}))
    } else if !models.is_empty() && method == Method::GET && path == "/api/tags" {
        ollama(json!({"models": models.iter()
            .map(|m| json!({"name": m, "model": m}))
            .collect::<Vec<_>>()}))
    } else if path != "/v1/responses" {
        eprintln!(
            "openai model server: unknown request {method} {path} {:?}",
            shown_headers(&headers)
        );
        error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!("Invalid URL ({method} {path})"),
        )
    } else if let Some(given) = key {
        unauthorized(given.as_deref())
    } else if websocket {
        error(
            StatusCode::UPGRADE_REQUIRED,
            "invalid_request_error",
            None,
            "This server speaks the Responses API over HTTP only.",
        )
    } else {
        match step {
            Some((Some(step), id)) => answer(step, id).await,
            Some((None, _)) => error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "The scripted model server has no step left for this request.",
            ),
            None => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                None,
                &format!("Invalid method for URL ({method} {path})"),
            ),
        }
    };

    if let Ok(mut inner) = app.lock() {
        if let Some(seen) = inner.seen.get_mut(index) {
            seen.status = response.status().as_u16();
        }
    }
    response
}

/// The headers worth logging: all but the credentials.
fn shown_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "authorization" | "cookie"))
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The real API's 401: `invalid_api_key` with the key masked, or no key at all.
fn unauthorized(given: Option<&str>) -> Response {
    match given.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(key) => error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            &format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                masked(key)
            ),
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ),
    }
}

/// `key` as the API shows it: its first three and last four characters.
fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// An API error: `{"error": {"message", "type", "param", "code"}}`.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The answer of one scripted step to the `id`th model call.
async fn answer(step: Step, id: usize) -> Response {
    let response_id = format!("resp_{id}");
    let events = match step {
        Step::Exec { code, usage } => {
            let item = |status: &str, input: &str| {
                json!({
                    "type": "custom_tool_call",
                    "id": format!("ctc_{id}"),
                    "status": status,
                    "call_id": format!("call_{id}"),
                    "name": "exec",
                    "input": input,
                })
            };
            vec![
                created(&response_id),
                json!({"type": "response.output_item.added", "output_index": 0,
                       "item": item("in_progress", "")}),
                json!({"type": "response.output_item.done", "output_index": 0,
                       "item": item("completed", &code)}),
                completed(&response_id, usage),
            ]
        }
        Step::Call {
            name,
            arguments,
            usage,
        } => {
            let item = |status: &str, arguments: &str| {
                json!({
                    "type": "function_call",
                    "id": format!("fc_{id}"),
                    "status": status,
                    "call_id": format!("call_{id}"),
                    "name": name,
                    "arguments": arguments,
                })
            };
            vec![
                created(&response_id),
                json!({"type": "response.output_item.added", "output_index": 0,
                       "item": item("in_progress", "")}),
                json!({"type": "response.output_item.done", "output_index": 0,
                       "item": item("completed", &arguments.to_string())}),
                completed(&response_id, usage),
            ]
        }
        Step::Message { text, usage } => {
            let item = |status: &str, text: &str| {
                json!({
                    "type": "message",
                    "id": format!("msg_{id}"),
                    "status": status,
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                })
            };
            vec![
                created(&response_id),
                json!({"type": "response.output_item.added", "output_index": 0,
                       "item": item("in_progress", "")}),
                json!({"type": "response.output_text.delta", "output_index": 0,
                       "content_index": 0, "item_id": format!("msg_{id}"), "delta": text}),
                json!({"type": "response.output_item.done", "output_index": 0,
                       "item": item("completed", &text)}),
                completed(&response_id, usage),
            ]
        }
        Step::Error(ApiError::InvalidApiKey) => return unauthorized(Some("Bearer sk-revoked-key")),
        Step::Error(ApiError::RateLimited { retry_after_secs }) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
                &format!(
                    "Rate limit reached for requests per min (RPM). Please try again in \
                     {retry_after_secs}s."
                ),
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after_secs));
            return response;
        }
        Step::Error(ApiError::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "The server had an error while processing your request. Sorry about that!",
            )
        }
        Step::Hang => std::future::pending().await,
    };
    let mut body = String::new();
    for event in events {
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        body.push_str(&format!("event: {kind}\ndata: {event}\n\n"));
    }
    (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        body,
    )
        .into_response()
}

fn created(id: &str) -> Value {
    json!({"type": "response.created",
           "response": {"id": id, "object": "response", "status": "in_progress", "output": []}})
}

fn completed(id: &str, usage: Usage) -> Value {
    json!({"type": "response.completed",
           "response": {"id": id, "object": "response", "status": "completed", "output": [],
                        "usage": usage.json()}})
}
