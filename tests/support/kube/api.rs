//! The HTTP side: every request is checked against the API subset (violations recorded),
//! authenticated (`Authorization: Bearer <token>`, else 401), routed, and answered as the API
//! server would: objects, lists, watches, logs, `Status` failures.
//!
//! Unknown body fields are dropped from what is stored, with a `Warning` header, as the real
//! server's default `fieldValidation=Warn` does (`Strict` answers 400 instead); either way
//! they are violations. A (verb, resource) the test denied answers 403, and access reviews
//! for it say `allowed: false`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::cluster::{DeleteOptions, Propagation};
use super::openapi::{prune, render, Step};
use super::selector::{FieldSelector, LabelSelector, Selector};
use super::status::ApiError;
use super::store::Kind;
use super::values::{base64_decode, base64_encode};
use super::{logs, perform, watch, Seen, Shared};

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Version,
    Discovery(&'static str),
    AccessReview,
    Collection {
        namespace: String,
        kind: Kind,
    },
    Object {
        namespace: String,
        kind: Kind,
        name: String,
    },
    Log {
        namespace: String,
        name: String,
    },
}

impl Route {
    fn parse(segments: &[String]) -> Option<Route> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (group, rest) = match s.as_slice() {
            ["version"] => return Some(Route::Version),
            ["api", "v1"] => return Some(Route::Discovery("v1")),
            ["apis", "batch", "v1"] => return Some(Route::Discovery("batch/v1")),
            ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => {
                return Some(Route::AccessReview)
            }
            ["api", "v1", "namespaces", rest @ ..] => ("", rest),
            ["apis", "batch", "v1", "namespaces", rest @ ..] => ("batch", rest),
            _ => return None,
        };
        match rest {
            [namespace, plural] => Some(Route::Collection {
                namespace: (*namespace).to_owned(),
                kind: Kind::from_plural(group, plural)?,
            }),
            [namespace, plural, name] => Some(Route::Object {
                namespace: (*namespace).to_owned(),
                kind: Kind::from_plural(group, plural)?,
                name: (*name).to_owned(),
            }),
            [namespace, "pods", name, "log"] if group.is_empty() => Some(Route::Log {
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
            }),
            _ => None,
        }
    }
}

/// One request, read once.
struct Request {
    method: Method,
    query: Vec<(String, String)>,
    content_type: String,
    body: Option<Value>,
    unknown: Vec<Vec<Step>>,
}

impl Request {
    fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn truthy(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

/// `%XX` and `+` decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| char::from(b).to_digit(16);
                if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's pairs, empty ones (kube-rs's `?&container=`) skipped.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).expect("invariant: real status codes");
    (status, axum::Json(body.clone())).into_response()
}

/// The fallback handler: every request comes here.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let raw_query = uri.query().unwrap_or_default().to_owned();
    let query = parse_query(&raw_query);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (json_body, unreadable) = if body.is_empty() {
        (None, None)
    } else if media.is_empty() || media.ends_with("json") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("the body is not JSON: {e}"))),
        }
    } else {
        (None, None)
    };
    let checked = shared.description.check(
        method.as_str(),
        &path,
        &query,
        Some(&content_type),
        json_body.as_ref(),
        body.len(),
    );
    let index = {
        let mut cluster = shared.lock();
        cluster.violations.extend(checked.violations);
        if let Some(problem) = &unreadable {
            cluster
                .violations
                .push(format!("{method} {path}: {problem}"));
        }
        cluster.seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: raw_query,
            status: 0,
            watch: false,
            events: 0,
        });
        cluster.seen.len() - 1
    };
    let expected = format!("Bearer {}", shared.options.token);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h == expected);
    let response = if !authorized {
        ApiError::new(401, "Unauthorized", "Unauthorized").into_response()
    } else if let Some(problem) = unreadable {
        ApiError::bad_request(problem).into_response()
    } else {
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let request = Request {
            method,
            query,
            content_type: media,
            body: json_body,
            unknown: checked.unknown,
        };
        match Route::parse(&segments) {
            Some(route) => answer(&shared, route, request, index),
            None => ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .into_response(),
        }
    };
    shared.lock().seen[index].status = response.status().as_u16();
    response
}

fn not_allowed() -> Response {
    ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
    .into_response()
}

/// What a namespaced request needs: a verb on a resource, in a namespace.
struct Access {
    verb: &'static str,
    /// `jobs`, `pods/log`, …
    resource: String,
    kind: Kind,
    name: Option<String>,
    namespace: String,
}

impl Access {
    fn of(route: &Route, method: &Method, watching: bool) -> Option<Access> {
        let verb = |collection: bool| match (method.as_str(), collection, watching) {
            ("GET", true, true) => "watch",
            ("GET", true, false) => "list",
            ("GET", false, _) => "get",
            ("POST", _, _) => "create",
            ("DELETE", _, _) => "delete",
            ("PATCH", _, _) => "patch",
            _ => "unknown",
        };
        let (verb, resource, kind, name, namespace) = match route {
            Route::Collection { namespace, kind } => {
                (verb(true), kind.plural().to_owned(), *kind, None, namespace)
            }
            Route::Object {
                namespace,
                kind,
                name,
            } => (
                verb(false),
                kind.plural().to_owned(),
                *kind,
                Some(name.clone()),
                namespace,
            ),
            Route::Log { namespace, name } => (
                "get",
                "pods/log".to_owned(),
                Kind::Pod,
                Some(name.clone()),
                namespace,
            ),
            _ => return None,
        };
        Some(Access {
            verb,
            resource,
            kind,
            name,
            namespace: namespace.clone(),
        })
    }

    /// 403 for a denied verb and resource, worded as RBAC words it.
    fn forbidden(&self) -> ApiError {
        let what = match &self.name {
            Some(name) => format!("{} \"{name}\"", self.kind.qualified()),
            None => self.kind.qualified(),
        };
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{what} is forbidden: User \"fake\" cannot {} resource \"{}\" in API group \"{}\" \
                 in the namespace \"{}\"",
                self.verb,
                self.resource,
                self.kind.group(),
                self.namespace
            ),
        )
    }
}

fn answer(shared: &Arc<Shared>, route: Route, mut request: Request, index: usize) -> Response {
    if let Some(access) = Access::of(&route, &request.method, request.truthy("watch")) {
        if access.namespace != shared.options.namespace {
            return ApiError::not_found_namespace(&access.namespace).into_response();
        }
        let key = (access.verb.to_owned(), access.resource.clone());
        if shared.lock().denied.contains(&key) {
            return access.forbidden().into_response();
        }
    }
    // Unknown fields: dropped with a warning (Warn, the default), or refused (Strict).
    let mut warnings = Vec::new();
    if !request.unknown.is_empty() {
        let fields: Vec<String> = request.unknown.iter().map(|at| render(at)).collect();
        if request.get("fieldValidation") == Some("Strict") {
            let listed: Vec<String> = fields
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return ApiError::bad_request(format!("strict decoding error: {}", listed.join(", ")))
                .into_response();
        }
        if let Some(body) = request.body.as_mut() {
            for at in &request.unknown {
                prune(body, at);
            }
        }
        if request.get("fieldValidation") != Some("Ignore") {
            warnings = fields
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
        }
    }
    let mut response = route_request(shared, route, &request, index);
    for warning in warnings {
        let text = format!(
            "299 - {}",
            serde_json::to_string(&warning).unwrap_or_default()
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn route_request(shared: &Arc<Shared>, route: Route, request: &Request, index: usize) -> Response {
    let method = request.method.as_str();
    match route {
        Route::Version if method == "GET" => json_response(
            200,
            &json!({
                "major": "1", "minor": "35", "emulationMajor": "1", "emulationMinor": "35",
                "minCompatibilityMajor": "1", "minCompatibilityMinor": "34",
                "gitVersion": "v1.35.0-fake", "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2025-12-17T00:00:00Z",
                "goVersion": "go1.25.5", "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        Route::Discovery(group) if method == "GET" => json_response(200, &discovery(group)),
        Route::AccessReview if method == "POST" => access_review(shared, request),
        Route::Collection { kind, .. } => match method {
            "GET" => {
                let selector = match selector(kind, request) {
                    Ok(selector) => selector,
                    Err(error) => return error.into_response(),
                };
                if request.truthy("watch") {
                    watch::answer(shared, kind, selector, &request.query, index)
                } else {
                    list(shared, kind, &selector, request)
                }
            }
            "POST" if matches!(kind, Kind::Job | Kind::Secret | Kind::ConfigMap) => {
                let body = request.body.clone().unwrap_or_else(|| json!({}));
                let created = shared.lock().create(kind, body, request.dry_run());
                match created {
                    Ok((object, acts)) => {
                        perform(shared, acts);
                        json_response(201, &object)
                    }
                    Err(error) => error.into_response(),
                }
            }
            _ => not_allowed(),
        },
        Route::Object { kind, name, .. } => match method {
            "GET" if kind != Kind::Event => match shared.lock().store.get(kind, &name) {
                Some(object) => json_response(200, object),
                None => ApiError::not_found(kind, &name).into_response(),
            },
            "DELETE" if matches!(kind, Kind::Job | Kind::Secret | Kind::ConfigMap) => {
                let options = match delete_options(request) {
                    Ok(options) => options,
                    Err(error) => return error.into_response(),
                };
                let deleted = shared.lock().delete(kind, &name, &options);
                match deleted {
                    Ok((answer, acts)) => {
                        perform(shared, acts);
                        json_response(200, &answer)
                    }
                    Err(error) => error.into_response(),
                }
            }
            "PATCH" if kind == Kind::Job => patch(shared, &name, request),
            _ => not_allowed(),
        },
        Route::Log { name, .. } if method == "GET" => logs::answer(shared, &name, &request.query),
        _ => not_allowed(),
    }
}

fn selector(kind: Kind, request: &Request) -> Result<Selector, ApiError> {
    let labels = LabelSelector::parse(request.get("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(kind, request.get("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    Ok(Selector { labels, fields })
}

/// A list, paged by `limit` and `continue` (items by name; no snapshot across pages).
fn list(shared: &Arc<Shared>, kind: Kind, selector: &Selector, request: &Request) -> Response {
    let cluster = shared.lock();
    let after = match request.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => {
            let decoded = base64_decode(token)
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["start"].as_str().map(str::to_owned));
            match decoded {
                Some(start) => Some(start),
                None => {
                    return ApiError::bad_request(format!("continue key is not valid: {token}"))
                        .into_response()
                }
            }
        }
    };
    let mut items: Vec<Value> = cluster
        .store
        .list(kind)
        .filter(|o| selector.matches(kind, o))
        .filter(|o| {
            after
                .as_deref()
                .is_none_or(|a| o["metadata"]["name"].as_str().unwrap_or_default() > a)
        })
        .cloned()
        .collect();
    let limit = request
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let rv = cluster.store.rv().to_string();
    let mut metadata = json!({ "resourceVersion": rv });
    if let Some(limit) = limit.filter(|l| items.len() > *l) {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items[limit - 1]["metadata"]["name"].clone();
        let token = json!({ "rv": rv, "start": last }).to_string();
        metadata["continue"] = json!(base64_encode(token.as_bytes()));
        metadata["remainingItemCount"] = json!(remaining);
    }
    for item in &mut items {
        if let Some(o) = item.as_object_mut() {
            o.remove("kind");
            o.remove("apiVersion");
        }
    }
    json_response(
        200,
        &json!({
            "kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
            "metadata": metadata, "items": items,
        }),
    )
}

/// DeleteOptions from the query, then the body (the body wins).
fn delete_options(request: &Request) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions::default();
    let policy = |text: &str| {
        match text {
        "Orphan" => Ok(Propagation::Orphan),
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        other => Err(ApiError::invalid_fields(
            "DeleteOptions",
            "",
            &[(
                "propagationPolicy".to_owned(),
                format!("Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
            )],
        )),
    }
    };
    if let Some(p) = request.get("propagationPolicy") {
        options.propagation = Some(policy(p)?);
    }
    if let Some(o) = request.get("orphanDependents") {
        options.propagation = Some(if o == "true" {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
    }
    options.dry_run = request.dry_run();
    if let Some(body) = &request.body {
        if let Some(p) = body["propagationPolicy"].as_str() {
            options.propagation = Some(policy(p)?);
        }
        if let Some(o) = body["orphanDependents"].as_bool() {
            options.propagation = Some(if o {
                Propagation::Orphan
            } else {
                Propagation::Background
            });
        }
        if body["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "All"))
        {
            options.dry_run = true;
        }
        options.uid = body["preconditions"]["uid"].as_str().map(str::to_owned);
        options.resource_version = body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
    }
    Ok(options)
}

/// RFC 7386 JSON merge patch (also used for strategic merge patches: lists are replaced).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target
        .as_object_mut()
        .expect("invariant: made an object above");
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902 JSON patch: `add`, `replace`, `remove` and `test` on JSON pointers.
fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations.as_array().ok_or("a JSON patch is an array")?;
    for op in operations {
        let path = op["path"]
            .as_str()
            .ok_or("a JSON patch operation needs a path")?;
        let (parent, last) = path
            .rsplit_once('/')
            .ok_or_else(|| format!("invalid path {path}"))?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match op["op"].as_str() {
            Some("test") => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            Some(kind @ ("add" | "replace" | "remove")) => {
                let container = target
                    .pointer_mut(parent)
                    .ok_or_else(|| format!("doc is missing path: \"{parent}\""))?;
                match container {
                    Value::Object(map) => {
                        if kind == "remove" || (kind == "replace" && !map.contains_key(&last)) {
                            map.remove(&last)
                                .ok_or_else(|| format!("doc is missing key: {path}"))?;
                        }
                        if kind != "remove" {
                            map.insert(last, op["value"].clone());
                        }
                    }
                    Value::Array(items) => {
                        let at = if last == "-" {
                            items.len()
                        } else {
                            last.parse().map_err(|_| format!("invalid index {last}"))?
                        };
                        match kind {
                            "add" if at <= items.len() => items.insert(at, op["value"].clone()),
                            "replace" if at < items.len() => items[at] = op["value"].clone(),
                            "remove" if at < items.len() => {
                                items.remove(at);
                            }
                            _ => return Err(format!("index {at} out of bounds at {path}")),
                        }
                    }
                    _ => return Err(format!("{parent} is not a container")),
                }
            }
            other => return Err(format!("unsupported JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn patch(shared: &Arc<Shared>, name: &str, request: &Request) -> Response {
    let Some(mut object) = shared.lock().store.get(Kind::Job, name).cloned() else {
        return ApiError::not_found(Kind::Job, name).into_response();
    };
    let body = request.body.clone().unwrap_or(Value::Null);
    match request.content_type.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            merge_patch(&mut object, &body)
        }
        "application/json-patch+json" => {
            if let Err(e) = json_patch(&mut object, &body) {
                return ApiError::new(422, "Invalid", e).into_response();
            }
        }
        other => {
            return ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the fake cluster does not take {other} patches (no server-side apply)"),
            )
            .into_response()
        }
    }
    // The patch schema is free-form: the patched Job is what must fit.
    let problems = shared
        .description
        .check_object("io.k8s.api.batch.v1.Job", &object);
    let unknown: Vec<Vec<Step>> = problems
        .iter()
        .filter(|p| p.unknown)
        .map(|p| p.at.clone())
        .collect();
    {
        let mut cluster = shared.lock();
        for p in &problems {
            cluster
                .violations
                .push(format!("PATCH jobs/{name}: the patched Job: {}", p.message));
        }
    }
    if !unknown.is_empty() && request.get("fieldValidation") == Some("Strict") {
        let listed: Vec<String> = unknown
            .iter()
            .map(|at| format!("unknown field \"{}\"", render(at)))
            .collect();
        return ApiError::bad_request(format!("strict decoding error: {}", listed.join(", ")))
            .into_response();
    }
    for at in &unknown {
        prune(&mut object, at);
    }
    let patched = shared.lock().patch_job(name, object, request.dry_run());
    match patched {
        Ok((object, acts)) => {
            perform(shared, acts);
            json_response(200, &object)
        }
        Err(error) => error.into_response(),
    }
}

fn access_review(shared: &Arc<Shared>, request: &Request) -> Response {
    let mut review = request.body.clone().unwrap_or_else(|| json!({}));
    let attributes = &review["spec"]["resourceAttributes"];
    let resource = match attributes["subresource"].as_str().filter(|s| !s.is_empty()) {
        Some(sub) => format!(
            "{}/{sub}",
            attributes["resource"].as_str().unwrap_or_default()
        ),
        None => attributes["resource"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let verb = attributes["verb"].as_str().unwrap_or_default().to_owned();
    let allowed = !shared.lock().denied.contains(&(verb, resource));
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({ "creationTimestamp": null });
    review["status"] = if allowed {
        json!({ "allowed": true, "reason": "the fake cluster allows it" })
    } else {
        json!({ "allowed": false, "reason": "the test denied it" })
    };
    json_response(201, &review)
}

fn discovery(group: &str) -> Value {
    let resource = |name: &str, singular: &str, kind: &str, verbs: &[&str]| json!({ "name": name, "singularName": singular, "namespaced": true, "kind": kind, "verbs": verbs });
    let resources = if group == "v1" {
        vec![
            resource(
                "configmaps",
                "configmap",
                "ConfigMap",
                &["create", "delete", "get", "list", "watch"],
            ),
            resource("events", "event", "Event", &["list", "watch"]),
            resource("pods", "pod", "Pod", &["get", "list", "watch"]),
            resource("pods/log", "", "Pod", &["get"]),
            resource(
                "secrets",
                "secret",
                "Secret",
                &["create", "delete", "get", "list", "watch"],
            ),
        ]
    } else {
        vec![resource(
            "jobs",
            "job",
            "Job",
            &["create", "delete", "get", "list", "patch", "watch"],
        )]
    };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group, "resources": resources })
}

#[test]
fn kube_fake_request_parsing() {
    assert_eq!(
        parse_query("&container=&labelSelector=a%3Db%2Cc&watch"),
        vec![
            ("container".to_owned(), String::new()),
            ("labelSelector".to_owned(), "a=b,c".to_owned()),
            ("watch".to_owned(), String::new()),
        ]
    );
    assert_eq!(percent_decode("100%"), "100%");
    let seg = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        Route::parse(&seg("api/v1/namespaces/ns/pods/p/log")),
        Some(Route::Log {
            namespace: "ns".into(),
            name: "p".into()
        })
    );
    assert_eq!(Route::parse(&seg("apis/batch/v1/namespaces/ns/pods")), None);
    let mut job = json!({ "spec": { "suspend": true, "x": 1 } });
    merge_patch(
        &mut job,
        &json!({ "spec": { "suspend": false, "x": null } }),
    );
    assert_eq!(job, json!({ "spec": { "suspend": false } }));
    json_patch(
        &mut job,
        &json!([{ "op": "replace", "path": "/spec/suspend", "value": true }]),
    )
    .unwrap();
    assert_eq!(job, json!({ "spec": { "suspend": true } }));
}
