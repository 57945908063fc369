//! The Forgejo/Gitea and GitHub forges against a fake server that checks every request
//! against the published API descriptions, with git pushes going to real bare repositories.

mod fake;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use dispatch::forge::any::AnyForge;
use dispatch::forge::forgejo::{Flavour as GiteaFlavour, GiteaForge};
use dispatch::forge::github::GithubForge;
use dispatch::forge::http::{RetryPolicy, Secret};
use dispatch::forge::options::RemoteOptions;
use dispatch::forge::target::RepoFilter;
use dispatch::forge::PublishOptions;
use dispatch::forge::{Forge, ForgeError, PrRequest};
use fake::{git, temp_dir, FakeForge, Flavour};

use crate::support::docker::available;
use crate::support::{outcomes, unit, Output, Test};

const TOKEN: &str = "tok-3f9a1c-very-secret";
const ORG: &str = "core";

/// The tests of `check` on every forge: `gitea` runs it against Gitea and Forgejo, `github`
/// against GitHub.
macro_rules! on_every_forge {
    ($check:ident: $gitea:ident, $github:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $gitea() {
            $check(Flavour::Gitea).await;
            $check(Flavour::Forgejo).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $github() {
            $check(Flavour::Github).await;
        }
    };
}

fn options(fake: &FakeForge) -> RemoteOptions {
    RemoteOptions {
        git_base: Some(fake.git_root.to_string_lossy().into_owned()),
        writes_per_minute: Some(600),
        retry: RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_wait: Duration::from_secs(5),
            low_remaining: 50,
        },
        checks_timeout: Duration::ZERO,
    }
}

fn client(fake: &FakeForge, flavour: Flavour, token: &str) -> AnyForge {
    let token = Secret::new(token);
    match flavour {
        Flavour::Gitea | Flavour::Forgejo => AnyForge::Gitea(
            GiteaForge::new(
                if flavour == Flavour::Gitea {
                    GiteaFlavour::Gitea
                } else {
                    GiteaFlavour::Forgejo
                },
                &fake.url,
                token,
                "FORGE_TOKEN",
                options(fake),
            )
            .expect("forgejo client"),
        ),
        Flavour::Github => AnyForge::Github(
            GithubForge::new(Some(&fake.url), token, "GITHUB_TOKEN", options(fake))
                .expect("github client"),
        ),
    }
}

async fn fake_with_repo(flavour: Flavour, repo: &str) -> FakeForge {
    let fake = FakeForge::start(flavour, TOKEN).await;
    fake.add_repo(ORG, repo, false, false);
    fake
}

/// A clone of `repo` from the forge's clone source with one commit on `branch`.
fn workspace(forge: &AnyForge, repo: &str, branch: &str, text: &str) -> PathBuf {
    let dir = temp_dir("ws").join("repo");
    let source = forge.clone_source(ORG, repo).expect("clone source");
    git(
        dir.parent().expect("parent"),
        &["clone", "--quiet", &source, &dir.to_string_lossy()],
    );
    git(&dir, &["checkout", "--quiet", "-b", branch]);
    std::fs::write(dir.join("fix.txt"), text).expect("write");
    git(&dir, &["add", "--all"]);
    git(&dir, &["commit", "--quiet", "-m", "fix"]);
    dir
}

fn request(repo: &str, branch: &str, title: &str) -> PrRequest {
    PrRequest {
        lease: None,
        org: ORG.to_owned(),
        repo: repo.to_owned(),
        branch: branch.to_owned(),
        base: "main".to_owned(),
        title: title.to_owned(),
        body: "Closes #1".to_owned(),
        run_id: "run-1".to_owned(),
        unit_id: "fix/core/go-io".to_owned(),
    }
}

fn assert_valid(fake: &FakeForge) {
    let violations = fake.violations();
    assert!(
        violations.is_empty(),
        "requests the real forge would not understand:\n{}",
        violations.join("\n")
    );
}

fn assert_no_token(e: &ForgeError) {
    let text = format!("{e} / {e:?}");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    assert!(
        !text.contains("tok-3f9a1c"),
        "part of a token leaked: {text}"
    );
}

async fn publish_creates_then_updates(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "go-io").await;
    let issue = fake.add_issue(ORG, "go-io", "Tests fail", &["agentic"]);
    let forge = client(&fake, flavour, TOKEN);
    let dir = workspace(&forge, "go-io", "dispatch/fix-tests", "one");
    let options = PublishOptions {
        issue: Some(issue),
        labels: vec!["agentic".to_owned(), "needs-ci".to_owned()],
        label_colours: [("needs-ci".to_owned(), "#ff0000".to_owned())].into(),
        draft: true,
        reviewers: vec!["alice".to_owned()],
    };
    let first = forge
        .publish_with(
            &dir,
            &request("go-io", "dispatch/fix-tests", "fix: tests"),
            &options,
        )
        .await
        .expect("first publish");
    assert!(first.created);
    assert_eq!(
        fake.head(ORG, "go-io", "dispatch/fix-tests"),
        git(&dir, &["rev-parse", "HEAD"]),
        "the branch was pushed to the bare repository"
    );

    std::fs::write(dir.join("fix.txt"), "two").expect("write");
    git(&dir, &["commit", "--quiet", "-am", "more"]);
    let second = forge
        .publish_with(
            &dir,
            &request("go-io", "dispatch/fix-tests", "fix: all tests"),
            &options,
        )
        .await
        .expect("second publish");
    assert!(!second.created, "the existing PR is updated");
    assert_eq!(second.number, first.number);
    assert_eq!(second.reference, first.reference);

    let pulls = fake.pulls(ORG, "go-io");
    assert_eq!(pulls.len(), 1, "no duplicate PR: {pulls:?}");
    let pull = pulls[0].pull.as_ref().expect("PR");
    if flavour.is_gitea() {
        assert_eq!(pulls[0].title, "WIP: fix: all tests", "draft as WIP title");
        if flavour == Flavour::Gitea {
            assert_eq!(pull.reviewers, ["alice"]);
        }
    } else {
        assert_eq!(pulls[0].title, "fix: all tests");
        assert!(pull.draft);
    }
    assert_eq!(pulls[0].pull.as_ref().expect("PR").base, "main");
    let mut labels = pulls[0].labels.clone();
    labels.sort();
    assert_eq!(labels, ["agentic", "needs-ci"]);
    let created: Vec<_> = fake.labels(ORG, "go-io");
    assert!(
        created.iter().any(|(n, _)| n == "needs-ci"),
        "missing label created: {created:?}"
    );
    if flavour.is_gitea() {
        assert!(created.contains(&("needs-ci".to_owned(), "#ff0000".to_owned())));
    }
    let comments = &fake.issues(ORG, "go-io")[issue as usize - 1].comments;
    assert_eq!(comments.len(), 1, "one comment with the link: {comments:?}");
    assert!(comments[0].contains(&first.reference), "{comments:?}");
    assert_valid(&fake);
}

on_every_forge!(
    publish_creates_then_updates:
    gitea_publish_creates_then_updates_the_pr,
    github_publish_creates_then_updates_the_pr
);

async fn rate_limit_is_honoured(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "go-io").await;
    let forge = client(&fake, flavour, TOKEN);
    let dir = workspace(&forge, "go-io", "b", "x");
    fake.fail("POST", "/pulls", 429, &[("Retry-After", "1")], 1);
    let pr = forge
        .publish(&dir, &request("go-io", "b", "t"))
        .await
        .expect("publish after the rate limit");
    assert!(pr.created);
    let posts: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/pulls"))
        .collect();
    assert_eq!(
        posts.iter().map(|s| s.status).collect::<Vec<_>>(),
        [429, 201]
    );
    assert!(
        posts[1].at.duration_since(posts[0].at) >= Duration::from_millis(950),
        "the retry waited for Retry-After"
    );
    assert_eq!(fake.pulls(ORG, "go-io").len(), 1);
    assert_valid(&fake);
}

on_every_forge!(
    rate_limit_is_honoured:
    gitea_429_with_retry_after_is_honoured,
    github_429_with_retry_after_is_honoured
);

#[tokio::test(flavor = "multi_thread")]
async fn github_secondary_limit_403_with_retry_after_is_retried() {
    let fake = fake_with_repo(Flavour::Github, "go-io").await;
    let forge = client(&fake, Flavour::Github, TOKEN);
    fake.fail("GET", "/repos/core/go-io", 403, &[("retry-after", "1")], 1);
    let branch = forge
        .default_branch(ORG, "go-io")
        .await
        .expect("default branch after the secondary limit");
    assert_eq!(branch.as_deref(), Some("main"));
    assert_valid(&fake);
}

async fn server_error_then_success(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "go-io").await;
    let forge = client(&fake, flavour, TOKEN);
    let dir = workspace(&forge, "go-io", "b", "x");
    fake.fail("GET", "/pulls", 500, &[], 1);
    forge
        .publish(&dir, &request("go-io", "b", "t"))
        .await
        .expect("publish after one 500");
    let statuses: Vec<u16> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.ends_with("/pulls"))
        .map(|s| s.status)
        .collect();
    assert_eq!(statuses, [500, 200]);

    fake.fail("GET", "/repos/core/go-io", 502, &[], 10);
    let e = forge
        .default_branch(ORG, "go-io")
        .await
        .expect_err("502 every time");
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("4 attempts"), "{e}");
    assert_valid(&fake);
}

on_every_forge!(
    server_error_then_success:
    gitea_500_then_success,
    github_500_then_success
);

async fn unauthorized_is_clear(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "go-io").await;
    let bad = client(&fake, flavour, "tok-3f9a1c-revoked");
    let dir = workspace(&bad, "go-io", "b", "x");
    let e = bad
        .publish(&dir, &request("go-io", "b", "t"))
        .await
        .expect_err("a revoked token");
    assert!(matches!(e, ForgeError::Unauthorized { .. }), "{e:?}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(
        text.contains("FORGE_TOKEN") || text.contains("GITHUB_TOKEN"),
        "names the variable: {text}"
    );
    assert!(!format!("{e} {e:?} {bad:?}").contains("tok-3f9a1c"));

    if flavour.is_gitea() {
        let before = fake.seen().len();
        let e = bad
            .stopwatch(ORG, "go-io", 1, true)
            .await
            .expect_err("writes refused");
        assert!(matches!(e, ForgeError::Unauthorized { .. }), "{e:?}");
        assert_eq!(fake.seen().len(), before, "the refused write sent nothing");
    }

    let good = client(&fake, flavour, TOKEN);
    let pr = good
        .publish(&dir, &request("go-io", "b", "t"))
        .await
        .expect("another client with a good token continues");
    assert!(pr.created);
    assert_valid(&fake);
}

on_every_forge!(
    unauthorized_is_clear:
    gitea_401_is_clear_and_other_clients_continue,
    github_401_is_clear_and_other_clients_continue
);

async fn merge_is_guarded(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "go-io").await;
    let forge = client(&fake, flavour, TOKEN);
    let dir = workspace(&forge, "go-io", "b", "x");
    let req = request("go-io", "b", "fix");
    let pr = forge.publish(&dir, &req).await.expect("publish");
    let scratch = temp_dir("merge");

    fake.set_status(ORG, "go-io", "b", "ci/build", "failure");
    let e = forge
        .merge(&pr, &req, &scratch)
        .await
        .expect_err("failing status");
    assert!(matches!(e, ForgeError::NotGreen { .. }), "{e:?}");
    assert!(e.needs_review());
    assert!(e.to_string().contains("ci/build"), "{e}");
    assert!(
        !fake.pulls(ORG, "go-io")[0]
            .pull
            .as_ref()
            .expect("PR")
            .merged
    );

    fake.set_status(ORG, "go-io", "b", "ci/build", "success");
    if flavour == Flavour::Github {
        fake.add_check_run(ORG, "go-io", "b", "lint", "completed", "failure");
        let e = forge
            .merge(&pr, &req, &scratch)
            .await
            .expect_err("failing check run");
        assert!(e.to_string().contains("lint"), "{e}");
        fake.add_check_run(ORG, "go-io", "b", "lint", "completed", "success");
    }
    if flavour.is_gitea() {
        fake.set_mergeable(ORG, "go-io", pr.number as u64, false);
        let e = forge
            .merge(&pr, &req, &scratch)
            .await
            .expect_err("conflict");
        assert!(matches!(e, ForgeError::Conflict(_)), "{e:?}");
        fake.set_mergeable(ORG, "go-io", pr.number as u64, true);
    }
    if flavour == Flavour::Github {
        // The failing run stays; GitHub reports both runs. Only the newest should count, but
        // dispatch is conservative: a failing run blocks. Start over with a fresh branch.
        let dir = workspace(&forge, "go-io", "c", "y");
        let req = request("go-io", "c", "fix 2");
        let pr = forge.publish(&dir, &req).await.expect("publish");
        fake.set_status(ORG, "go-io", "c", "ci/build", "success");
        fake.add_check_run(ORG, "go-io", "c", "lint", "completed", "success");
        forge.merge(&pr, &req, &scratch).await.expect("green merge");
        assert!(
            fake.pulls(ORG, "go-io")[1]
                .pull
                .as_ref()
                .expect("PR")
                .merged
        );
    } else {
        forge.merge(&pr, &req, &scratch).await.expect("green merge");
        assert!(
            fake.pulls(ORG, "go-io")[0]
                .pull
                .as_ref()
                .expect("PR")
                .merged
        );
    }
    assert_valid(&fake);
}

on_every_forge!(
    merge_is_guarded:
    gitea_merge_is_blocked_by_a_failing_status_and_merges_when_green,
    github_merge_is_blocked_by_failing_checks_and_merges_when_green
);

#[tokio::test(flavor = "multi_thread")]
async fn gitea_stopwatch_starts_and_stops() {
    for flavour in [Flavour::Gitea, Flavour::Forgejo] {
        stopwatch_starts_and_stops(flavour).await;
    }
}

async fn stopwatch_starts_and_stops(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "go-io").await;
    let issue = fake.add_issue(ORG, "go-io", "Tests fail", &[]);
    let forge = client(&fake, flavour, TOKEN);
    forge
        .stopwatch(ORG, "go-io", issue, true)
        .await
        .expect("start");
    assert!(fake.issues(ORG, "go-io")[0].stopwatch);
    forge
        .stopwatch(ORG, "go-io", issue, true)
        .await
        .expect("start again is fine");
    forge
        .stopwatch(ORG, "go-io", issue, false)
        .await
        .expect("stop");
    forge
        .stopwatch(ORG, "go-io", issue, false)
        .await
        .expect("stop again is fine");
    let issue = &fake.issues(ORG, "go-io")[0];
    assert!(!issue.stopwatch);
    assert_eq!(issue.stopwatch_events, ["start", "stop"]);
    assert_valid(&fake);
}

#[tokio::test(flavor = "multi_thread")]
async fn github_stopwatch_is_a_no_op() {
    let fake = fake_with_repo(Flavour::Github, "go-io").await;
    let forge = client(&fake, Flavour::Github, TOKEN);
    forge.stopwatch(ORG, "go-io", 1, true).await.expect("no-op");
    assert!(fake.seen().is_empty());
}

async fn org_listing_filters(flavour: Flavour) {
    let fake = FakeForge::start(flavour, TOKEN).await;
    for (name, archived, fork) in [
        ("go-io", false, false),
        ("go-log", false, false),
        ("go-old", true, false),
        ("go-fork", false, true),
        ("php-x", false, false),
    ] {
        fake.add_repo(ORG, name, archived, fork);
    }
    fake.add_repo("other", "go-elsewhere", false, false);
    let forge = client(&fake, flavour, TOKEN);
    let names = |repos: Vec<dispatch::forge::target::RemoteRepo>| {
        let mut names: Vec<String> = repos.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    };
    let filter = RepoFilter {
        include: vec!["go-*".to_owned()],
        exclude: vec!["go-log".to_owned()],
        ..RepoFilter::default()
    };
    assert_eq!(
        names(forge.list_org_repos(ORG, &filter).await.expect("list")),
        ["go-io"]
    );
    let all = RepoFilter {
        archived: true,
        forks: true,
        ..RepoFilter::default()
    };
    assert_eq!(
        names(forge.list_org_repos(ORG, &all).await.expect("list")),
        ["go-fork", "go-io", "go-log", "go-old", "php-x"]
    );
    assert_valid(&fake);
}

#[tokio::test(flavor = "multi_thread")]
async fn gitea_lists_the_token_users_own_repositories_when_the_owner_is_no_org() {
    for flavour in [Flavour::Gitea, Flavour::Forgejo] {
        let fake = FakeForge::start(flavour, TOKEN).await;
        fake.set_user("alice");
        fake.add_repo("alice", "dotfiles", false, false);
        fake.add_repo("alice", "tool", false, false);
        fake.add_repo(ORG, "go-io", false, false);
        let forge = client(&fake, flavour, TOKEN);
        let mut names: Vec<String> = forge
            .list_org_repos("alice", &RepoFilter::default())
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["dotfiles", "tool"]);
        assert_valid(&fake);
    }
}

on_every_forge!(
    org_listing_filters:
    gitea_org_repositories_are_filtered,
    github_org_repositories_are_filtered
);

async fn issues_across_repositories(flavour: Flavour) {
    let fake = FakeForge::start(flavour, TOKEN).await;
    for repo in ["go-io", "go-log", "go-process"] {
        fake.add_repo(ORG, repo, false, false);
    }
    fake.add_issue(ORG, "go-io", "Flaky test", &["agentic", "bug"]);
    fake.add_issue(ORG, "go-io", "Not for agents", &["bug"]);
    fake.add_issue(ORG, "go-log", "Rotate logs", &["agentic"]);
    fake.add_issue(ORG, "go-process", "Nothing labelled", &[]);
    fake.add_issue(ORG, "go-process", "Signals", &["agentic"]);
    let forge = client(&fake, flavour, TOKEN);
    // A PR is an issue too on both forges: it must not become a target.
    let dir = workspace(&forge, "go-log", "b", "x");
    let options = PublishOptions {
        labels: vec!["agentic".to_owned()],
        ..PublishOptions::default()
    };
    forge
        .publish_with(&dir, &request("go-log", "b", "PR"), &options)
        .await
        .expect("publish");
    let labels = vec!["agentic".to_owned()];
    let mut found = Vec::new();
    for repo in ["go-io", "go-log", "go-process"] {
        for issue in forge.open_issues(ORG, repo, &labels).await.expect("issues") {
            found.push(format!("{repo}#{} {}", issue.number, issue.title));
            assert!(issue.body.starts_with("Body of"), "{issue:?}");
        }
    }
    assert_eq!(
        found,
        [
            "go-io#1 Flaky test",
            "go-log#1 Rotate logs",
            "go-process#2 Signals"
        ]
    );
    assert_valid(&fake);
}

on_every_forge!(
    issues_across_repositories:
    gitea_issues_with_labels_across_three_repositories,
    github_issues_with_labels_across_three_repositories
);

#[tokio::test(flavor = "multi_thread")]
async fn the_token_never_appears_in_errors_or_debug_output() {
    let missing = Secret::from_env("forgejo", "DISPATCH_TEST_TOKEN_THAT_IS_NOT_SET")
        .expect_err("unset variable");
    assert!(
        missing
            .to_string()
            .contains("DISPATCH_TEST_TOKEN_THAT_IS_NOT_SET"),
        "{missing}"
    );

    let fake = fake_with_repo(Flavour::Gitea, "go-io").await;
    let forge = client(&fake, Flavour::Gitea, TOKEN);
    assert!(!format!("{forge:?}").contains(TOKEN));
    let source = forge.clone_source(ORG, "go-io").expect("source");
    assert!(!source.contains(TOKEN));

    fake.fail("GET", "/repos/core/go-io", 500, &[], 10);
    assert_no_token(&forge.default_branch(ORG, "go-io").await.expect_err("500s"));
    let e = forge
        .default_branch(ORG, "nope")
        .await
        .expect_err("no such repository");
    assert!(matches!(e, ForgeError::NoRepository { .. }), "{e:?}");
    assert_no_token(&e);

    let real = GiteaForge::new(
        GiteaFlavour::Gitea,
        "https://forge.example",
        Secret::new(TOKEN),
        "FORGE_TOKEN",
        RemoteOptions::default(),
    )
    .expect("client");
    let source = real.clone_source(ORG, "go-io").expect("source");
    assert_eq!(source, "https://forge.example/core/go-io.git");

    // Pushing over HTTP with the token: git fails (nothing listens there) and its error
    // carries neither the token nor its base64 form in argv or the message.
    let dir = workspace(&forge, "go-io", "b", "x");
    let unreachable = GiteaForge::new(
        GiteaFlavour::Gitea,
        "http://127.0.0.1:9",
        Secret::new(TOKEN),
        "FORGE_TOKEN",
        RemoteOptions {
            retry: options(&fake).retry,
            ..RemoteOptions::default()
        },
    )
    .expect("client");
    let e = unreachable
        .publish(&dir, &request("go-io", "b", "t"))
        .await
        .expect_err("nothing listens");
    assert_no_token(&e);
    assert!(!format!("{e:?}").contains("dG9rLTNmOWExYy"), "{e:?}");
    assert_valid(&fake);
}

/// The name `forge:` gives the fake's flavour.
fn kind(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Gitea => "gitea",
        Flavour::Forgejo => "forgejo",
        Flavour::Github => "github",
    }
}

/// A fixture whose spec runs the scripted agent on the fake forge (org `core`), with the
/// fake's token in `FAKE_FORGE_TOKEN`: the scripted spec head, then `rest`.
fn on_fake(fake: &FakeForge, flavour: Flavour, rest: &str) -> Test {
    let forge = format!(
        r#"{{ kind: {}, url: "{}", token_env: FAKE_FORGE_TOKEN, git_url: "{}" }}"#,
        kind(flavour),
        fake.url,
        fake.git_root.display()
    );
    Test::new("remote")
        .env("FAKE_FORGE_TOKEN", TOKEN)
        .scripted_spec_on(&forge, ORG, rest)
}

/// `dispatch ARGS` in the fixture, off the runtime's worker (the fake forge answers on them).
fn cli(t: &Test, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| t.run(args))
}

/// The units of `dispatch plan spec.yaml --format json ARGS`.
fn plan_units(t: &Test, args: &[&str]) -> Vec<Value> {
    let plan = cli(
        t,
        &[&["plan", "spec.yaml", "--format", "json"], args].concat(),
    )
    .expect_status(0)
    .json();
    plan["units"].as_array().expect("units").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_the_token_and_every_target_repository() {
    let fake = FakeForge::start(Flavour::Gitea, TOKEN).await;
    fake.add_repo(ORG, "present", false, false);
    let t = Test::new("doctor")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("DOCTOR_TOKEN", TOKEN)
        .spec(&format!(
            r#"
            version: 1
            name: d
            forge: {{ kind: gitea, url: "{}", token_env: DOCTOR_TOKEN }}
            defaults: {{ org: {ORG}, agent: codex }}
            jobs:
              - {{ id: j, task: t, repos: [present, absent] }}
            "#,
            fake.url
        ));
    let text = cli(&t, &["doctor", "spec.yaml"]).expect_status(1).stdout;
    // The engine and one repository are missing.
    assert!(
        text.contains(&format!("ok    {ORG}/present is reachable")),
        "{text}"
    );
    assert!(text.contains(&format!("FAIL  {ORG}/absent")), "{text}");
    assert!(
        text.contains("FAIL  cannot reach the Docker engine"),
        "{text}"
    );

    let t = t.env("DOCTOR_TOKEN", "wrong-token");
    let text = cli(&t, &["doctor", "spec.yaml"]).stdout;
    assert!(
        text.contains("DOCTOR_TOKEN"),
        "the message names the variable: {text}"
    );
    assert!(
        !text.contains("wrong-token") && !text.contains(TOKEN),
        "no token text: {text}"
    );
    assert!(!text.contains(&format!("ok    {ORG}/present")), "{text}");
    assert_valid(&fake);
}

/// The jobs of a spec with one unit per open issue labelled `agentic` in the `go-*`
/// repositories.
const ISSUES_LABELLED_AGENTIC: &str = r#"
    jobs:
      - id: fix
        task: Fix what the issue says
        repos: [{ select: { include: ["go-*"], issues: { labels: [agentic] } } }]
    "#;

async fn plan_selects_targets(flavour: Flavour) {
    let fake = FakeForge::start(flavour, TOKEN).await;
    for (name, archived, fork) in [
        ("go-io", false, false),
        ("go-log", false, false),
        ("go-process", false, false),
        ("go-old", true, false),
        ("go-fork", false, true),
        ("php-x", false, false),
    ] {
        fake.add_repo(ORG, name, archived, fork);
    }
    fake.add_issue(ORG, "go-io", "Flaky test", &["agentic", "bug"]);
    fake.add_issue(ORG, "go-io", "Not for agents", &["bug"]);
    fake.add_issue(ORG, "go-log", "Rotate logs", &["agentic"]);
    fake.add_issue(ORG, "go-process", "Nothing labelled", &[]);
    fake.add_issue(ORG, "go-process", "Signals", &["agentic"]);
    fake.add_issue(ORG, "php-x", "Outside the include", &["agentic"]);
    fake.add_issue(ORG, "go-old", "Archived", &["agentic"]);

    // Repositories by pattern: archived repositories and forks are left out.
    let t = on_fake(
        &fake,
        flavour,
        r#"
        jobs:
          - id: fix
            task: Fix what the issue says
            repos: [{ select: { include: ["go-*"], exclude: [go-log] } }]
        "#,
    );
    let ids: Vec<Value> = plan_units(&t, &[])
        .iter()
        .map(|u| u["id"].clone())
        .collect();
    assert_eq!(ids, [json!("fix/core/go-io"), json!("fix/core/go-process")]);

    // Issues with a label across the repositories: one unit per issue, task-N.
    let t = on_fake(&fake, flavour, ISSUES_LABELLED_AGENTIC);
    let units: Vec<Value> = plan_units(&t, &[])
        .iter()
        .map(|u| json!([u["id"], u["workspace"], u["issue_title"]]))
        .collect();
    assert_eq!(
        units,
        [
            json!([
                "fix/core/go-io/task-1",
                "workspaces/core/go-io/task-1",
                "Flaky test"
            ]),
            json!([
                "fix/core/go-log/task-1",
                "workspaces/core/go-log/task-1",
                "Rotate logs"
            ]),
            json!([
                "fix/core/go-process/task-2",
                "workspaces/core/go-process/task-2",
                "Signals"
            ]),
        ]
    );
    // The issue's title and body reach the prompt.
    let out = cli(&t, &["run", "spec.yaml", "--dry-run"]).expect_status(0);
    assert!(out.stdout.contains("#2 — Signals"), "{}", out.stdout);
    assert!(out.stdout.contains("Body of Rotate logs"), "{}", out.stdout);
    let out = cli(
        &t,
        &[
            "render",
            "spec.yaml",
            "--job",
            "fix",
            "--repo",
            "go-io",
            "--key",
            "task-1",
        ],
    )
    .expect_status(0);
    assert!(out.stdout.contains("#1 — Flaky test"), "{}", out.stdout);
    assert!(out.stdout.contains("Body of Flaky test"), "{}", out.stdout);

    // Offline: the forge is asked nothing and the plan says what it could not resolve.
    let asked = fake.seen().len();
    let out = cli(&t, &["plan", "spec.yaml", "--offline"]).expect_status(0);
    assert_eq!(fake.seen().len(), asked, "--offline sent requests");
    assert!(
        out.stdout
            .contains("not resolved: job fix jobs[0].repos[0]: open issues labelled agentic"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("0 units"), "{}", out.stdout);

    // A wrong token: one clear error naming the variable, never the token.
    let t = t.env("FAKE_FORGE_TOKEN", "not-the-token");
    let out = cli(&t, &["plan", "spec.yaml"]).expect_status(1);
    assert!(out.stderr.contains("FAKE_FORGE_TOKEN"), "{}", out.stderr);
    assert!(!out.stderr.contains("not-the-token"), "{}", out.stderr);
    assert_valid(&fake);
}

on_every_forge!(
    plan_selects_targets:
    gitea_plan_selects_repositories_and_issues,
    github_plan_selects_repositories_and_issues
);

async fn pr_target_works_on_the_pr_head(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "go-io").await;
    let forge = client(&fake, flavour, TOKEN);
    let dir = workspace(&forge, "go-io", "feature/x", "first");
    let pr = forge
        .publish(&dir, &request("go-io", "feature/x", "Feature"))
        .await
        .expect("publish");
    let t = on_fake(
        &fake,
        flavour,
        &format!(
            r#"
            jobs:
              - id: fix
                task: Fix what the issue says
                repos: [{{ repo: go-io, pr: {} }}]
            "#,
            pr.number
        ),
    );
    let unit = &plan_units(&t, &[])[0];
    assert_eq!(unit["key"], format!("pr-{}", pr.number));
    assert_eq!(unit["branch"], "feature/x", "{unit}");
    assert_eq!(unit["existing_branch"], true, "{unit}");
    assert_eq!(unit["base"], "main", "{unit}");

    // Offline, the PR's head is unknown: the unit gets a branch of its own.
    let unit = &plan_units(&t, &["--offline"])[0];
    assert_eq!(unit["branch"], format!("agent/fix-pr-{}", pr.number));
    assert!(unit.get("existing_branch").is_none(), "{unit}");

    // A push with a stale lease is refused and leaves the branch alone.
    let before = fake.head(ORG, "go-io", "feature/x");
    std::fs::write(dir.join("fix.txt"), "second").expect("write");
    git(&dir, &["commit", "--quiet", "-am", "second"]);
    let mut stale = request("go-io", "feature/x", "Feature");
    stale.lease = Some("0000000000000000000000000000000000000000".to_owned());
    let error = forge
        .publish(&dir, &stale)
        .await
        .expect_err("a stale lease is refused");
    assert!(
        error
            .to_string()
            .contains("the branch changed on the remote"),
        "{error}"
    );
    assert_eq!(fake.head(ORG, "go-io", "feature/x"), before);
    // With the right lease the push goes through.
    let mut fresh = request("go-io", "feature/x", "Feature");
    fresh.lease = Some(before.clone());
    forge.publish(&dir, &fresh).await.expect("publish");
    assert_ne!(fake.head(ORG, "go-io", "feature/x"), before);
    assert_eq!(fake.pulls(ORG, "go-io").len(), 1, "the PR was duplicated");
    assert_valid(&fake);
}

#[tokio::test(flavor = "multi_thread")]
async fn gitea_pr_target_works_on_the_pr_head() {
    pr_target_works_on_the_pr_head(Flavour::Gitea).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_pr_target_works_on_the_pr_head() {
    pr_target_works_on_the_pr_head(Flavour::Github).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_selections_and_the_token_scopes() {
    let fake = FakeForge::start(Flavour::Github, TOKEN).await;
    for repo in ["go-io", "go-log"] {
        fake.add_repo(ORG, repo, false, false);
    }
    fake.add_issue(ORG, "go-io", "Flaky test", &["agentic"]);
    let t = on_fake(
        &fake,
        Flavour::Github,
        r#"
        jobs:
          - id: fix
            task: Fix what the issue says
            repos: [{ select: { include: ["go-*"] } }]
        "#,
    )
    .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let doctor = || cli(&t, &["doctor", "spec.yaml"]).stdout;
    let text = doctor();
    assert!(
        text.contains("ok    jobs[0].repos[0] selects 2 targets in 2 repositories"),
        "{text}"
    );
    assert!(text.contains("ok    core/go-log is reachable"), "{text}");
    assert!(
        text.contains("does not report the token's scopes"),
        "{text}"
    );

    fake.set_scopes("read:org, public_repo");
    let text = doctor();
    assert!(
        text.contains(
            "warn  the token's scopes (read:org, public_repo) reach public repositories only"
        ),
        "{text}"
    );
    fake.set_scopes("read:org");
    let text = doctor();
    assert!(
        text.contains("FAIL  the token's scopes (read:org) do not include `repo`"),
        "{text}"
    );
    fake.set_scopes("repo, workflow");
    let text = doctor();
    assert!(
        text.contains("ok    the token's scopes (repo, workflow) allow publishing"),
        "{text}"
    );
    assert_valid(&fake);
}

/// The scripted agent of the end-to-end runs: it adds `fix.txt`.
const FIXING_AGENT: &str = "#!/bin/sh\necho fixed > fix.txt\n";

/// `dispatch run` on the fake forge with a scripted agent that adds `fix.txt`, QA that counts
/// its runs in the log, and `merge: when_green`. Returns the unit and the QA log.
fn run_with_guarded_merge(fake: &FakeForge, flavour: Flavour) -> (Value, String) {
    let t = on_fake(
        fake,
        flavour,
        r#"
        jobs:
          - id: fix
            task: Fix what the issue says
            repos: [svc]
            qa: [{ run: "test -f fix.txt && echo qa-green" }]
            pr: { merge: when_green, labels: [agentic] }
        "#,
    )
    .agent(FIXING_AGENT);
    let out = cli(&t, &["run", "spec.yaml", "--output", "json"]);
    assert!(!out.stderr.contains(TOKEN), "{}", out.stderr);
    let report = out.json();
    let qa_log = std::fs::read_to_string(t.path(".dispatch/workspaces/core/svc/fix/meta/qa.log"))
        .unwrap_or_default();
    (unit(&report, "fix/core/svc").clone(), qa_log)
}

async fn conflict_is_rebased_then_merged(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "svc").await;
    fake.require_up_to_date(ORG, "svc");
    // Someone merges an unrelated change while the PR waits: the PR is behind its base.
    fake.advance_base_after_next_pr(ORG, "svc", "other.txt", "someone else\n");
    let (unit, qa_log) = run_with_guarded_merge(&fake, flavour);
    assert_eq!(unit["outcome"], "merged", "{unit}");
    assert_eq!(
        qa_log.matches("qa-green").count(),
        2,
        "QA ran again after the rebase:\n{qa_log}"
    );
    let pulls = fake.pulls(ORG, "svc");
    assert_eq!(pulls.len(), 1, "one PR, updated by the rebased push");
    assert!(
        pulls[0].pull.as_ref().is_some_and(|p| p.merged),
        "{pulls:?}"
    );
    let head = fake.head(ORG, "svc", "agent/fix");
    let main = fake.head(ORG, "svc", "main");
    let rebased = std::process::Command::new("git")
        .args(["merge-base", "--is-ancestor", &main, &head])
        .current_dir(fake.git_root.join(ORG).join("svc.git"))
        .status()
        .expect("git");
    assert!(rebased.success(), "the pushed branch sits on the new base");
    assert!(
        !pulls[0].labels.iter().any(|l| l == "needs-review"),
        "{pulls:?}"
    );
    assert_valid(&fake);
}

async fn conflict_that_rebase_cannot_resolve_needs_review(flavour: Flavour) {
    let fake = fake_with_repo(flavour, "svc").await;
    fake.require_up_to_date(ORG, "svc");
    // Someone adds the very file the agent adds, differently: the rebase conflicts.
    fake.advance_base_after_next_pr(ORG, "svc", "fix.txt", "someone else's fix\n");
    let before = fake.head(ORG, "svc", "main");
    let (unit, _) = run_with_guarded_merge(&fake, flavour);
    assert_eq!(unit["outcome"], "needs_review", "{unit}");
    assert!(
        unit["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("fix.txt"),
        "the reason names the conflict: {unit}"
    );
    let pulls = fake.pulls(ORG, "svc");
    assert_eq!(pulls.len(), 1);
    let pr = &pulls[0];
    assert!(pr.pull.as_ref().is_some_and(|p| !p.merged), "{pr:?}");
    assert!(pr.labels.iter().any(|l| l == "needs-review"), "{pr:?}");
    assert!(
        pr.comments
            .iter()
            .any(|c| c.contains("needs a person") && c.contains("fix.txt")),
        "{pr:?}"
    );
    assert_ne!(
        fake.head(ORG, "svc", "main"),
        before,
        "someone else's change stays"
    );
    if flavour != Flavour::Github {
        let colour = fake
            .labels(ORG, "svc")
            .into_iter()
            .find(|(name, _)| name == "needs-review")
            .map(|(_, colour)| colour);
        assert_eq!(colour.as_deref(), Some("#d93f0b"));
    }
    assert_valid(&fake);
}

#[tokio::test(flavor = "multi_thread")]
async fn gitea_conflict_rebase_and_merge_through_dispatch_run() {
    if !available() {
        return;
    }
    conflict_is_rebased_then_merged(Flavour::Gitea).await;
    conflict_that_rebase_cannot_resolve_needs_review(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_conflict_rebase_and_merge_through_dispatch_run() {
    if !available() {
        return;
    }
    conflict_is_rebased_then_merged(Flavour::Github).await;
    conflict_that_rebase_cannot_resolve_needs_review(Flavour::Github).await;
}

async fn plan_remote_shows_what_publish_would_do(flavour: Flavour) {
    let fake = FakeForge::start(flavour, TOKEN).await;
    for repo in ["new", "stale", "same", "gone"] {
        fake.add_repo(ORG, repo, false, false);
    }
    let t = on_fake(
        &fake,
        flavour,
        r#"
        jobs:
          - id: fix
            task: Fix what the issue says
            repos: [new, stale, same, gone]
        "#,
    );
    let loaded = dispatch::spec::load(&t.path("spec.yaml")).expect("spec loads");
    let forge = client(&fake, flavour, TOKEN);
    let open_pr = |repo: &'static str, title: String, body: String| {
        let forge = &forge;
        async move {
            let dir = workspace(forge, repo, "agent/fix", repo);
            let mut pr = request(repo, "agent/fix", &title);
            pr.body = body;
            forge.publish(&dir, &pr).await.expect("publish")
        }
    };
    // What publish would send for `same`: the same functions render it.
    let mut context = dispatch::plan::unit_context(&loaded.spec, &loaded.targets[2]);
    context.base = Some("main".to_owned());
    let title = dispatch::plan::pr_title(&loaded, 0, &context).expect("title");
    let body = dispatch::plan::pr_body(&loaded, 0, &context).expect("body");
    let stale = open_pr("stale", "An older title".to_owned(), body.clone()).await;
    let same = open_pr("same", title, body.clone()).await;
    let gone = open_pr("gone", "Done".to_owned(), body).await;
    fake.close_pull(ORG, "gone", gone.number as u64, true);
    // An earlier run opened `stale` and `same` (else publish would adopt them).
    record_published(&t, &loaded, &[("stale", &stale), ("same", &same)]).await;

    let actions: Vec<Value> = plan_units(&t, &["--remote"])
        .iter()
        .map(|u| json!([u["repo"], u["publish"]["action"], u["publish"]["pr"]]))
        .collect();
    assert_eq!(actions[0], json!(["new", "create", null]), "{actions:?}");
    assert_eq!(actions[1][1], "update", "{actions:?}");
    assert_eq!(
        actions[2],
        json!(["same", "unchanged", same.reference]),
        "{actions:?}"
    );
    assert_eq!(actions[3][1], "closed", "{actions:?}");
    let closes: Vec<Value> = plan_units(&t, &["--remote"])
        .iter()
        .map(|u| u["publish"]["closes_if_unchanged"].clone())
        .collect();
    assert_eq!(closes, [Value::Null, json!(true), json!(true), Value::Null]);
    assert!(
        actions[3][2]
            .as_str()
            .is_some_and(|pr| pr.ends_with(", merged")),
        "{actions:?}"
    );
    let out = cli(&t, &["plan", "spec.yaml", "--remote"]).expect_status(0);
    assert!(
        out.stdout.contains("publish: closed already")
            && out.stdout.contains(&format!(
                "publish: unchanged ({}); closed if the agent changes nothing",
                same.reference
            )),
        "{}",
        out.stdout
    );
    // Without --remote the plan is the same as ever: no forge state in it.
    let plain = plan_units(&t, &[]);
    assert!(
        plain.iter().all(|u| u.get("publish").is_none()),
        "{plain:?}"
    );
    assert_valid(&fake);
}

/// Records in the fixture's journal an earlier run of `loaded` whose publish opened `prs`
/// (repository and PR) and left them open, as a run of dispatch would have.
async fn record_published(
    t: &Test,
    loaded: &dispatch::spec::LoadedSpec,
    prs: &[(&str, &dispatch::forge::PrRef)],
) {
    use dispatch::state::RunEvent;
    use dispatch::vocab::{NodeStatus, Outcome, PrOrigin};
    let journal = dispatch::state::Journal::start(&t.path(".dispatch")).expect("the journal");
    let plan = dispatch::plan::build(loaded);
    dispatch::exec::record_run(
        &journal,
        "earlier",
        "spec.yaml",
        &plan,
        None,
        Default::default(),
    )
    .await
    .expect("the run is recorded");
    for (repo, pr) in prs {
        let unit = format!("fix/{ORG}/{repo}");
        for event in [
            RunEvent::NodeFinished {
                node: format!("{unit}:publish"),
                status: NodeStatus::Done,
                outcome: Some(Outcome::Changed),
                exit_code: None,
                reason: None,
            },
            RunEvent::PrOpened {
                unit,
                pr: pr.reference.clone(),
                origin: PrOrigin::Opened,
            },
        ] {
            journal
                .record_now("earlier", event)
                .await
                .expect("recorded");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gitea_plan_remote_shows_what_publish_would_do() {
    plan_remote_shows_what_publish_would_do(Flavour::Gitea).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_plan_remote_shows_what_publish_would_do() {
    plan_remote_shows_what_publish_would_do(Flavour::Github).await;
}

/// The agent of the issue sweep: what it does depends on the repository named in its prompt.
const SWEEP_AGENT: &str = r#"#!/bin/sh
case "$(grep -o 'core/[a-z-]*' "$1" | head -n 1)" in
  core/svc-ok) echo fixed > fix.txt ;;
  core/svc-fail) echo "cannot build"; exit 3 ;;
  core/svc-ask) echo "Which API version?" > BLOCKED.md ;;
  core/svc-slow) sleep 30 ;;
esac
"#;

#[tokio::test(flavor = "multi_thread")]
async fn issue_sweep_runs_one_unit_per_labelled_issue_with_stopwatches_on_every_outcome() {
    if !available() {
        return;
    }
    let flavour = Flavour::Forgejo;
    let fake = FakeForge::start(flavour, TOKEN).await;
    for repo in ["svc-ok", "svc-fail", "svc-ask", "svc-slow"] {
        fake.add_repo(ORG, repo, false, false);
        fake.add_issue(ORG, repo, "Unlabelled", &[]);
        fake.add_issue(ORG, repo, &format!("Fix {repo}"), &["agentic"]);
    }
    let t = on_fake(
        &fake,
        flavour,
        r##"
        jobs:
          - id: fix
            task: Fix what the issue says
            timeout: 3s
            repos: [{ select: { include: ["svc-*"], issues: { labels: [agentic] } } }]
            qa: []
            pr: { labels: [agentic, bot], label_colours: { bot: "#123456" } }
        "##,
    )
    .agent(SWEEP_AGENT);
    // Not every unit changed.
    let report = cli(&t, &["run", "spec.yaml", "--output", "json"])
        .expect_status(1)
        .json();
    assert_eq!(
        outcomes(&report),
        [
            ("fix/core/svc-ask/task-2", "blocked"),
            ("fix/core/svc-fail/task-2", "agent_failed"),
            ("fix/core/svc-ok/task-2", "changed"),
            ("fix/core/svc-slow/task-2", "timed_out"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<BTreeMap<_, _>>()
    );
    for repo in ["svc-ok", "svc-fail", "svc-ask", "svc-slow"] {
        let issues = fake.issues(ORG, repo);
        assert_eq!(
            issues[1].stopwatch_events,
            ["start", "stop"],
            "{repo}: the stopwatch ran while the agent did"
        );
        assert!(
            issues[0].stopwatch_events.is_empty(),
            "{repo}: the unlabelled issue is no unit"
        );
    }
    let pulls = fake.pulls(ORG, "svc-ok");
    assert_eq!(pulls.len(), 1);
    assert!(pulls[0].body.contains("Closes #2"), "{}", pulls[0].body);
    assert!(
        fake.issues(ORG, "svc-ok")[1]
            .comments
            .iter()
            .any(|c| c.contains("/pulls/3")),
        "the issue links its PR: {:?}",
        fake.issues(ORG, "svc-ok")[1].comments
    );
    let labels = fake.labels(ORG, "svc-ok");
    assert!(
        labels.contains(&("bot".to_owned(), "#123456".to_owned())),
        "{labels:?}"
    );
    for repo in ["svc-fail", "svc-ask", "svc-slow"] {
        assert!(
            fake.pulls(ORG, repo).is_empty(),
            "{repo} has nothing to publish"
        );
    }
    assert_valid(&fake);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ssh_push_never_sees_the_token() {
    let fake = fake_with_repo(Flavour::Gitea, "go-io").await;
    let forge = client(&fake, Flavour::Gitea, TOKEN);
    let dir = workspace(&forge, "go-io", "agent/x", "x");
    // git runs `core.sshCommand` for ssh:// URLs: this one records what it was given.
    let seen = dir.parent().expect("parent").join("ssh-saw.txt");
    let ssh = dir.parent().expect("parent").join("ssh.sh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\n{{ env; echo \"$@\"; }} >> '{}'\nexit 1\n",
            seen.display()
        ),
    )
    .expect("ssh script");
    git(
        &dir,
        &[
            "config",
            "core.sshCommand",
            &format!("sh {}", ssh.display()),
        ],
    );
    git(&dir, &["config", "ssh.variant", "ssh"]);
    let over_ssh = AnyForge::Gitea(
        GiteaForge::new(
            GiteaFlavour::Gitea,
            &fake.url,
            Secret::new(TOKEN),
            "FORGE_TOKEN",
            RemoteOptions {
                git_base: Some("ssh://git@127.0.0.1:2222".to_owned()),
                ..options(&fake)
            },
        )
        .expect("client"),
    );
    let error = over_ssh
        .publish(&dir, &request("go-io", "agent/x", "t"))
        .await
        .expect_err("the stand-in ssh refuses");
    assert!(matches!(error, ForgeError::Git(_)), "{error:?}");
    let saw = std::fs::read_to_string(&seen).expect("git ran the ssh command");
    assert!(
        saw.contains("core/go-io.git"),
        "the ssh command got the repository: {saw}"
    );
    assert!(!saw.contains(TOKEN), "the token reached ssh: {saw}");
    assert!(
        !saw.contains("Authorization"),
        "an HTTP header reached ssh: {saw}"
    );
    assert!(!error.to_string().contains(TOKEN));
}

/// Issue titles a hostile forge serves, one kind of sequence each: a clear screen, an OSC 8
/// hyperlink, an OSC 52 clipboard write, a right-to-left override, isolates, C1 controls, a
/// CR and backspaces that overwrite.
const HOSTILE_TITLES: &[&str] = &[
    "Flaky \x1b[2J\x1b[H test",
    "\x1b]8;;https://evil.example\x07Docs\x1b]8;;\x07",
    "\x1b]52;c;cm0gLXJmIH4=\x07copy",
    "invoice\u{202e}fdp.exe",
    "\u{2066}\u{2067}\u{2068}iso\u{2069}",
    "C1 \u{9b}2J \u{85}\u{80}",
    "ok\r\x08\x08FAIL",
];

/// A repository name a hostile forge serves: it sets the window title (no valid name, so it
/// is no target).
const HOSTILE_REPO: &str = "go-\x1b]0;pwned\x07x";

#[tokio::test(flavor = "multi_thread")]
async fn plan_on_a_terminal_shows_hostile_names_visibly() {
    use crate::terminal::assert_inert;
    let fake = FakeForge::start(Flavour::Gitea, TOKEN).await;
    fake.add_repo(ORG, "go-io", false, false);
    fake.add_repo(ORG, HOSTILE_REPO, false, false);
    for title in HOSTILE_TITLES {
        fake.add_issue(ORG, "go-io", title, &["agentic"]);
    }
    fake.add_issue(ORG, HOSTILE_REPO, "Rename", &["agentic"]);
    let t = on_fake(&fake, Flavour::Gitea, ISSUES_LABELLED_AGENTIC);

    let plan =
        tokio::task::block_in_place(|| t.run_on_terminal(&["plan", "spec.yaml"])).expect_status(0);
    assert_inert(&plan.stdout, false);
    for shown in [
        r"(Flaky \x1b[2J\x1b[H test)",
        r"(\x1b]8;;https://evil.example\x07Docs\x1b]8;;\x07)",
        r"(\x1b]52;c;cm0gLXJmIH4=\x07copy)",
        r"(invoice\u{202e}fdp.exe)",
        r"(\u{2066}\u{2067}\u{2068}iso\u{2069})",
        r"(C1 \u{9b}2J \u{85}\u{80})",
        r"(ok\r\x08\x08FAIL)",
    ] {
        plan.expect_shown(shown);
    }
    assert!(!plan.stdout_text().contains("pwned"));

    // The prompts of a dry run quote the issues: visible on a terminal too.
    let dry = tokio::task::block_in_place(|| t.run_on_terminal(&["run", "spec.yaml", "--dry-run"]))
        .expect_status(0);
    assert_inert(&dry.stdout, false);
    dry.expect_shown(r"#2 — \x1b]8;;https://evil.example\x07Docs\x1b]8;;\x07");

    // JSON, and a prompt piped to a file, keep the forge's text exactly.
    let titles: Vec<Value> = plan_units(&t, &[])
        .iter()
        .map(|u| u["issue_title"].clone())
        .collect();
    let want: Vec<Value> = HOSTILE_TITLES.iter().map(|title| json!(title)).collect();
    assert_eq!(titles, want);
    let render: Vec<&str> = "render spec.yaml --job fix --repo go-io --key task-4"
        .split(' ')
        .collect();
    let prompt = cli(&t, &render).expect_status(0).stdout;
    assert!(prompt.contains("#4 — invoice\u{202e}fdp.exe"), "{prompt:?}");
    assert_valid(&fake);
}

/// The review agent of the review tests: a review with two findings in the form the `review`
/// template asks for (codex's own), and a control sequence a forge must never get.
const REVIEWING_AGENT: &str = r#"#!/bin/sh
printf 'One path is not handled.\033[2J\n\nFull review comments:\n\n'
printf -- '- [P1] Handle an empty input — /workspace/repo/fix.txt:1-1\n  The file is empty when the input is.\n\n'
printf -- '- [P3] Name the constant — fix.txt:1\n  Say what it is.\n'
"#;

/// A review on a remote forge: the review is posted on the PR, each finding is an issue
/// linking the PR, and a second run files no finding twice.
async fn review_findings_reach_the_pr(flavour: Flavour) {
    if !available() {
        return;
    }
    let fake = fake_with_repo(flavour, "svc").await;
    let t = on_fake(
        &fake,
        flavour,
        r#"
          reviewer:
            command: [sh, /opt/review.sh]
            mounts: [{ source: review.sh, target: /opt/review.sh }]
            network: none
        jobs:
          - id: fix
            task: Fix what the issue says
            repos: [svc]
            qa: []
            review: { agent: reviewer, file_issues: true, issue_labels: [found, bot] }
        "#,
    )
    .agent(FIXING_AGENT)
    .file("review.sh", REVIEWING_AGENT);
    let report = cli(&t, &["run", "spec.yaml", "--output", "json"]).json();
    assert_eq!(
        unit(&report, "fix/core/svc")["outcome"],
        "changed",
        "{report}"
    );
    let issues = fake.issues(ORG, "svc");
    let pr = issues.iter().find(|i| i.pull.is_some()).expect("the PR");
    let found: Vec<_> = issues.iter().filter(|i| i.pull.is_none()).collect();
    assert_eq!(
        found.iter().map(|i| i.title.as_str()).collect::<Vec<_>>(),
        ["[P1] Handle an empty input", "[P3] Name the constant"]
    );
    for issue in &found {
        assert_eq!(issue.labels, ["found", "bot"], "{issue:?}");
        assert!(
            issue.body.contains(&format!("of #{}", pr.number)),
            "the issue links the PR: {}",
            issue.body
        );
    }
    assert!(
        found[0].body.contains("Location: `fix.txt:1-1`"),
        "{}",
        found[0].body
    );
    assert_eq!(pr.comments.len(), 1, "{:?}", pr.comments);
    let comment = &pr.comments[0];
    assert!(comment.starts_with("### Review by `reviewer`"), "{comment}");
    assert!(
        comment.contains("- [P1] Handle an empty input"),
        "{comment}"
    );
    assert!(
        !comment.contains('\u{1b}'),
        "no control sequence: {comment:?}"
    );
    assert!(
        comment.contains(&format!(
            "Issues opened for the findings: #{}, #{}.",
            found[0].number, found[1].number
        )),
        "{comment}"
    );
    let log = t.read(".dispatch/workspaces/core/svc/fix/meta/review.log");
    assert!(log.contains("the review has 2 finding(s)"), "{log}");

    // A second run reviews again: its findings are open issues already, not filed twice.
    cli(&t, &["run", "spec.yaml", "--output", "json"]);
    let again: Vec<_> = fake
        .issues(ORG, "svc")
        .into_iter()
        .filter(|i| i.pull.is_none())
        .collect();
    assert_eq!(again.len(), 2, "{again:?}");
    assert_valid(&fake);
}

on_every_forge!(review_findings_reach_the_pr: gitea_review_findings_reach_the_pr, github_review_findings_reach_the_pr);

/// `dispatch prs close|reopen SPEC` on a remote forge: the unit's PR is closed, then reopened,
/// through the API (every request checked against the forge's description).
async fn prs_close_and_reopen_a_specs_prs(flavour: Flavour) {
    let jobs = r#"
        jobs:
          - { id: fix, task: Fix it, repos: [svc], qa: [] }
        "#;
    let Some((fake, t)) = svc_fixture(flavour, jobs).await else {
        return;
    };
    let report = cli(&t, &["run", "spec.yaml", "--output", "json"]).json();
    assert_eq!(
        unit(&report, "fix/core/svc")["outcome"],
        "changed",
        "{report}"
    );
    let state = |fake: &FakeForge| fake.pulls(ORG, "svc")[0].pull.clone().expect("a PR").state;
    assert_eq!(state(&fake), "open");
    let closed = cli(&t, &["prs", "close", "spec.yaml", "--json"]).json();
    // The PR's web URL: `/pulls/1` on Gitea and Forgejo, `/pull/1` on GitHub.
    assert!(
        closed[0]["pr"]
            .as_str()
            .is_some_and(|pr| pr.ends_with("/1")),
        "{closed}"
    );
    assert_eq!(state(&fake), "closed");
    let again = cli(&t, &["prs", "close", "spec.yaml"]);
    assert!(
        again.stdout.contains("no open PR of branch agent/fix"),
        "{}",
        again.stdout
    );
    cli(&t, &["prs", "reopen", "spec.yaml"]);
    assert_eq!(state(&fake), "open");
    assert_valid(&fake);
}

on_every_forge!(prs_close_and_reopen_a_specs_prs: gitea_prs_close_and_reopen_a_specs_prs, github_prs_close_and_reopen_a_specs_prs);

#[tokio::test(flavor = "multi_thread")]
async fn max_open_prs_holds_publish_back_until_a_pr_is_closed() {
    let fake = fake_with_repo(Flavour::Gitea, "svc1").await;
    fake.add_repo(ORG, "svc2", false, false);
    fake.add_repo(ORG, "svc3", false, false);
    let t = on_fake(
        &fake,
        Flavour::Gitea,
        r#"
        limits: { total: 1 }
        rollout: { max_open_prs: 2 }
        jobs:
          - { id: fix, task: Fix it, repos: [svc1, svc2, svc3], qa: [] }
        "#,
    )
    .agent(FIXING_AGENT);
    let out = cli(&t, &["run", "spec.yaml", "--output", "json"]);
    let report = out.json();
    for repo in ["svc1", "svc2"] {
        assert_eq!(
            unit(&report, &format!("fix/core/{repo}"))["outcome"],
            "changed",
            "{report}"
        );
        assert_eq!(fake.pulls(ORG, repo).len(), 1);
    }
    let held = unit(&report, "fix/core/svc3");
    assert_eq!(held["outcome"], "skipped", "{held}");
    assert_eq!(held["held"], "open_prs", "{held}");
    assert_eq!(
        held["reason"],
        "rollout.max_open_prs: 2 PRs of this spec are open (the cap is 2); publish waits for fewer",
        "{held}"
    );
    assert!(fake.pulls(ORG, "svc3").is_empty(), "publish was held back");

    // People close one of the spec's PRs: resume publishes the held unit from its publish node
    // (its agent does not run again), counting the forge's open PRs afresh.
    cli(
        &t,
        &["prs", "close", "spec.yaml", "--only", "fix/core/svc1"],
    )
    .expect_status(0);
    let run = report["run"].as_str().expect("a run id");
    let out = cli(&t, &["resume", run, "--output", "json"]);
    assert!(
        out.stderr
            .contains("held back by rollout.max_open_prs starts again: fix/core/svc3"),
        "{}",
        out.stderr
    );
    let report = out.json();
    let unit = unit(&report, "fix/core/svc3");
    assert_eq!(unit["outcome"], "changed", "{unit}");
    assert_eq!(fake.pulls(ORG, "svc3").len(), 1);
    let status = cli(&t, &["status", run, "--output", "json"]).json();
    let nodes = crate::support::unit(&status, "fix/core/svc3")["nodes"].clone();
    let attempts = |kind: &str| {
        nodes
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["kind"] == kind))
            .map(|n| n["attempts"].clone())
    };
    assert_eq!(
        attempts("agent"),
        Some(1.into()),
        "the agent ran once: {nodes}"
    );
    assert_eq!(attempts("publish"), Some(1.into()), "{nodes}");
    assert_valid(&fake);
}

/// The scripted agent of a re-run that finds nothing to change.
const IDLE_AGENT: &str = "#!/bin/sh\necho 'nothing to change here'\n";

/// The fake with repository `core/svc` and a fixture whose `jobs` run [`FIXING_AGENT`] on it;
/// `None` without the Docker engine.
async fn svc_fixture(flavour: Flavour, jobs: &str) -> Option<(FakeForge, Test)> {
    if !available() {
        return None;
    }
    let fake = fake_with_repo(flavour, "svc").await;
    let t = on_fake(&fake, flavour, jobs).agent(FIXING_AGENT);
    Some((fake, t))
}

/// The PR of branch `head` of `core/svc` on the fake.
fn pull_of(fake: &FakeForge, head: &str) -> fake::Issue {
    fake.pulls(ORG, "svc")
        .into_iter()
        .find(|p| p.pull.as_ref().is_some_and(|p| p.head == head))
        .unwrap_or_else(|| panic!("no PR of {head}"))
}

/// `pr.on_no_changes` on a remote forge: a re-run whose agent changes nothing closes the PR
/// the first run opened, with the comment, and deletes its branch through the API (every
/// request checked against the description); `keep` leaves PR and branch. Withdrawing again
/// (what a resumed run does) finds the PR closed and the branch gone, and fails on neither.
async fn a_re_run_that_changes_nothing_withdraws_the_pr(flavour: Flavour) {
    let jobs = r#"
        jobs:
          - { id: fix, task: Fix it, repos: [svc], qa: [] }
          - { id: keep, task: Fix it, repos: [svc], qa: [], pr: { on_no_changes: keep } }
        "#;
    let Some((fake, t)) = svc_fixture(flavour, jobs).await else {
        return;
    };
    let first = cli(&t, &["run", "spec.yaml", "--output", "json"]).json();
    assert_eq!(
        unit(&first, "fix/core/svc")["outcome"],
        "changed",
        "{first}"
    );
    let first_run = first["run"].as_str().expect("a run id").to_owned();
    let opened = pull_of(&fake, "agent/fix");
    let reference = unit(&first, "fix/core/svc")["pr"].clone();
    assert!(fake.has_branch(ORG, "svc", "agent/fix"));

    std::fs::write(t.path("agent.sh"), IDLE_AGENT).expect("the idle agent");
    let second = cli(&t, &["run", "spec.yaml", "--no-cache", "--output", "json"])
        .expect_status(0)
        .json();
    let second_run = second["run"].as_str().expect("a run id").to_owned();
    assert_eq!(
        outcomes(&second),
        BTreeMap::from([
            ("fix/core/svc".to_owned(), "no_changes".to_owned()),
            ("keep/core/svc".to_owned(), "no_changes".to_owned()),
        ]),
        "{second}"
    );
    assert_eq!(
        unit(&second, "fix/core/svc")["reason"],
        format!(
            "the agent changed nothing; closed PR {} of run {first_run} and deleted its branch agent/fix",
            reference.as_str().expect("the PR's reference")
        ),
        "{second}"
    );
    let closed = pull_of(&fake, "agent/fix");
    assert_eq!(closed.number, opened.number);
    assert_eq!(
        closed.pull.as_ref().map(|p| p.state.as_str()),
        Some("closed")
    );
    assert!(
        closed.comments.iter().any(|c| c.starts_with(&format!(
            "dispatch closed this pull request: on run {second_run} the agent found nothing to change"
        ))),
        "{:?}",
        closed.comments
    );
    assert!(!fake.has_branch(ORG, "svc", "agent/fix"));
    let kept = pull_of(&fake, "agent/keep");
    assert_eq!(kept.pull.as_ref().map(|p| p.state.as_str()), Some("open"));
    assert!(fake.has_branch(ORG, "svc", "agent/keep"));

    let forge = client(&fake, flavour, TOKEN);
    let again = forge
        .withdraw(
            &request("svc", "agent/fix", "Fix it"),
            opened.number,
            "again",
        )
        .await
        .expect("a second withdrawal is no error");
    assert_eq!(
        again,
        dispatch::forge::Withdrawn {
            pr: dispatch::forge::PrWas::Closed,
            branch_deleted: false
        }
    );
    assert_eq!(pull_of(&fake, "agent/fix").comments, closed.comments);
    assert_valid(&fake);
}

on_every_forge!(a_re_run_that_changes_nothing_withdraws_the_pr: gitea_a_re_run_that_changes_nothing_withdraws_the_pr, github_a_re_run_that_changes_nothing_withdraws_the_pr);

/// An open PR someone else opened for the unit's branch is adopted: `plan --remote` says so
/// with its author, the run updates it (title, body, labels) instead of opening a second one
/// and says it adopted it, and a later run that changes nothing leaves it open (dispatch
/// closes only what it opened).
async fn an_open_pr_someone_else_opened_is_adopted(flavour: Flavour) {
    let jobs = r#"
        jobs:
          - { id: fix, task: Fix it, repos: [svc], qa: [], pr: { labels: [agentic] } }
        "#;
    let Some((fake, t)) = svc_fixture(flavour, jobs).await else {
        return;
    };
    let theirs = fake.add_pull(ORG, "svc", "agent/fix", "Their take", "alice");
    let planned = plan_units(&t, &["--remote"]);
    assert_eq!(planned[0]["publish"]["action"], "adopt", "{planned:?}");
    assert_eq!(planned[0]["publish"]["author"], "alice", "{planned:?}");
    assert!(
        planned[0]["publish"]["pr"]
            .as_str()
            .is_some_and(|pr| pr.ends_with(&format!("/{theirs}"))),
        "{planned:?}"
    );
    let tree = cli(&t, &["plan", "spec.yaml", "--remote"]).expect_status(0);
    assert!(
        tree.stdout.contains("publish: adopt (") && tree.stdout.contains(", opened by alice)"),
        "{}",
        tree.stdout
    );

    let report = cli(&t, &["run", "spec.yaml", "--output", "json"])
        .expect_status(0)
        .json();
    let adopted = unit(&report, "fix/core/svc");
    assert_eq!(adopted["outcome"], "changed", "{report}");
    let reference = adopted["pr"].as_str().expect("the PR").to_owned();
    assert_eq!(
        adopted["reason"],
        format!("adopted PR {reference}, opened by alice, instead of opening a second one"),
        "{report}"
    );
    let pulls = fake.pulls(ORG, "svc");
    assert_eq!(pulls.len(), 1, "no second PR: {pulls:?}");
    assert_eq!(pulls[0].number, theirs);
    assert_eq!(pulls[0].title, "Fix it");
    assert!(
        pulls[0].body.contains("Produced by dispatch"),
        "{}",
        pulls[0].body
    );
    assert_eq!(pulls[0].labels, ["agentic"]);

    std::fs::write(t.path("agent.sh"), IDLE_AGENT).expect("the idle agent");
    let idle = cli(&t, &["run", "spec.yaml", "--no-cache", "--output", "json"])
        .expect_status(0)
        .json();
    assert_eq!(
        unit(&idle, "fix/core/svc")["reason"],
        "the agent changed nothing",
        "{idle}"
    );
    let pr = pull_of(&fake, "agent/fix");
    assert_eq!(pr.pull.as_ref().map(|p| p.state.as_str()), Some("open"));
    assert!(fake.has_branch(ORG, "svc", "agent/fix"));
    assert_valid(&fake);
}

on_every_forge!(an_open_pr_someone_else_opened_is_adopted: gitea_an_open_pr_someone_else_opened_is_adopted, github_an_open_pr_someone_else_opened_is_adopted);

/// A canary `c1`, then a batch `b1`, `b2`, waiting for the canary's PR to be green; the CI of
/// `c1` reports `state` on every head.
fn wait_for_checks(fake: &FakeForge, state: &str) -> (Test, Value) {
    for repo in ["c1", "b1", "b2"] {
        fake.add_repo(ORG, repo, false, false);
    }
    fake.set_status_of_every_head(ORG, "c1", "ci/build", state);
    let t = on_fake(
        fake,
        Flavour::Gitea,
        r#"
        limits: { total: 2 }
        rollout: { canary: 1, batch: 2, wait_for_checks: true }
        jobs:
          - { id: fix, task: Fix it, repos: [c1, b1, b2], qa: [] }
        "#,
    )
    .agent(FIXING_AGENT);
    let report = cli(&t, &["run", "spec.yaml", "--output", "json"]).json();
    (t, report)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_starts_once_the_canarys_pr_is_green() {
    let fake = FakeForge::start(Flavour::Gitea, TOKEN).await;
    let (_t, report) = wait_for_checks(&fake, "success");
    for repo in ["c1", "b1", "b2"] {
        assert_eq!(
            unit(&report, &format!("fix/core/{repo}"))["outcome"],
            "changed",
            "{report}"
        );
    }
    // The canary's head was asked about before the batch's first PR was opened.
    let seen = fake.seen();
    let asked = seen
        .iter()
        .position(|s| {
            s.method == "GET"
                && s.path.contains("/repos/core/c1/commits/")
                && s.path.ends_with("/status")
        })
        .unwrap_or_else(|| panic!("the canary's checks were asked: {seen:?}"));
    let batch = seen
        .iter()
        .position(|s| {
            s.method == "POST" && (s.path.ends_with("/b1/pulls") || s.path.ends_with("/b2/pulls"))
        })
        .unwrap_or_else(|| panic!("the batch opened PRs: {seen:?}"));
    assert!(asked < batch, "{seen:?}");
    assert_valid(&fake);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_red_canary_pr_halts_the_rollout_before_the_batch() {
    let fake = FakeForge::start(Flavour::Gitea, TOKEN).await;
    let (_t, report) = wait_for_checks(&fake, "failure");
    assert_eq!(
        unit(&report, "fix/core/c1")["outcome"],
        "changed",
        "{report}"
    );
    for repo in ["b1", "b2"] {
        let held = unit(&report, &format!("fix/core/{repo}"));
        assert_eq!(held["outcome"], "skipped", "{held}");
        assert_eq!(held["held"], "rollout", "{held}");
        let reason = held["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("rollout halted: the PRs of wave 0 are not green (")
                && reason.contains("ci/build"),
            "{reason}"
        );
        assert!(fake.pulls(ORG, repo).is_empty(), "no PR for {repo}");
    }
    assert_valid(&fake);
}
