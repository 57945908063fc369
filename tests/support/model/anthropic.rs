//! The Anthropic Messages API as Claude Code 2.1.332 calls it, answered from a script.
//!
//! [`AnthropicServer::start`] listens on a [`ModelNetwork`]'s gateway and answers
//! `POST /v1/messages` (Claude Code adds `?beta=true`) the way `api.anthropic.com` does:
//! server-sent events `message_start`, `content_block_start`, `ping`, `content_block_delta`
//! (`text_delta` or `input_json_delta`), `content_block_stop`, `message_delta` (stop reason and
//! usage) and `message_stop`, or a JSON body when the request does not ask to stream.
//!
//! Which request takes a step: a *turn* is a `POST /v1/messages` whose body advertises tools
//! (every agent turn of Claude Code does: `Bash`, `Edit`, `Write`, `Read`, ...). Each turn takes
//! the next [`Step`] of the script. A messages request without tools is *auxiliary* (a title or
//! summary request on a small model, which Claude Code skips under
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`) and gets a short text without using a step. A
//! turn past the end of the script gets a 500 `api_error` and is recorded as
//! [`Answer::Exhausted`], so a test sees it.
//!
//! Credentials are checked like the real API: `x-api-key` (what `ANTHROPIC_API_KEY` sends) or
//! `Authorization: Bearer` (what `ANTHROPIC_AUTH_TOKEN` sends) must carry the key the test set,
//! else 401 `authentication_error`, before the script is consulted. Every request is recorded
//! ([`Seen`]); anything else than the messages endpoints is logged to stderr (method, path,
//! headers without secrets) and answered 404 `not_found_error`.
//!
//! Invariants: the server never panics on what a client sends (malformed JSON is a 400
//! `invalid_request_error`); it runs on a runtime of its own, so synchronous tests can block
//! on `docker run` while it answers; dropping it closes the listener and every connection,
//! hung ones included.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use super::ModelNetwork;

/// The token counts a scripted answer reports, in `message_start` and `message_delta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// `input_tokens`.
    pub input_tokens: u64,
    /// `output_tokens`.
    pub output_tokens: u64,
    /// `cache_read_input_tokens`.
    pub cache_read_input_tokens: u64,
    /// `cache_creation_input_tokens`.
    pub cache_creation_input_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            input_tokens: 100,
            output_tokens: 10,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
        }
    }
}

impl Usage {
    /// The usage object of the API (`message_start.message.usage`, `message_delta.usage`),
    /// `output_tokens` as given.
    fn json(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0
            },
            "output_tokens": output_tokens,
            "service_tier": "standard"
        })
    }
}

/// An error answer with the real API's status, `error.type` and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// `error.type`.
    pub kind: &'static str,
    /// `error.message`.
    pub message: String,
    /// The `retry-after` header, in seconds.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 401 `authentication_error`, what a wrong key gets.
    pub fn authentication() -> Self {
        Self::new(401, "authentication_error", "invalid x-api-key")
    }

    /// 429 `rate_limit_error` with `retry-after: SECONDS`.
    pub fn rate_limit(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50,000 \
                 input tokens per minute. Please try again later.",
            )
        }
    }

    /// 500 `api_error`.
    pub fn internal() -> Self {
        Self::new(500, "api_error", "Internal server error")
    }

    /// 529 `overloaded_error`.
    pub fn overloaded() -> Self {
        Self::new(529, "overloaded_error", "Overloaded")
    }

    fn new(status: u16, kind: &'static str, message: &str) -> Self {
        Self {
            status,
            kind,
            message: message.to_owned(),
            retry_after: None,
        }
    }
}

/// What one turn answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A `tool_use` block calling tool `name` with `input`, stop reason `tool_use`.
    ToolUse {
        /// The tool's name as Claude Code advertises it (`Bash`, `Write`, `Edit`, ...).
        name: String,
        /// Its input, matching the advertised `input_schema`.
        input: Value,
        /// The usage reported.
        usage: Usage,
    },
    /// A final text block, stop reason `end_turn`.
    Text {
        /// The text.
        text: String,
        /// The usage reported.
        usage: Usage,
    },
    /// An HTTP error with the API's JSON error body.
    Error(ApiError),
    /// The request is read and never answered (the connection stays open until the server
    /// drops).
    Hang,
}

impl Step {
    /// Claude Code's `Bash` tool running `command` (`{command, description}`).
    pub fn bash(command: &str) -> Self {
        Self::tool(
            "Bash",
            json!({ "command": command, "description": "Run the scripted command" }),
        )
    }

    /// Claude Code's `Write` tool (`{file_path, content}`; the path must be absolute).
    pub fn write(file_path: &str, content: &str) -> Self {
        Self::tool(
            "Write",
            json!({ "file_path": file_path, "content": content }),
        )
    }

    /// Claude Code's `Edit` tool (`{file_path, old_string, new_string}`; Claude Code refuses
    /// to edit a file it has not read in the session).
    pub fn edit(file_path: &str, old_string: &str, new_string: &str) -> Self {
        Self::tool(
            "Edit",
            json!({ "file_path": file_path, "old_string": old_string, "new_string": new_string }),
        )
    }

    /// Any tool with any input.
    pub fn tool(name: &str, input: Value) -> Self {
        Self::ToolUse {
            name: name.to_owned(),
            input,
            usage: Usage::default(),
        }
    }

    /// A final answer `text`.
    pub fn text(text: &str) -> Self {
        Self::Text {
            text: text.to_owned(),
            usage: Usage::default(),
        }
    }

    /// The same step reporting `usage` (no effect on errors and hangs).
    pub fn with_usage(mut self, new: Usage) -> Self {
        if let Self::ToolUse { usage, .. } | Self::Text { usage, .. } = &mut self {
            *usage = new;
        }
        self
    }
}

/// Whether a request carried the test's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// `x-api-key` or `Authorization: Bearer` equal to the key.
    Right,
    /// A key, not the right one.
    Wrong,
    /// Neither header.
    Missing,
}

/// How the server answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The turn took step `N` (0-based) of the script.
    Step(usize),
    /// A messages request without tools, answered with a short text outside the script.
    Auxiliary,
    /// `POST /v1/messages/count_tokens`, answered with an estimate.
    CountTokens,
    /// 401: the credential was not right.
    Unauthorized,
    /// 400: the body was not a JSON object.
    Malformed,
    /// 500: a turn came after the last step.
    Exhausted,
    /// 404: an endpoint the server does not know.
    NotFound,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path, query included (`/v1/messages?beta=true`).
    pub path: String,
    /// Whether the key was right.
    pub credential: Credential,
    /// The JSON body, when it parsed.
    pub body: Option<Value>,
    /// What the server answered.
    pub answer: Answer,
}

impl Seen {
    /// The names of the tools the body advertises.
    pub fn tool_names(&self) -> Vec<String> {
        self.body
            .as_ref()
            .and_then(|body| body["tools"].as_array())
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Shared {
    key: String,
    script: Vec<Step>,
    next: usize,
    seen: Vec<Seen>,
    messages: u64,
}

/// A scripted Messages API on a [`ModelNetwork`]'s gateway, stopped when dropped.
pub struct AnthropicServer {
    base_url: String,
    shared: Arc<Mutex<Shared>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl AnthropicServer {
    /// Starts answering on a listener of `network`: requests must carry `key`; turns take the
    /// steps of `script` in order.
    pub fn start(network: &ModelNetwork, key: &str, script: Vec<Step>) -> Self {
        let listener = network.listener();
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        listener
            .set_nonblocking(true)
            .expect("the listener goes non-blocking");
        let shared = Arc::new(Mutex::new(Shared {
            key: key.to_owned(),
            script,
            next: 0,
            seen: Vec::new(),
            messages: 0,
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("anthropic-server")
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        {
            let _entered = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("the listener joins the server's runtime");
            runtime.spawn(async move {
                if let Err(error) = axum::serve(listener, app).await {
                    eprintln!("anthropic server: {error}");
                }
            });
        }
        Self {
            base_url: format!("http://{address}"),
            shared,
            runtime: Some(runtime),
        }
    }

    /// What `ANTHROPIC_BASE_URL` is set to: `http://GATEWAY:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared).seen.clone()
    }

    /// The requests that took a step of the script, in order.
    pub fn turns(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|seen| matches!(seen.answer, Answer::Step(_)))
            .collect()
    }

    /// How many steps of the script have been taken.
    pub fn steps_taken(&self) -> usize {
        lock(&self.shared).next
    }
}

impl Drop for AnthropicServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Not `drop`: that blocks, and panics inside an async test.
            runtime.shutdown_background();
        }
    }
}

/// The shared state, even after a handler panicked while holding it (it cannot: nothing in
/// the handlers panics; a poisoned lock would still hold consistent records).
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a request gets, decided under the lock; `Hang` is answered outside it.
enum Reply {
    Now(Response),
    Hang,
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = decide(&shared, &method, &uri, &headers, &body);
    match reply {
        Reply::Now(response) => response,
        Reply::Hang => std::future::pending().await,
    }
}

fn decide(
    shared: &Mutex<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Reply {
    let mut shared = lock(shared);
    let credential = credential(headers, &shared.key);
    let parsed = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object);
    let endpoint = (method.as_str(), uri.path());
    let known = matches!(
        endpoint,
        ("POST", "/v1/messages") | ("POST", "/v1/messages/count_tokens")
    );
    let (answer, reply) = if !known {
        eprintln!(
            "anthropic server: unknown request {method} {uri} {:?}",
            public_headers(headers)
        );
        (
            Answer::NotFound,
            Reply::Now(error(&ApiError::new(404, "not_found_error", "Not found"))),
        )
    } else if credential != Credential::Right {
        (
            Answer::Unauthorized,
            Reply::Now(error(&ApiError::authentication())),
        )
    } else if let Some(request) = &parsed {
        if endpoint.1 == "/v1/messages/count_tokens" {
            let estimate = body.len() / 4;
            (
                Answer::CountTokens,
                Reply::Now(json_response(
                    StatusCode::OK,
                    &json!({ "input_tokens": estimate }),
                )),
            )
        } else {
            shared.messages += 1;
            let id = format!("msg_scripted{:04}", shared.messages);
            let model = request["model"].as_str().unwrap_or("claude-scripted");
            let stream = request["stream"].as_bool().unwrap_or(false);
            let is_turn = request["tools"].as_array().is_some_and(|t| !t.is_empty());
            if !is_turn {
                let step = Step::text("Scripted reply");
                (Answer::Auxiliary, message(&id, model, &step, stream))
            } else if let Some(step) = shared.script.get(shared.next).cloned() {
                let index = shared.next;
                shared.next += 1;
                (Answer::Step(index), message(&id, model, &step, stream))
            } else {
                (
                    Answer::Exhausted,
                    Reply::Now(error(&ApiError::new(
                        500,
                        "api_error",
                        "the scripted model has no step left",
                    ))),
                )
            }
        }
    } else {
        (
            Answer::Malformed,
            Reply::Now(error(&ApiError::new(
                400,
                "invalid_request_error",
                "the request body is not a JSON object",
            ))),
        )
    };
    shared.seen.push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        credential,
        body: parsed,
        answer,
    });
    reply
}

fn credential(headers: &HeaderMap, key: &str) -> Credential {
    let api_key = headers.get("x-api-key").map(HeaderValue::as_bytes);
    let bearer = headers
        .get("authorization")
        .map(HeaderValue::as_bytes)
        .map(|value| value.strip_prefix(b"Bearer ").unwrap_or(value));
    let given = [api_key, bearer].into_iter().flatten().collect::<Vec<_>>();
    if given.is_empty() {
        Credential::Missing
    } else if given.contains(&key.as_bytes()) {
        Credential::Right
    } else {
        Credential::Wrong
    }
}

/// The headers of a request without the ones that carry secrets.
fn public_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "x-api-key" | "authorization" | "cookie"))
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The answer of a messages request: `step` as events, or as one message when not streaming.
fn message(id: &str, model: &str, step: &Step, stream: bool) -> Reply {
    let (block, usage, stop_reason) = match step {
        Step::Error(api_error) => return Reply::Now(error(api_error)),
        Step::Hang => return Reply::Hang,
        Step::ToolUse { name, input, usage } => (
            json!({ "type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": input }),
            usage,
            "tool_use",
        ),
        Step::Text { text, usage } => (json!({ "type": "text", "text": text }), usage, "end_turn"),
    };
    if !stream {
        return Reply::Now(json_response(
            StatusCode::OK,
            &json!({
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [block], "stop_reason": stop_reason, "stop_sequence": null,
                "usage": usage.json(usage.output_tokens)
            }),
        ));
    }
    let mut events = vec![
        event(
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": id, "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": usage.json(1)
                }
            }),
        ),
        event("ping", json!({ "type": "ping" })),
    ];
    // The block starts empty and its content arrives in pieces, as the API sends it.
    let (start, deltas) = if block["type"] == "tool_use" {
        let input = block["input"].to_string();
        let start =
            json!({ "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} });
        let deltas = pieces(&input)
            .map(|piece| json!({ "type": "input_json_delta", "partial_json": piece }))
            .collect::<Vec<_>>();
        (start, deltas)
    } else {
        let text = block["text"].as_str().unwrap_or_default();
        let deltas = pieces(text)
            .map(|piece| json!({ "type": "text_delta", "text": piece }))
            .collect::<Vec<_>>();
        (json!({ "type": "text", "text": "" }), deltas)
    };
    events.push(event(
        "content_block_start",
        json!({ "type": "content_block_start", "index": 0, "content_block": start }),
    ));
    for delta in deltas {
        events.push(event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({ "type": "content_block_stop", "index": 0 }),
    ));
    events.push(event(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": usage.json(usage.output_tokens)
        }),
    ));
    events.push(event("message_stop", json!({ "type": "message_stop" })));
    let body = Body::from_stream(futures_util::stream::iter(
        events.into_iter().map(Ok::<_, Infallible>),
    ));
    Reply::Now(
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("cache-control", "no-cache")
            .header("request-id", format!("req_{id}"))
            .body(body)
            .expect("a response of static headers builds"),
    )
}

/// `text` in pieces of at most 16 characters (on character boundaries).
fn pieces(text: &str) -> impl Iterator<Item = String> + '_ {
    let chars = text.chars().collect::<Vec<_>>();
    let count = chars.len().div_ceil(16);
    (0..count).map(move |i| {
        chars[i * 16..((i + 1) * 16).min(chars.len())]
            .iter()
            .collect()
    })
}

/// One server-sent event.
fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The API's error answer: `{"type":"error","error":{"type","message"},"request_id"}`.
fn error(api_error: &ApiError) -> Response {
    let mut response = json_response(
        StatusCode::from_u16(api_error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({
            "type": "error",
            "error": { "type": api_error.kind, "message": api_error.message },
            "request_id": "req_scripted"
        }),
    );
    if let Some(seconds) = api_error.retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", "req_scripted")
        .body(Body::from(body.to_string()))
        .expect("a response of static headers builds")
}
