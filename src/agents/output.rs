//! What an agent's CLI printed: its JSON events ([`AgentOutput`]) read line by line into a
//! [`Report`] (the session or thread id, turns, tokens, the final message, the CLI's own
//! error, whether it ran a tool and whether it reached a result) and into readable lines for
//! `agent.log`.
//!
//! What it is for: knowing what each CLI's event stream means (`reference/agent-events.md`,
//! checked against the runnable binaries). What it is not for: costs ([`super::pricing`]),
//! outcomes (the agent node decides them from the report).
//!
//! Invariants:
//! - Everything here is what an agent printed: hostile text. Nothing is interpreted beyond
//!   JSON values; a line that is not a JSON object (stderr, a crash trace) is kept as text.
//! - Memory stays bounded whatever the volume: texts kept are cut at [`KEEP`] bytes.
//! - codex reports a thread's running token totals ([`Reader::new`] takes what an earlier run
//!   of the same thread already reported, so a resumed thread counts only its own part).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::model::AgentOutput;

/// Most bytes of a text (final message, error) a report keeps.
pub const KEEP: usize = 8 * 1024;

/// Most lines of one command's output the readable log shows.
const OUTPUT_LINES: usize = 20;

/// Token counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Input tokens, cached ones included.
    pub input: u64,
    /// Of the input, tokens read from the provider's cache.
    pub cached: u64,
    /// Output tokens (reasoning included).
    pub output: u64,
}

impl Tokens {
    /// What `self` counts beyond `earlier` (a running total minus an earlier one).
    pub fn since(self, earlier: Tokens) -> Tokens {
        Tokens {
            input: self.input.saturating_sub(earlier.input),
            cached: self.cached.saturating_sub(earlier.cached),
            output: self.output.saturating_sub(earlier.output),
        }
    }

    /// Both added.
    pub fn plus(self, other: Tokens) -> Tokens {
        Tokens {
            input: self.input + other.input,
            cached: self.cached + other.cached,
            output: self.output + other.output,
        }
    }

    /// Input plus output.
    pub fn total(self) -> u64 {
        self.input + self.output
    }
}

/// What one run of an agent's CLI reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The session (claude, gemini) or thread (codex) id, to continue it.
    pub session: Option<String>,
    /// The model, as the CLI named it (else as dispatch asked for it).
    pub model: Option<String>,
    /// Turns, as the CLI counts them (`None`: it does not say).
    pub turns: Option<u64>,
    /// Tokens of this run.
    pub tokens: Tokens,
    /// Cost in USD: reported by the CLI, or estimated from a price table
    /// ([`Self::cost_estimated`]); `None` when neither is known.
    pub cost_usd: Option<f64>,
    /// Whether [`Self::cost_usd`] is an estimate.
    pub cost_estimated: bool,
    /// Tool calls (commands, edits, searches) the agent made.
    pub tools: u64,
    /// Whether the CLI reached its result event (codex `turn.completed` or `turn.failed`,
    /// claude and gemini `result`).
    pub result: bool,
    /// The agent's last message.
    pub final_message: Option<String>,
    /// The CLI's own error, when it reported one (or printed one outside its events).
    pub error: Option<String>,
}

/// What one or more agent runs used, summed: what `status`, the summary, `--output json` and
/// `status.json` show per node, per unit and in total.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Agent runs counted (containers whose output was read).
    pub runs: u64,
    /// Turns, as the CLIs count them.
    pub turns: u64,
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// Of the input, tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in USD of the runs whose cost is known (`None`: of none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Whether part of [`Self::cost_usd`] is an estimate from a price table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cost_estimated: bool,
    /// Runs whose cost is not known (no price for their model): the cost is more than shown.
    #[serde(skip_serializing_if = "is_zero")]
    pub cost_unknown_runs: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Counts one run's report.
    pub fn add_report(&mut self, report: &Report) {
        self.add(&Usage {
            runs: 1,
            turns: report.turns.unwrap_or(0),
            input_tokens: report.tokens.input,
            cached_tokens: report.tokens.cached,
            output_tokens: report.tokens.output,
            cost_usd: report.cost_usd,
            cost_estimated: report.cost_usd.is_some() && report.cost_estimated,
            cost_unknown_runs: u64::from(report.cost_usd.is_none()),
        });
    }

    /// Adds another sum.
    pub fn add(&mut self, other: &Usage) {
        self.runs += other.runs;
        self.turns += other.turns;
        self.input_tokens += other.input_tokens;
        self.cached_tokens += other.cached_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.cost_estimated |= other.cost_estimated;
        self.cost_unknown_runs += other.cost_unknown_runs;
    }

    /// `12.3k tokens (4.0k cached), ~$0.0123` as a person reads it; `-` for no run.
    pub fn brief(&self) -> String {
        if self.runs == 0 {
            return "-".to_owned();
        }
        let mut text = format!(
            "{} in ({} cached) / {} out",
            count(self.input_tokens),
            count(self.cached_tokens),
            count(self.output_tokens)
        );
        match self.cost_usd {
            Some(cost) => {
                let about = if self.cost_estimated { "~" } else { "" };
                let more = if self.cost_unknown_runs > 0 { "+" } else { "" };
                text.push_str(&format!(", {about}${cost:.4}{more}"));
            }
            None => text.push_str(", cost unknown"),
        }
        text
    }
}

/// `950`, `12.3k`, `4.2M`.
fn count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The session a run leaves for the next run to continue, with the tokens the session's runs
/// reported so far: the report's own session, counted on from `earlier` (the previous
/// session and its tokens) when it is the same one. `None` when the report names none.
pub fn next_session(earlier: Option<(&str, Tokens)>, report: &Report) -> Option<(String, Tokens)> {
    let id = report.session.as_deref()?;
    let before = match earlier {
        Some((previous, tokens)) if previous == id => tokens,
        _ => Tokens::default(),
    };
    Some((id.to_owned(), before.plus(report.tokens)))
}

/// Whether a CLI's error says the model API was unavailable for a while (rate limited,
/// overloaded, a server error) rather than that the request or its credentials were wrong:
/// the words codex 0.163 and Claude Code 2.1 print after their own retries gave up.
pub fn unavailable(error: &str) -> bool {
    // Status codes on their own: as numbers, never as digits of a port or a key (`:42935`).
    const CODES: &[&str] = &["429", "529"];
    const SAID: &[&str] = &[
        "too many requests",
        "rate limit",
        "rate_limit",
        "overloaded",
        "500 internal",
        "internal server error",
        "api_error",
        "502 bad gateway",
        "503 service unavailable",
        "504 gateway",
        "high demand",
        "server_error",
        "api error: 5",
        "server-side issue",
        "unexpected status 5",
    ];
    let error = error.to_lowercase();
    let number = |code: &&str| {
        error.match_indices(*code).any(|(at, _)| {
            let digit = |b: Option<&u8>| b.is_some_and(u8::is_ascii_digit);
            !digit(error.as_bytes().get(at.wrapping_sub(1)))
                && !digit(error.as_bytes().get(at + code.len()))
        })
    };
    CODES.iter().any(number) || SAID.iter().any(|said| error.contains(said))
}

/// Reads one CLI's output line by line.
#[derive(Debug)]
pub struct Reader {
    format: AgentOutput,
    report: Report,
    /// codex: the thread's totals that earlier runs reported.
    earlier: Tokens,
    /// codex: an `error` event, which only counts when no turn completes after it.
    stream_error: Option<String>,
    /// gemini: the assistant's message being streamed.
    message: String,
    /// The last line that was not an event (stderr): the error of a CLI that printed no
    /// event at all.
    last_text: Option<String>,
}

impl Reader {
    /// A reader of `format`; `earlier` is what earlier runs of the same codex thread reported.
    pub fn new(format: AgentOutput, earlier: Tokens) -> Self {
        Self {
            format,
            report: Report::default(),
            earlier,
            stream_error: None,
            message: String::new(),
            last_text: None,
        }
    }

    /// Reads one line (without its newline); returns what the readable log shows of it.
    pub fn line(&mut self, line: &str) -> Option<String> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return None;
        }
        let event = match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(map)) if self.format != AgentOutput::Text => Value::Object(map),
            _ => {
                self.last_text = Some(cut(trimmed));
                return Some(line.to_owned());
            }
        };
        match self.format {
            AgentOutput::CodexJson => self.codex(&event),
            AgentOutput::ClaudeStreamJson => self.claude(&event),
            AgentOutput::GeminiStreamJson => self.gemini(&event),
            AgentOutput::Text => None,
        }
    }

    /// The report, once the output ended.
    pub fn finish(mut self) -> Report {
        if self.format == AgentOutput::GeminiStreamJson && !self.message.is_empty() {
            self.report.final_message = Some(cut(&self.message));
        }
        if !self.report.result && self.report.error.is_none() {
            self.report.error = self.stream_error.take().or(self.last_text.take());
        }
        self.report
    }

    fn codex(&mut self, event: &Value) -> Option<String> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        match str_at(event, "type") {
            "thread.started" => {
                self.report.session = event["thread_id"].as_str().map(str::to_owned);
                Some(format!("[codex thread {}]", text(&event["thread_id"])))
            }
            "turn.started" => None,
            "turn.completed" => {
                let usage = &event["usage"];
                let total = Tokens {
                    input: u64_at(usage, "input_tokens"),
                    cached: u64_at(usage, "cached_input_tokens"),
                    output: u64_at(usage, "output_tokens"),
                };
                self.report.tokens = total.since(self.earlier);
                self.report.result = true;
                self.report.turns = Some(self.report.turns.unwrap_or(0) + 1);
                self.stream_error = None;
                Some(tokens_line("turn completed", self.report.tokens))
            }
            "turn.failed" => {
                let message = text(&event["error"]["message"]);
                self.report.result = true;
                self.report.turns = Some(self.report.turns.unwrap_or(0) + 1);
                self.report.error = Some(cut(&message));
                Some(format!("turn failed: {message}"))
            }
            "error" => {
                let message = text(&event["message"]);
                self.stream_error = Some(cut(&message));
                Some(format!("error: {message}"))
            }
            "item.completed" => self.codex_item(&event["item"]),
            "item.started" => {
                let item = &event["item"];
                (str_at(item, "type") == "command_execution")
                    .then(|| format!("$ {}", str_at(item, "command")))
            }
            _ => None,
        }
    }

    fn codex_item(&mut self, item: &Value) -> Option<String> {
        match str_at(item, "type") {
            "agent_message" => {
                let message = str_at(item, "text");
                self.report.final_message = Some(cut(message));
                Some(message.to_owned())
            }
            "reasoning" => Some(format!("(thinking) {}", str_at(item, "text"))),
            "command_execution" => {
                self.report.tools += 1;
                let exit = item["exit_code"].as_i64().map_or_else(
                    || str_at(item, "status").to_owned(),
                    |c| format!("exit {c}"),
                );
                Some(format!(
                    "{}[{exit}]",
                    last_lines(str_at(item, "aggregated_output"))
                ))
            }
            "file_change" => {
                self.report.tools += 1;
                let changes: Vec<String> = item["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{} {}", str_at(c, "kind"), str_at(c, "path")))
                    .collect();
                Some(format!(
                    "edit ({}): {}",
                    str_at(item, "status"),
                    changes.join(", ")
                ))
            }
            "mcp_tool_call" | "web_search" | "collab_tool_call" => {
                self.report.tools += 1;
                Some(format!(
                    "tool {} {}",
                    str_at(item, "type"),
                    str_at(item, "tool")
                ))
            }
            "error" => Some(format!("warning: {}", str_at(item, "message"))),
            "todo_list" => {
                let items: Vec<String> = item["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        let done = if i["completed"] == true { "x" } else { " " };
                        format!("  [{done}] {}", str_at(i, "text"))
                    })
                    .collect();
                Some(format!("plan:\n{}", items.join("\n")))
            }
            _ => None,
        }
    }

    /// The first event of claude and gemini: the session and the model.
    fn init(&mut self, cli: &str, event: &Value) -> String {
        self.report.session = event["session_id"].as_str().map(str::to_owned);
        self.report.model = event["model"].as_str().map(str::to_owned);
        format!(
            "[{cli} session {} model {}]",
            str_at(event, "session_id"),
            str_at(event, "model")
        )
    }

    fn claude(&mut self, event: &Value) -> Option<String> {
        match str_at(event, "type") {
            "system" if str_at(event, "subtype") == "init" => Some(self.init("claude", event)),
            "assistant" => {
                let mut lines = Vec::new();
                for block in event["message"]["content"].as_array().into_iter().flatten() {
                    match str_at(block, "type") {
                        "text" => {
                            let text = str_at(block, "text");
                            self.report.final_message = Some(cut(text));
                            lines.push(text.to_owned());
                        }
                        "tool_use" => {
                            self.report.tools += 1;
                            lines.push(tool_line(str_at(block, "name"), &block["input"]));
                        }
                        "thinking" => {
                            lines.push(format!("(thinking) {}", str_at(block, "thinking")));
                        }
                        _ => {}
                    }
                }
                (!lines.is_empty()).then(|| lines.join("\n"))
            }
            "user" => {
                let mut lines = Vec::new();
                for block in event["message"]["content"].as_array().into_iter().flatten() {
                    if str_at(block, "type") != "tool_result" {
                        continue;
                    }
                    let output = match &block["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(parts) => parts
                            .iter()
                            .map(|p| str_at(p, "text"))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        _ => String::new(),
                    };
                    let mark = if block["is_error"] == true {
                        "[error]"
                    } else {
                        "[done]"
                    };
                    lines.push(format!("{}{mark}", last_lines(&output)));
                }
                (!lines.is_empty()).then(|| lines.join("\n"))
            }
            "result" => {
                let r = &mut self.report;
                r.result = true;
                if let Some(session) = event["session_id"].as_str() {
                    r.session = Some(session.to_owned());
                }
                r.turns = event["num_turns"].as_u64();
                r.tokens = claude_tokens(&event["usage"]);
                r.cost_usd = event["total_cost_usd"].as_f64();
                let text = str_at(event, "result");
                let subtype = str_at(event, "subtype");
                if event["is_error"] == true || (!subtype.is_empty() && subtype != "success") {
                    let said = if text.is_empty() { subtype } else { text };
                    r.error = Some(cut(said));
                } else if !text.is_empty() {
                    r.final_message = Some(cut(text));
                }
                let mut line = tokens_line(&format!("result {subtype}"), r.tokens);
                if let Some(cost) = r.cost_usd {
                    line.push_str(&format!(", ${cost:.4}"));
                }
                if let Some(error) = &r.error {
                    line.push_str(&format!("\nerror: {error}"));
                }
                Some(line)
            }
            _ => None,
        }
    }

    fn gemini(&mut self, event: &Value) -> Option<String> {
        match str_at(event, "type") {
            "init" => Some(self.init("gemini", event)),
            "message" if str_at(event, "role") == "assistant" => {
                let content = str_at(event, "content");
                if event["delta"] != true {
                    self.message.clear();
                }
                if self.message.len() < KEEP {
                    self.message.push_str(content);
                }
                Some(content.to_owned())
            }
            "tool_use" => {
                self.report.tools += 1;
                self.message.clear();
                Some(tool_line(str_at(event, "tool_name"), &event["parameters"]))
            }
            "tool_result" => {
                let mark = if str_at(event, "status") == "success" {
                    "[done]"
                } else {
                    "[error]"
                };
                Some(format!("{}{mark}", last_lines(str_at(event, "output"))))
            }
            "error" => {
                let message = str_at(event, "message");
                if str_at(event, "severity") != "warning" {
                    self.stream_error = Some(cut(message));
                }
                Some(format!("{}: {message}", str_at(event, "severity")))
            }
            "result" => {
                let r = &mut self.report;
                r.result = true;
                let stats = &event["stats"];
                r.tokens = Tokens {
                    input: u64_at(stats, "input_tokens"),
                    cached: u64_at(stats, "cached"),
                    output: u64_at(stats, "output_tokens"),
                };
                let status = str_at(event, "status");
                if status != "success" {
                    let message = str_at(&event["error"], "message");
                    let said = if message.is_empty() {
                        self.stream_error
                            .clone()
                            .unwrap_or_else(|| status.to_owned())
                    } else {
                        message.to_owned()
                    };
                    r.error = Some(cut(&said));
                }
                Some(tokens_line(&format!("result {status}"), r.tokens))
            }
            _ => None,
        }
    }
}

/// The readable line of a tool call: its name and its one telling argument.
fn tool_line(name: &str, input: &Value) -> String {
    let arg = ["command", "file_path", "path", "pattern", "url", "query"]
        .iter()
        .find_map(|key| input[*key].as_str());
    match arg {
        Some(arg) => format!("{name}: {arg}"),
        None => name.to_owned(),
    }
}

fn tokens_line(what: &str, tokens: Tokens) -> String {
    format!(
        "-- {what}: {} tokens in ({} cached), {} out",
        tokens.input, tokens.cached, tokens.output
    )
}

/// The last [`OUTPUT_LINES`] lines of a command's output, each indented, with a newline after
/// each; nothing for no output.
fn last_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let skipped = lines.len().saturating_sub(OUTPUT_LINES);
    let mut text = String::new();
    if skipped > 0 {
        text.push_str(&format!("  ... {skipped} lines\n"));
    }
    for line in &lines[skipped..] {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// What an agent used so far while it runs, from what it streams: for the budget's meter.
///
/// - claude (`stream-json`): each `assistant` event carries its API message's `usage` as the
///   message started (input and cache tokens exact, output tokens only as far as the message
///   began); the `result` event gives the run's exact tokens and cost.
/// - codex (`exec --json`): its stdout says nothing about tokens before `turn.completed`, but
///   its session log in `CODEX_HOME/sessions/` gets a `token_count` event (the thread's running
///   total) after every model response ([`Live::session_log`]).
/// - gemini: only its `result` event.
#[derive(Debug)]
pub struct Live {
    format: AgentOutput,
    /// codex: what earlier runs of the same thread reported.
    earlier: Tokens,
    /// claude: the tokens of each API message so far, by message id.
    messages: std::collections::HashMap<String, Tokens>,
    /// The run's tokens, once a total is known (codex's running total, a `result`).
    total: Option<Tokens>,
    /// The run's cost, when the CLI reported it.
    cost: Option<f64>,
    /// codex: the thread, whose session log holds its token counts.
    thread: Option<String>,
    /// Turns: codex's ended turns, claude's and gemini's `result` count.
    turns: Option<u64>,
}

impl Live {
    /// A meter's reader of `format`; `earlier` is what earlier runs of the same codex thread
    /// reported.
    pub fn new(format: AgentOutput, earlier: Tokens) -> Self {
        Self {
            format,
            earlier,
            messages: std::collections::HashMap::new(),
            total: None,
            cost: None,
            thread: None,
            turns: None,
        }
    }

    /// Reads one line the agent printed.
    pub fn stdout(&mut self, line: &str) {
        let Ok(event) = serde_json::from_str::<Value>(line.trim()) else {
            return;
        };
        match (self.format, str_at(&event, "type")) {
            (AgentOutput::CodexJson, "thread.started") => {
                self.thread = event["thread_id"].as_str().map(str::to_owned);
            }
            (AgentOutput::CodexJson, "turn.completed") => {
                self.turns = Some(self.turns.unwrap_or(0) + 1);
                self.codex_total(&event["usage"]);
            }
            (AgentOutput::CodexJson, "turn.failed") => {
                self.turns = Some(self.turns.unwrap_or(0) + 1);
            }
            (AgentOutput::ClaudeStreamJson, "assistant") => {
                let message = &event["message"];
                let (Some(id), usage) = (message["id"].as_str(), &message["usage"]) else {
                    return;
                };
                let tokens = claude_tokens(usage);
                let known = self.messages.entry(id.to_owned()).or_default();
                *known = Tokens {
                    input: known.input.max(tokens.input),
                    cached: known.cached.max(tokens.cached),
                    output: known.output.max(tokens.output),
                };
            }
            (AgentOutput::ClaudeStreamJson, "result") => {
                self.total = Some(claude_tokens(&event["usage"]));
                self.cost = event["total_cost_usd"].as_f64();
                self.turns = event["num_turns"].as_u64();
            }
            (AgentOutput::GeminiStreamJson, "result") => {
                let stats = &event["stats"];
                self.total = Some(Tokens {
                    input: u64_at(stats, "input_tokens"),
                    cached: u64_at(stats, "cached"),
                    output: u64_at(stats, "output_tokens"),
                });
            }
            _ => {}
        }
    }

    /// Reads one line of codex's session log (`rollout-*.jsonl`).
    pub fn session_log(&mut self, line: &str) {
        let Ok(event) = serde_json::from_str::<Value>(line.trim()) else {
            return;
        };
        let payload = &event["payload"];
        if str_at(&event, "type") == "event_msg" && str_at(payload, "type") == "token_count" {
            self.codex_total(&payload["info"]["total_token_usage"]);
        }
    }

    fn codex_total(&mut self, usage: &Value) {
        let total = Tokens {
            input: u64_at(usage, "input_tokens"),
            cached: u64_at(usage, "cached_input_tokens"),
            output: u64_at(usage, "output_tokens"),
        }
        .since(self.earlier);
        // Running totals only grow; a stale line read late never lowers them.
        if self
            .total
            .is_none_or(|known| total.total() >= known.total())
        {
            self.total = Some(total);
        }
    }

    /// The codex thread, once it started.
    pub fn thread(&self) -> Option<&str> {
        self.thread.as_deref()
    }

    /// The tokens used so far.
    pub fn tokens(&self) -> Tokens {
        let streamed = self
            .messages
            .values()
            .fold(Tokens::default(), |sum, t| sum.plus(*t));
        match self.total {
            Some(total) if total.total() >= streamed.total() => total,
            _ => streamed,
        }
    }

    /// The turns so far: what the CLI counted, else (claude, while it runs) its API messages.
    pub fn turns(&self) -> u64 {
        self.turns.unwrap_or(self.messages.len() as u64)
    }

    /// The cost so far, when the CLI reported it (claude's `result`).
    pub fn cost(&self) -> Option<f64> {
        self.cost
    }
}

/// Tokens of a claude `usage` object: input counts the cache reads and writes too.
fn claude_tokens(usage: &Value) -> Tokens {
    let cached = u64_at(usage, "cache_read_input_tokens");
    Tokens {
        input: u64_at(usage, "input_tokens")
            + cached
            + u64_at(usage, "cache_creation_input_tokens"),
        cached,
        output: u64_at(usage, "output_tokens"),
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

fn u64_at(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or(0)
}

/// `text` cut at [`KEEP`] bytes (on a character boundary).
fn cut(text: &str) -> String {
    if text.len() <= KEEP {
        return text.to_owned();
    }
    let mut end = KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod live_tests {
    use super::*;

    #[test]
    fn claude_counts_each_message_once_then_takes_the_results_figures() {
        let mut live = Live::new(AgentOutput::ClaudeStreamJson, Tokens::default());
        let assistant = |id: &str, input: u64, output: u64| {
            format!(
                r#"{{"type":"assistant","message":{{"id":"{id}","usage":{{"input_tokens":{input},"cache_read_input_tokens":500,"cache_creation_input_tokens":70,"output_tokens":{output}}}}}}}"#
            )
        };
        live.stdout(&assistant("m1", 1200, 1));
        // A second content block of the same message repeats its usage.
        live.stdout(&assistant("m1", 1200, 1));
        live.stdout(&assistant("m2", 1300, 3));
        assert_eq!(
            live.tokens(),
            Tokens {
                input: 1770 + 1870,
                cached: 1000,
                output: 4
            }
        );
        assert_eq!(live.cost(), None);
        live.stdout(r#"{"type":"result","total_cost_usd":0.0115,"usage":{"input_tokens":2500,"cache_read_input_tokens":1300,"cache_creation_input_tokens":70,"output_tokens":46}}"#);
        assert_eq!(live.tokens().total(), 3870 + 46);
        assert_eq!(live.cost(), Some(0.0115));
    }

    #[test]
    fn codex_counts_its_session_logs_running_totals_past_earlier_runs() {
        let mut live = Live::new(
            AgentOutput::CodexJson,
            Tokens {
                input: 1000,
                cached: 0,
                output: 10,
            },
        );
        live.stdout(r#"{"type":"thread.started","thread_id":"t-1"}"#);
        assert_eq!(live.thread(), Some("t-1"));
        // As codex 0.163 writes it (a real session log, trimmed).
        live.session_log(r#"{"timestamp":"2026-12-03T11:38:24.323Z","ordinal":15,"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":2200,"cached_input_tokens":1000,"cache_write_input_tokens":0,"output_tokens":40,"reasoning_output_tokens":0,"total_tokens":2240},"last_token_usage":{"input_tokens":1200,"cached_input_tokens":1000,"output_tokens":30,"total_tokens":1230}}}}"#);
        assert_eq!(live.tokens().total(), 1200 + 30);
        live.session_log(r#"{"type":"response_item","payload":{"type":"message"}}"#);
        live.session_log("not json");
        live.stdout(r#"{"type":"turn.completed","usage":{"input_tokens":3500,"cached_input_tokens":2200,"output_tokens":52}}"#);
        assert_eq!(live.tokens().total(), 2500 + 42);
        // A stale count read late does not lower the total.
        live.session_log(r#"{"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":2200,"output_tokens":40}}}}"#);
        assert_eq!(live.tokens().total(), 2500 + 42);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: AgentOutput, earlier: Tokens, lines: &[&str]) -> (Report, Vec<String>) {
        let mut reader = Reader::new(format, earlier);
        let shown = lines.iter().filter_map(|l| reader.line(l)).collect();
        (reader.finish(), shown)
    }

    #[test]
    fn codex_events_give_the_thread_tokens_tools_and_message() {
        let (report, shown) = read(
            AgentOutput::CodexJson,
            Tokens::default(),
            &[
                r#"{"type":"thread.started","thread_id":"0199-abc"}"#,
                r#"{"type":"turn.started"}"#,
                r#"{"type":"item.started","item":{"id":"i0","type":"command_execution","command":"sed -i s/broken/fixed/ file.txt","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#,
                r#"{"type":"item.completed","item":{"id":"i0","type":"command_execution","command":"sed -i s/broken/fixed/ file.txt","aggregated_output":"","exit_code":0,"status":"completed"}}"#,
                "2026-12-02T10:00:00Z ERROR codex_api: websocket fell back",
                r#"{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"Done: file.txt says fixed."}}"#,
                r#"{"type":"turn.completed","usage":{"input_tokens":1200,"cached_input_tokens":200,"output_tokens":50}}"#,
            ],
        );
        assert_eq!(report.session.as_deref(), Some("0199-abc"));
        assert_eq!(
            report.tokens,
            Tokens {
                input: 1200,
                cached: 200,
                output: 50
            }
        );
        assert_eq!(report.tools, 1);
        assert!(report.result);
        assert_eq!(report.turns, Some(1));
        assert_eq!(
            report.final_message.as_deref(),
            Some("Done: file.txt says fixed.")
        );
        assert_eq!(
            report.error, None,
            "a stderr line is no error of a run that completed"
        );
        assert!(
            shown.contains(&"$ sed -i s/broken/fixed/ file.txt".to_owned()),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|l| l.contains("ERROR codex_api")),
            "text lines stay"
        );
    }

    #[test]
    fn a_resumed_codex_thread_counts_only_its_own_tokens() {
        let earlier = Tokens {
            input: 1200,
            cached: 200,
            output: 50,
        };
        let (report, _) = read(
            AgentOutput::CodexJson,
            earlier,
            &[
                r#"{"type":"turn.completed","usage":{"input_tokens":3000,"cached_input_tokens":1200,"output_tokens":80}}"#,
            ],
        );
        assert_eq!(
            report.tokens,
            Tokens {
                input: 1800,
                cached: 1000,
                output: 30
            }
        );
    }

    #[test]
    fn codex_errors_are_the_clis_own_words() {
        let (report, _) = read(
            AgentOutput::CodexJson,
            Tokens::default(),
            &[
                r#"{"type":"error","message":"Reconnecting... 1/5"}"#,
                r#"{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: Incorrect API key provided"}}"#,
            ],
        );
        assert!(report.result);
        assert_eq!(
            report.error.as_deref(),
            Some("unexpected status 401 Unauthorized: Incorrect API key provided")
        );
        // A stream error without a turn's end is the error; one followed by a completed turn
        // is not.
        let (report, _) = read(
            AgentOutput::CodexJson,
            Tokens::default(),
            &[r#"{"type":"error","message":"stream disconnected"}"#],
        );
        assert!(!report.result);
        assert_eq!(report.error.as_deref(), Some("stream disconnected"));
        let (report, _) = read(
            AgentOutput::CodexJson,
            Tokens::default(),
            &["Error: Read-only file system (os error 30)"],
        );
        assert_eq!(
            report.error.as_deref(),
            Some("Error: Read-only file system (os error 30)"),
            "a CLI that printed no event: its last line is the error"
        );
    }

    #[test]
    fn claude_stream_json_gives_the_session_cost_and_the_error_result() {
        let (report, shown) = read(
            AgentOutput::ClaudeStreamJson,
            Tokens::default(),
            &[
                r#"{"type":"system","subtype":"init","session_id":"5b1c","model":"claude-sonnet-4-5","tools":["Bash"]}"#,
                r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Fixing it."},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"echo fixed > file.txt"}}]},"session_id":"5b1c"}"#,
                r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"","is_error":false}]}}"#,
                r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"file.txt says fixed","session_id":"5b1c","total_cost_usd":0.0123,"usage":{"input_tokens":10,"cache_creation_input_tokens":300,"cache_read_input_tokens":700,"output_tokens":40}}"#,
            ],
        );
        assert_eq!(report.session.as_deref(), Some("5b1c"));
        assert_eq!(report.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(report.turns, Some(2));
        assert_eq!(
            report.tokens,
            Tokens {
                input: 1010,
                cached: 700,
                output: 40
            }
        );
        assert_eq!(report.cost_usd, Some(0.0123));
        assert!(!report.cost_estimated, "claude reports its own cost");
        assert_eq!(report.tools, 1);
        assert_eq!(report.final_message.as_deref(), Some("file.txt says fixed"));
        assert!(
            shown
                .iter()
                .any(|l| l.contains("Bash: echo fixed > file.txt")),
            "{shown:?}"
        );

        // Claude Code's failure: subtype success, is_error true, the API's words as result.
        let (report, _) = read(
            AgentOutput::ClaudeStreamJson,
            Tokens::default(),
            &[
                r#"{"type":"result","subtype":"success","is_error":true,"num_turns":1,"result":"Invalid API key · Fix external API key","session_id":"5b1c","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0}}"#,
            ],
        );
        assert_eq!(
            report.error.as_deref(),
            Some("Invalid API key · Fix external API key")
        );
        assert_eq!(report.final_message, None);
        let (report, _) = read(
            AgentOutput::ClaudeStreamJson,
            Tokens::default(),
            &[
                r#"{"type":"result","subtype":"error_max_turns","is_error":false,"num_turns":9,"session_id":"s"}"#,
            ],
        );
        assert_eq!(report.error.as_deref(), Some("error_max_turns"));
    }

    #[test]
    fn gemini_stream_json_gives_tokens_and_treats_a_missing_result_as_unfinished() {
        let (report, _) = read(
            AgentOutput::GeminiStreamJson,
            Tokens::default(),
            &[
                r#"{"type":"init","timestamp":"t","session_id":"g1","model":"gemini-2.5-pro"}"#,
                r#"{"type":"message","timestamp":"t","role":"assistant","content":"Work","delta":true}"#,
                r#"{"type":"message","timestamp":"t","role":"assistant","content":"ing.","delta":true}"#,
                r#"{"type":"tool_use","timestamp":"t","tool_name":"run_shell_command","tool_id":"1","parameters":{"command":"ls"}}"#,
                r#"{"type":"tool_result","timestamp":"t","tool_id":"1","status":"success","output":"file.txt"}"#,
                r#"{"type":"message","timestamp":"t","role":"assistant","content":"All done.","delta":true}"#,
                r#"{"type":"result","timestamp":"t","status":"success","stats":{"total_tokens":130,"input_tokens":100,"output_tokens":30,"cached":40,"input":60,"duration_ms":5,"tool_calls":1}}"#,
            ],
        );
        assert_eq!(report.session.as_deref(), Some("g1"));
        assert_eq!(report.tools, 1);
        assert_eq!(report.final_message.as_deref(), Some("All done."));
        assert_eq!(
            report.tokens,
            Tokens {
                input: 100,
                cached: 40,
                output: 30
            }
        );
        let (report, _) = read(
            AgentOutput::GeminiStreamJson,
            Tokens::default(),
            &[
                r#"{"type":"init","timestamp":"t","session_id":"g1","model":"m"}"#,
                r#"{"type":"error","timestamp":"t","severity":"error","message":"API key not valid"}"#,
            ],
        );
        assert!(!report.result);
        assert_eq!(report.error.as_deref(), Some("API key not valid"));
    }

    #[test]
    fn an_unavailable_api_is_told_from_a_refused_request() {
        for said in [
            "exceeded retry limit, last status: 429 Too Many Requests",
            "We’re currently experiencing high demand, which may cause temporary errors.",
            "API Error: 500 the server is broken. This is a server-side issue, usually temporary",
            "API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}",
            "unexpected status 503 Service Unavailable",
        ] {
            assert!(unavailable(said), "{said}");
        }
        for said in [
            "unexpected status 401 Unauthorized: Incorrect API key provided",
            "Failed to authenticate. API Error: 401 this key was revoked",
            "error_max_turns",
            // Seen in CI: the scripted server's port held the digits of a status code.
            "unexpected status 401 Unauthorized: Incorrect API key provided: sk-***0000., \
             url: http://192.168.160.1:42935/v1/responses",
            "unexpected status 401 Unauthorized, request id 55290",
        ] {
            assert!(!unavailable(said), "{said}");
        }
    }

    #[test]
    fn hostile_output_is_cut_and_never_more_than_text() {
        let long = "x".repeat(3 * KEEP);
        let line = format!(
            r#"{{"type":"item.completed","item":{{"type":"agent_message","text":"{long}"}}}}"#
        );
        let (report, _) = read(
            AgentOutput::CodexJson,
            Tokens::default(),
            &[&line, "[1,2]", "{not json"],
        );
        let kept = report.final_message.expect("a message");
        assert!(kept.len() <= KEEP + 4, "{}", kept.len());
        assert_eq!(report.error.as_deref(), Some("{not json"));
    }
}
