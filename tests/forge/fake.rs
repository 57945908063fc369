//! A fake Forgejo/Gitea or GitHub server for the remote forge tests: axum on 127.0.0.1:0,
//! keeping repositories, issues, labels, PRs, statuses, check runs, stopwatches and comments
//! in memory, with git repositories as real bare repositories on disk.
//!
//! Every request is checked against the forge's published API description in
//! `../shared/reference/`: the method and path template must exist, query parameters must be
//! declared, and every top-level JSON body field must be defined by the operation's body
//! schema (required ones present). Violations are recorded; tests assert there are none.
//! Faults (429 with `Retry-After`, 500, 401) are programmed per method and path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// Which API the fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Gitea (checked against Gitea's description).
    Gitea,
    /// Forgejo: Gitea's API, checked against Forgejo's description.
    Forgejo,
    /// GitHub REST.
    Github,
}

impl Flavour {
    /// Gitea's API v1 (Gitea or Forgejo).
    pub fn is_gitea(self) -> bool {
        self != Self::Github
    }
}

/// One programmed fault: the next `times` requests matching method and path fail so.
#[derive(Clone, Debug)]
struct Fault {
    method: String,
    path_contains: String,
    status: u16,
    headers: Vec<(String, String)>,
    times: u32,
}

/// A request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// Status answered.
    pub status: u16,
}

#[derive(Default)]
struct Repo {
    default_branch: String,
    archived: bool,
    fork: bool,
    labels: Vec<(u64, String, String)>,
    issues: Vec<Issue>,
    statuses: BTreeMap<String, Vec<(String, String)>>,
    /// The statuses of every head that has none of its own (a CI that reports on each push).
    every_head: Vec<(String, String)>,
    checks: BTreeMap<String, Vec<(String, String, String)>>,
    /// Branch protection "up to date before merging": a PR whose head does not contain the
    /// base's head is not mergeable.
    require_up_to_date: bool,
    /// A file (path, content) someone else commits to the base right after the next PR opens.
    advance_base: Option<(String, String)>,
}

/// An issue or PR of the fake.
#[derive(Clone, Debug, Default)]
pub struct Issue {
    /// Number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Label names.
    pub labels: Vec<String>,
    /// Comment bodies.
    pub comments: Vec<String>,
    /// Stopwatch running.
    pub stopwatch: bool,
    /// Stopwatch starts and stops.
    pub stopwatch_events: Vec<&'static str>,
    /// Set for PRs.
    pub pull: Option<Pull>,
    /// Who opened it (`user.login`): the token's user for what the API created.
    pub author: String,
}

/// The PR part of an issue.
#[derive(Clone, Debug, Default)]
pub struct Pull {
    /// Head branch.
    pub head: String,
    /// Base branch.
    pub base: String,
    /// `open` or `closed`.
    pub state: String,
    /// Merged.
    pub merged: bool,
    /// Whether the fake lets it merge.
    pub mergeable: bool,
    /// Draft (GitHub).
    pub draft: bool,
    /// Reviewers requested.
    pub reviewers: Vec<String>,
}

struct Inner {
    flavour: Flavour,
    token: String,
    git_root: PathBuf,
    repos: BTreeMap<(String, String), Repo>,
    faults: Vec<Fault>,
    violations: Vec<String>,
    seen: Vec<Seen>,
    next_id: u64,
    descriptions: Vec<Description>,
    base: String,
    /// `x-oauth-scopes` sent with every answer (GitHub's classic tokens), when set.
    scopes: Option<String>,
    /// The token's user: repositories added under this name are a user's, not an org's.
    user: Option<String>,
}

impl Inner {
    /// The state of `org/repo`, which a test added.
    fn repo(&mut self, org: &str, repo: &str) -> &mut Repo {
        self.repos
            .get_mut(&(org.to_owned(), repo.to_owned()))
            .expect("repository exists")
    }
}

type App = Arc<Mutex<Inner>>;

/// A running fake forge.
pub struct FakeForge {
    /// Web root (Gitea; the API is below `/api/v1`) or API root (GitHub).
    pub url: String,
    /// Directory of bare repositories: `{git_root}/{org}/{repo}.git`.
    pub git_root: PathBuf,
    app: App,
}

impl FakeForge {
    /// Starts a fake that accepts `token`, on the current tokio runtime.
    pub async fn start(flavour: Flavour, token: &str) -> Self {
        let git_root = temp_dir(match flavour {
            Flavour::Gitea => "gitea",
            Flavour::Forgejo => "forgejo",
            Flavour::Github => "github",
        });
        let descriptions = match flavour {
            Flavour::Gitea => vec![Description::load("gitea-api-subset.json", "/api/v1")],
            Flavour::Forgejo => vec![Description::load("forgejo-api-subset.json", "/api/v1")],
            Flavour::Github => vec![Description::load("github-api-subset.json", "")],
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let app = Arc::new(Mutex::new(Inner {
            flavour,
            token: token.to_owned(),
            git_root: git_root.clone(),
            repos: BTreeMap::new(),
            faults: Vec::new(),
            violations: Vec::new(),
            seen: Vec::new(),
            next_id: 1,
            descriptions,
            base: url.clone(),
            scopes: None,
            user: None,
        }));
        let router = Router::new().fallback(handle).with_state(app.clone());
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("fake forge serves");
        });
        Self { url, git_root, app }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.app.lock().expect("fake forge lock")
    }

    /// Adds `org/name` with a bare repository holding one commit on `main`.
    pub fn add_repo(&self, org: &str, name: &str, archived: bool, fork: bool) {
        let bare = self.git_root.join(org).join(format!("{name}.git"));
        let work = self.git_root.join(".work").join(org).join(name);
        std::fs::create_dir_all(&work).expect("work dir");
        std::fs::write(work.join("README.md"), format!("# {name}\n")).expect("readme");
        git(&work, &["init", "--quiet", "--initial-branch=main"]);
        git(&work, &["add", "--all"]);
        git(&work, &["commit", "--quiet", "-m", "Initial commit"]);
        std::fs::create_dir_all(bare.parent().expect("parent")).expect("org dir");
        git(
            &self.git_root,
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=main",
                &bare.to_string_lossy(),
            ],
        );
        git(&work, &["push", "--quiet", &bare.to_string_lossy(), "main"]);
        self.lock().repos.insert(
            (org.to_owned(), name.to_owned()),
            Repo {
                default_branch: "main".to_owned(),
                archived,
                fork,
                ..Repo::default()
            },
        );
    }

    /// Adds an issue with `labels` (creating the labels) and returns its number.
    pub fn add_issue(&self, org: &str, repo: &str, title: &str, labels: &[&str]) -> u64 {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let r = inner
            .repos
            .get_mut(&(org.to_owned(), repo.to_owned()))
            .expect("repository exists");
        for label in labels {
            if !r.labels.iter().any(|l| l.1 == *label) {
                r.labels
                    .push((inner.next_id, (*label).to_owned(), "#00aabb".to_owned()));
                inner.next_id += 1;
            }
        }
        let number = r.issues.len() as u64 + 1;
        r.issues.push(Issue {
            number,
            title: title.to_owned(),
            body: format!("Body of {title}"),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            ..Issue::default()
        });
        number
    }

    /// Sets the status `context` of the head of `branch` to `state`.
    pub fn set_status(&self, org: &str, repo: &str, branch: &str, context: &str, state: &str) {
        let sha = self.head(org, repo, branch);
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        let list = r.statuses.entry(sha).or_default();
        list.retain(|(c, _)| c != context);
        list.push((context.to_owned(), state.to_owned()));
    }

    /// Sets the status `context` of every head of `org/repo` that has none of its own, now
    /// and pushed later, to `state`.
    pub fn set_status_of_every_head(&self, org: &str, repo: &str, context: &str, state: &str) {
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        r.every_head.retain(|(c, _)| c != context);
        r.every_head.push((context.to_owned(), state.to_owned()));
    }

    /// Adds a check run (GitHub) on the head of `branch`.
    pub fn add_check_run(
        &self,
        org: &str,
        repo: &str,
        branch: &str,
        name: &str,
        status: &str,
        conclusion: &str,
    ) {
        let sha = self.head(org, repo, branch);
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        r.checks.entry(sha).or_default().push((
            name.to_owned(),
            status.to_owned(),
            conclusion.to_owned(),
        ));
    }

    /// The commit `branch` points at in the bare repository.
    pub fn head(&self, org: &str, repo: &str, branch: &str) -> String {
        let bare = self.git_root.join(org).join(format!("{repo}.git"));
        git(&bare, &["rev-parse", &format!("refs/heads/{branch}")])
    }

    /// Makes `login` the token's user: repositories added under that owner are the user's own
    /// (listed by `/user/repos`; `/orgs/{login}/repos` is 404).
    pub fn set_user(&self, login: &str) {
        self.lock().user = Some(login.to_owned());
    }

    /// Sends `x-oauth-scopes: SCOPES` with every answer from now on, as GitHub does for
    /// classic tokens.
    pub fn set_scopes(&self, scopes: &str) {
        self.lock().scopes = Some(scopes.to_owned());
    }

    /// The next `times` requests with `method` whose path contains `path_contains` are answered
    /// with `status` and `headers`.
    pub fn fail(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: u32,
    ) {
        self.lock().faults.push(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            times,
        });
    }

    /// Requests that broke the API description.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Every request seen.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The issues and PRs of a repository.
    pub fn issues(&self, org: &str, repo: &str) -> Vec<Issue> {
        self.lock().repos[&(org.to_owned(), repo.to_owned())]
            .issues
            .clone()
    }

    /// The PRs of a repository.
    pub fn pulls(&self, org: &str, repo: &str) -> Vec<Issue> {
        self.issues(org, repo)
            .into_iter()
            .filter(|i| i.pull.is_some())
            .collect()
    }

    /// Label names and colours of a repository.
    pub fn labels(&self, org: &str, repo: &str) -> Vec<(String, String)> {
        self.lock().repos[&(org.to_owned(), repo.to_owned())]
            .labels
            .iter()
            .map(|(_, n, c)| (n.clone(), c.clone()))
            .collect()
    }

    /// Marks a PR unmergeable (a conflict).
    pub fn set_mergeable(&self, org: &str, repo: &str, number: u64, mergeable: bool) {
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        if let Some(pull) = r.issues[number as usize - 1].pull.as_mut() {
            pull.mergeable = mergeable;
        }
    }

    /// Closes PR `number` of `org/repo`, as merged or not.
    pub fn close_pull(&self, org: &str, repo: &str, number: u64, merged: bool) {
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        if let Some(pull) = r.issues[number as usize - 1].pull.as_mut() {
            pull.state = "closed".to_owned();
            pull.merged = merged;
        }
    }

    /// Someone else (`author`) pushes branch `head` of `org/repo` (from `main`, with one commit
    /// of theirs) and opens a PR of it titled `title`; its number.
    pub fn add_pull(&self, org: &str, repo: &str, head: &str, title: &str, author: &str) -> u64 {
        let bare = self.git_root.join(org).join(format!("{repo}.git"));
        git(&bare, &["branch", head, "main"]);
        commit_to(&bare, head, "theirs.txt", &format!("{author} was here\n"));
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        let number = r.issues.len() as u64 + 1;
        r.issues.push(Issue {
            number,
            title: title.to_owned(),
            body: format!("{author}'s description"),
            author: author.to_owned(),
            pull: Some(Pull {
                head: head.to_owned(),
                base: "main".to_owned(),
                state: "open".to_owned(),
                mergeable: true,
                ..Pull::default()
            }),
            ..Issue::default()
        });
        number
    }

    /// Whether `org/repo` has branch `branch`.
    pub fn has_branch(&self, org: &str, repo: &str, branch: &str) -> bool {
        let bare = self.git_root.join(org).join(format!("{repo}.git"));
        Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ])
            .current_dir(bare)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Protects the base branches of `org/repo`: a PR merges only when it is up to date.
    pub fn require_up_to_date(&self, org: &str, repo: &str) {
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        r.require_up_to_date = true;
    }

    /// Right after the next PR of `org/repo` opens, someone else commits `path` with `content`
    /// to its base.
    pub fn advance_base_after_next_pr(&self, org: &str, repo: &str, path: &str, content: &str) {
        let mut inner = self.lock();
        let r = inner.repo(org, repo);
        r.advance_base = Some((path.to_owned(), content.to_owned()));
    }
}

/// Whether `head` contains `ancestor` in the bare repository.
fn contains(bare: &Path, ancestor: &str, head: &str) -> bool {
    std::process::Command::new("git")
        .args(["merge-base", "--is-ancestor", ancestor, head])
        .current_dir(bare)
        .status()
        .is_ok_and(|s| s.success())
}

/// Commits `path` with `content` onto `branch` of the bare repository, as another user would.
fn commit_to(bare: &Path, branch: &str, path: &str, content: &str) {
    let work = temp_dir("someone-else");
    git(
        work.parent().expect("parent"),
        &[
            "clone",
            "--quiet",
            "--branch",
            branch,
            &bare.to_string_lossy(),
            &work.to_string_lossy(),
        ],
    );
    std::fs::write(work.join(path), content).expect("write");
    git(&work, &["add", "--all"]);
    git(
        &work,
        &[
            "-c",
            "user.name=someone",
            "-c",
            "user.email=someone@example.com",
            "commit",
            "--quiet",
            "-m",
            "someone else's change",
        ],
    );
    git(&work, &["push", "--quiet", "origin", branch]);
}

/// Deletes `branch` of the bare repository: 204, or `missing` when it has no such branch.
fn delete_branch(bare: &Path, branch: &str, missing: u16) -> Response {
    let full = format!("refs/heads/{branch}");
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(bare)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !run(&["rev-parse", "--verify", "--quiet", &full]) {
        return respond(missing, json!({ "message": "Reference does not exist" }));
    }
    assert!(run(&["update-ref", "-d", &full]), "the fake deletes {full}");
    respond(204, Value::Null)
}

/// Runs git synchronously (test set-up only) and returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@localhost",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A fresh directory under the target directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("forge-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// ---------------------------------------------------------------------------------------------
// Validation against the API descriptions.

/// One API description (Swagger 2.0 or OpenAPI 3).
struct Description {
    name: &'static str,
    doc: Value,
    prefix: &'static str,
}

impl Description {
    fn load(file: &'static str, prefix: &'static str) -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/").to_owned() + file;
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Self {
            name: file,
            doc: serde_json::from_str(&text).expect("API description is JSON"),
            prefix,
        }
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        let mut value = value;
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let mut target = &self.doc;
            for part in reference.trim_start_matches("#/").split('/') {
                target = &target[part];
            }
            value = target;
        }
        value
    }

    /// Violations of one request (empty when the description allows it).
    fn check(
        &self,
        method: &Method,
        path: &str,
        query: &[String],
        body: Option<&Value>,
    ) -> Vec<String> {
        let what = format!("{method} {path} ({})", self.name);
        let Some(rest) = path.strip_prefix(self.prefix) else {
            return vec![format!("{what}: not below {}", self.prefix)];
        };
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let method_key = method.as_str().to_lowercase();
        let paths = self.doc["paths"].as_object().expect("paths");
        let mut path_found = false;
        for (template, item) in paths {
            let params = self.parameters(item, item.get(&method_key));
            if !self.matches(template, &segments, &params) {
                continue;
            }
            path_found = true;
            let Some(op) = item.get(&method_key) else {
                continue;
            };
            let params = self.parameters(item, Some(op));
            let mut problems = Vec::new();
            for key in query {
                if !params
                    .iter()
                    .any(|p| p["in"] == "query" && p["name"] == key.as_str())
                {
                    problems.push(format!("{what}: query parameter `{key}` is not defined"));
                }
            }
            let schema = params
                .iter()
                .find(|p| p["in"] == "body")
                .map(|p| &p["schema"])
                .or_else(|| {
                    let body = self.resolve(&op["requestBody"]);
                    body["content"]
                        .get("application/json")
                        .map(|c| &c["schema"])
                });
            match (schema, body) {
                (None, Some(_)) => problems.push(format!("{what}: the operation takes no body")),
                (Some(schema), Some(body)) => {
                    if let Err(e) = self.fields(schema, body) {
                        problems.push(format!("{what}: {e}"));
                    }
                }
                _ => {}
            }
            return problems;
        }
        if path_found {
            vec![format!("{what}: the method is not defined for this path")]
        } else {
            vec![format!("{what}: no such path in the description")]
        }
    }

    fn parameters<'a>(&'a self, item: &'a Value, op: Option<&'a Value>) -> Vec<&'a Value> {
        let mut all: Vec<&Value> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| self.resolve(p))
            .collect();
        if let Some(op) = op {
            all.extend(
                op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| self.resolve(p)),
            );
        }
        all
    }

    /// Whether `segments` fit `template`; `{param}` takes one segment, or several when the
    /// parameter is `x-multi-segment`.
    fn matches(&self, template: &str, segments: &[&str], params: &[&Value]) -> bool {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        fn go(parts: &[&str], segments: &[&str], multi: &dyn Fn(&str) -> bool) -> bool {
            match (parts.first(), segments.first()) {
                (None, None) => true,
                (Some(part), Some(seg)) => {
                    if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                        if seg.is_empty() {
                            return false;
                        }
                        if multi(name) {
                            (1..=segments.len()).any(|n| go(&parts[1..], &segments[n..], multi))
                        } else {
                            go(&parts[1..], &segments[1..], multi)
                        }
                    } else {
                        part == seg && go(&parts[1..], &segments[1..], multi)
                    }
                }
                _ => false,
            }
        }
        let multi = |name: &str| {
            params
                .iter()
                .any(|p| p["name"] == name && p["x-multi-segment"] == true)
        };
        go(&parts, segments, &multi)
    }

    /// Whether `body`'s top-level fields are defined by `schema` and the required ones present.
    fn fields(&self, schema: &Value, body: &Value) -> Result<(), String> {
        let schema = self.resolve(schema);
        for key in ["oneOf", "anyOf"] {
            if let Some(alternatives) = schema[key].as_array() {
                let errors: Vec<String> = alternatives
                    .iter()
                    .filter_map(|a| self.fields(a, body).err())
                    .collect();
                return if errors.len() < alternatives.len() {
                    Ok(())
                } else {
                    Err(format!("body fits no alternative: {}", errors.join("; ")))
                };
            }
        }
        if schema["type"] == "array" {
            return if body.is_array() {
                Ok(())
            } else {
                Err("the body must be an array".to_owned())
            };
        }
        let Some(object) = body.as_object() else {
            return Err("the body must be an object".to_owned());
        };
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        let mut parts = vec![schema];
        parts.extend(
            schema["allOf"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| self.resolve(s)),
        );
        for part in parts {
            if let Some(p) = part["properties"].as_object() {
                properties.extend(p.clone());
            }
            required.extend(part["required"].as_array().into_iter().flatten().cloned());
        }
        for key in object.keys() {
            if !properties.contains_key(key) {
                return Err(format!("body field `{key}` is not defined"));
            }
        }
        for key in required {
            if let Some(key) = key.as_str() {
                if !object.contains_key(key) {
                    return Err(format!("required body field `{key}` is missing"));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

fn respond(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("status");
    if body.is_null() {
        status.into_response()
    } else {
        (status, axum::Json(body)).into_response()
    }
}

async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let head_lookup = {
        let mut inner = app.lock().expect("fake forge lock");
        let json_body = if body.is_empty() {
            None
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v) => Some(v),
                Err(e) => {
                    inner
                        .violations
                        .push(format!("{method} {path}: body is not JSON: {e}"));
                    None
                }
            }
        };
        let keys: Vec<String> = query.iter().map(|(k, _)| k.clone()).collect();
        let problems: Vec<String> = inner
            .descriptions
            .iter()
            .flat_map(|d| d.check(&method, &path, &keys, json_body.as_ref()))
            .collect();
        inner.violations.extend(problems);
        let expected = match inner.flavour {
            Flavour::Gitea | Flavour::Forgejo => format!("token {}", inner.token),
            Flavour::Github => format!("Bearer {}", inner.token),
        };
        let auth = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let status_or =
            if auth != expected {
                Some(respond(401, json!({ "message": "Bad credentials" })))
            } else if let Some(fault) = inner.faults.iter_mut().find(|f| {
                f.times > 0 && f.method == method.as_str() && path.contains(&f.path_contains)
            }) {
                fault.times -= 1;
                let mut response = respond(fault.status, json!({ "message": "injected fault" }));
                for (k, v) in &fault.headers {
                    response.headers_mut().insert(
                        axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                        v.parse().expect("header value"),
                    );
                }
                Some(response)
            } else {
                None
            };
        if let Some(response) = status_or {
            inner.seen.push(Seen {
                at: Instant::now(),
                method: method.to_string(),
                path: path.clone(),
                status: response.status().as_u16(),
            });
            return response;
        }
        (json_body, inner.git_root.clone(), inner.flavour)
    };
    let (json_body, git_root, flavour) = head_lookup;
    let prefix = if flavour.is_gitea() { "/api/v1" } else { "" };
    let rest = path.strip_prefix(prefix).unwrap_or(&path).to_owned();
    let segments: Vec<String> = rest
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    // Head commits come from the bare repositories, outside the lock.
    let heads = match segments.as_slice() {
        [r, org, repo, ..] if r == "repos" => {
            read_heads(&git_root.join(org).join(format!("{repo}.git"))).await
        }
        _ => BTreeMap::new(),
    };
    let mut inner = app.lock().expect("fake forge lock");
    let mut response = route(&mut inner, &method, &segments, &query, json_body, &heads);
    if let Some(scopes) = &inner.scopes {
        response
            .headers_mut()
            .insert("x-oauth-scopes", scopes.parse().expect("header value"));
    }
    inner.seen.push(Seen {
        at: Instant::now(),
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
    });
    response
}

async fn read_heads(bare: &Path) -> BTreeMap<String, String> {
    let output = tokio::process::Command::new("git")
        .args([
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads",
        ])
        .current_dir(bare)
        .output()
        .await;
    let mut heads = BTreeMap::new();
    if let Ok(output) = output {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((name, sha)) = line.split_once(' ') {
                heads.insert(name.to_owned(), sha.to_owned());
            }
        }
    }
    heads
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn q<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn page<T: Clone>(items: Vec<T>, query: &[(String, String)], flavour: Flavour) -> Vec<T> {
    let size_key = if flavour.is_gitea() {
        "limit"
    } else {
        "per_page"
    };
    let size: usize = q(query, size_key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let page: usize = q(query, "page").and_then(|v| v.parse().ok()).unwrap_or(1);
    items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect()
}

fn route(
    inner: &mut Inner,
    method: &Method,
    segments: &[String],
    query: &[(String, String)],
    body: Option<Value>,
    heads: &BTreeMap<String, String>,
) -> Response {
    let flavour = inner.flavour;
    let base = inner.base.clone();
    // The token's user opens what the API creates.
    let login = inner
        .user
        .clone()
        .unwrap_or_else(|| "dispatch-bot".to_owned());
    let git_root = inner.git_root.clone();
    let body = body.unwrap_or(Value::Null);
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = method.as_str();
    let owner_repos = |owner: &str| -> Vec<Value> {
        inner
            .repos
            .iter()
            .filter(|((o, _), _)| o == owner)
            .map(|((o, n), r)| {
                json!({ "name": n, "full_name": format!("{o}/{n}"), "owner": { "login": o },
                        "default_branch": r.default_branch, "archived": r.archived, "fork": r.fork })
            })
            .collect()
    };
    match s.as_slice() {
        ["orgs", org, "repos"] if inner.user.as_deref() == Some(*org) => {
            return respond(404, json!({ "message": "GetOrgByName" }));
        }
        ["orgs", org, "repos"] => {
            return respond(200, Value::Array(page(owner_repos(org), query, flavour)));
        }
        ["user", "repos"] => {
            let user = inner.user.clone().unwrap_or_default();
            return respond(200, Value::Array(page(owner_repos(&user), query, flavour)));
        }
        _ => {}
    }
    let ["repos", org, name, rest @ ..] = s.as_slice() else {
        return respond(404, json!({ "message": "not found" }));
    };
    let (org, name) = (org.to_string(), name.to_string());
    let next_id = &mut inner.next_id;
    let Some(repo) = inner.repos.get_mut(&(org.clone(), name.clone())) else {
        return respond(404, json!({ "message": "repository not found" }));
    };
    let web = format!("{base}/{org}/{name}");
    let bare = git_root.join(&org).join(format!("{name}.git"));
    let require_up_to_date = repo.require_up_to_date;
    let up_to_date = |p: &Pull| match (heads.get(&p.base), heads.get(&p.head)) {
        (Some(base), Some(head)) => !require_up_to_date || contains(&bare, base, head),
        _ => !require_up_to_date,
    };
    let pull_json = |i: &Issue| {
        let p = i.pull.as_ref().expect("a PR");
        let sha = heads.get(&p.head).cloned().unwrap_or_default();
        let url = match flavour {
            Flavour::Gitea | Flavour::Forgejo => format!("{web}/pulls/{}", i.number),
            Flavour::Github => format!("https://github.example/{org}/{name}/pull/{}", i.number),
        };
        json!({ "number": i.number, "title": i.title, "body": i.body, "state": p.state,
                "user": { "login": i.author },
                "html_url": url, "merged": p.merged, "mergeable": p.mergeable && up_to_date(p), "draft": p.draft,
                "head": { "ref": p.head, "sha": sha, "repo": { "full_name": format!("{org}/{name}") } },
                "base": { "ref": p.base },
                "labels": i.labels.iter().map(|l| json!({ "name": l })).collect::<Vec<_>>() })
    };
    let issue_json = |i: &Issue| {
        let mut v = json!({ "number": i.number, "title": i.title, "body": i.body, "state": "open",
            "labels": i.labels.iter().map(|l| json!({ "name": l })).collect::<Vec<_>>() });
        if i.pull.is_some() {
            v["pull_request"] = json!({ "merged": false });
        }
        v
    };
    let number = |text: &str| text.parse::<usize>().ok().filter(|n| *n >= 1);
    match (m, rest) {
        ("GET", []) => respond(
            200,
            json!({ "name": name, "default_branch": repo.default_branch, "archived": repo.archived, "fork": repo.fork }),
        ),
        ("GET", ["pulls"]) => {
            let head_filter =
                q(query, "head").map(|h| h.split_once(':').map_or(h, |(_, b)| b).to_owned());
            let state = q(query, "state").unwrap_or("open").to_owned();
            let items: Vec<Value> = repo
                .issues
                .iter()
                .rev() // newest first, as both forges list them
                .filter(|i| {
                    i.pull
                        .as_ref()
                        .is_some_and(|p| state == "all" || p.state == state)
                })
                .filter(|i| {
                    head_filter
                        .as_ref()
                        .is_none_or(|h| &i.pull.as_ref().expect("PR").head == h)
                })
                .map(pull_json)
                .collect();
            respond(200, Value::Array(page(items, query, flavour)))
        }
        ("POST", ["pulls"]) => {
            let head = body["head"].as_str().unwrap_or_default().to_owned();
            if !heads.contains_key(&head) {
                return respond(422, json!({ "message": "head branch does not exist" }));
            }
            let number = repo.issues.len() as u64 + 1;
            repo.issues.push(Issue {
                number,
                title: body["title"].as_str().unwrap_or_default().to_owned(),
                body: body["body"].as_str().unwrap_or_default().to_owned(),
                author: login.clone(),
                pull: Some(Pull {
                    head,
                    base: body["base"].as_str().unwrap_or_default().to_owned(),
                    state: "open".to_owned(),
                    mergeable: true,
                    draft: body["draft"].as_bool().unwrap_or(false),
                    reviewers: body["reviewers"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                    ..Pull::default()
                }),
                ..Issue::default()
            });
            let answer = respond(201, pull_json(repo.issues.last().expect("just pushed")));
            if let Some((path, content)) = repo.advance_base.take() {
                let base = body["base"].as_str().unwrap_or("main");
                commit_to(&bare, base, path.as_str(), content.as_str());
            }
            answer
        }
        ("GET" | "PATCH", ["pulls", n]) => {
            let Some(i) = number(n)
                .and_then(|n| repo.issues.get_mut(n - 1))
                .filter(|i| i.pull.is_some())
            else {
                return respond(404, json!({ "message": "no such PR" }));
            };
            if m == "PATCH" {
                if let Some(t) = body["title"].as_str() {
                    i.title = t.to_owned();
                }
                if let Some(b) = body["body"].as_str() {
                    i.body = b.to_owned();
                }
                if let Some(b) = body["base"].as_str() {
                    i.pull.as_mut().expect("PR").base = b.to_owned();
                }
                if let Some(state) = body["state"].as_str() {
                    i.pull.as_mut().expect("PR").state = state.to_owned();
                }
            }
            respond(200, pull_json(i))
        }
        ("POST" | "PUT", ["pulls", n, "merge"]) => {
            let Some(i) = number(n)
                .and_then(|n| repo.issues.get_mut(n - 1))
                .filter(|i| i.pull.is_some())
            else {
                return respond(404, json!({ "message": "no such PR" }));
            };
            let p = i.pull.as_mut().expect("PR");
            if !p.mergeable || p.merged || !up_to_date(p) {
                return respond(405, json!({ "message": "Pull Request is not mergeable" }));
            }
            p.merged = true;
            p.state = "closed".to_owned();
            match flavour {
                Flavour::Gitea | Flavour::Forgejo => respond(200, Value::Null),
                Flavour::Github => respond(
                    200,
                    json!({ "merged": true, "message": "Pull Request successfully merged" }),
                ),
            }
        }
        ("GET", ["labels"]) => {
            let items: Vec<Value> = repo
                .labels
                .iter()
                .map(|(id, n, c)| json!({ "id": id, "name": n, "color": c }))
                .collect();
            respond(200, Value::Array(page(items, query, flavour)))
        }
        ("POST", ["labels"]) => {
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            if repo.labels.iter().any(|l| l.1 == name) {
                return respond(409, json!({ "message": "label exists" }));
            }
            let id = *next_id;
            *next_id += 1;
            let color = body["color"].as_str().unwrap_or_default().to_owned();
            repo.labels.push((id, name.clone(), color.clone()));
            respond(201, json!({ "id": id, "name": name, "color": color }))
        }
        ("GET", ["issues"]) => {
            let wanted: Vec<&str> = q(query, "labels")
                .map(|l| l.split(',').collect())
                .unwrap_or_default();
            let only_issues = q(query, "type") == Some("issues");
            let items: Vec<Value> = repo
                .issues
                .iter()
                .filter(|i| !(only_issues && i.pull.is_some()))
                .filter(|i| i.pull.as_ref().is_none_or(|p| p.state == "open"))
                .filter(|i| wanted.iter().all(|w| i.labels.iter().any(|l| l == w)))
                .map(issue_json)
                .collect();
            respond(200, Value::Array(page(items, query, flavour)))
        }
        ("POST", ["issues"]) => {
            let number = repo.issues.len() as u64 + 1;
            // GitHub takes label names and creates the missing ones; Forgejo and Gitea take
            // label ids, which dispatch adds with a second call.
            let mut labels = Vec::new();
            for label in body["labels"].as_array().cloned().unwrap_or_default() {
                match (label.as_str(), flavour) {
                    (Some(n), Flavour::Github) => {
                        if !repo.labels.iter().any(|l| l.1 == n) {
                            repo.labels
                                .push((*next_id, n.to_owned(), "ededed".to_owned()));
                            *next_id += 1;
                        }
                        labels.push(n.to_owned());
                    }
                    _ => return respond(422, json!({ "message": format!("label {label}") })),
                }
            }
            repo.issues.push(Issue {
                number,
                title: body["title"].as_str().unwrap_or_default().to_owned(),
                body: body["body"].as_str().unwrap_or_default().to_owned(),
                labels,
                ..Issue::default()
            });
            respond(201, issue_json(repo.issues.last().expect("just pushed")))
        }
        (_, ["issues", n, tail @ ..]) => {
            let Some(index) = number(n).filter(|n| *n <= repo.issues.len()) else {
                return respond(404, json!({ "message": "no such issue" }));
            };
            match (m, tail) {
                ("GET", []) => respond(200, issue_json(&repo.issues[index - 1])),
                ("GET", ["comments"]) => {
                    let items: Vec<Value> = repo.issues[index - 1]
                        .comments
                        .iter()
                        .enumerate()
                        .map(|(id, b)| json!({ "id": id + 1, "body": b }))
                        .collect();
                    respond(200, Value::Array(items))
                }
                ("POST", ["comments"]) => {
                    let text = body["body"].as_str().unwrap_or_default().to_owned();
                    repo.issues[index - 1].comments.push(text.clone());
                    respond(
                        201,
                        json!({ "id": repo.issues[index - 1].comments.len(), "body": text }),
                    )
                }
                ("POST", ["labels"]) => {
                    let given: Vec<Value> = match &body {
                        Value::Array(a) => a.clone(),
                        v => v["labels"].as_array().cloned().unwrap_or_default(),
                    };
                    let mut names = Vec::new();
                    for label in given {
                        let found = match &label {
                            Value::Number(id) => repo
                                .labels
                                .iter()
                                .find(|l| Some(l.0) == id.as_u64())
                                .map(|l| l.1.clone()),
                            Value::String(n) if flavour == Flavour::Github => {
                                if !repo.labels.iter().any(|l| &l.1 == n) {
                                    repo.labels.push((*next_id, n.clone(), "ededed".to_owned()));
                                    *next_id += 1;
                                }
                                Some(n.clone())
                            }
                            Value::String(n) => {
                                repo.labels.iter().find(|l| &l.1 == n).map(|l| l.1.clone())
                            }
                            _ => None,
                        };
                        match found {
                            Some(n) => names.push(n),
                            None => {
                                return respond(
                                    422,
                                    json!({ "message": format!("unknown label {label}") }),
                                )
                            }
                        }
                    }
                    let issue = &mut repo.issues[index - 1];
                    for n in names {
                        if !issue.labels.contains(&n) {
                            issue.labels.push(n);
                        }
                    }
                    let labels: Vec<Value> =
                        issue.labels.iter().map(|l| json!({ "name": l })).collect();
                    respond(200, Value::Array(labels))
                }
                ("POST", ["stopwatch", action]) if flavour.is_gitea() => {
                    let issue = &mut repo.issues[index - 1];
                    match *action {
                        "start" if !issue.stopwatch => {
                            issue.stopwatch = true;
                            issue.stopwatch_events.push("start");
                            respond(201, Value::Null)
                        }
                        "stop" if issue.stopwatch => {
                            issue.stopwatch = false;
                            issue.stopwatch_events.push("stop");
                            respond(201, Value::Null)
                        }
                        _ => respond(409, json!({ "message": "stopwatch already in that state" })),
                    }
                }
                _ => respond(404, json!({ "message": "not found" })),
            }
        }
        ("GET", ["commits", sha, "status"]) => {
            let sha = heads.get(*sha).cloned().unwrap_or_else(|| sha.to_string());
            let statuses =
                (repo.statuses.get(&sha).cloned()).unwrap_or_else(|| repo.every_head.clone());
            let state = if statuses.iter().any(|(_, s)| s == "failure" || s == "error") {
                "failure"
            } else if statuses.is_empty() || statuses.iter().any(|(_, s)| s == "pending") {
                "pending"
            } else {
                "success"
            };
            let key = if flavour.is_gitea() {
                "status"
            } else {
                "state"
            };
            let list: Vec<Value> = statuses
                .iter()
                .map(|(c, s)| {
                    let mut v = json!({ "context": c });
                    v[key] = json!(s);
                    v
                })
                .collect();
            respond(
                200,
                json!({ "state": state, "sha": sha, "total_count": list.len(), "statuses": list }),
            )
        }
        // Deleting a branch: Forgejo/Gitea `branches/{branch}` (404 when there is none),
        // GitHub `git/refs/heads/{branch...}` (422 "Reference does not exist").
        ("DELETE", ["branches", branch]) if flavour.is_gitea() => delete_branch(&bare, branch, 404),
        ("DELETE", ["git", "refs", "heads", branch @ ..])
            if flavour == Flavour::Github && !branch.is_empty() =>
        {
            delete_branch(&bare, &branch.join("/"), 422)
        }
        ("GET", ["commits", sha, "check-runs"]) if flavour == Flavour::Github => {
            let runs: Vec<Value> = repo
                .checks
                .get(*sha)
                .into_iter()
                .flatten()
                .map(|(n, s, c)| json!({ "name": n, "status": s, "conclusion": c }))
                .collect();
            respond(
                200,
                json!({ "total_count": runs.len(), "check_runs": runs }),
            )
        }
        _ => respond(404, json!({ "message": "not found" })),
    }
}
