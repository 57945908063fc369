//! The fake Kubernetes API server (`support::kube`) against the real Docker engine, driven
//! with plain HTTP and JSON as a client would: a Job with an init container runs and fails
//! with the main container's exit code, unknown fields are violations, an expired watch gets
//! the 410 ERROR event, a second create is 409, a foreground delete stops the pod, and
//! `activeDeadlineSeconds` fails the Job.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::docker::available;
use crate::support::kube::{ClusterOptions, FakeCluster, LABEL_POD};

const IMAGE: &str = "dispatch-busybox:latest";
const NAMESPACE: &str = "kube-fake";
/// The longest any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(60);

/// A fake cluster and a client of it.
struct Kube {
    fake: FakeCluster,
    client: reqwest::Client,
}

/// An answer: status, Warning headers, body.
struct Answer {
    status: u16,
    warnings: Vec<String>,
    body: Value,
}

impl Kube {
    /// A fake cluster on network `none`; `None` when the Docker tests skip.
    async fn start() -> Option<Kube> {
        Self::start_with(false).await
    }

    /// [`Kube::start`], with bookmarks on or off.
    async fn start_with(bookmarks: bool) -> Option<Kube> {
        if !available() {
            return None;
        }
        let fake = FakeCluster::start(ClusterOptions {
            namespace: NAMESPACE.to_owned(),
            token: "t0ken".to_owned(),
            network: "none".to_owned(),
            history: 1000,
            bookmarks,
        })
        .await;
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a client");
        Some(Kube { fake, client })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.url())
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth("t0ken");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the fake answers");
        let status = response.status().as_u16();
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .collect();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            warnings,
            body,
        }
    }

    async fn watch(&self, path: &str) -> Watch {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth("t0ken")
            .send()
            .await
            .expect("the fake answers");
        assert_eq!(response.status().as_u16(), 200, "watch {path}");
        Watch {
            response,
            buffer: Vec::new(),
        }
    }

    fn jobs_path(&self) -> String {
        format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs")
    }

    fn core_path(&self, plural: &str) -> String {
        format!("/api/v1/namespaces/{NAMESPACE}/{plural}")
    }

    /// Creates a Job and returns it as the server answered.
    async fn create_job(&self, job: Value) -> Value {
        let answer = self.send("POST", &self.jobs_path(), Some(job)).await;
        assert_eq!(answer.status, 201, "create: {}", answer.body);
        answer.body
    }

    /// The resourceVersion of a list of `path` with `selector`, to watch from.
    async fn list_rv(&self, path: &str, selector: &str) -> String {
        let answer = self
            .send("GET", &format!("{path}?labelSelector={selector}"), None)
            .await;
        assert_eq!(answer.status, 200, "list: {}", answer.body);
        answer.body["metadata"]["resourceVersion"]
            .as_str()
            .expect("a list has a resourceVersion")
            .to_owned()
    }

    fn assert_no_violations(&self) {
        let violations = self.fake.violations();
        assert!(violations.is_empty(), "violations: {violations:#?}");
    }
}

/// A watch stream, read line by line.
struct Watch {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event, or `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("a watch event is JSON"));
            }
            let chunk = tokio::time::timeout(STEP, self.response.chunk())
                .await
                .expect("a watch event within a minute")
                .expect("the watch stream reads");
            match chunk {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    assert!(self.buffer.is_empty(), "a partial event at the end");
                    return None;
                }
            }
        }
    }

    /// Events up to and including the first that `done` accepts.
    async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the watch ended after {seen:#?}"));
            let last = done(&event);
            seen.push(event);
            if last {
                return seen;
            }
        }
    }
}

/// A Job named `name` whose pods carry `app=<name>`, with `containers`, `init` and `extra`
/// merged into its pod spec and `spec` into the Job's spec.
fn job(name: &str, containers: Value, init: Value, pod: Value, spec: Value) -> Value {
    let mut pod_spec = json!({ "restartPolicy": "Never", "containers": containers });
    if !init.is_null() {
        pod_spec["initContainers"] = init;
    }
    for (k, v) in pod.as_object().into_iter().flatten() {
        pod_spec[k] = v.clone();
    }
    let mut job_spec = json!({
        "backoffLimit": 0,
        "template": { "metadata": { "labels": { "app": name } }, "spec": pod_spec },
    });
    for (k, v) in spec.as_object().into_iter().flatten() {
        job_spec[k] = v.clone();
    }
    json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name }, "spec": job_spec })
}

fn main_container(command: &str) -> Value {
    json!([{ "name": "main", "image": IMAGE, "command": ["sh", "-c", command] }])
}

fn phase(event: &Value) -> &str {
    event["object"]["status"]["phase"]
        .as_str()
        .unwrap_or_default()
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

/// The containers of pod `pod` still in the engine.
async fn engine_containers(pod: &str) -> usize {
    let docker = bollard::Docker::connect_with_local_defaults()
        .expect("the engine")
        .negotiate_version()
        .await
        .expect("the engine answers");
    let filters = HashMap::from([("label", vec![format!("{LABEL_POD}={pod}")])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_job_runs_init_then_main_and_fails_with_its_exit_code() {
    let Some(kube) = Kube::start().await else {
        return;
    };
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "token" },
                         "stringData": { "value": "s3cret" } });
    let created = kube
        .send("POST", &kube.core_path("secrets"), Some(secret))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["data"]["value"], "czNjcmV0",
        "stringData reads back as data"
    );

    let pods = kube.core_path("pods");
    let rv = kube.list_rv(&pods, "app%3Dt1").await;
    let mut pod_watch = kube
        .watch(&format!(
            "{pods}?watch=true&labelSelector=app%3Dt1&resourceVersion={rv}&timeoutSeconds=120"
        ))
        .await;
    let jobs = kube.jobs_path();
    let mut job_watch = kube
        .watch(&format!(
            "{jobs}?watch=true&labelSelector=app%3Dt1&resourceVersion={rv}"
        ))
        .await;

    let init = json!([{ "name": "init", "image": IMAGE,
        "command": ["sh", "-c", "echo init; echo from-init > /work/file"],
        "volumeMounts": [{ "name": "work", "mountPath": "/work" }] }]);
    let main = json!([{ "name": "main", "image": IMAGE,
        "command": ["sh", "-c", "cat /work/file; echo \"secret=$TOKEN\"; echo oops >&2; exit 3"],
        "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "token", "key": "value" } } }],
        "volumeMounts": [{ "name": "work", "mountPath": "/work", "readOnly": true }] }]);
    let volumes = json!({ "volumes": [{ "name": "work", "emptyDir": {} }] });
    let created = kube
        .create_job(job("t1", main, init, volumes, json!({})))
        .await;
    let uid = created["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned();
    assert_eq!(
        created["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str()
    );
    let labels = &created["spec"]["template"]["metadata"]["labels"];
    for (key, value) in [
        ("batch.kubernetes.io/job-name", "t1"),
        ("job-name", "t1"),
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
    ] {
        assert_eq!(labels[key], value, "template label {key}");
    }
    assert_eq!(created["spec"]["completions"], 1);
    assert_eq!(created["spec"]["completionMode"], "NonIndexed");
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(created["status"], json!({}));

    let events = pod_watch.until(|e| phase(e) == "Failed").await;
    assert_eq!(events[0]["type"], "ADDED", "{events:#?}");
    assert_eq!(phase(&events[0]), "Pending");
    let failed = &events.last().expect("one event")["object"];
    assert_eq!(events.last().unwrap()["type"], "MODIFIED");
    let main_state = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(main_state["exitCode"], 3, "{failed:#}");
    assert_eq!(main_state["reason"], "Error");
    let init_state = &failed["status"]["initContainerStatuses"][0]["state"]["terminated"];
    assert_eq!(init_state["exitCode"], 0);
    assert_eq!(init_state["reason"], "Completed");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let phases: Vec<&str> = events.iter().map(phase).collect();
    assert_eq!(
        (types, phases),
        (
            vec!["ADDED", "MODIFIED", "MODIFIED", "MODIFIED"],
            vec!["Pending", "Pending", "Running", "Failed"]
        ),
        "the pod's status is published when its init container starts, when it runs and when \
         it ends, no more"
    );
    let init_running = &events[1]["object"]["status"]["initContainerStatuses"][0]["state"];
    assert!(init_running["running"].is_object(), "{init_running:#}");
    let pod = failed["metadata"]["name"]
        .as_str()
        .expect("a pod name")
        .to_owned();
    assert!(pod.starts_with("t1-") && pod.len() == 8, "{pod}");
    assert_eq!(
        failed["metadata"]["ownerReferences"][0]["uid"],
        uid.as_str()
    );

    let log = |container: &str| format!("{pods}/{pod}/log?&container={container}");
    let main_log = kube.send("GET", &log("main"), None).await;
    assert_eq!(main_log.status, 200);
    let text = main_log.body.as_str().expect("a log is text");
    // Lines of stdout and stderr interleave as the engine delivers them.
    assert_eq!(
        text.replace("oops\n", ""),
        "from-init\nsecret=s3cret\n",
        "{text:?}"
    );
    assert!(text.contains("oops\n"), "{text:?}");
    let stderr = kube
        .send(
            "GET",
            &format!("{pods}/{pod}/log?container=main&stream=Stderr"),
            None,
        )
        .await;
    assert_eq!(stderr.body, Value::String("oops\n".to_owned()));
    assert_eq!(
        kube.send("GET", &log("init"), None).await.body,
        Value::String("init\n".to_owned())
    );
    let only_regular = kube.send("GET", &format!("{pods}/{pod}/log"), None).await;
    assert_eq!(
        only_regular.body, main_log.body,
        "the one regular container needs no name"
    );
    let tail = kube
        .send(
            "GET",
            &format!("{pods}/{pod}/log?container=main&tailLines=3&limitBytes=9"),
            None,
        )
        .await;
    assert_eq!(tail.body.as_str().map(str::len), Some(9), "{}", tail.body);

    let job_events = job_watch
        .until(|e| condition(&e["object"], "Failed").is_some())
        .await;
    let ended = &job_events.last().expect("one event")["object"];
    assert_eq!(
        condition(ended, "Failed").expect("Failed")["reason"],
        "BackoffLimitExceeded"
    );
    assert!(condition(ended, "FailureTarget").is_some(), "{ended:#}");
    assert_eq!(ended["status"]["failed"], 1);
    assert!(ended["status"]["startTime"].is_string());
    let types: Vec<&str> = job_events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["ADDED", "MODIFIED", "MODIFIED"],
        "created, started, ended"
    );

    let events = kube
        .send(
            "GET",
            &format!(
                "{}?fieldSelector=involvedObject.kind%3DJob,involvedObject.name%3Dt1",
                kube.core_path("events")
            ),
            None,
        )
        .await;
    let reasons: Vec<&str> = events.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"SuccessfulCreate") && reasons.contains(&"BackoffLimitExceeded"),
        "{reasons:?}"
    );
    assert_eq!(kube.fake.created_containers(), 2);
    let pod_events: Vec<_> = kube
        .fake
        .events()
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == pod.as_str())
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(pod_events.contains(&"Started".to_owned()), "{pod_events:?}");
    assert!(kube
        .fake
        .requests()
        .iter()
        .any(|r| r.watch && r.events >= 3));
    kube.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_unknown_fields_are_violations_and_dropped() {
    let Some(kube) = Kube::start().await else {
        return;
    };
    let mut sent = job(
        "t2",
        main_container("true"),
        Value::Null,
        json!({ "volumes": [{ "name": "host", "hostPath": { "path": "/" } }], "bogus": 1 }),
        json!({ "suspend": true }),
    );
    let answer = kube
        .send("POST", &kube.jobs_path(), Some(sent.clone()))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.contains("spec.template.spec.bogus")),
        "{:?}",
        answer.warnings
    );
    let violations = kube.fake.violations();
    assert_eq!(violations.len(), 2, "{violations:#?}");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("spec.template.spec.volumes[0].hostPath")
                && v.contains("x-trimmed-properties")),
        "{violations:#?}"
    );
    assert!(
        violations
            .iter()
            .any(|v| v.contains("spec.template.spec.bogus")),
        "{violations:#?}"
    );
    let stored = &kube.fake.jobs()[0];
    assert!(stored["spec"]["template"]["spec"].get("bogus").is_none());
    assert_eq!(
        stored["spec"]["template"]["spec"]["volumes"][0],
        json!({ "name": "host", "emptyDir": {} })
    );

    sent["metadata"]["name"] = json!("t2-strict");
    let strict = kube
        .send(
            "POST",
            &format!("{}?fieldValidation=Strict", kube.jobs_path()),
            Some(sent),
        )
        .await;
    assert_eq!(strict.status, 400, "{}", strict.body);
    assert_eq!(strict.body["reason"], "BadRequest");
    assert_eq!(
        kube.fake.violations().len(),
        4,
        "the refused request broke the subset too"
    );

    let stranger = kube
        .client
        .get(kube.url(&kube.jobs_path()))
        .send()
        .await
        .expect("answers");
    assert_eq!(stranger.status().as_u16(), 401);
    let elsewhere = kube
        .send("GET", "/apis/batch/v1/namespaces/other/jobs", None)
        .await;
    assert_eq!(elsewhere.status, 404);
    assert_eq!(elsewhere.body["message"], "namespaces \"other\" not found");
    let unknown_query = kube
        .send("GET", &format!("{}?bogus=1", kube.jobs_path()), None)
        .await;
    assert_eq!(unknown_query.status, 200);
    assert_eq!(
        kube.fake.violations().len(),
        5,
        "the undeclared query parameter is one more"
    );
    assert_eq!(
        kube.fake.created_containers(),
        0,
        "a suspended Job runs nothing"
    );

    kube.fake.deny("create", "jobs");
    let review = json!({ "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": { "resourceAttributes": { "namespace": NAMESPACE, "verb": "create", "group": "batch", "resource": "jobs" } } });
    let reviewed = kube
        .send(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(review.clone()),
        )
        .await;
    assert_eq!(
        (reviewed.status, &reviewed.body["status"]["allowed"]),
        (201, &json!(false))
    );
    let mut watching = review;
    watching["spec"]["resourceAttributes"]["verb"] = json!("watch");
    let reviewed = kube
        .send(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(watching),
        )
        .await;
    assert_eq!(reviewed.body["status"]["allowed"], true);
    let refused = kube
        .send(
            "POST",
            &kube.jobs_path(),
            Some(job(
                "t2-denied",
                main_container("true"),
                Value::Null,
                json!({}),
                json!({}),
            )),
        )
        .await;
    assert_eq!(
        (refused.status, &refused.body["reason"]),
        (403, &json!("Forbidden"))
    );
    let version = kube.send("GET", "/version", None).await;
    assert_eq!((version.status, &version.body["major"]), (200, &json!("1")));
    assert_eq!(
        kube.fake.violations().len(),
        5,
        "access reviews and /version are allowed"
    );

    let kubeconfig = std::env::temp_dir().join(format!("kube-fake-{}.yaml", std::process::id()));
    kube.fake.write_kubeconfig(&kubeconfig);
    let text = std::fs::read_to_string(&kubeconfig).expect("the kubeconfig");
    std::fs::remove_file(&kubeconfig).expect("remove the kubeconfig");
    for line in [
        format!("server: \"{}\"", kube.fake.url()),
        "token: \"t0ken\"".to_owned(),
        format!("namespace: \"{NAMESPACE}\""),
        "current-context: fake".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_watch_from_forgotten_history_gets_410() {
    let Some(kube) = Kube::start().await else {
        return;
    };
    let secrets = kube.core_path("secrets");
    let secret = |name: &str| json!({ "metadata": { "name": name }, "data": { "k": "dg==" } });
    let first = kube.send("POST", &secrets, Some(secret("a"))).await;
    let old = first.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("an rv")
        .to_owned();
    kube.send("POST", &secrets, Some(secret("b"))).await;
    let mut replay = kube
        .watch(&format!("{secrets}?watch=true&resourceVersion={old}"))
        .await;
    assert_eq!(
        replay.next().await.expect("b")["object"]["metadata"]["name"],
        "b"
    );
    drop(replay);

    kube.fake.forget_history();
    let mut expired = kube
        .watch(&format!("{secrets}?watch=true&resourceVersion={old}"))
        .await;
    let error = expired.next().await.expect("one event");
    assert_eq!(error["type"], "ERROR", "{error:#}");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        expired.next().await.is_none(),
        "the stream ends after the ERROR event"
    );

    let now = kube.list_rv(&secrets, "").await;
    let mut fresh = kube
        .watch(&format!("{secrets}?watch=true&resourceVersion={now}"))
        .await;
    kube.send("POST", &secrets, Some(secret("c"))).await;
    let added = fresh.next().await.expect("c");
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("c"))
    );
    let later = kube.list_rv(&secrets, "").await;
    let mut quiet = kube.watch(&format!("{secrets}?watch=true&resourceVersion={later}&allowWatchBookmarks=true&timeoutSeconds=1")).await;
    assert!(
        quiet.next().await.is_none(),
        "no bookmarks from a cluster without them; the timeout ends it"
    );
    let watches: Vec<_> = kube
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.watch)
        .collect();
    assert_eq!(
        watches.iter().map(|w| w.events).collect::<Vec<_>>()[..2],
        [1, 1]
    );
    let requests = kube.fake.requests().len();
    let events: usize = kube.fake.requests().iter().map(|r| r.events).sum();
    assert_eq!(kube.fake.request_count(), requests + events);
    let names: Vec<_> = kube
        .fake
        .secrets()
        .iter()
        .map(|s| s["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("a"), json!("b"), json!("c")]);
    kube.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_bookmarks_come_before_a_watch_times_out() {
    let Some(kube) = Kube::start_with(true).await else {
        return;
    };
    let secrets = kube.core_path("secrets");
    let mut watch = kube
        .watch(&format!(
            "{secrets}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"
        ))
        .await;
    let bookmark = watch.next().await.expect("a bookmark before the end");
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark:#}");
    assert_eq!(bookmark["object"]["kind"], "Secret");
    assert!(bookmark["object"]["metadata"]["resourceVersion"].is_string());
    assert!(watch.next().await.is_none(), "the timeout ends the stream");
    kube.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_second_create_of_a_name_is_409() {
    let Some(kube) = Kube::start().await else {
        return;
    };
    let sent = job(
        "dup",
        main_container("true"),
        Value::Null,
        json!({}),
        json!({ "suspend": true }),
    );
    kube.create_job(sent.clone()).await;
    let again = kube.send("POST", &kube.jobs_path(), Some(sent)).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(again.body["message"], "jobs.batch \"dup\" already exists");
    assert_eq!(kube.fake.jobs().len(), 1);
    let jobs = kube.jobs_path();
    let background = kube
        .send(
            "DELETE",
            &format!("{jobs}/dup?propagationPolicy=Background"),
            None,
        )
        .await;
    assert_eq!(background.status, 200, "{}", background.body);
    assert_eq!(
        (
            &background.body["kind"],
            &background.body["status"],
            &background.body["details"]["kind"]
        ),
        (&json!("Status"), &json!("Success"), &json!("jobs"))
    );
    let gone = kube.send("GET", &format!("{jobs}/dup"), None).await;
    assert_eq!(
        (gone.status, &gone.body["message"]),
        (404, &json!("jobs.batch \"dup\" not found"))
    );
    let sent = job(
        "kept",
        main_container("true"),
        Value::Null,
        json!({}),
        json!({ "suspend": true }),
    );
    kube.create_job(sent).await;
    let orphaned = kube.send("DELETE", &format!("{jobs}/kept"), None).await;
    assert_eq!(orphaned.status, 200, "{}", orphaned.body);
    assert_eq!(
        orphaned.body["metadata"]["finalizers"],
        json!(["orphan"]),
        "batch/v1 orphans by default"
    );
    assert!(kube.fake.jobs().is_empty());
    kube.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_foreground_delete_stops_the_pod_then_deletes_the_job() {
    let Some(kube) = Kube::start().await else {
        return;
    };
    let pods = kube.core_path("pods");
    let rv = kube.list_rv(&pods, "app%3Dt5").await;
    let mut pod_watch = kube
        .watch(&format!(
            "{pods}?watch=true&labelSelector=app%3Dt5&resourceVersion={rv}"
        ))
        .await;
    let jobs = kube.jobs_path();
    let mut job_watch = kube
        .watch(&format!("{jobs}?watch=true&resourceVersion={rv}"))
        .await;
    kube.create_job(job(
        "t5",
        main_container("sleep 60"),
        Value::Null,
        json!({}),
        json!({}),
    ))
    .await;
    let running = pod_watch.until(|e| phase(e) == "Running").await;
    let pod = running[0]["object"]["metadata"]["name"]
        .as_str()
        .expect("a pod")
        .to_owned();
    assert_eq!(engine_containers(&pod).await, 1);

    let answer = kube
        .send(
            "DELETE",
            &format!("{jobs}/t5"),
            Some(json!({ "propagationPolicy": "Foreground" })),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );

    let gone = pod_watch.until(|e| e["type"] == "DELETED").await;
    assert_eq!(
        gone.last().unwrap()["object"]["metadata"]["name"],
        pod.as_str()
    );
    let job_events = job_watch.until(|e| e["type"] == "DELETED").await;
    let marked = job_events.iter().find(|e| {
        e["type"] == "MODIFIED" && e["object"]["metadata"]["deletionTimestamp"].is_string()
    });
    assert!(
        marked.is_some(),
        "the Job waits with its finalizer: {job_events:#?}"
    );
    // This fake's resourceVersions are one counter (a client must not rely on that; the test
    // may): the Job went after its pod.
    let rv = |e: &Value| {
        e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(
        rv(gone.last().unwrap()) < rv(job_events.last().unwrap()),
        "{gone:#?} {job_events:#?}"
    );
    assert!(kube.fake.pods().is_empty() && kube.fake.jobs().is_empty());
    assert_eq!(
        engine_containers(&pod).await,
        0,
        "the pod's container is removed"
    );
    kube.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_active_deadline_fails_the_job_and_ttl_deletes_it() {
    let Some(kube) = Kube::start().await else {
        return;
    };
    let jobs = kube.jobs_path();
    let rv = kube.list_rv(&jobs, "").await;
    let mut job_watch = kube
        .watch(&format!("{jobs}?watch=true&resourceVersion={rv}"))
        .await;
    let spec = json!({ "activeDeadlineSeconds": 1, "ttlSecondsAfterFinished": 2 });
    kube.create_job(job(
        "t6",
        main_container("sleep 30"),
        Value::Null,
        json!({}),
        spec,
    ))
    .await;
    let events = job_watch
        .until(|e| condition(&e["object"], "Failed").is_some())
        .await;
    let failed = &events.last().expect("one event")["object"];
    assert_eq!(
        condition(failed, "Failed").expect("Failed")["reason"],
        "DeadlineExceeded",
        "{failed:#}"
    );
    let pod = kube.fake.pods().pop().expect("the pod stays until the TTL");
    assert_eq!(pod["status"]["phase"], "Failed");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        137
    );
    let pods = kube.core_path("pods");
    let mut pod_watch = kube
        .watch(&format!("{pods}?watch=true&labelSelector=app%3Dt6"))
        .await;
    let deleted = job_watch.until(|e| e["type"] == "DELETED").await;
    assert_eq!(deleted.last().unwrap()["object"]["metadata"]["name"], "t6");
    let gone = pod_watch.until(|e| e["type"] == "DELETED").await;
    assert_eq!(
        gone[0]["type"], "ADDED",
        "the watch starts with the pod: {gone:#?}"
    );
    assert!(
        kube.fake.pods().is_empty(),
        "the TTL deletes in the background, the pod too"
    );
    kube.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_fake_a_missing_secret_keeps_the_container_waiting_until_it_exists() {
    let Some(kube) = Kube::start().await else {
        return;
    };
    let pods = kube.core_path("pods");
    let rv = kube.list_rv(&pods, "app%3Dt7").await;
    let mut pod_watch = kube
        .watch(&format!(
            "{pods}?watch=true&labelSelector=app%3Dt7&resourceVersion={rv}"
        ))
        .await;
    let main = json!([{ "name": "main", "image": IMAGE, "command": ["sh", "-c", "echo \"$KEY\""],
        "env": [{ "name": "KEY", "valueFrom": { "secretKeyRef": { "name": "later", "key": "k" } } }] }]);
    kube.create_job(job("t7", main, Value::Null, json!({}), json!({})))
        .await;
    let waiting = |e: &Value| {
        e["object"]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone()
    };
    let events = pod_watch
        .until(|e| waiting(e) == "CreateContainerConfigError")
        .await;
    let pod = events[0]["object"]["metadata"]["name"]
        .as_str()
        .expect("a pod")
        .to_owned();
    assert_eq!(phase(events.last().unwrap()), "Pending");
    let log = kube
        .send("GET", &format!("{pods}/{pod}/log?container=main"), None)
        .await;
    assert_eq!(log.status, 400);
    let message = format!(
        "container \"main\" in pod \"{pod}\" is waiting to start: CreateContainerConfigError"
    );
    assert_eq!(log.body["message"], message.as_str());
    let messages: Vec<_> = kube
        .fake
        .events()
        .iter()
        .map(|e| e["message"].clone())
        .collect();
    assert!(
        messages.contains(&json!("Error: secret \"later\" not found")),
        "{messages:?}"
    );

    let secret = json!({ "metadata": { "name": "later" }, "stringData": { "k": "at last" } });
    assert_eq!(
        kube.send("POST", &kube.core_path("secrets"), Some(secret))
            .await
            .status,
        201
    );
    pod_watch.until(|e| phase(e) == "Succeeded").await;
    let log = kube.send("GET", &format!("{pods}/{pod}/log"), None).await;
    assert_eq!(log.body, Value::String("at last\n".to_owned()));
    kube.assert_no_violations();
}
