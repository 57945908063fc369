//! The Forgejo/Gitea and GitHub forges against a fake server that checks every request
//! against the published API descriptions, with git pushes going to real bare repositories.

mod forge_fake;

use std::path::PathBuf;
use std::time::Duration;

use dispatch::forge::forgejo::{Flavour as GiteaFlavour, GiteaForge};
use dispatch::forge::github::GithubForge;
use dispatch::forge::http::{RetryPolicy, Secret};
use dispatch::forge::remote::{PublishOptions, RemoteForge, RemoteOptions, RepoFilter};
use dispatch::forge::{Forge, ForgeError, PrRequest};
use forge_fake::{git, temp_dir, FakeForge, Flavour};

const TOKEN: &str = "tok-3f9a1c-very-secret";
const ORG: &str = "core";

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

fn client(fake: &FakeForge, flavour: Flavour, token: &str) -> RemoteForge {
    let token = Secret::new(token);
    match flavour {
        Flavour::Gitea | Flavour::Forgejo => RemoteForge::Gitea(
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
        Flavour::Github => RemoteForge::Github(
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
fn workspace(forge: &RemoteForge, repo: &str, branch: &str, text: &str) -> PathBuf {
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

#[tokio::test(flavor = "multi_thread")]
async fn gitea_publish_creates_then_updates_the_pr() {
    publish_creates_then_updates(Flavour::Gitea).await;
    publish_creates_then_updates(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_publish_creates_then_updates_the_pr() {
    publish_creates_then_updates(Flavour::Github).await;
}

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

#[tokio::test(flavor = "multi_thread")]
async fn gitea_429_with_retry_after_is_honoured() {
    rate_limit_is_honoured(Flavour::Gitea).await;
    rate_limit_is_honoured(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_429_with_retry_after_is_honoured() {
    rate_limit_is_honoured(Flavour::Github).await;
}

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

#[tokio::test(flavor = "multi_thread")]
async fn gitea_500_then_success() {
    server_error_then_success(Flavour::Gitea).await;
    server_error_then_success(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_500_then_success() {
    server_error_then_success(Flavour::Github).await;
}

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

#[tokio::test(flavor = "multi_thread")]
async fn gitea_401_is_clear_and_other_clients_continue() {
    unauthorized_is_clear(Flavour::Gitea).await;
    unauthorized_is_clear(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_401_is_clear_and_other_clients_continue() {
    unauthorized_is_clear(Flavour::Github).await;
}

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

#[tokio::test(flavor = "multi_thread")]
async fn gitea_merge_is_blocked_by_a_failing_status_and_merges_when_green() {
    merge_is_guarded(Flavour::Gitea).await;
    merge_is_guarded(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_merge_is_blocked_by_failing_checks_and_merges_when_green() {
    merge_is_guarded(Flavour::Github).await;
}

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
    let names = |repos: Vec<dispatch::forge::remote::RemoteRepo>| {
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
async fn gitea_org_repositories_are_filtered() {
    org_listing_filters(Flavour::Gitea).await;
    org_listing_filters(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_org_repositories_are_filtered() {
    org_listing_filters(Flavour::Github).await;
}

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

#[tokio::test(flavor = "multi_thread")]
async fn gitea_issues_with_labels_across_three_repositories() {
    issues_across_repositories(Flavour::Gitea).await;
    issues_across_repositories(Flavour::Forgejo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_issues_with_labels_across_three_repositories() {
    issues_across_repositories(Flavour::Github).await;
}

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

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_the_token_and_every_target_repository() {
    let fake = FakeForge::start(Flavour::Gitea, TOKEN).await;
    fake.add_repo(ORG, "present", false, false);
    let dir = temp_dir("doctor");
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: d\nforge: {{ kind: gitea, url: \"{}\", token_env: DOCTOR_TOKEN }}\ndefaults: {{ org: {ORG}, agent: codex }}\njobs:\n  - {{ id: j, task: t, repos: [present, absent] }}\n",
            fake.url
        ),
    )
    .expect("write spec");
    let doctor = |token: &'static str| {
        let spec = spec.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
                .args(["--color", "never", "doctor", &spec.to_string_lossy()])
                .env("DOCTOR_TOKEN", token)
                .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
                .output()
                .await
                .expect("dispatch runs")
        }
    };
    let good = doctor(TOKEN).await;
    let text = String::from_utf8_lossy(&good.stdout).to_string();
    assert_eq!(
        good.status.code(),
        Some(1),
        "the engine and one repository are missing:\n{text}"
    );
    assert!(
        text.contains(&format!("ok    {ORG}/present is reachable")),
        "{text}"
    );
    assert!(text.contains(&format!("FAIL  {ORG}/absent")), "{text}");
    assert!(
        text.contains("FAIL  cannot reach the Docker engine"),
        "{text}"
    );

    let bad = doctor("wrong-token").await;
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(
        text.contains("DOCTOR_TOKEN"),
        "the message names the variable: {text}"
    );
    assert!(
        !text.contains("wrong-token") && !text.contains(TOKEN),
        "no token text: {text}"
    );
    assert!(!text.contains(&format!("ok    {ORG}/present")), "{text}");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
