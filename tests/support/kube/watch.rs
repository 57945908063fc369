//! `?watch=true` on a list path: a chunked stream of newline-delimited WatchEvent JSON.
//!
//! - no `resourceVersion` (or `"0"`), or `sendInitialEvents=true`: a synthetic ADDED for each
//!   selected object, then live changes; with `sendInitialEvents` and `allowWatchBookmarks` a
//!   BOOKMARK annotated `k8s.io/initial-events-end: "true"` follows the initial ones;
//! - `resourceVersion=N`: the kept changes after N, then live ones; when the kind's history no
//!   longer reaches back to N: one ERROR event carrying a 410 Expired Status on an HTTP 200,
//!   and the stream ends (as the watch cache does; an established watch that falls behind the
//!   history gets the same);
//! - selectors decide on the object before and after each change: an object that starts
//!   matching is sent ADDED, one that stops matching DELETED;
//! - `allowWatchBookmarks=true` with the cluster's `bookmarks` on: a BOOKMARK (kind,
//!   apiVersion, metadata.resourceVersion only) every [`BOOKMARK_EVERY`] and before a timeout;
//! - `timeoutSeconds`: the stream ends cleanly then.
//!
//! Each stream is a task woken by the store's change channel (no polling); it ends when the
//! client goes, on timeout, or when the cluster is dropped. Every event sent is counted on the
//! request's [`super::Seen`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use super::selector::Selector;
use super::status::ApiError;
use super::store::{Change, ChangeType, Kind};
use super::Shared;

/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(3);

/// Where a watch starts.
enum From {
    /// The current state, as synthetic ADDED events.
    Now,
    /// After this resourceVersion.
    After(u64),
}

/// The parameters of one watch.
struct Params {
    from: From,
    initial_events: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
}

impl Params {
    fn parse(query: &[(String, String)], cluster_bookmarks: bool) -> Result<Self, ApiError> {
        let get = |key: &str| {
            query
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let truthy = |key: &str| matches!(get(key), Some("true" | "1"));
        let from = match get("resourceVersion").unwrap_or_default() {
            "" | "0" => From::Now,
            rv => From::After(rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: \"{rv}\""))
            })?),
        };
        let timeout = match get("timeoutSeconds") {
            None | Some("") => None,
            Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds: \"{t}\""))
            })?)),
        };
        Ok(Self {
            from,
            initial_events: truthy("sendInitialEvents"),
            bookmarks: truthy("allowWatchBookmarks") && cluster_bookmarks,
            timeout,
        })
    }
}

fn line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object }))
        .expect("invariant: JSON values serialize");
    line.push(b'\n');
    line
}

fn bookmark(kind: Kind, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut object = json!({
        "kind": kind.name(), "apiVersion": kind.api_version(),
        "metadata": { "resourceVersion": rv.to_string() },
    });
    if initial_end {
        object["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line("BOOKMARK", &object)
}

fn expired(rv: u64, now: u64) -> Vec<u8> {
    let status = ApiError::new(
        410,
        "Expired",
        format!("too old resource version: {rv} ({now})"),
    );
    line("ERROR", &status.status())
}

/// The event a change is for a watch with `selector`, if any.
fn event(kind: Kind, selector: &Selector, change: &Change) -> Option<Vec<u8>> {
    let now = selector.matches(kind, &change.object);
    let before = change
        .previous
        .as_ref()
        .is_some_and(|p| selector.matches(kind, p));
    let what = match (change.what, before, now) {
        (ChangeType::Added | ChangeType::Deleted, _, true) => change.what.as_str(),
        (ChangeType::Modified, true, true) => "MODIFIED",
        (ChangeType::Modified, false, true) => "ADDED",
        (ChangeType::Modified, true, false) => "DELETED",
        _ => return None,
    };
    Some(line(what, &change.object))
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Answers a watch of `kind`; `seen` is the request's index in the cluster's requests.
pub fn answer(
    shared: &Arc<Shared>,
    kind: Kind,
    selector: Selector,
    query: &[(String, String)],
    seen: usize,
) -> Response {
    let params = match Params::parse(query, shared.options.bookmarks) {
        Ok(params) => params,
        Err(error) => return error.into_response(),
    };
    let mut cluster = shared.lock();
    cluster.seen[seen].watch = true;
    let epoch = cluster.watch_epoch;
    let mut changed = cluster.store.subscribe();
    changed.borrow_and_update();
    let mut first: Vec<Vec<u8>> = Vec::new();
    let mut position = cluster.store.rv();
    let mut ended = false;
    match (&params.from, params.initial_events) {
        (From::Now, _) | (_, true) => {
            first.extend(
                cluster
                    .store
                    .list(kind)
                    .filter(|o| selector.matches(kind, o))
                    .map(|o| line("ADDED", o)),
            );
            if params.initial_events
                && query
                    .iter()
                    .any(|(k, v)| k == "allowWatchBookmarks" && v == "true")
            {
                first.push(bookmark(kind, position, true));
            }
        }
        (From::After(rv), false) => match cluster.store.reaches(kind, *rv) {
            Ok(()) => position = *rv,
            Err(_) => {
                first.push(expired(*rv, position));
                ended = true;
            }
        },
    }
    drop(cluster);

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        let send = |lines: Vec<Vec<u8>>| {
            let shared = shared.clone();
            let tx = tx.clone();
            async move {
                if lines.is_empty() {
                    return true;
                }
                shared.lock().seen[seen].events += lines.len();
                tx.send(Ok(Bytes::from(lines.concat()))).await.is_ok()
            }
        };
        if !send(first).await || ended {
            return;
        }
        let deadline = params.timeout.map(|t| Instant::now() + t);
        let mut bookmarks = params
            .bookmarks
            .then(|| tokio::time::interval_at(Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY));
        loop {
            let (lines, expired_now) = {
                let cluster = shared.lock();
                if cluster.closed || cluster.watch_epoch != epoch {
                    return;
                }
                changed.borrow_and_update();
                match cluster.store.changes_since(kind, position) {
                    Ok(changes) => {
                        position = cluster.store.rv();
                        let lines = changes
                            .iter()
                            .filter_map(|c| event(kind, &selector, c))
                            .collect();
                        (lines, false)
                    }
                    Err(_) => (vec![expired(position, cluster.store.rv())], true),
                }
            };
            if !send(lines).await || expired_now {
                return;
            }
            tokio::select! {
                changed = changed.changed() => if changed.is_err() { return },
                () = tick(&mut bookmarks) => {
                    if !send(vec![bookmark(kind, position, false)]).await { return }
                }
                () = until(deadline) => {
                    if params.bookmarks {
                        send(vec![bookmark(kind, position, false)]).await;
                    }
                    return;
                }
                () = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
