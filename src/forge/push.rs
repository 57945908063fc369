//! The authenticated `git push` of both remote forges.
//!
//! Invariant: the token reaches git only through the environment of the `git push` process
//! (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` setting `http.extraHeader`),
//! and only for HTTP(S) URLs: never in argv, never in the URL, never in the workspace's git
//! config, and git's messages are quoted with the token redacted.

use std::path::Path;

use super::http::Secret;
use super::{ForgeError, PrRequest};

/// Whether git reaches `url` over HTTP(S), the only transport that gets the token (SSH uses
/// the user's keys, local paths need nothing).
fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// Pushes HEAD of `repo_dir` to `url` as the request's branch (forced when the branch belongs
/// to the unit, else with the request's lease).
/// For HTTP(S) URLs the token goes into an `Authorization: Basic` header set through
/// git's environment configuration; SSH URLs use the user's keys and never see the token.
pub(crate) async fn push(
    repo_dir: &Path,
    url: &str,
    request: &PrRequest,
    token: &Secret,
) -> Result<(), ForgeError> {
    let args = crate::git::push_args(url, &request.branch, request.lease.as_deref());
    let mut command = crate::git::command(repo_dir);
    command.args(&args);
    authorize(&mut command, url, token);
    let failed = |message: String| {
        ForgeError::Git(crate::git::GitError {
            args: args.join(" "),
            dir: repo_dir.display().to_string(),
            message: token.redact(&message),
        })
    };
    let output = command.output().await.map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(crate::git::failure(&String::from_utf8_lossy(
            &output.stderr,
        ))))
    }
}

/// Gives a git command (from [`crate::git::command`]) the token for `url`: for HTTP(S) URLs in
/// an `Authorization: Basic` header set through git's environment configuration (never in
/// its argv or the URL); SSH URLs and paths get nothing.
pub(crate) fn authorize(command: &mut tokio::process::Command, url: &str, token: &Secret) {
    if is_http(url) {
        let basic = base64(format!("x-access-token:{}", token.expose()).as_bytes());
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_encodes_like_the_rfc() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
