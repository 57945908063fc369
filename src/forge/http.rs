//! The one HTTP client both remote forges use: reqwest over rustls, with the forge's token in
//! an auth header, bounded retries, rate-limit pacing and a write budget; and the two helpers
//! of their APIs, `text` (a string field of forge JSON) and `seg` (a path segment).
//!
//! What it guarantees:
//!
//! - The token lives in a [`Secret`] whose `Debug`/`Display` print `***`; it is only ever put
//!   into a header marked sensitive. Error messages quote the forge's own message with the token
//!   text replaced, never a header, and URLs never carry it.
//! - 5xx answers and connection errors are retried after the pauses of a
//!   [`Backoff`] (doubling, capped, jittered), at most [`RetryPolicy::attempts`] attempts in
//!   all; then the error is [`ForgeError::Transient`].
//! - 429, and GitHub's secondary limit (403 with `retry-after`, or `x-ratelimit-remaining: 0`
//!   with `x-ratelimit-reset`), wait as long as the forge asks (bounded by
//!   [`RetryPolicy::max_wait`]) and retry. When `x-ratelimit-remaining` runs low, requests are
//!   spread over the time left until the reset instead of running the quota dry.
//! - Writes (every method but GET) pass a token bucket of `writes_per_minute`; waiting is a tokio
//!   timer, and no lock is held while waiting.
//! - 401, and 403 that is not a rate limit, are [`ForgeError::Unauthorized`]; from then on the
//!   client refuses every write with the same error, so one bad token costs one request.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::ForgeError;
use crate::backoff::Backoff;

/// A token: printed as `***` by `Debug` and `Display`.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }

    /// Reads the token from the environment variable `name` (the spec's `forge.token_env`).
    pub fn from_env(forge: &str, name: &str) -> Result<Self, ForgeError> {
        match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => Ok(Self::new(token.trim())),
            _ => Err(ForgeError::Config {
                forge: forge.to_owned(),
                message: format!(
                    "no token: the environment variable {name} (forge.token_env) is not set or \
                     empty; export the forge token there"
                ),
            }),
        }
    }

    /// The token itself, for building a header. Never format it into text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the token replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&*self.0, "***")
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How the token is presented in the `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: token T` (Forgejo, Gitea).
    Token,
    /// `Authorization: Bearer T` (GitHub).
    Bearer,
}

/// Bounds of retries and waits.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first one included.
    pub attempts: u32,
    /// Backoff before the second attempt; doubles for each further one.
    pub base_delay: Duration,
    /// Longest backoff between attempts.
    pub max_delay: Duration,
    /// Longest wait the client accepts from `Retry-After` or a rate-limit reset; a longer one
    /// gives up with [`ForgeError::Transient`].
    pub max_wait: Duration,
    /// When `x-ratelimit-remaining` is at or below this, requests are spread until the reset.
    pub low_remaining: u64,
}

impl RetryPolicy {
    /// The pauses after failed attempts, one fewer than [`RetryPolicy::attempts`]: doubling
    /// from `base_delay`, at most `max_delay`, each a random point of its upper half (so
    /// clients that failed together do not retry together). A rate-limit wait takes the
    /// place of a pause, so the pause after attempt `n` is always the `n`-th.
    fn pauses(&self) -> Backoff {
        // A point of the upper half of `d` is `d / 2` plus up to all of `d / 2` again.
        Backoff::new(self.base_delay / 2)
            .cap(self.max_delay / 2)
            .jitter(1.0, RandomState::new().build_hasher().finish())
            .limit(self.attempts.saturating_sub(1))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_wait: Duration::from_secs(300),
            low_remaining: 50,
        }
    }
}

/// What a client is built from.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Forge name for messages (`forgejo`, `gitea`, `github`).
    pub forge: String,
    /// API root, e.g. `https://forge.example/api/v1` or `https://api.github.com`.
    pub api_base: String,
    /// The token.
    pub token: Secret,
    /// Where the token came from, for messages (`FORGE_TOKEN`).
    pub token_env: String,
    /// How the token is presented.
    pub scheme: AuthScheme,
    /// Writes per minute (`forge.writes_per_minute`); `None` is unlimited.
    pub writes_per_minute: Option<u32>,
    /// Retries and waits.
    pub retry: RetryPolicy,
}

/// A successful answer: status, headers, and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body, `Null` when there was none.
    pub body: Value,
}

/// The HTTP client of one forge.
pub struct HttpClient {
    config: HttpConfig,
    client: reqwest::Client,
    budget: Option<WriteBudget>,
    pace: Mutex<RateState>,
    denied: OnceLock<String>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("forge", &self.config.forge)
            .field("api_base", &self.config.api_base)
            .field("token", &"***")
            .field("token_env", &self.config.token_env)
            .field("writes_per_minute", &self.config.writes_per_minute)
            .finish()
    }
}

#[derive(Default)]
struct RateState {
    remaining: Option<u64>,
    reset: Option<u64>,
    /// `x-oauth-scopes` of the last answer that had it (GitHub's classic tokens).
    scopes: Option<Vec<String>>,
}

impl HttpClient {
    /// Builds the client; fails when the URL is not HTTP(S) or the token cannot be a header.
    pub fn new(mut config: HttpConfig) -> Result<Self, ForgeError> {
        config.api_base = config.api_base.trim_end_matches('/').to_owned();
        let forge = config.forge.clone();
        let parsed = reqwest::Url::parse(&config.api_base).map_err(|e| ForgeError::Config {
            forge: forge.clone(),
            message: format!("forge.url `{}` is not a URL: {e}", config.api_base),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ForgeError::Config {
                forge,
                message: format!("forge.url `{}` must be http(s)", config.api_base),
            });
        }
        let scheme = match config.scheme {
            AuthScheme::Token => "token",
            AuthScheme::Bearer => "Bearer",
        };
        let mut auth = HeaderValue::from_str(&format!("{scheme} {}", config.token.expose()))
            .map_err(|_| ForgeError::Unauthorized {
                forge: forge.clone(),
                hint: format!(
                    "the token in {} has characters a header cannot carry",
                    config.token_env
                ),
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(USER_AGENT, HeaderValue::from_static("dispatch"));
        if config.scheme == AuthScheme::Bearer {
            headers.insert(
                ACCEPT,
                HeaderValue::from_static("application/vnd.github+json"),
            );
            headers.insert(
                HeaderName::from_static("x-github-api-version"),
                HeaderValue::from_static("2022-11-28"),
            );
        } else {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ForgeError::Config {
                forge,
                message: format!("cannot build an HTTP client: {e}"),
            })?;
        let budget = config.writes_per_minute.map(WriteBudget::new);
        Ok(Self {
            config,
            client,
            budget,
            pace: Mutex::new(RateState::default()),
            denied: OnceLock::new(),
        })
    }

    /// Forge name for messages.
    pub fn forge(&self) -> &str {
        &self.config.forge
    }

    /// The token (for git pushes through the environment).
    pub fn token(&self) -> &Secret {
        &self.config.token
    }

    /// GET `path` (below the API root) with `query`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ForgeError> {
        Ok(self.send(Method::GET, path, query, None).await?.body)
    }

    /// Every item of a paged list: `query` plus `page` and `size_param=size`, page after page
    /// until one comes back short.
    pub async fn get_all<'a>(
        &self,
        path: &str,
        query: &[(&'a str, String)],
        size_param: &'a str,
        size: usize,
    ) -> Result<Vec<Value>, ForgeError> {
        let mut all = Vec::new();
        for page in 1.. {
            let mut paged = query.to_vec();
            paged.push(("page", page.to_string()));
            paged.push((size_param, size.to_string()));
            let items = self.get(path, &paged).await?;
            let items = items.as_array().cloned().unwrap_or_default();
            let last = items.len() < size;
            all.extend(items);
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// Sends a request and retries as the module doc says.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, ForgeError> {
        let write = method != Method::GET && method != Method::HEAD;
        let what = format!("{method} {path}");
        let retry = self.config.retry;
        let mut last = String::new();
        let mut pauses = retry.pauses();
        for attempt in 0..retry.attempts {
            if write {
                if let Some(hint) = self.denied.get() {
                    return Err(self.unauthorized(hint.clone()));
                }
                if let Some(budget) = &self.budget {
                    budget.acquire().await;
                }
            }
            self.pace_before(&what).await?;
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.config.api_base));
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    last = self.config.token.redact(&without_url(&e).to_string());
                    tracing::debug!(forge = %self.config.forge, %what, attempt, error = %last, "forge request failed");
                    let Some(pause) = pauses.next() else { break };
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            self.observe(&headers);
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                let body = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| ForgeError::Http {
                        forge: self.config.forge.clone(),
                        what: what.clone(),
                        status: status.as_u16(),
                        message: format!("the answer is not JSON: {e}"),
                    })?
                };
                return Ok(Answer { status, body });
            }
            let message = self.config.token.redact(&forge_message(&text));
            if let Some(wait) = rate_limit_wait(status, &headers) {
                if wait > retry.max_wait {
                    return Err(ForgeError::Transient {
                        forge: self.config.forge.clone(),
                        what,
                        message: format!(
                            "rate limited for {}s, longer than dispatch waits; retry later",
                            wait.as_secs()
                        ),
                    });
                }
                tracing::info!(forge = %self.config.forge, %what, wait_s = wait.as_secs_f64(), "forge rate limit: waiting");
                last = format!("HTTP {}: rate limited ({message})", status.as_u16());
                if pauses.next().is_none() {
                    break;
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let hint = format!(
                    "HTTP {} on {what}: {message}; check the token in {} (its scopes must allow \
                     repository writes); further writes to this forge are refused",
                    status.as_u16(),
                    self.config.token_env
                );
                let hint = self.denied.get_or_init(|| hint).clone();
                return Err(self.unauthorized(hint));
            }
            if status.is_server_error() {
                last = format!("HTTP {}: {message}", status.as_u16());
                tracing::debug!(forge = %self.config.forge, %what, attempt, error = %last, "forge server error");
                let Some(pause) = pauses.next() else { break };
                tokio::time::sleep(pause).await;
                continue;
            }
            return Err(ForgeError::Http {
                forge: self.config.forge.clone(),
                what,
                status: status.as_u16(),
                message,
            });
        }
        Err(ForgeError::Transient {
            forge: self.config.forge.clone(),
            what,
            message: format!("gave up after {} attempts: {last}", retry.attempts),
        })
    }

    fn unauthorized(&self, hint: String) -> ForgeError {
        ForgeError::Unauthorized {
            forge: self.config.forge.clone(),
            hint,
        }
    }

    /// Records the rate-limit headers of an answer.
    fn observe(&self, headers: &HeaderMap) {
        let remaining = header_u64(headers, "x-ratelimit-remaining");
        let reset = header_u64(headers, "x-ratelimit-reset");
        let scopes = headers
            .get("x-oauth-scopes")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            });
        if remaining.is_some() || reset.is_some() || scopes.is_some() {
            let mut pace = self.pace.lock().expect("rate state lock is never poisoned");
            if remaining.is_some() || reset.is_some() {
                pace.remaining = remaining;
                pace.reset = reset;
            }
            if scopes.is_some() {
                pace.scopes = scopes;
            }
        }
    }

    /// The token's scopes as the forge last reported them (`x-oauth-scopes`); `None` when
    /// the forge does not report them (Gitea, Forgejo, GitHub's fine-grained tokens).
    pub fn scopes(&self) -> Option<Vec<String>> {
        self.pace
            .lock()
            .expect("rate state lock is never poisoned")
            .scopes
            .clone()
    }

    /// Waits when the quota runs low: spreads what is left until the reset.
    async fn pace_before(&self, what: &str) -> Result<(), ForgeError> {
        let wait = {
            let pace = self.pace.lock().expect("rate state lock is never poisoned");
            pacing_delay(
                pace.remaining,
                pace.reset,
                unix_now(),
                self.config.retry.low_remaining,
            )
        };
        if let Some(wait) = wait {
            if wait > self.config.retry.max_wait {
                return Err(ForgeError::Transient {
                    forge: self.config.forge.clone(),
                    what: what.to_owned(),
                    message: format!(
                        "the rate limit is exhausted for {}s more; retry later",
                        wait.as_secs()
                    ),
                });
            }
            tracing::info!(forge = %self.config.forge, wait_s = wait.as_secs_f64(), "forge quota low: slowing down");
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// How long to wait before the next request given the last `x-ratelimit-remaining`/`reset`:
/// none while the quota is comfortable; the time left divided by the requests left when it
/// is low; until the reset when it is exhausted.
pub fn pacing_delay(
    remaining: Option<u64>,
    reset: Option<u64>,
    now: u64,
    low: u64,
) -> Option<Duration> {
    let remaining = remaining?;
    if remaining > low {
        return None;
    }
    let left = reset?.saturating_sub(now);
    if left == 0 {
        return None;
    }
    if remaining == 0 {
        return Some(Duration::from_secs(left + 1));
    }
    Some(Duration::from_secs_f64(left as f64 / remaining as f64))
}

/// The wait a rate-limit answer asks for, or `None` when the answer is not a rate limit.
pub fn rate_limit_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let retry_after = header_u64(headers, "retry-after").map(Duration::from_secs);
    let exhausted = header_u64(headers, "x-ratelimit-remaining") == Some(0);
    let until_reset = header_u64(headers, "x-ratelimit-reset")
        .map(|reset| Duration::from_secs(reset.saturating_sub(unix_now()) + 1));
    match status {
        StatusCode::TOO_MANY_REQUESTS => Some(
            retry_after
                .or(if exhausted { until_reset } else { None })
                .unwrap_or(Duration::from_secs(60)),
        ),
        StatusCode::FORBIDDEN => retry_after.or(if exhausted { until_reset } else { None }),
        _ => None,
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A string field of forge JSON, empty when absent.
pub(super) fn text(value: &serde_json::Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

/// Percent-encodes one path segment.
pub(super) fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The forge's `message` field, or the start of the body.
fn forge_message(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => match value.get("message").and_then(Value::as_str) {
            Some(message) => message.to_owned(),
            None => truncate(text),
        },
        Err(_) => truncate(text),
    }
}

fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None if text.is_empty() => "no message".to_owned(),
        None => text.to_owned(),
    }
}

/// A reqwest error without its URL (URLs carry no token, but query strings can be long).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// A token bucket of writes: `per_minute` writes a minute, bursts of a tenth of that.
struct WriteBudget {
    per_second: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl WriteBudget {
    fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        let capacity = (per_minute / 10.0).max(1.0);
        Self {
            per_second: per_minute / 60.0,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes one write; sleeps on a timer (no lock held) when the bucket is empty.
    async fn acquire(&self) {
        if let Some(wait) = self.take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one write at `now` and says how long its caller must wait for it (the bucket
    /// goes below zero: later callers queue behind earlier ones).
    fn take(&self, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock().expect("budget lock is never poisoned");
        let refill = now.saturating_duration_since(state.1).as_secs_f64() * self.per_second;
        state.0 = (state.0 + refill).min(self.capacity) - 1.0;
        state.1 = now;
        (state.0 < 0.0).then(|| Duration::from_secs_f64(-state.0 / self.per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spreads_the_remaining_quota() {
        assert_eq!(pacing_delay(Some(500), Some(1_100), 1_000, 50), None);
        assert_eq!(
            pacing_delay(Some(10), Some(1_100), 1_000, 50),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            pacing_delay(Some(0), Some(1_030), 1_000, 50),
            Some(Duration::from_secs(31))
        );
        assert_eq!(pacing_delay(Some(0), Some(900), 1_000, 50), None);
    }

    #[test]
    fn secondary_limits_are_recognised() {
        let mut headers = HeaderMap::new();
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &headers), None);
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &headers),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &headers),
            Some(Duration::from_secs(7))
        );
        assert_eq!(rate_limit_wait(StatusCode::BAD_GATEWAY, &headers), None);
    }

    #[test]
    fn retries_pause_in_the_upper_half_of_a_doubling_capped_delay() {
        let retry = RetryPolicy {
            attempts: 7,
            ..RetryPolicy::default()
        };
        let pauses: Vec<Duration> = retry.pauses().collect();
        assert_eq!(pauses.len(), 6, "one pause fewer than attempts");
        for (pause, full) in pauses.iter().zip([500, 1_000, 2_000, 4_000, 8_000, 8_000]) {
            let full = Duration::from_millis(full);
            assert!(
                *pause >= full / 2 && *pause < full,
                "{pause:?} is not in the upper half of {full:?}"
            );
        }
        let once = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(once.pauses().count(), 0);
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2-token");
        assert_eq!(format!("{secret:?} {secret}"), "Secret(***) ***");
        assert_eq!(secret.redact("bad hunter2-token here"), "bad *** here");
    }

    #[test]
    fn the_write_budget_queues_writes_past_its_burst() {
        let budget = WriteBudget::new(60);
        let start = Instant::now();
        for _ in 0..6 {
            assert_eq!(budget.take(start), None);
        }
        assert_eq!(budget.take(start), Some(Duration::from_secs(1)));
        assert_eq!(budget.take(start), Some(Duration::from_secs(2)));
        assert_eq!(budget.take(start + Duration::from_secs(10)), None);
    }
}
