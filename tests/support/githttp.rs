//! A real git server over HTTP for the Kubernetes tests: git's own `git http-backend` (CGI)
//! behind axum, serving the bare repositories under a root directory as
//! `{url}/ORG/REPO.git` with the smart protocol (`info/refs?service=…`, `git-upload-pack`,
//! `git-receive-pack`), the way a forge serves them to a pod's clone and push steps.
//!
//! Every request needs HTTP Basic auth whose password is one of two tokens: the read token
//! may fetch (upload-pack) only, the write token may fetch and push (receive-pack). Missing or
//! wrong credentials get 401 with `WWW-Authenticate: Basic realm="git"` (so git asks its
//! credential helper and tries again); the read token on receive-pack gets 403. Every request
//! is recorded with the kind of token it carried ([`GitServer::seen`]).
//!
//! Invariants: each request runs one `git http-backend` child, fed the request body as it
//! arrives and always waited for (killed if the request is dropped first), through
//! `tokio::process`, so the server neither blocks the runtime nor leaks processes. The token
//! never reaches the CGI: it gets `REMOTE_USER` (the Basic user name) and the other request
//! headers as `HTTP_*` variables, as CGI servers pass them, which is how a gzip-encoded body
//! (`HTTP_CONTENT_ENCODING`, inflated by http-backend itself) and protocol v2
//! (`HTTP_GIT_PROTOCOL`) reach it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The kind of token a request authenticated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// No credentials, or ones matching neither token.
    None,
    /// The read token: fetch only.
    Read,
    /// The write token: fetch and push.
    Write,
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path with its query when it has one, e.g.
    /// `/org/repo.git/info/refs?service=git-receive-pack` or `/org/repo.git/git-upload-pack`.
    pub path: String,
    /// The token it carried.
    pub token: TokenKind,
    /// The status answered.
    pub status: u16,
}

/// A git server over HTTP (removed from the runtime when dropped).
pub struct GitServer {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What the handler needs.
struct Shared {
    /// `GIT_PROJECT_ROOT`: the bare repositories are `ORG/REPO.git` under it.
    root: PathBuf,
    /// The `git-http-backend` program.
    backend: PathBuf,
    read_token: String,
    write_token: String,
    seen: Mutex<Vec<GitRequest>>,
}

impl GitServer {
    /// Serves the bare repositories under `root` on `bind` (a port the system chooses), with
    /// `read_token` allowed to fetch and `write_token` to fetch and push.
    pub async fn start(root: &Path, bind: IpAddr, read_token: &str, write_token: &str) -> Self {
        assert_ne!(read_token, write_token, "the two tokens must differ");
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, 0))
            .await
            .unwrap_or_else(|e| panic!("the git server cannot bind on {bind}: {e}"));
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            backend: http_backend().await,
            read_token: read_token.to_owned(),
            write_token: write_token.to_owned(),
            seen: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the git server serves");
        });
        Self { url, shared, task }
    }

    /// `http://IP:PORT`; the repositories are `{url}/ORG/REPO.git`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request so far, in the order they were answered.
    pub fn seen(&self) -> Vec<GitRequest> {
        self.shared
            .seen
            .lock()
            .expect("the git server's log")
            .clone()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `git-http-backend` beside the `git` on PATH (`git --exec-path`), else Debian's.
async fn http_backend() -> PathBuf {
    let exec_path = tokio::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .await
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let candidates = exec_path
        .into_iter()
        .chain([PathBuf::from("/usr/lib/git-core")])
        .map(|dir| dir.join("git-http-backend"));
    let tried: Vec<PathBuf> = candidates.collect();
    tried
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("git-http-backend not found (tried {tried:?}): install git"))
}

/// What a request asks of a repository.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// upload-pack (or any other read).
    Fetch,
    /// receive-pack.
    Push,
}

impl Access {
    fn of(path: &str, query: &str) -> Self {
        let push = path.ends_with("/git-receive-pack")
            || (path.ends_with("/info/refs")
                && query
                    .split('&')
                    .any(|pair| pair == "service=git-receive-pack"));
        if push {
            Self::Push
        } else {
            Self::Fetch
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let (user, token) = shared.authenticate(&parts.headers);
    let response = match (token, Access::of(&path, &query)) {
        (TokenKind::None, _) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Basic realm="git""#)],
            "authentication required\n",
        )
            .into_response(),
        _ if !is_repository_path(&path) => {
            (StatusCode::NOT_FOUND, "not a repository path\n").into_response()
        }
        (TokenKind::Read, Access::Push) => {
            (StatusCode::FORBIDDEN, "the read token may not push\n").into_response()
        }
        (TokenKind::Read | TokenKind::Write, _) => {
            shared
                .backend(&parts, &user, token == TokenKind::Write, body)
                .await
        }
    };
    shared
        .seen
        .lock()
        .expect("the git server's log")
        .push(GitRequest {
            method: parts.method.to_string(),
            path: if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            },
            token,
            status: response.status().as_u16(),
        });
    response
}

/// Whether `path` is `/ORG/REPO.git/…` with no `.` or `..` segment.
fn is_repository_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    segments.len() >= 3
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..")
        && segments[1].len() > ".git".len()
        && segments[1].ends_with(".git")
}

impl Shared {
    /// The Basic user name and the kind of token given as password.
    fn authenticate(&self, headers: &HeaderMap) -> (String, TokenKind) {
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| base64_decode(encoded.trim()))
            .and_then(|decoded| String::from_utf8(decoded).ok());
        let Some((user, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
            return (String::new(), TokenKind::None);
        };
        let token = if password == self.write_token {
            TokenKind::Write
        } else if password == self.read_token {
            TokenKind::Read
        } else {
            TokenKind::None
        };
        (user.to_owned(), token)
    }

    /// Runs `git http-backend` for one authenticated request: the body streamed to its stdin,
    /// its CGI output turned into the response.
    async fn backend(
        &self,
        parts: &axum::http::request::Parts,
        user: &str,
        may_push: bool,
        body: Body,
    ) -> Response {
        let mut command = tokio::process::Command::new(&self.backend);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", parts.uri.path())
            .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("REMOTE_USER", if user.is_empty() { "git" } else { user })
            // The host's configuration stays out; receive-pack is on for the write token only
            // (http-backend would enable it for any REMOTE_USER); the repositories may belong
            // to another uid than the server's.
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "http.receivepack")
            .env(
                "GIT_CONFIG_VALUE_0",
                if may_push { "true" } else { "false" },
            )
            .env("GIT_CONFIG_KEY_1", "safe.directory")
            .env("GIT_CONFIG_VALUE_1", "*");
        for (name, value) in &parts.headers {
            let Ok(value) = value.to_str() else { continue };
            if name == header::CONTENT_TYPE {
                command.env("CONTENT_TYPE", value);
            } else if name == header::CONTENT_LENGTH {
                // Without a length (a chunked body) http-backend reads to the end of its stdin.
                command.env("CONTENT_LENGTH", value);
            } else if name != header::AUTHORIZATION {
                command.env(cgi_variable(name), value);
            }
        }
        let mut child = match command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => return server_error(format!("{}: {error}", self.backend.display())),
        };
        let mut stdin = child.stdin.take().expect("a piped stdin");
        let mut stdout = child.stdout.take().expect("a piped stdout");
        let mut stderr = child.stderr.take().expect("a piped stderr");
        let feed = async move {
            let mut chunks = body.into_data_stream();
            while let Some(chunk) = chunks.next().await {
                // A client that went away, or a CGI that stopped reading: it answers alone.
                let Ok(chunk) = chunk else { break };
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // Dropping stdin is the end of the body.
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (_, read_out, read_err) = tokio::join!(
            feed,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err)
        );
        let status = child.wait().await;
        let err = String::from_utf8_lossy(&err);
        if !err.trim().is_empty() {
            eprintln!(
                "git http-backend {} {}: {}",
                parts.method,
                parts.uri,
                err.trim()
            );
        }
        match (status, read_out, read_err) {
            (Ok(_), Ok(_), Ok(_)) => cgi_response(&out),
            (status, read_out, read_err) => server_error(format!(
                "git http-backend: {status:?} {read_out:?} {read_err:?}"
            )),
        }
    }
}

/// The CGI variable of request header `name`: `Git-Protocol` is `HTTP_GIT_PROTOCOL`.
fn cgi_variable(name: &HeaderName) -> String {
    format!(
        "HTTP_{}",
        name.as_str().to_ascii_uppercase().replace('-', "_")
    )
}

/// The response a CGI's output describes: headers (with `Status:`) up to a blank line, then
/// the body.
fn cgi_response(out: &[u8]) -> Response {
    let crlf = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let Some((end, blank)) = [crlf, lf].into_iter().flatten().min() else {
        return server_error(format!(
            "git http-backend wrote no CGI headers: {:?}",
            String::from_utf8_lossy(out)
        ));
    };
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(&out[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            return server_error(format!("git http-backend wrote a bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            match code.and_then(|c| StatusCode::from_u16(c).ok()) {
                Some(code) => status = code,
                None => return server_error(format!("git http-backend wrote Status: {value}")),
            }
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.trim()),
            HeaderValue::try_from(value),
        ) {
            headers.append(name, value);
        }
    }
    let body = Bytes::copy_from_slice(&out[end + blank..]);
    (status, headers, body).into_response()
}

fn server_error(message: String) -> Response {
    eprintln!("{message}");
    (StatusCode::INTERNAL_SERVER_ERROR, message + "\n").into_response()
}

/// Standard base64 (padding optional); `None` when `text` is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = ((buffer << 6) | u32::from(value)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    Some(bytes)
}
