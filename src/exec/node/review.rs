//! The review node: a reviewing agent reads the PR's change and comments on it; an agent that
//! fails or runs past its time leaves the unit `needs_review`.

use super::agent::{cut_note, run_agent};
use super::publish::pr_context;
use super::{container, done, stop, write_file, NodeCtx, NodeResult};
use crate::exec::error::Step;
use crate::forge::Forge;
use crate::runtime::{Exit, Runtime};
use crate::vocab::Outcome;

/// Runs the review node (a no-op for a job without `review`).
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let Some(agent) = ctx.unit.review.clone() else {
        return done();
    };
    let job = &ctx.loaded.spec.jobs[ctx.unit.job];
    let template = job
        .review
        .as_ref()
        .and_then(|r| r.template.as_deref())
        .unwrap_or("review");
    let prompt = match ctx.loaded.templates.render(template, &pr_context(ctx)) {
        Ok(prompt) => prompt,
        Err(error) => return NodeResult::Failed(Step::ReviewPrompt.template()(error)),
    };
    let file = ctx.unit.meta_dir().join("prompt.md");
    if let Err(error) = write_file(Step::ReviewPromptFile, &file, &prompt).await {
        return NodeResult::Failed(error);
    }
    let log = container::log(&ctx.unit, ctx.unit.meta_dir().join("review.log"));
    let ran = run_agent(ctx, &agent, prompt, &log, None).await;
    let cut = match &ran {
        Ok(ran) => cut_note(ran.ran.cut, &log),
        Err(_) => String::new(),
    };
    let said = ran
        .as_ref()
        .ok()
        .and_then(|ran| ran.report.as_ref())
        .and_then(|report| match (&report.error, report.result) {
            (Some(error), _) => Some(error.lines().next().unwrap_or("").to_owned()),
            (None, false) => Some("its CLI ended without its result event".to_owned()),
            (None, true) => None,
        });
    match ran.map(|ran| ran.ran.exit) {
        // Exit 0 without a review: the CLI's error, not a review that found nothing.
        Ok(Exit::Code(0)) if said.is_some() => stop(
            Outcome::NeedsReview,
            format!(
                "the review agent did not review: {}{cut}; see {}",
                said.unwrap_or_default(),
                log.path.display()
            ),
        ),
        Ok(Exit::Code(0)) => done(),
        Ok(Exit::Code(code)) => stop(
            Outcome::NeedsReview,
            format!(
                "the review agent exited with code {code}{}{cut}; see {}",
                said.map(|s| format!(": {s}")).unwrap_or_default(),
                log.path.display()
            ),
        ),
        Ok(Exit::TimedOut) => stop(
            Outcome::NeedsReview,
            "the review agent ran past its timeout",
        ),
        Ok(Exit::Cancelled) => stop(Outcome::Cancelled, "review stopped by Ctrl-C"),
        Ok(Exit::Idle) => stop(
            Outcome::NeedsReview,
            container::idle_reason("the review agent", &ctx.unit),
        ),
        Err(error) => NodeResult::Failed(error),
    }
}
