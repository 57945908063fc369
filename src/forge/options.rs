//! [`RemoteOptions`]: how a remote forge client behaves beyond its URL and token (where git
//! clones and pushes, the write budget, HTTP retries, the checks timeout). The spec's `forge:`
//! section fills what the caller leaves unset.

use std::time::Duration;

use super::http::RetryPolicy;

/// How a remote forge client behaves, beyond URL and token.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Clone and push from `{git_base}/{org}/{repo}.git` instead of the forge's web URL (tests
    /// use a directory of bare repositories; a path or `file://` URL is pushed without a token).
    pub git_base: Option<String>,
    /// `forge.writes_per_minute`.
    pub writes_per_minute: Option<u32>,
    /// Retries and waits of the HTTP client.
    pub retry: RetryPolicy,
    /// How long merge waits for pending checks before giving up as not green.
    pub checks_timeout: Duration,
}

/// How long a guarded merge waits for pending checks unless `forge.checks_timeout` says.
pub const DEFAULT_CHECKS_TIMEOUT: Duration = Duration::from_secs(20 * 60);

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            git_base: None,
            writes_per_minute: None,
            retry: RetryPolicy::default(),
            checks_timeout: DEFAULT_CHECKS_TIMEOUT,
        }
    }
}
