//! The publish node: push the unit's branch and open the PR, or update the one its branch
//! has (adopted when dispatch did not open it), with the rendered title and body and the
//! job's `pr` settings. For a unit whose agent changed nothing it runs only to withdraw the
//! PR an earlier run opened (`pr.on_no_changes: close`): closed with a comment, its branch
//! deleted.
//!
//! Also what merge needs to publish again after a rebase: the PR request and its options.

use super::{start_commit, stop, NodeCtx, NodeResult};
use crate::exec::error::{NodeError, Step};
use crate::forge::{withdrawn_comment, Forge, PrRef, PrRequest, PrWas, PublishOptions};
use crate::prompt::PromptContext;
use crate::runtime::Runtime;
use crate::vocab::Outcome;

/// The prompt context of the PR's texts: the unit's, with the base prep resolved.
pub(super) fn pr_context<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> PromptContext {
    let mut context = ctx.unit.context(&ctx.loaded);
    context.base = ctx.base.clone().or(context.base);
    context
}

/// The PR's rendered title.
pub(super) fn pr_title<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> Result<String, String> {
    crate::plan::pr_title(&ctx.loaded, ctx.unit.job, &pr_context(ctx))
}

/// What publish (and merge) ask the forge for: branch, base, texts, and the lease of a branch
/// that existed before the unit.
pub(super) async fn pr_request<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
) -> Result<PrRequest, NodeError> {
    let unit = ctx.unit.unit();
    let body = crate::plan::pr_body(&ctx.loaded, ctx.unit.job, &pr_context(ctx))
        .map_err(Step::PrText.template())?;
    Ok(PrRequest {
        org: unit.org.clone(),
        repo: unit.repo.clone(),
        branch: unit.branch.clone(),
        base: ctx
            .base
            .clone()
            .ok_or(NodeError::MissingBase { step: Step::PrText })?,
        title: pr_title(ctx).map_err(Step::PrText.template())?,
        body,
        run_id: ctx.run_id.clone(),
        unit_id: unit.id.clone(),
        lease: match unit.existing_branch {
            true => Some(start_commit(ctx, Step::PrText).await?),
            false => None,
        },
    })
}

/// What publish does beyond title and body: the job's `pr` settings and the unit's issue.
pub(super) fn publish_options<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> PublishOptions {
    let job = &ctx.loaded.spec.jobs[ctx.unit.job];
    PublishOptions {
        issue: ctx.unit.unit().issue,
        labels: job.pr.labels.clone(),
        label_colours: job
            .pr
            .label_colours
            .iter()
            .map(|(name, colour)| (name.clone(), colour.to_string()))
            .collect(),
        draft: job.pr.draft,
        reviewers: job.pr.reviewers.clone(),
    }
}

/// Runs the publish node; its result carries the PR. When the agent changed nothing, it
/// withdraws the PR of an earlier run instead ([`withdraw`]).
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    if let Some(reason) = &ctx.no_changes {
        return withdraw(ctx, reason).await;
    }
    let request = match pr_request(ctx).await {
        Ok(request) => request,
        Err(error) => return NodeResult::Failed(error),
    };
    match ctx
        .forge
        .publish_with(&ctx.unit.repo_dir(), &request, &publish_options(ctx))
        .await
    {
        Ok(pr) => NodeResult::Done {
            base: None,
            pr: Some(pr),
            outcome: Some(Outcome::Changed),
        },
        Err(error) => NodeResult::Failed(Step::Publish.forge()(error)),
    }
}

/// The agent changed nothing (`reason`) and an earlier run's PR of the unit is open
/// ([`super::UnitRun::withdraws`]): the PR is closed with a comment naming this run and the
/// branch dispatch pushed is deleted. The unit ends `no_changes`, its reason saying what was
/// done. Doing it again (a resumed run) finds the PR closed or the branch gone and says so.
async fn withdraw<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>, reason: &str) -> NodeResult {
    let Some(published) = ctx.unit.withdraws(&ctx.loaded) else {
        return stop(Outcome::NoChanges, reason);
    };
    let Some(pr) = PrRef::from_reference(&published.reference) else {
        return stop(
            Outcome::NoChanges,
            format!(
                "{reason}; the PR {} of run {} was left open (its number cannot be read from its reference)",
                published.reference, published.run
            ),
        );
    };
    let request = match pr_request(ctx).await {
        Ok(request) => request,
        Err(error) => return NodeResult::Failed(error),
    };
    let comment = withdrawn_comment(&ctx.run_id, &request.branch);
    let withdrawn = match ctx
        .forge
        .withdraw(&request, pr.number as u64, &comment)
        .await
    {
        Ok(withdrawn) => withdrawn,
        Err(error) => return NodeResult::Failed(Step::Publish.forge()(error)),
    };
    let (pr, run, branch) = (&published.reference, &published.run, &request.branch);
    let done = match (withdrawn.pr, withdrawn.branch_deleted) {
        (PrWas::Open, true) => {
            format!("closed PR {pr} of run {run} and deleted its branch {branch}")
        }
        (PrWas::Open, false) => {
            format!("closed PR {pr} of run {run}; its branch {branch} was gone already")
        }
        (PrWas::Closed, true) => {
            format!("PR {pr} of run {run} was closed already; deleted its branch {branch}")
        }
        (PrWas::Closed, false) => {
            format!("PR {pr} of run {run} was closed and its branch {branch} gone already")
        }
        (PrWas::Merged, _) => format!("PR {pr} of run {run} was merged; nothing was closed"),
        (PrWas::Missing, _) => {
            format!("PR {pr} of run {run} is not a PR of branch {branch} on the forge any more")
        }
    };
    stop(Outcome::NoChanges, format!("{reason}; {done}"))
}
