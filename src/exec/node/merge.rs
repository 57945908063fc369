//! The merge node (`merge: when_green`): merge the PR when QA ran green; on a conflict, rebase
//! once onto the forge's current base, run QA again and push with a lease on the head that was
//! published, then merge again. Whatever a person must look at (a conflict a rebase cannot
//! solve, QA red after the rebase, a moved branch, checks that are not green) leaves the PR
//! labelled and the unit `needs_review`.

use super::publish::{pr_request, publish_options};
use super::{qa, stop, NodeCtx, NodeResult};
use crate::exec::error::{NodeError, Step};
use crate::forge::{Forge, ForgeError, PrRequest};
use crate::git;
use crate::plan::Qa;
use crate::runtime::Runtime;
use crate::vocab::Outcome;

/// Runs the merge node: merge, or rebase once and merge, or leave the PR to a person.
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    if !ctx.qa_passed {
        return stop(
            Outcome::NeedsReview,
            "merge policy when_green: QA did not run green, so the PR waits for a person",
        );
    }
    let Some(pr) = ctx.pr.clone() else {
        return NodeResult::Failed(NodeError::MissingPr);
    };
    let request = match pr_request(ctx).await {
        Ok(request) => request,
        Err(error) => return NodeResult::Failed(error),
    };
    let scratch = ctx.unit.workspace.join("merge");
    let review = match ctx.forge.merge(&pr, &request, &scratch).await {
        Ok(()) => None,
        // On a conflict: rebase once onto the base, QA again, push with a lease, merge again.
        Err(ForgeError::Conflict(_)) => match rebase_onto_base(ctx, &request).await {
            Ok(rebased) => match ctx.forge.merge(&pr, &rebased, &scratch).await {
                Ok(()) => None,
                Err(e) if e.needs_review() => Some(format!(
                    "rebased onto `{}` and pushed, still not mergeable: {e}",
                    request.base
                )),
                Err(error) => return NodeResult::Failed(Step::Merge.forge()(error)),
            },
            Err(Rebase::NeedsReview(reason)) => Some(reason),
            Err(Rebase::Stopped(result)) => return result,
        },
        Err(e) if e.needs_review() => Some(e.to_string()),
        Err(error) => return NodeResult::Failed(Step::Merge.forge()(error)),
    };
    let Some(reason) = review else {
        return NodeResult::Done {
            base: None,
            pr: Some(pr),
            outcome: Some(Outcome::Merged),
        };
    };
    if let Err(error) = ctx.forge.flag_for_review(&request, &pr, &reason).await {
        tracing::warn!(node = %ctx.node, %error, "cannot label the PR {}", crate::forge::NEEDS_REVIEW);
    }
    stop(
        Outcome::NeedsReview,
        format!("the PR waits for a person: {reason}"),
    )
}

/// Why a rebase did not lead to a push.
enum Rebase {
    /// A person must look (conflicts, QA red after the rebase, a moved branch).
    NeedsReview(String),
    /// QA stopped the unit (timed out, cancelled, failed).
    Stopped(NodeResult),
}

/// Rebases the unit's branch once onto the forge's current base, runs QA again and pushes
/// with a lease on the head that was published. Returns the request to merge with.
async fn rebase_onto_base<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    request: &PrRequest,
) -> Result<PrRequest, Rebase> {
    let repo = ctx.unit.repo_dir();
    let review = |reason: String| Rebase::NeedsReview(reason);
    let infra = |error| Rebase::Stopped(NodeResult::Failed(Step::Rebase.git()(error)));
    let published = git::rev_parse(&repo, "HEAD").await.map_err(infra)?;
    git::git(&repo, &["fetch", "--quiet", "origin", &request.base])
        .await
        .map_err(infra)?;
    if git::git(&repo, &["rebase", "--quiet", "FETCH_HEAD"])
        .await
        .is_err()
    {
        let conflicts = git::git(&repo, &["diff", "--name-only", "--diff-filter=U"])
            .await
            .unwrap_or_default();
        let _ = git::git(&repo, &["rebase", "--abort"]).await;
        return Err(review(format!(
            "it conflicts with `{}` and a rebase cannot resolve it (in {})",
            request.base,
            conflicts.lines().collect::<Vec<_>>().join(", ")
        )));
    }
    let restore = || async {
        let _ = git::git(&repo, &["reset", "--quiet", "--hard", &published]).await;
    };
    if !matches!(ctx.unit.unit().qa, Qa::None) {
        match qa::run(ctx).await {
            NodeResult::Done { .. } => {}
            NodeResult::QaFailed { step, .. } => {
                restore().await;
                return Err(review(format!(
                    "rebased onto `{}`, QA failed: {step}",
                    request.base
                )));
            }
            other => {
                restore().await;
                return Err(Rebase::Stopped(other));
            }
        }
    }
    let rebased = PrRequest {
        lease: Some(published.clone()),
        ..request.clone()
    };
    match ctx
        .forge
        .publish_with(&repo, &rebased, &publish_options(ctx))
        .await
    {
        Ok(_) => Ok(rebased),
        Err(e) => {
            restore().await;
            Err(review(format!(
                "rebased onto `{}`, the push failed: {e}",
                request.base
            )))
        }
    }
}
