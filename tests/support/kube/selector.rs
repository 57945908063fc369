//! Label and field selectors of list and watch requests, parsed once per request.
//!
//! Labels: `a=b`, `a==b`, `a!=b`, `a` (exists), `!a` (absent), `a in (x,y)`, `a notin (x,y)`,
//! joined by commas. Fields: `f=v`, `f==v`, `f!=v` joined by commas, over the field labels the
//! real server supports for the kind (every kind: `metadata.name`, `metadata.namespace`; pods,
//! events, jobs and secrets a few more); any other field label is refused, as upstream does.

use serde_json::Value;

use super::store::Kind;

/// One requirement of a label selector.
#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed `labelSelector`; the empty one matches everything.
#[derive(Clone, Debug, Default)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(text[start..].trim());
    out.into_iter().filter(|t| !t.is_empty()).collect()
}

impl LabelSelector {
    /// Parses `text`; the error is the server's wording.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in terms(text) {
            let bad = || format!("unable to parse requirement: found '{term}', expected: key");
            let key_ok = |k: &str| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            };
            let requirement = if let Some(open) = term.find('(') {
                let close = term.rfind(')').filter(|c| *c == term.len() - 1);
                let Some(close) = close else {
                    return Err(bad());
                };
                let mut words = term[..open].split_whitespace();
                let (Some(key), Some(op), None) = (words.next(), words.next(), words.next()) else {
                    return Err(bad());
                };
                let values: Vec<String> = term[open + 1..close]
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                match op {
                    "in" => Requirement::In(key.to_owned(), values),
                    "notin" => Requirement::NotIn(key.to_owned(), values),
                    _ => return Err(bad()),
                }
            } else if let Some(key) = term.strip_prefix('!') {
                Requirement::Absent(key.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else {
                Requirement::Exists(term.to_owned())
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if !key_ok(key) {
                return Err(bad());
            }
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::Absent(k) => label(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector` for one kind.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The value of field label `field` of `object` (of `kind`), or `None` when the server does
/// not support that label for the kind.
fn field(kind: Kind, object: &Value, field: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let path = |p: &str| text(object.pointer(p).unwrap_or(&Value::Null));
    match (kind, field) {
        (_, "metadata.name") => Some(path("/metadata/name")),
        (_, "metadata.namespace") => Some(path("/metadata/namespace")),
        (Kind::Pod, "spec.nodeName") => Some(path("/spec/nodeName")),
        (Kind::Pod, "spec.restartPolicy") => Some(path("/spec/restartPolicy")),
        (Kind::Pod, "spec.schedulerName") => Some(path("/spec/schedulerName")),
        (Kind::Pod, "spec.serviceAccountName") => Some(path("/spec/serviceAccountName")),
        (Kind::Pod, "status.phase") => Some(path("/status/phase")),
        (Kind::Pod, "status.podIP") => Some(path("/status/podIP")),
        (Kind::Job, "status.successful") => Some(
            object["status"]["succeeded"]
                .as_i64()
                .unwrap_or(0)
                .to_string(),
        ),
        (Kind::Secret, "type") => Some(path("/type")),
        (Kind::Event, "source") => Some(path("/source/component")),
        (Kind::Event, "reason" | "type" | "reportingComponent") => Some(text(&object[field])),
        (Kind::Event, f) => {
            let sub = f.strip_prefix("involvedObject.")?;
            matches!(
                sub,
                "kind"
                    | "namespace"
                    | "name"
                    | "uid"
                    | "apiVersion"
                    | "resourceVersion"
                    | "fieldPath"
            )
            .then(|| text(&object["involvedObject"][sub]))
        }
        _ => None,
    }
}

impl FieldSelector {
    /// Parses `text` for `kind`; the error is the server's wording.
    pub fn parse(kind: Kind, text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for term in terms(text) {
            let (key, negated, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            let key = key.trim();
            if field(kind, &Value::Null, key).is_none() {
                return Err(format!("field label not supported: {key}"));
            }
            out.push((key.to_owned(), negated, value.trim().to_owned()));
        }
        Ok(Self(out))
    }

    /// Whether `object` of `kind` satisfies every term.
    pub fn matches(&self, kind: Kind, object: &Value) -> bool {
        self.0.iter().all(|(key, negated, value)| {
            let actual = field(kind, object, key).unwrap_or_default();
            (actual == *value) != *negated
        })
    }
}

/// Both selectors of one request.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selector {
    /// Whether `object` of `kind` is selected.
    pub fn matches(&self, kind: Kind, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(kind, object)
    }
}

#[test]
fn kube_fake_selectors() {
    let pod = serde_json::json!({ "metadata": { "name": "p", "labels": { "a": "1", "b": "2" } },
                                   "status": { "phase": "Running" } });
    let yes = |s: &str| LabelSelector::parse(s).expect("parses").matches(&pod);
    assert!(yes(""));
    assert!(yes("a=1,b==2"));
    assert!(yes("a, !c"));
    assert!(yes("a in (1, 3),b notin (3)"));
    assert!(yes("c!=1"));
    assert!(!yes("a=2"));
    assert!(!yes("c"));
    assert!(LabelSelector::parse("a in (1").is_err());
    let fields = FieldSelector::parse(Kind::Pod, "status.phase=Running,metadata.name!=q");
    assert!(fields.expect("parses").matches(Kind::Pod, &pod));
    assert_eq!(
        FieldSelector::parse(Kind::Pod, "spec.bogus=1").unwrap_err(),
        "field label not supported: spec.bogus"
    );
}
