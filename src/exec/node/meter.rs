//! The budget's meter of a running agent: it follows what the agent's CLI streams (through the
//! log's [`LineTap`]) and, for codex, the session log codex keeps in the unit's agent home, and
//! says once the unit passed its cap ([`Allowance::passed`]); the agent node then kills the
//! container at once and the unit ends `budget_exceeded`.
//!
//! What it reads is what a hostile process wrote: JSON values only, codex's session log opened
//! as a regular file that is no link, found by walking directories that are no links, read in
//! bounded pieces. A lying agent can under-report its usage here, as it could in its report;
//! the provider's own account is the truth.
//!
//! How far behind the meter can be: claude says its messages' input tokens as each message
//! starts and their output at its `result`; codex writes its running total to its session log
//! after every model response, which the meter reads whenever codex prints an event. A unit can
//! pass its cap by what one model response costs before it is stopped.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc::Receiver;

use crate::agents::output::{Live, Tokens};
use crate::agents::pricing;
use crate::exec::budget::{Allowance, Spend};
use crate::runtime::log::TapLine;
use crate::runtime::mounted;
use crate::spec::model::{AgentOutput, Price};

/// Most bytes of codex's session log read at once.
const READ_CHUNK: u64 = 4 << 20;

/// How a running agent's spend is priced: the CLI's own cost when it reports one, else its
/// tokens at `price`, else nothing in USD (a model on the user's machine, or no price known).
#[derive(Clone, Copy, Debug)]
pub(super) struct Pricing {
    /// The model's price, when known.
    pub price: Option<Price>,
}

impl Pricing {
    /// What was spent: `tokens` in `turns`, at `cost` when the CLI said it.
    pub fn spend(&self, tokens: Tokens, cost: Option<f64>, turns: u64) -> Spend {
        let usd = cost
            .or_else(|| self.price.map(|price| pricing::cost(tokens, price)))
            .unwrap_or(0.0);
        Spend {
            usd,
            tokens: tokens.total(),
            turns,
        }
    }
}

/// Follows the agent's output until the unit passed its cap (the reason) or the output ends
/// (`None`). `codex_home` is the host path of the unit's `CODEX_HOME`, for codex.
pub(super) async fn passed(
    mut lines: Receiver<TapLine>,
    allowance: Allowance,
    mut live: Live,
    pricing: Pricing,
    format: AgentOutput,
    codex_home: Option<PathBuf>,
) -> Option<String> {
    let mut session = codex_home
        .filter(|_| format == AgentOutput::CodexJson)
        .map(|home| SessionLog::new(home.join("sessions")));
    while let Some(line) = lines.recv().await {
        let TapLine::Line(line) = line else {
            continue;
        };
        live.stdout(&line);
        let thread = live.thread().map(str::to_owned);
        if let (Some(thread), Some(mut log)) = (thread, session.take()) {
            let read = tokio::task::spawn_blocking(move || {
                let new = log.read_new(&thread);
                (log, new)
            });
            // A read that panicked loses the session log: stdout alone counts from then on.
            if let Ok((log, new)) = read.await {
                session = Some(log);
                for line in new {
                    live.session_log(&line);
                }
            }
        }
        let spent = pricing.spend(live.tokens(), live.cost(), live.turns());
        if let Some(reason) = allowance.passed(spent) {
            return Some(reason);
        }
    }
    None
}

/// Codex's session log of one thread (`sessions/YYYY/MM/DD/rollout-...-THREAD.jsonl`), read
/// as it grows.
#[derive(Debug)]
struct SessionLog {
    sessions: PathBuf,
    file: Option<PathBuf>,
    offset: u64,
    partial: Vec<u8>,
}

impl SessionLog {
    fn new(sessions: PathBuf) -> Self {
        Self {
            sessions,
            file: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last read (none when the file is not there yet or
    /// cannot be read as a regular file).
    fn read_new(&mut self, thread: &str) -> Vec<String> {
        use std::io::{Read, Seek};
        if self.file.is_none() {
            self.file = find(&self.sessions, thread);
        }
        let Some(path) = &self.file else {
            return Vec::new();
        };
        let Ok(mut file) = mounted::std_open_options().read(true).open(path) else {
            return Vec::new();
        };
        let regular = file
            .metadata()
            .and_then(|found| mounted::regular(&found, path));
        if regular.is_err() || file.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if file.take(READ_CHUNK).read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() as u64 > READ_CHUNK {
                // One line longer than a read: not one the meter needs.
                self.partial.clear();
            }
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The session log of `thread` under `sessions` (three levels of dated directories), walked
/// without following links.
fn find(sessions: &Path, thread: &str) -> Option<PathBuf> {
    let wanted = format!("-{thread}.jsonl");
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .take(1000)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    };
    let mut days = Vec::new();
    for year in dirs(sessions) {
        for month in dirs(&year) {
            days.extend(dirs(&month));
        }
    }
    days.into_iter().find_map(|day| {
        std::fs::read_dir(&day)
            .ok()?
            .flatten()
            .take(10_000)
            .find_map(|entry| {
                let name = entry.file_name();
                let name = name.to_str()?;
                let file = entry.file_type().ok()?.is_file();
                (file && name.starts_with("rollout-") && name.ends_with(&wanted))
                    .then(|| entry.path())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codexs_session_log_is_found_by_its_thread_and_read_as_it_grows() {
        let dir = std::env::temp_dir().join(format!("dispatch-meter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let day = dir.join("sessions/2026/12/03");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("rollout-2026-12-03T11-38-other.jsonl"), "{}\n").unwrap();
        let path = day.join("rollout-2026-12-03T11-38-t-1.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let mut log = SessionLog::new(dir.join("sessions"));
        assert_eq!(log.read_new("t-1"), vec!["{\"a\":1}".to_owned()]);
        assert_eq!(log.read_new("t-1"), Vec::<String>::new());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"2}\n").unwrap();
        assert_eq!(log.read_new("t-1"), vec!["{\"b\":2}".to_owned()]);
        // A planted link is never read.
        let planted = day.join("rollout-x-t-2.jsonl");
        std::os::unix::fs::symlink(&path, &planted).unwrap();
        assert_eq!(
            SessionLog::new(dir.join("sessions")).read_new("t-2"),
            Vec::<String>::new()
        );
    }
}
