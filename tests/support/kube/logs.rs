//! Container output and `GET …/pods/{name}/log`.
//!
//! [`Log`] keeps what a container printed as segments (a piece of one line from one stream,
//! with the time it arrived), so `timestamps`, `sinceTime`/`sinceSeconds`, `tailLines`,
//! `limitBytes` and `stream` can all be answered. The kubelet appends; readers copy out under
//! the cluster lock. Output past [`LOG_CAP`] bytes is dropped (kubelet rotates; this is
//! simpler).
//!
//! The request follows the kubelet's rules: `container` may be left out only when the pod has
//! exactly one regular container (init containers do not count, but are named in the 400);
//! a container that has not started answers 400 "… is waiting to start: <reason>";
//! `previous=true` finds nothing (there are no restarts); `follow=true` streams while the
//! container runs and ends when it has ended and its output is all sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::pod::{ContainerKind, ContainerState, PodRecord};
use super::status::ApiError;
use super::store::Kind;
use super::values::{parse_rfc3339, rfc3339_nano};
use super::Shared;

/// Bytes of output kept per container.
pub const LOG_CAP: usize = 8 << 20;

/// Which stream a segment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

#[derive(Clone, Debug)]
struct Segment {
    start: usize,
    end: usize,
    at: SystemTime,
    stream: Stream,
    /// Whether it begins a line.
    line_start: bool,
}

/// One container's output.
#[derive(Debug, Default)]
pub struct Log {
    bytes: Vec<u8>,
    segments: Vec<Segment>,
    /// Per stream: whether its last segment ended without a newline.
    open: [bool; 2],
}

impl Log {
    /// Appends `chunk` of `stream`, arrived `at`.
    pub fn append(&mut self, stream: Stream, chunk: &[u8], at: SystemTime) {
        let room = LOG_CAP.saturating_sub(self.bytes.len());
        let chunk = &chunk[..chunk.len().min(room)];
        let open = &mut self.open[stream as usize];
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(piece);
            self.segments.push(Segment {
                start,
                end: self.bytes.len(),
                at,
                stream,
                line_start: !*open,
            });
            *open = !piece.ends_with(b"\n");
        }
    }

    /// The last `lines` lines, at most `bytes` bytes of them (FallbackToLogsOnError).
    pub fn tail(&self, lines: usize, bytes: usize) -> String {
        let from = self.first(&Options {
            tail: Some(lines),
            ..Options::default()
        });
        let start = self
            .segments
            .get(from)
            .map_or(self.bytes.len(), |s| s.start);
        let text = &self.bytes[start..];
        let text = &text[text.len().saturating_sub(bytes)..];
        String::from_utf8_lossy(text).into_owned()
    }

    /// The index of the first segment `options` select (tailLines counted back over lines).
    fn first(&self, options: &Options) -> usize {
        let Some(tail) = options.tail else {
            return 0;
        };
        if tail == 0 {
            return self.segments.len();
        }
        let mut lines = 0;
        for (i, s) in self.segments.iter().enumerate().rev() {
            if options.stream.is_some_and(|w| w != s.stream) || !s.line_start {
                continue;
            }
            lines += 1;
            if lines == tail {
                return i;
            }
        }
        0
    }

    /// Segments `from..` rendered for `options`, with at most `budget` bytes.
    fn render(&self, from: usize, options: &Options, budget: &mut Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        for s in self.segments.iter().skip(from) {
            if options.stream.is_some_and(|w| w != s.stream)
                || options.since.is_some_and(|since| s.at < since)
            {
                continue;
            }
            if options.timestamps && s.line_start {
                out.extend_from_slice(rfc3339_nano(s.at).as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&self.bytes[s.start..s.end]);
        }
        if let Some(left) = budget {
            out.truncate(*left);
            *left -= out.len();
        }
        out
    }
}

/// The options of one log request.
#[derive(Clone, Debug, Default)]
struct Options {
    container: Option<String>,
    follow: bool,
    timestamps: bool,
    previous: bool,
    since: Option<SystemTime>,
    tail: Option<usize>,
    limit: Option<usize>,
    stream: Option<Stream>,
}

impl Options {
    fn parse(pod: &str, query: &[(String, String)]) -> Result<Self, ApiError> {
        let mut options = Options::default();
        let truthy = |v: &str| matches!(v, "true" | "1");
        let invalid = |field: &str, value: &str, why: &str| {
            ApiError::invalid_fields(
                "PodLogOptions",
                pod,
                &[(
                    field.to_owned(),
                    format!("Invalid value: \"{value}\": {why}"),
                )],
            )
        };
        for (key, value) in query {
            match key.as_str() {
                "container" if !value.is_empty() => options.container = Some(value.clone()),
                "follow" => options.follow = truthy(value),
                "timestamps" => options.timestamps = truthy(value),
                "previous" => options.previous = truthy(value),
                "sinceTime" => {
                    options.since =
                        Some(parse_rfc3339(value).ok_or_else(|| {
                            invalid("sinceTime", value, "must be an RFC 3339 time")
                        })?)
                }
                "sinceSeconds" => {
                    let secs: u64 =
                        value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                            invalid("sinceSeconds", value, "must be greater than 0")
                        })?;
                    options.since = Some(SystemTime::now() - Duration::from_secs(secs));
                }
                "tailLines" => {
                    options.tail = Some(value.parse().map_err(|_| {
                        invalid("tailLines", value, "must be greater than or equal to 0")
                    })?)
                }
                "limitBytes" => {
                    options.limit =
                        Some(value.parse().ok().filter(|l| *l > 0).ok_or_else(|| {
                            invalid("limitBytes", value, "must be greater than 0")
                        })?)
                }
                "stream" => {
                    options.stream = match value.as_str() {
                        "All" | "" => None,
                        "Stdout" => Some(Stream::Stdout),
                        "Stderr" => Some(Stream::Stderr),
                        other => {
                            return Err(invalid("stream", other, "must be All, Stdout or Stderr"))
                        }
                    }
                }
                _ => {}
            }
        }
        if options.tail.is_some() && options.stream.is_some() {
            return Err(ApiError::invalid_fields(
                "PodLogOptions",
                pod,
                &[(
                    "stream".to_owned(),
                    "Forbidden: may not be specified when tailLines is specified".to_owned(),
                )],
            ));
        }
        Ok(options)
    }
}

/// Which container a request reads: the named one, or the only regular one.
fn choose(pod: &str, record: &PodRecord, options: &Options) -> Result<usize, ApiError> {
    if let Some(name) = &options.container {
        return record
            .containers
            .iter()
            .position(|c| &c.name == name)
            .ok_or_else(|| {
                ApiError::bad_request(format!("container {name} is not valid for pod {pod}"))
            });
    }
    let names = |kind: &dyn Fn(ContainerKind) -> bool| -> Vec<&str> {
        record
            .containers
            .iter()
            .filter(|c| kind(c.kind))
            .map(|c| c.name.as_str())
            .collect()
    };
    let regular = names(&|k| k == ContainerKind::Regular);
    match regular.as_slice() {
        [only] => Ok(record
            .containers
            .iter()
            .position(|c| c.name == *only)
            .expect("invariant: the name came from the list")),
        [] => Err(ApiError::bad_request(format!(
            "pod {pod} does not have a container"
        ))),
        several => {
            let mut message = format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                several.join(" ")
            );
            let init = names(&|k| k != ContainerKind::Regular);
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// Answers `GET …/pods/{pod}/log`.
pub fn answer(shared: &Arc<Shared>, pod: &str, query: &[(String, String)]) -> Response {
    match start(shared, pod, query) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn start(
    shared: &Arc<Shared>,
    pod: &str,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let options = Options::parse(pod, query)?;
    let cluster = shared.lock();
    let record = cluster
        .pods
        .get(pod)
        .filter(|_| cluster.store.get(Kind::Pod, pod).is_some())
        .ok_or_else(|| ApiError::not_found(Kind::Pod, pod))?;
    let index = choose(pod, record, &options)?;
    let container = &record.containers[index];
    if options.previous {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{}\" in pod \"{pod}\" not found",
            container.name
        )));
    }
    let running = match &container.state {
        ContainerState::Waiting { reason, .. } => {
            return Err(ApiError::bad_request(format!(
                "container \"{}\" in pod \"{pod}\" is waiting to start: {reason}",
                container.name
            )))
        }
        ContainerState::Running { .. } => true,
        ContainerState::Terminated(_) => false,
    };
    let mut budget = options.limit;
    let from = container.log.first(&options);
    let first = container.log.render(from, &options, &mut budget);
    let next = container.log.segments.len();
    let text_plain = [(axum::http::header::CONTENT_TYPE, "text/plain")];
    if !(options.follow && running) || budget == Some(0) {
        return Ok((text_plain, first).into_response());
    }
    // Follow: what exists now, then what the container prints until it has ended.
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let mut output = cluster.output.subscribe();
    let (shared, pod, uid, name) = (
        shared.clone(),
        pod.to_owned(),
        record.uid.clone(),
        container.name.clone(),
    );
    drop(cluster);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        let mut next = next;
        loop {
            let (chunk, done) = {
                let cluster = shared.lock();
                let container = cluster
                    .pods
                    .get(&pod)
                    .filter(|r| r.uid == uid && !cluster.closed)
                    .and_then(|r| r.container(&name));
                let Some(container) = container else { return };
                output.borrow_and_update();
                let chunk = container.log.render(next, &options, &mut budget);
                next = container.log.segments.len();
                let ended = matches!(container.state, ContainerState::Terminated(_));
                (chunk, ended || budget == Some(0))
            };
            if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if done {
                return;
            }
            tokio::select! {
                changed = output.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    Ok((text_plain, body).into_response())
}

#[test]
fn kube_fake_log_options() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut log = Log::default();
    log.append(Stream::Stdout, b"one\ntwo\n", t0);
    log.append(Stream::Stderr, b"err\n", t0 + Duration::from_secs(1));
    log.append(Stream::Stdout, b"th", t0 + Duration::from_secs(2));
    log.append(Stream::Stdout, b"ree\n", t0 + Duration::from_secs(2));
    let all =
        |o: &Options| String::from_utf8(log.render(log.first(o), o, &mut o.limit.clone())).unwrap();
    assert_eq!(all(&Options::default()), "one\ntwo\nerr\nthree\n");
    let tail = Options {
        tail: Some(2),
        ..Options::default()
    };
    assert_eq!(all(&tail), "err\nthree\n");
    let stderr = Options {
        stream: Some(Stream::Stderr),
        ..Options::default()
    };
    assert_eq!(all(&stderr), "err\n");
    let since = Options {
        since: Some(t0 + Duration::from_secs(2)),
        ..Options::default()
    };
    assert_eq!(all(&since), "three\n");
    let limit = Options {
        limit: Some(5),
        ..Options::default()
    };
    assert_eq!(all(&limit), "one\nt");
    let stamped = Options {
        timestamps: true,
        tail: Some(1),
        ..Options::default()
    };
    assert_eq!(all(&stamped), "1970-01-01T00:16:42.000000000Z three\n");
    assert_eq!(log.tail(1, 3), "ee\n");
}
