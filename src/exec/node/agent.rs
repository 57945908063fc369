//! The agent node: render the prompt, take the result from the cache or run the agent's
//! container, then read what it left: `BLOCKED.md` (a question), nothing, or work that
//! dispatch commits on the host (never `BLOCKED.md` or `ANSWER.md`).
//!
//! A re-attached agent (`dispatch resume`) keeps the prompt it was started with. The issue's
//! stopwatch runs while the agent does.

use super::publish::pr_title;
use super::{
    container, log_len, start_commit, stop, tail, write_prompt, NodeCtx, NodeResult,
    NEVER_COMMITTED,
};
use crate::agents::{self, ArgvContext};
use crate::exec::cache;
use crate::exec::error::{NodeError, Step};
use crate::forge::Forge;
use crate::git;
use crate::runtime::{mounted, Cut, Exit, Log, Ran, Runtime};
use crate::spec::values::AgentRef;
use crate::state::RunEvent;
use crate::vocab::Outcome;

/// Runs an agent container with the unit's prompt; returns how it exited.
pub(super) async fn run_agent<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    agent: &AgentRef,
    prompt: String,
    log: &Log,
) -> Result<Ran, NodeError> {
    let step = || Step::Agent(agent.clone());
    let base = ctx
        .base
        .as_deref()
        .ok_or_else(|| NodeError::MissingBase { step: step() })?;
    let invocation = agents::invocation(agent, &ctx.loaded.spec.agents, &ArgvContext::new(base))
        .map_err(|message| NodeError::Config {
            step: step(),
            message,
        })?;
    image_has(ctx, &invocation, step()).await?;
    container::seed_home(&ctx.unit, &invocation, step()).await?;
    let container = container::agent(&ctx.unit, &ctx.owner(), ctx.spec_dir(), &invocation);
    let stdin = container.stdin.then(|| prompt.into_bytes());
    let timeout = ctx.unit.unit().timeout.get();
    if let Some(id) = &ctx.reattach {
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
                return Ok(ran);
            }
            // Never started (or gone): start the agent afresh.
            Ok(None) => {
                let _ = ctx.runtime.remove(id).await;
            }
            Err(error) => return Err(Step::Reattach(id.clone()).runtime()(error)),
        }
    }
    container::run(ctx, Step::Container, container, stdin, log, timeout).await
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
    let from = if ctx.reattach.is_some() {
        0
    } else {
        log_len(&log.path)
    };
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
    let exit = run_agent(ctx, &ctx.unit.agent, prompt, &log).await;
    stopwatch(ctx, false).await;
    let Ran { exit, cut } = match exit {
        Ok(ran) => ran,
        Err(error) => return NodeResult::Failed(error),
    };
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
        Exit::Code(code) if code != 0 => {
            return NodeResult::Stop {
                outcome: Outcome::AgentFailed,
                reason: format!(
                    "agent exited with code {code}{cut}; last lines of {}:\n{}",
                    log.path.display(),
                    tail(&log.path, from).await
                ),
                exit_code: Some(code),
            }
        }
        Exit::Code(_) => {}
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
        Ok((_, false)) => stop(Outcome::NoChanges, "the agent changed nothing"),
        Ok((_, true)) => NodeResult::Done {
            base: None,
            pr: None,
            outcome: Some(Outcome::Changed),
        },
        Err(error) => NodeResult::Failed(error),
    }
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
