//! Every request checked against the Kubernetes API subset
//! (`../shared/reference/kubernetes-api-subset.json`, OpenAPI 3).
//!
//! A request passes when its method and path template exist; every query parameter is
//! declared for the operation (path-level or operation-level; empty pairs, as kube-rs's
//! `?&container=`, are skipped) with a value of its declared type; its content type is one the
//! operation takes; and its JSON body fits the operation's schema *recursively*: `$ref`s
//! followed, `allOf` parts merged, `oneOf` alternatives tried, required fields present, basic
//! types and the `int32`/`int64`/`date-time`/`byte` formats right, and no field a schema does
//! not name. That last check is the fake's own strictness (the schemas never say
//! `additionalProperties: false`); a schema that names no properties and no
//! `additionalProperties` (FieldsV1, RawExtension, Patch) is free-form. `default`s are not
//! checked (the upstream file's `"default": {}` break their own schemas).
//!
//! Two operations the subset lacks but the client legitimately sends are added here, marked
//! `x-added-by-fake`: `GET /version` and `POST /apis/authorization.k8s.io/v1/
//! selfsubjectaccessreviews` (with a schema written from authorization/v1). Nothing else is.
//! Path templates match with or without a trailing slash (the discovery paths are spelt
//! `/apis/batch/v1/` in the subset, clients ask for `/apis/batch/v1`).

use serde_json::{json, Map, Value};

use super::values::{base64_decode, parse_rfc3339};

/// One step of a path into a JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A field of an object.
    Field(String),
    /// An element of an array.
    Index(usize),
}

/// `spec.template.spec.volumes[0].hostPath`.
pub fn render(at: &[Step]) -> String {
    let mut out = String::new();
    for step in at {
        match step {
            Step::Field(f) if out.is_empty() => out.push_str(f),
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        "(the body)".to_owned()
    } else {
        out
    }
}

/// One thing a body got wrong.
#[derive(Clone, Debug)]
pub struct Problem {
    /// Where.
    pub at: Vec<Step>,
    /// Whether it is a field the schema does not know (the server drops those).
    pub unknown: bool,
    /// What, in words.
    pub message: String,
}

/// What checking one request found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Violations, each naming the request.
    pub violations: Vec<String>,
    /// Body fields no schema names, as paths into the body.
    pub unknown: Vec<Vec<Step>>,
}

/// The effective shape of a schema: its `$ref`s resolved and `allOf` parts merged.
#[derive(Default)]
struct Shape<'a> {
    name: Option<&'a str>,
    kind: Option<&'a str>,
    format: Option<&'a str>,
    properties: Map<String, Value>,
    required: Vec<&'a str>,
    additional: Option<&'a Value>,
    items: Option<&'a Value>,
    one_of: Vec<&'a Value>,
    trimmed: Vec<&'a str>,
}

/// The subset, with the fake's two additions.
pub struct Description {
    doc: Value,
}

impl Description {
    /// Reads the subset beside the repository.
    pub fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/kubernetes-api-subset.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut doc: Value = serde_json::from_str(&text).expect("the API subset is JSON");
        add_fake_operations(&mut doc);
        Self { doc }
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> (&'a Value, Option<&'a str>) {
        let mut value = value;
        let mut name = None;
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let mut target = &self.doc;
            for part in reference.trim_start_matches("#/").split('/') {
                target = &target[part];
            }
            assert!(
                !target.is_null(),
                "the subset resolves its $ref {reference}"
            );
            name = reference.rsplit('/').next();
            value = target;
        }
        (value, name)
    }

    fn shape<'a>(&'a self, schema: &'a Value) -> Shape<'a> {
        let mut shape = Shape::default();
        self.merge(schema, &mut shape);
        shape
    }

    fn merge<'a>(&'a self, schema: &'a Value, shape: &mut Shape<'a>) {
        let (schema, name) = self.resolve(schema);
        if name.is_some() {
            shape.name = name;
        }
        if let Some(kind) = schema["type"].as_str() {
            shape.kind = Some(kind);
        }
        if let Some(format) = schema["format"].as_str() {
            shape.format = Some(format);
        }
        if let Some(properties) = schema["properties"].as_object() {
            shape
                .properties
                .extend(properties.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        shape.required.extend(
            schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
        if let Some(additional) = schema.get("additionalProperties") {
            shape.additional = Some(additional);
        }
        if let Some(items) = schema.get("items") {
            shape.items = Some(items);
        }
        shape
            .one_of
            .extend(schema["oneOf"].as_array().into_iter().flatten());
        shape.trimmed.extend(
            schema["x-trimmed-properties"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
        for part in schema["allOf"].as_array().into_iter().flatten() {
            self.merge(part, shape);
        }
    }

    /// The problems of `value` against `schema`, appended to `out`.
    fn check_value(
        &self,
        schema: &Value,
        value: &Value,
        at: &mut Vec<Step>,
        out: &mut Vec<Problem>,
    ) {
        // Go's decoder takes null as "unset" for every optional field.
        if value.is_null() {
            return;
        }
        let shape = self.shape(schema);
        let of = shape.name.map(|n| format!(" ({n})")).unwrap_or_default();
        let mut problem = |at: &[Step], message: String| {
            out.push(Problem {
                at: at.to_vec(),
                unknown: false,
                message,
            })
        };
        if !shape.one_of.is_empty() {
            let fits = shape.one_of.iter().any(|alternative| {
                let mut scratch = Vec::new();
                self.check_value(alternative, value, &mut at.clone(), &mut scratch);
                scratch.is_empty()
            });
            if !fits {
                problem(
                    at,
                    format!(
                        "`{}` fits none of the alternatives{of}: {value}",
                        render(at)
                    ),
                );
            }
            return;
        }
        let Some(kind) = shape.kind else { return };
        let type_ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !type_ok {
            problem(
                at,
                format!("`{}` must be of type {kind}{of}, not {value}", render(at)),
            );
            return;
        }
        match (kind, shape.format) {
            ("integer", Some("int32"))
                if value.as_i64().is_none_or(|n| i32::try_from(n).is_err()) =>
            {
                problem(
                    at,
                    format!("`{}` is out of the int32 range: {value}", render(at)),
                );
            }
            ("string", Some("date-time"))
                if parse_rfc3339(value.as_str().unwrap_or_default()).is_none() =>
            {
                problem(
                    at,
                    format!("`{}` is not an RFC 3339 time: {value}", render(at)),
                );
            }
            ("string", Some("byte"))
                if base64_decode(value.as_str().unwrap_or_default()).is_none() =>
            {
                problem(at, format!("`{}` is not base64: {value}", render(at)));
            }
            _ => {}
        }
        if let (Some(items), Some(array)) = (shape.items, value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                at.push(Step::Index(i));
                self.check_value(items, item, at, out);
                at.pop();
            }
        }
        let Some(object) = value.as_object() else {
            return;
        };
        for required in &shape.required {
            if object.get(*required).is_none_or(Value::is_null) {
                at.push(Step::Field((*required).to_owned()));
                out.push(Problem {
                    at: at.clone(),
                    unknown: false,
                    message: format!("required field `{}` is missing{of}", render(at)),
                });
                at.pop();
            }
        }
        for (key, field) in object {
            at.push(Step::Field(key.clone()));
            if let Some(property) = shape.properties.get(key) {
                self.check_value(property, field, at, out);
            } else if let Some(additional) = shape.additional.filter(|a| a.is_object()) {
                self.check_value(additional, field, at, out);
            } else if !shape.properties.is_empty() || shape.additional == Some(&Value::Bool(false))
            {
                let message = if shape.trimmed.contains(&key.as_str()) {
                    format!(
                        "`{}` is a field this subset leaves out (x-trimmed-properties{of})",
                        render(at)
                    )
                } else {
                    format!("`{}` is not a field of the schema{of}", render(at))
                };
                out.push(Problem {
                    at: at.clone(),
                    unknown: true,
                    message,
                });
            }
            at.pop();
        }
    }

    /// The problems of `value` against the named component schema.
    pub fn check_object(&self, schema: &str, value: &Value) -> Vec<Problem> {
        let reference = json!({ "$ref": format!("#/components/schemas/{schema}") });
        let mut out = Vec::new();
        self.check_value(&reference, value, &mut Vec::new(), &mut out);
        out
    }

    fn parameters<'a>(&'a self, item: &'a Value, op: &'a Value) -> Vec<&'a Value> {
        item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(op["parameters"].as_array().into_iter().flatten())
            .map(|p| self.resolve(p).0)
            .collect()
    }

    /// Checks one request: `query` as sent (pairs), `content_type` as the header says.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        content_type: Option<&str>,
        body: Option<&Value>,
        body_bytes: usize,
    ) -> Checked {
        let what = format!("{method} {path}");
        let mut checked = Checked::default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let paths = self.doc["paths"].as_object().expect("the subset has paths");
        let Some((_, item)) = paths.iter().find(|(template, _)| {
            let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
            parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(p, s)| {
                    (p.starts_with('{') && p.ends_with('}') && !s.is_empty()) || p == s
                })
        }) else {
            checked
                .violations
                .push(format!("{what}: no such path in the API subset"));
            return checked;
        };
        let Some(op) = item.get(method.to_lowercase()) else {
            checked.violations.push(format!(
                "{what}: the API subset has no {method} for this path"
            ));
            return checked;
        };
        let params = self.parameters(item, op);
        for (key, value) in query {
            let Some(param) = params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == key.as_str())
            else {
                checked
                    .violations
                    .push(format!("{what}: query parameter `{key}` is not declared"));
                continue;
            };
            let fits = match param["schema"]["type"].as_str() {
                Some("boolean") => matches!(value.as_str(), "true" | "false" | "1" | "0"),
                Some("integer") => value.parse::<i64>().is_ok(),
                _ => true,
            };
            if !fits {
                checked.violations.push(format!(
                    "{what}: query parameter `{key}={value}` is not of type {}",
                    param["schema"]["type"]
                ));
            }
        }
        let request_body = self.resolve(&op["requestBody"]).0;
        let content = request_body["content"].as_object();
        match (content, body_bytes) {
            (None, 0) => {}
            (None, _) => checked
                .violations
                .push(format!("{what}: the operation takes no body")),
            (Some(_), 0) if request_body["required"] == true => checked
                .violations
                .push(format!("{what}: the operation requires a body")),
            (Some(_), 0) => {}
            (Some(content), _) => {
                let media = content_type
                    .unwrap_or_default()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim();
                let schema = content
                    .get(media)
                    .or_else(|| content.get("*/*"))
                    .map(|c| &c["schema"]);
                match (schema, body) {
                    (None, _) => checked.violations.push(format!(
                        "{what}: content type `{media}` is not one the operation takes ({})",
                        content.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    (Some(_), None) => {}
                    (Some(schema), Some(body)) => {
                        let mut problems = Vec::new();
                        self.check_value(schema, body, &mut Vec::new(), &mut problems);
                        for p in problems {
                            checked.violations.push(format!("{what}: {}", p.message));
                            if p.unknown {
                                checked.unknown.push(p.at);
                            }
                        }
                    }
                }
            }
        }
        checked
    }
}

/// Removes the field at `at` from `value`.
pub fn prune(value: &mut Value, at: &[Step]) {
    let Some((last, parents)) = at.split_last() else {
        return;
    };
    let mut target = value;
    for step in parents {
        target = match step {
            Step::Field(f) => match target.get_mut(f) {
                Some(t) => t,
                None => return,
            },
            Step::Index(i) => match target.get_mut(*i) {
                Some(t) => t,
                None => return,
            },
        };
    }
    if let (Step::Field(f), Some(object)) = (last, target.as_object_mut()) {
        object.remove(f);
    }
}

/// Adds `GET /version` and `POST .../selfsubjectaccessreviews` to the loaded subset.
fn add_fake_operations(doc: &mut Value) {
    let note = "added by the fake: not in the subset, but sent by the client (kube-rs \
                Client::apiserver_version, and an access check before a run)";
    let query = |name: &str, kind: &str| json!({ "in": "query", "name": name, "schema": { "type": kind, "uniqueItems": true } });
    doc["paths"]["/version"] =
        json!({ "get": { "operationId": "getCodeVersion", "x-added-by-fake": note } });
    doc["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"] = json!({
        "parameters": [query("pretty", "string")],
        "post": {
            "operationId": "createAuthorizationV1SelfSubjectAccessReview",
            "x-added-by-fake": note,
            "parameters": [query("dryRun", "string"), query("fieldManager", "string"), query("fieldValidation", "string")],
            "requestBody": { "required": true, "content": { "*/*": { "schema":
                { "$ref": "#/components/schemas/io.k8s.api.authorization.v1.SelfSubjectAccessReview" } } } }
        }
    });
    let string = json!({ "type": "string" });
    let selector = json!({ "type": "object", "properties": {
        "rawSelector": string,
        "requirements": { "type": "array", "items": { "type": "object", "required": ["key", "operator"],
            "properties": { "key": string, "operator": string, "values": { "type": "array", "items": string } } } }
    } });
    let schemas = &mut doc["components"]["schemas"];
    schemas["io.k8s.api.authorization.v1.SelfSubjectAccessReview"] = json!({
        "type": "object", "required": ["spec"], "x-added-by-fake": note,
        "properties": {
            "apiVersion": string, "kind": string,
            "metadata": { "allOf": [{ "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" }] },
            "spec": { "allOf": [{ "$ref": "#/components/schemas/io.k8s.api.authorization.v1.SelfSubjectAccessReviewSpec" }] },
            "status": { "allOf": [{ "$ref": "#/components/schemas/io.k8s.api.authorization.v1.SubjectAccessReviewStatus" }] }
        }
    });
    schemas["io.k8s.api.authorization.v1.SelfSubjectAccessReviewSpec"] = json!({
        "type": "object", "x-added-by-fake": note,
        "properties": {
            "resourceAttributes": { "allOf": [{ "$ref": "#/components/schemas/io.k8s.api.authorization.v1.ResourceAttributes" }] },
            "nonResourceAttributes": { "allOf": [{ "$ref": "#/components/schemas/io.k8s.api.authorization.v1.NonResourceAttributes" }] }
        }
    });
    schemas["io.k8s.api.authorization.v1.ResourceAttributes"] = json!({
        "type": "object", "x-added-by-fake": note,
        "properties": {
            "namespace": string, "verb": string, "group": string, "version": string,
            "resource": string, "subresource": string, "name": string,
            "fieldSelector": selector, "labelSelector": selector
        }
    });
    schemas["io.k8s.api.authorization.v1.NonResourceAttributes"] = json!({
        "type": "object", "x-added-by-fake": note, "properties": { "path": string, "verb": string }
    });
    schemas["io.k8s.api.authorization.v1.SubjectAccessReviewStatus"] = json!({
        "type": "object", "required": ["allowed"], "x-added-by-fake": note,
        "properties": { "allowed": { "type": "boolean" }, "denied": { "type": "boolean" },
                        "reason": string, "evaluationError": string }
    });
}

#[test]
fn kube_fake_openapi_checks() {
    let d = Description::load();
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "j", "labels": { "a": "b" } },
        "spec": { "backoffLimit": 0, "template": { "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "c", "image": "i", "resources": { "limits": { "memory": "512Mi", "cpu": 1 } } }],
            "volumes": [{ "name": "v", "emptyDir": {} }, { "name": "h", "hostPath": { "path": "/" } }]
        } } }
    });
    let path = "/apis/batch/v1/namespaces/ns/jobs";
    let checked = d.check("POST", path, &[], Some("application/json"), Some(&job), 1);
    assert_eq!(
        checked.unknown,
        vec![vec![
            Step::Field("spec".into()),
            Step::Field("template".into()),
            Step::Field("spec".into()),
            Step::Field("volumes".into()),
            Step::Index(1),
            Step::Field("hostPath".into()),
        ]]
    );
    assert!(
        checked.violations[0].contains("x-trimmed-properties"),
        "{:?}",
        checked.violations
    );
    let mut bad = job.clone();
    bad["spec"]["template"]["spec"]["volumes"] = json!([]);
    bad["spec"]["backoffLimit"] = json!("0");
    bad["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .map(|c| c.remove("name"));
    let checked = d.check(
        "POST",
        path,
        &[("dryRun".into(), "All".into())],
        None,
        Some(&bad),
        1,
    );
    assert_eq!(checked.violations.len(), 2, "{:?}", checked.violations);
    let q = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let log = "/api/v1/namespaces/ns/pods/p/log";
    assert!(d
        .check(
            "GET",
            log,
            &[q("container", "c"), q("follow", "true")],
            None,
            None,
            0
        )
        .violations
        .is_empty());
    assert_eq!(
        d.check("GET", log, &[q("bogus", "1")], None, None, 0)
            .violations
            .len(),
        1
    );
    assert_eq!(
        d.check("GET", log, &[q("follow", "yes")], None, None, 0)
            .violations
            .len(),
        1
    );
    assert!(d
        .check("GET", "/version", &[], None, None, 0)
        .violations
        .is_empty());
    assert!(d
        .check("GET", "/apis/batch/v1", &[], None, None, 0)
        .violations
        .is_empty());
    assert_eq!(
        d.check("DELETE", "/api/v1/namespaces/ns/pods/p", &[], None, None, 0)
            .violations
            .len(),
        1
    );
    assert_eq!(
        d.check("GET", "/api/v1/nodes", &[], None, None, 0)
            .violations
            .len(),
        1
    );
}
