//! The publish node: push the unit's branch and open the PR, or update the one its branch
//! has, with the rendered title and body and the job's `pr` settings.
//!
//! Also what merge needs to publish again after a rebase: the PR request and its options.

use super::{start_commit, NodeCtx, NodeResult};
use crate::exec::error::{NodeError, Step};
use crate::forge::PublishOptions;
use crate::forge::{Forge, PrRequest};
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

/// Runs the publish node; its result carries the PR.
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
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
