//! The review node: a reviewing agent reads the PR's change; dispatch posts what it reported
//! on the PR as a comment and, with `review.file_issues`, opens one forge issue per finding
//! ([`crate::agents::findings`]), each linking the PR. An agent that fails or runs past its
//! time leaves the unit `needs_review`.
//!
//! Invariants: the forge is spoken to from here, on the host, after the agent's container
//! ended (the container never holds a forge credential); the review is kept in a note beside
//! `repo/` and `meta/` (`review.json`: run, head commit, text) before anything is posted, so a
//! retry after a forge failure or a crash posts it without running the agent again; what is
//! posted is the agent's text cleaned of control characters and bounded.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::agent::{cut_note, note, run_agent};
use super::publish::{pr_context, pr_request};
use super::{container, done, stop, write_file, NodeCtx, NodeResult};
use crate::agents::findings::{self, Finding};
use crate::exec::error::{NodeError, Step};
use crate::forge::{Forge, NewIssue, PrRef};
use crate::git;
use crate::runtime::log::Log;
use crate::runtime::{mounted, Exit, Runtime};
use crate::spec::values::AgentRef;
use crate::vocab::Outcome;

/// The note of the review the agent reported in this run, kept until it is posted.
const REVIEW_NOTE: &str = "review.json";
/// A review posted on a PR is cut to this many characters (forges take about 64 KiB).
const MAX_COMMENT: usize = 60_000;

/// What [`REVIEW_NOTE`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    /// The run whose review agent reported it.
    run: String,
    /// The commit it reviewed.
    head: String,
    /// What the agent reported.
    text: String,
}

/// Runs the review node (a no-op for a job without `review`).
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let Some(agent) = ctx.unit.review.clone() else {
        return done();
    };
    let head = match git::rev_parse(&ctx.unit.repo_dir(), "HEAD").await {
        Ok(head) => head,
        Err(error) => return NodeResult::Failed(Step::ReviewPost.git()(error)),
    };
    let log = container::log(&ctx.unit, ctx.unit.meta_dir().join("review.log"));
    let text = match kept(ctx, &head).await {
        Some(text) => text,
        None => {
            let kept = match review(ctx, &agent, &log).await {
                Ok(text) => Kept {
                    run: ctx.run_id.clone(),
                    head,
                    text,
                },
                Err(result) => return result,
            };
            // Kept before anything is posted: a retry posts it without the agent.
            let json = serde_json::to_string(&kept).unwrap_or_default();
            let note = ctx.unit.note(REVIEW_NOTE);
            if let Err(error) = write_file(Step::ReviewPost, &note, &json).await {
                return NodeResult::Failed(error);
            }
            kept.text
        }
    };
    match post(ctx, &agent, &text, &log).await {
        Ok(()) => done(),
        Err(error) => NodeResult::Failed(error),
    }
}

/// The review an earlier attempt of this run's review node got for commit `head`.
async fn kept<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>, head: &str) -> Option<String> {
    let json = tokio::fs::read_to_string(ctx.unit.note(REVIEW_NOTE))
        .await
        .ok()?;
    let kept: Kept = serde_json::from_str(&json).ok()?;
    (kept.run == ctx.run_id && kept.head == head).then_some(kept.text)
}

/// Runs the review agent: its review (its final message, or what it printed), or how the
/// node ends instead.
async fn review<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    agent: &AgentRef,
    log: &Log,
) -> Result<String, NodeResult> {
    let job = &ctx.loaded.spec.jobs[ctx.unit.job];
    let template = job
        .review
        .as_ref()
        .and_then(|r| r.template.as_deref())
        .unwrap_or("review");
    let prompt = ctx
        .loaded
        .templates
        .render(template, &pr_context(ctx))
        .map_err(|error| NodeResult::Failed(Step::ReviewPrompt.template()(error)))?;
    let file = ctx.unit.meta_dir().join("prompt.md");
    write_file(Step::ReviewPromptFile, &file, &prompt)
        .await
        .map_err(NodeResult::Failed)?;
    let ran = run_agent(ctx, agent, prompt, log, None).await;
    if let Some(reason) = ran.as_ref().ok().and_then(|ran| ran.over_budget.clone()) {
        return Err(stop(Outcome::BudgetExceeded, format!("budget: {reason}")));
    }
    let cut = match &ran {
        Ok(ran) => cut_note(ran.ran.cut, log),
        Err(_) => String::new(),
    };
    let text = match &ran {
        Ok(ran) => match ran.report.as_ref() {
            Some(report) => report.final_message.clone().unwrap_or_default(),
            None => printed(&log.path, ran.from).await,
        },
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
    Err(match ran.map(|ran| ran.ran.exit) {
        // Exit 0 without a review: the CLI's error, not a review that found nothing.
        Ok(Exit::Code(0)) if said.is_some() => stop(
            Outcome::NeedsReview,
            format!(
                "the review agent did not review: {}{cut}; see {}",
                said.unwrap_or_default(),
                log.path.display()
            ),
        ),
        Ok(Exit::Code(0)) => return Ok(text),
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
    })
}

/// What a text agent printed in its run, from byte `from` of its log.
async fn printed(log: &Path, from: u64) -> String {
    let text = mounted::read_to_string(log).await.unwrap_or_default();
    text.get(from as usize..).unwrap_or(&text).trim().to_owned()
}

/// Posts the review: one issue per finding when the job asks for them, then the comment on
/// the PR naming them. Forge errors are the node's (retried as `infra_error` when transient).
async fn post<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    agent: &AgentRef,
    text: &str,
    log: &Log,
) -> Result<(), NodeError> {
    let settings = ctx.loaded.spec.jobs[ctx.unit.job].review.as_ref();
    let (comment, file_issues) = settings.map_or((true, false), |r| (r.comment, r.file_issues));
    let Some(pr) = ctx.pr.as_ref().filter(|_| comment || file_issues) else {
        return Ok(());
    };
    let request = pr_request(ctx).await?;
    let found = findings::parse(text);
    let mut issues = Vec::new();
    if file_issues {
        let labels = settings.map(|r| r.issue_labels.clone()).unwrap_or_default();
        for finding in &found {
            let issue = finding_issue(finding, agent, pr, &request.unit_id, &labels);
            let opened = ctx
                .forge
                .open_issue(&request, &issue)
                .await
                .map_err(Step::ReviewPost.forge())?;
            issues.push(opened.number);
        }
    }
    if comment {
        let body = review_comment(text, agent, &issues, &ctx.run_id, &request.unit_id);
        ctx.forge
            .comment_on_pr(&request, pr, &body)
            .await
            .map_err(Step::ReviewPost.forge())?;
    }
    let mut posted = format!("the review has {} finding(s)", found.len());
    if comment {
        posted.push_str(&format!("; it is posted on {}", pr.reference));
    }
    if !issues.is_empty() {
        posted.push_str(&format!("; issues {}", numbers(&issues)));
    }
    note(log, &posted).await;
    Ok(())
}

/// `#3, #4`.
fn numbers(issues: &[u64]) -> String {
    issues
        .iter()
        .map(|n| format!("#{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The comment with the review on the PR.
fn review_comment(text: &str, agent: &AgentRef, issues: &[u64], run: &str, unit: &str) -> String {
    let text = findings::clean(text.trim());
    let text = match text.is_empty() {
        true => "(the review agent reported nothing)".to_owned(),
        false => crate::report::text::cut(&text, MAX_COMMENT),
    };
    let mut body = format!("### Review by `{agent}`\n\n{text}\n");
    if !issues.is_empty() {
        body.push_str(&format!(
            "\nIssues opened for the findings: {}.\n",
            numbers(issues)
        ));
    }
    body.push_str(&format!(
        "\n<sub>Posted by dispatch: run `{run}`, unit `{unit}`.</sub>\n"
    ));
    body
}

/// The issue of one finding, linking the PR; its marker names the unit.
fn finding_issue(
    finding: &Finding,
    agent: &AgentRef,
    pr: &PrRef,
    unit: &str,
    labels: &[String],
) -> NewIssue {
    let marker = format!("<!-- dispatch review finding: {unit} -->");
    let mut body = String::new();
    if !finding.body.is_empty() {
        body.push_str(&format!("{}\n\n", finding.body));
    }
    if let Some(location) = &finding.location {
        body.push_str(&format!("Location: `{location}`\n\n"));
    }
    body.push_str(&format!(
        "Found by the review (`{agent}`) of #{} ({}).\n\n{marker}\n",
        pr.number, pr.reference
    ));
    NewIssue {
        title: finding.heading(),
        body,
        labels: labels.to_vec(),
        marker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_becomes_an_issue_linking_the_pr_with_its_marker() {
        let finding = Finding {
            priority: Some(1),
            title: "Guard the loop".to_owned(),
            location: Some("src/a.rs:3-4".to_owned()),
            body: "It runs past the end.".to_owned(),
        };
        let pr = PrRef {
            number: 7,
            reference: "https://forge.example/o/r/pulls/7".to_owned(),
            created: true,
            author: None,
        };
        let agent = AgentRef::parse("codex:review").expect("an agent");
        let labels = ["review-finding".to_owned()];
        let issue = finding_issue(&finding, &agent, &pr, "fix/o/r", &labels);
        assert_eq!(issue.title, "[P1] Guard the loop");
        assert!(
            issue
                .body
                .starts_with("It runs past the end.\n\nLocation: `src/a.rs:3-4`"),
            "{}",
            issue.body
        );
        assert!(
            issue
                .body
                .contains("of #7 (https://forge.example/o/r/pulls/7)"),
            "{}",
            issue.body
        );
        assert!(issue.body.ends_with(&format!("{}\n", issue.marker)));
        assert!(issue.marker.contains("fix/o/r"));
        assert_eq!(issue.labels, labels);
    }

    #[test]
    fn the_comment_is_bounded_cleaned_and_names_the_issues() {
        let agent = AgentRef::parse("claude").expect("an agent");
        let text = format!("\u{1b}[2J{}", "x".repeat(MAX_COMMENT + 10));
        let body = review_comment(&text, &agent, &[3, 4], "r1", "fix/o/r");
        assert!(!body.contains('\u{1b}'));
        assert!(body.chars().count() < MAX_COMMENT + 300, "bounded");
        assert!(
            body.contains("Issues opened for the findings: #3, #4."),
            "{body}"
        );
        assert!(body.starts_with("### Review by `claude`"), "{body}");
        assert!(review_comment(" ", &agent, &[], "r1", "u").contains("reported nothing"));
    }
}
