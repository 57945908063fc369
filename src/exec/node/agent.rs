//! The agent node: render the prompt, take the result from the cache or run the agent's
//! container, then read what it left: `BLOCKED.md` (a question), nothing, or work that
//! dispatch commits on the host (never `BLOCKED.md` or `ANSWER.md`).
//!
//! A re-attached agent (`dispatch resume`) keeps the prompt it was started with. The issue's
//! stopwatch runs while the agent does.

use super::meter;
use super::publish::pr_title;
use super::{
    container, log_len, start_commit, stop, tail, write_prompt, NodeCtx, NodeResult,
    NEVER_COMMITTED,
};
use crate::agents::output::{self, Live, Reader, Report, Tokens};
use crate::agents::{self, presets, pricing, ArgvContext};
use crate::exec::budget::Allowance;
use crate::exec::cache;
use crate::exec::error::FileAction;
use crate::exec::error::{NodeError, Step};
use crate::forge::Forge;
use crate::git;
use crate::runtime::log::LineTap;
use crate::runtime::{mounted, Cut, Exit, Log, Ran, Runtime};
use crate::spec::model::{AgentOutput, PromptHandoff};
use crate::spec::values::AgentRef;
use crate::state::RunEvent;
use crate::vocab::Outcome;

/// How an agent's container went: how it exited, what its log kept, and what its CLI reported
/// (for agents whose output dispatch reads).
pub(super) struct AgentRan {
    /// How it exited, and whether its log was cut.
    pub ran: Ran,
    /// What the CLI reported.
    pub report: Option<Report>,
    /// Where this run's part of the readable log starts.
    pub from: u64,
    /// Why the unit passed its budget cap, when it did (the container was stopped then, or
    /// its report showed it once it ended).
    pub over_budget: Option<String>,
}

/// Runs `agent`'s container: with `prompt` on its stdin, or, when the node ran the agent
/// before in this run and `follow_up` says what is new (a QA failure, an answer), continuing
/// the agent's own session with `follow_up` as the new message. A session the CLI cannot
/// continue any more (it fails without a result) is given up for a fresh start with the full
/// prompt. `log` is the readable log; an agent that prints JSON events writes them to the
/// `.jsonl` file beside it, from which the readable lines and the [`Report`] are made (and the
/// report handed to the dispatcher).
pub(super) async fn run_agent<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    agent: &AgentRef,
    prompt: String,
    log: &Log,
    follow_up: Option<String>,
) -> Result<AgentRan, NodeError> {
    let step = || Step::Agent(agent.clone());
    let base = ctx
        .base
        .as_deref()
        .ok_or_else(|| NodeError::MissingBase { step: step() })?;
    let invocation = agents::invocation(agent, &ctx.loaded.spec.agents, &ArgvContext::new(base))
        .map_err(|message| NodeError::Config {
            step: step(),
            message,
        })?
        .capped(
            ctx.budget.as_ref().and_then(Allowance::usd_left),
            ctx.budget.as_ref().and_then(Allowance::turns_left),
        );
    image_has(ctx, &invocation, step()).await?;
    container::seed_home(&ctx.unit, &invocation, step()).await?;
    let raw = (invocation.output != AgentOutput::Text).then(|| Log {
        path: log.path.with_extension("jsonl"),
        ..log.clone()
    });
    let container_log = raw.as_ref().unwrap_or(log);
    let continued = match (&ctx.session, follow_up) {
        (Some(session), Some(message)) if ctx.reattach.is_none() => invocation
            .continued(&session.id)
            .map(|invocation| (invocation, session, message)),
        _ => None,
    };
    let from = if ctx.reattach.is_some() {
        0
    } else {
        log_len(&log.path)
    };
    let runs = Runs {
        ctx,
        raw: raw.as_ref(),
        container_log,
        log,
    };
    if let Some((resumed, session, message)) = continued {
        note(
            log,
            &format!("continuing the agent's session {}", session.id),
        )
        .await;
        let continued = runs
            .run(
                &resumed,
                Some(message.into_bytes()),
                0,
                session.tokens,
                from,
            )
            .await?;
        let gone = matches!(continued.ran.exit, Exit::Code(code) if code != 0)
            && continued.report.as_ref().is_some_and(|r| !r.result)
            && continued.over_budget.is_none();
        if !gone {
            return Ok(continued);
        }
        let said = continued.report.and_then(|r| r.error).unwrap_or_default();
        note(
            log,
            &format!(
                "the session could not be continued ({said}); starting afresh with the full prompt"
            ),
        )
        .await;
        let from = log_len(&log.path);
        return runs
            .run(
                &invocation,
                Some(prompt.into_bytes()),
                1,
                Tokens::default(),
                from,
            )
            .await;
    }
    let stdin = (invocation.prompt == PromptHandoff::Stdin).then(|| prompt.into_bytes());
    runs.run(&invocation, stdin, 0, Tokens::default(), from)
        .await
}

/// What every agent container of a node's run shares: where its output goes.
struct Runs<'a, R: Runtime, F: Forge> {
    ctx: &'a NodeCtx<R, F>,
    raw: Option<&'a Log>,
    container_log: &'a Log,
    log: &'a Log,
}

impl<R: Runtime, F: Forge> Runs<'_, R, F> {
    /// Runs agent container `number` of `invocation` with `stdin` and reads its report
    /// (`earlier`: what the session it continues reported before; `from`: where its part of
    /// the readable log starts). Under a budget, the meter follows the agent's output and the
    /// container is killed once the unit passed its cap.
    async fn run(
        &self,
        invocation: &agents::Invocation,
        stdin: Option<Vec<u8>>,
        number: usize,
        earlier: Tokens,
        from: u64,
    ) -> Result<AgentRan, NodeError> {
        let ctx = self.ctx;
        let metered = ctx
            .budget
            .clone()
            .filter(|_| invocation.output != AgentOutput::Text);
        let pricing = meter::Pricing {
            price: match metered {
                Some(_) => price(ctx, invocation).await,
                None => None,
            },
        };
        let (ran, start_at, over_budget) = match &metered {
            None => {
                let (ran, at) = start(ctx, invocation, stdin, self.container_log, number).await?;
                (ran, at, None)
            }
            Some(allowance) => {
                let (tap, lines) = LineTap::new();
                let log = Log {
                    tap: Some(tap),
                    ..self.container_log.clone()
                };
                let home = ctx.unit.agent_home(&invocation.pool).join(".codex");
                let running = start(ctx, invocation, stdin, &log, number);
                let watching = meter::passed(
                    lines,
                    allowance.clone(),
                    Live::new(invocation.output, earlier),
                    pricing,
                    invocation.output,
                    Some(home),
                );
                tokio::pin!(running);
                tokio::select! {
                    ran = &mut running => {
                        let (ran, at) = ran?;
                        (ran, at, None)
                    }
                    Some(reason) = watching => {
                        stop_containers(ctx).await;
                        let (ran, at) = running.await?;
                        (ran, at, Some(reason))
                    }
                }
            }
        };
        let report = read_report(ctx, invocation, self.raw, self.log, start_at, earlier).await?;
        // What the report says once the agent ended can pass the cap too (claude's exact cost).
        let over_budget = over_budget.or_else(|| {
            let (allowance, report) = (metered.as_ref()?, report.as_ref()?);
            allowance.passed(pricing.spend(
                report.tokens,
                report.cost_usd,
                report.turns.unwrap_or(0),
            ))
        });
        if let Some(reason) = &over_budget {
            note(self.log, &format!("stopped: {reason}")).await;
        }
        Ok(AgentRan {
            ran,
            report,
            from,
            over_budget,
        })
    }
}

/// Kills the node's running containers (found by their labels) at once: the agent must not
/// spend more.
async fn stop_containers<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) {
    let Ok(listed) = ctx.runtime.list(&ctx.run_id).await else {
        return;
    };
    for container in listed.iter().filter(|c| c.node == ctx.node && c.running) {
        if let Err(error) = ctx.runtime.kill(&container.id).await {
            tracing::warn!(container = %container.id, %error, "cannot stop an agent past its budget");
        }
    }
}

/// The price of the model the agent uses, for the meter (`None`: unknown, or a model on the
/// user's machine, which costs nothing per token).
async fn price<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    invocation: &agents::Invocation,
) -> Option<crate::spec::model::Price> {
    if invocation.pool == "local" {
        return None;
    }
    let model = match &invocation.model {
        Some(model) => Some(model.clone()),
        None => codex_model(invocation).await,
    }?;
    pricing::price(&model, &ctx.loaded.spec.pricing)
}

/// Runs (or, for `dispatch resume`, collects) agent container `number` of the node; returns
/// how it went and where its output starts in `log`.
async fn start<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    invocation: &agents::Invocation,
    stdin: Option<Vec<u8>>,
    log: &Log,
    number: usize,
) -> Result<(Ran, u64), NodeError> {
    let container = container::agent(&ctx.unit, &ctx.owner(), ctx.spec_dir(), invocation, number);
    let timeout = ctx.unit.unit().timeout.get();
    if let Some(id) = ctx.reattach.as_ref().filter(|_| number == 0) {
        let reattached = container::watched(ctx, Step::Container, id, |cancel| {
            ctx.runtime.reattach(id, log, timeout, cancel)
        })
        .await;
        if reattached.is_err() {
            ctx.containers.push(id.clone());
        }
        match reattached? {
            Ok(Some(ran)) => {
                ctx.containers.push(id.clone());
                container::refuse_planted(ctx, Step::Container).await?;
                return Ok((ran, 0));
            }
            // Never started (or gone): start the agent afresh.
            Ok(None) => {
                let _ = ctx.runtime.remove(id).await;
            }
            Err(error) => return Err(Step::Reattach(id.clone()).runtime()(error)),
        }
    }
    let from = log_len(&log.path);
    let ran = container::run(ctx, Step::Container, container, stdin, log, timeout).await?;
    Ok((ran, from))
}

/// Reads what the agent's CLI printed from byte `from` of its raw log (none for a text
/// agent): the readable lines go to `log`, the report (its cost estimated when the CLI gives
/// none) to the dispatcher.
async fn read_report<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    invocation: &agents::Invocation,
    raw: Option<&Log>,
    log: &Log,
    from: u64,
    earlier: Tokens,
) -> Result<Option<Report>, NodeError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let (raw_path, log_path, format) = (raw.path.clone(), log.path.clone(), invocation.output);
    let read = tokio::task::spawn_blocking(move || {
        read_output(&raw_path, from, &log_path, format, earlier)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|read| read)
    .map_err(Step::Container.io(FileAction::Inspect, &raw.path))?;
    let mut report = read;
    if report.model.is_none() {
        report.model = match &invocation.model {
            Some(model) => Some(model.clone()),
            None => codex_model(invocation).await,
        };
    }
    if report.cost_usd.is_none() {
        if invocation.pool == "local" {
            // A model on the user's own machine costs nothing per token.
            report.cost_usd = Some(0.0);
        } else if let Some(price) = report
            .model
            .as_deref()
            .and_then(|model| pricing::price(model, &ctx.loaded.spec.pricing))
        {
            report.cost_usd = Some(pricing::cost(report.tokens, price));
            report.cost_estimated = true;
        }
    }
    ctx.reports.push(report.clone());
    Ok(Some(report))
}

/// The model codex uses when dispatch names none: the `model` of the user's `config.toml`
/// (what the agent home was seeded with; the copy there is the agent's, never read), else
/// codex's own default.
async fn codex_model(invocation: &agents::Invocation) -> Option<String> {
    if invocation.output != AgentOutput::CodexJson {
        return None;
    }
    let home = std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let text = mounted::read_to_string(&home.join(".codex/config.toml"))
        .await
        .unwrap_or_default();
    let configured = text
        .lines()
        .take_while(|line| !line.trim_start().starts_with('['))
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "model").then(|| value.trim().trim_matches('"').to_owned())
        });
    Some(configured.unwrap_or_else(|| presets::CODEX_DEFAULT_MODEL.to_owned()))
}

/// Appends a line of dispatch's own to a readable log.
pub(super) async fn note(log: &Log, text: &str) {
    let line = format!("[dispatch: {text}]\n");
    let path = log.path.clone();
    let _ = tokio::task::spawn_blocking(move || mounted::append_sync(&path, line.as_bytes())).await;
}

/// Reads the raw log from `from` into a report, appending its readable lines to `readable`.
fn read_output(
    raw: &std::path::Path,
    from: u64,
    readable: &std::path::Path,
    format: AgentOutput,
    earlier: Tokens,
) -> std::io::Result<Report> {
    let mut reader = Reader::new(format, earlier);
    let mut shown = Vec::new();
    let mut failed = Ok(());
    let result = mounted::for_each_line(raw, from, |line| {
        if let Some(text) = reader.line(line) {
            shown.extend_from_slice(text.as_bytes());
            shown.push(b'\n');
            if shown.len() >= 64 * 1024 && failed.is_ok() {
                failed = mounted::append_sync(readable, &shown);
                shown.clear();
            }
        }
    });
    match result {
        Ok(()) => {}
        // A CLI that printed nothing at all left no raw log.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    failed?;
    mounted::append_sync(readable, &shown)?;
    Ok(reader.finish())
}

/// Fails the node when the agent's image lacks a program its agent needs (the engine's answer
/// is kept per image, so this is asked once per image in a run).
async fn image_has<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    invocation: &agents::Invocation,
    step: Step,
) -> Result<(), NodeError> {
    let image = container::agent_image(ctx.unit.unit(), invocation);
    let missing = ctx
        .runtime
        .missing_programs(&image, &invocation.programs())
        .await
        .map_err(step.clone().runtime())?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(NodeError::ImageLacks {
        step,
        image,
        missing: invocation.lacking(&missing),
    })
}

/// Runs the agent node: prompt, cache or container, then what the agent left.
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let repo = ctx.unit.repo_dir();
    let meta = ctx.unit.meta_dir();
    // A re-attached agent already has its prompt; rewriting it could change what it reads.
    let prompt = if ctx.reattach.is_some() {
        mounted::read_to_string(&meta.join("prompt.md"))
            .await
            .unwrap_or_default()
    } else {
        match write_prompt(
            ctx,
            Step::Prompt,
            ctx.base.as_deref(),
            ctx.attempt,
            ctx.qa_failure.clone(),
        )
        .await
        {
            Ok(prompt) => prompt,
            Err(error) => return NodeResult::Failed(error),
        }
    };
    let log = container::log(&ctx.unit, meta.join("agent.log"));
    let key = if ctx.reattach.is_some() {
        None
    } else {
        cache_key(ctx, &prompt).await
    };
    if let (Some(key), Some(dir)) = (&key, &ctx.cache_dir) {
        if let Some(cached) = cache::lookup(dir, key).await {
            return match cache::apply(&repo, &cached).await {
                Ok(()) => {
                    ctx.journal.record(
                        &ctx.run_id,
                        vec![RunEvent::CacheHit {
                            node: ctx.node.clone(),
                            key: key.clone(),
                        }],
                    );
                    match cached {
                        cache::Cached::Changed(_) => NodeResult::Done {
                            base: None,
                            pr: None,
                            outcome: Some(Outcome::Changed),
                        },
                        cache::Cached::NoChanges => stop(
                            Outcome::NoChanges,
                            "the agent changed nothing (result from the cache)",
                        ),
                    }
                }
                Err(error) => NodeResult::Failed(Step::CacheApply.git()(error)),
            };
        }
    }
    // The issue's stopwatch (Forgejo/Gitea) runs while the agent does, whatever its end.
    stopwatch(ctx, true).await;
    let follow_up = follow_up(ctx).await;
    let ran = run_agent(ctx, &ctx.unit.agent, prompt, &log, follow_up).await;
    stopwatch(ctx, false).await;
    let AgentRan {
        ran: Ran { exit, cut },
        report,
        from,
        over_budget,
    } = match ran {
        Ok(ran) => ran,
        Err(error) => return NodeResult::Failed(error),
    };
    if let Some(reason) = over_budget {
        // What it did is not committed: the unit ends here.
        return stop(Outcome::BudgetExceeded, format!("budget: {reason}"));
    }
    let cut = cut_note(cut, &log);
    match exit {
        Exit::TimedOut => {
            return stop(
                Outcome::TimedOut,
                format!(
                    "agent ran past its timeout of {}{cut}",
                    ctx.unit.unit().timeout
                ),
            )
        }
        Exit::Cancelled => return stop(Outcome::Cancelled, "agent stopped by Ctrl-C"),
        Exit::Idle => {
            return stop(
                Outcome::TimedOut,
                format!(
                    "{}{cut}; last lines of {}:\n{}",
                    container::idle_reason("the agent", &ctx.unit),
                    log.path.display(),
                    tail(&log.path, from).await
                ),
            )
        }
        Exit::Code(code) => {
            if let Some(failed) = cli_failed(code, report.as_ref(), &cut, &log, from).await {
                return failed;
            }
        }
    }
    let blocked = repo.join("BLOCKED.md");
    if let Ok(question) = mounted::read_to_string(&blocked).await {
        if !question.trim().is_empty() {
            let _ = tokio::fs::rename(&blocked, meta.join("BLOCKED.md")).await;
            return stop(Outcome::Blocked, question.trim().to_owned());
        }
        let _ = tokio::fs::remove_file(&blocked).await;
    }
    // Whether the branch holds work since its start (which it returns): committed here, or
    // by the agent.
    let committed: Result<(String, bool), NodeError> = async {
        let start = start_commit(ctx, Step::Commit).await?;
        let status = git::status(&repo, NEVER_COMMITTED)
            .await
            .map_err(Step::Commit.git())?;
        if !status.changed.is_empty() {
            git::stage_all(&repo, NEVER_COMMITTED)
                .await
                .map_err(Step::Commit.git())?;
            let gitlinks = git::planted::new_gitlinks(&repo, &start)
                .await
                .map_err(Step::Commit.git())?;
            if !gitlinks.is_empty() {
                return Err(NodeError::Planted {
                    step: Step::Commit,
                    what: "gitlinks (submodules)",
                    paths: gitlinks,
                });
            }
            git::commit(&repo, &commit_message(ctx))
                .await
                .map_err(Step::Commit.git())?;
            return Ok((start, true));
        }
        if status.head == start {
            return Ok((start, false));
        }
        let ahead = git::commits_ahead(&repo, &start)
            .await
            .map_err(Step::Commit.git())?;
        Ok((start, ahead > 0))
    }
    .await;
    if let (Ok((start, changed)), Some(key)) = (&committed, &key) {
        if let Err(error) =
            cache::store(&cache::dir(&ctx.state_dir), key, &repo, start, *changed).await
        {
            tracing::warn!(node = %ctx.node, %error, "cannot store the agent's result in the cache");
        }
    }
    match committed {
        // An agent that ran no tool never looked at the repository: its "nothing to change"
        // is no finding (codex whose own sandbox failed, a model that only chatted).
        Ok((_, false)) if report.as_ref().is_some_and(|r| r.tools == 0) => stop(
            Outcome::AgentFailed,
            format!(
                "the agent ran no tool (no command, no edit) and changed nothing; it ended with: {}",
                report
                    .and_then(|r| r.final_message)
                    .map_or_else(|| "no message".to_owned(), |m| first_line(&m).to_owned())
            ),
        ),
        Ok((_, false)) => stop(Outcome::NoChanges, "the agent changed nothing"),
        Ok((_, true)) => NodeResult::Done {
            base: None,
            pr: None,
            outcome: Some(Outcome::Changed),
        },
        Err(error) => NodeResult::Failed(error),
    }
}

/// What the agent is told when its session is continued: what is new since its last run (the
/// answer to its question, or the failure of QA), or to go on; `None` when it has no session
/// yet in this run.
async fn follow_up<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> Option<String> {
    ctx.session.as_ref()?;
    let meta = ctx.unit.meta_dir();
    let answer = mounted::read_to_string(&meta.join("answer.md")).await.ok();
    let modified =
        |path: std::path::PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let answer_is_newer =
        modified(meta.join("answer.md")) > modified(ctx.unit.note(super::QA_FAILURE_NOTE));
    match (answer, &ctx.qa_failure) {
        (Some(answer), _) if answer_is_newer || ctx.qa_failure.is_none() => Some(format!(
            "The answer to your question (BLOCKED.md):\n\n{}\n\nThe answer is also in ANSWER.md at the repository root. Go on with the task.\n",
            answer.trim()
        )),
        (_, Some(failure)) if ctx.attempt > 1 => Some(format!(
            "Your change failed the checks (attempt {}). Your earlier changes are still in the working tree. The end of the failing step's output:\n\n~~~~text\n{}\n~~~~\n\nFind the cause and fix it. Fix the code, not the checks: do not delete, skip or weaken tests to make them pass unless the task asks for exactly that.\n",
            ctx.attempt,
            failure.trim()
        )),
        _ => Some("Your last run was interrupted. Go on with the task where you stopped.\n".to_owned()),
    }
}

/// The end of an agent whose CLI failed: exited non-zero, or reported an error or no result
/// although it exited 0. The CLI's own error line leads the reason; a model API that was
/// unavailable past the CLI's retries is the machine's side (`infra_error`, retried), any
/// other failure `agent_failed`. `None` when the CLI succeeded.
async fn cli_failed(
    code: i64,
    report: Option<&Report>,
    cut: &str,
    log: &Log,
    from: u64,
) -> Option<NodeResult> {
    let error = report.and_then(|r| r.error.as_deref());
    let what = match (code, report) {
        (0, None) => return None,
        (0, Some(r)) if r.result && r.error.is_none() => return None,
        (0, Some(r)) if !r.result => "the agent's CLI exited 0 without its result event".to_owned(),
        (0, Some(_)) => "the agent's CLI reported an error".to_owned(),
        (code, _) => format!("agent exited with code {code}"),
    };
    if let Some(error) = error.filter(|e| output::unavailable(e)) {
        return Some(NodeResult::Failed(NodeError::AgentApi {
            step: Step::Container,
            message: first_line(error).to_owned(),
            log: log.path.clone(),
        }));
    }
    let said = error
        .map(|e| format!(": {}", first_line(e)))
        .unwrap_or_default();
    Some(NodeResult::Stop {
        outcome: Outcome::AgentFailed,
        reason: format!(
            "{what}{said}{cut}; last lines of {}:\n{}",
            log.path.display(),
            tail(&log.path, from).await
        ),
        exit_code: (code != 0).then_some(code),
    })
}

/// The first line of a text the CLI gave.
fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// What a reason says of a log that was cut (`; its output was cut: ...`), or nothing; a cut
/// log of a container that did not fail is said in the runner's own log.
pub(super) fn cut_note(cut: Option<Cut>, log: &Log) -> String {
    match cut {
        Some(cut) => {
            tracing::warn!(log = %log.path.display(), "{cut}");
            format!("; {cut}")
        }
        None => String::new(),
    }
}

/// The cache key of this agent run: the prompt, the argv, the image id and the base commit.
/// `None` when one of them cannot be known (then the cache is not used).
async fn cache_key<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>, prompt: &str) -> Option<String> {
    let base = ctx.base.clone()?;
    let invocation = agents::invocation(
        &ctx.unit.agent,
        &ctx.loaded.spec.agents,
        &ArgvContext::new(&base),
    )
    .ok()?;
    let image = container::agent_image(ctx.unit.unit(), &invocation);
    let image_id = ctx.runtime.image_id(&image).await.ok()??;
    let start = start_commit(ctx, Step::Commit).await.ok()?;
    Some(cache::key(prompt, &invocation.argv, &image_id, &start))
}

/// Starts or stops the stopwatch of the unit's issue; a forge that refuses is logged, never a
/// reason for the unit to fail.
async fn stopwatch<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>, running: bool) {
    let unit = ctx.unit.unit();
    if let Some(issue) = unit.issue {
        if let Err(error) = ctx
            .forge
            .stopwatch(&unit.org, &unit.repo, issue, running)
            .await
        {
            tracing::warn!(node = %ctx.node, %error, "the issue's stopwatch did not {}", if running { "start" } else { "stop" });
        }
    }
}

/// A conventional commit message: the PR title when it already is one, else `chore: TASK`.
fn commit_message<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> String {
    let job = &ctx.loaded.spec.jobs[ctx.unit.job];
    let title = pr_title(ctx).unwrap_or_else(|_| job.task.clone());
    let conventional = title.split_once(':').is_some_and(|(kind, _)| {
        !kind.is_empty()
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || matches!(c, '(' | ')' | '-' | '!'))
    });
    let first_line = title.lines().next().unwrap_or("").to_owned();
    if conventional {
        first_line
    } else {
        format!("chore: {first_line}")
    }
}
