//! Failures as the API server words them: a `Status` object with the HTTP code, the reason and
//! the message upstream would send (`jobs.batch "x" already exists`, …).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::store::Kind;

/// A failed request.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Invalid`, …
    pub reason: &'static str,
    /// The message.
    pub message: String,
    /// `details`, when the reason has them.
    pub details: Option<Value>,
}

impl ApiError {
    /// A failure with no details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 for object `name` of `kind`.
    pub fn not_found(kind: Kind, name: &str) -> Self {
        Self {
            details: Some(json!({ "name": name, "group": kind.group(), "kind": kind.plural() })),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", kind.qualified()),
            )
        }
    }

    /// 404 for a namespace other than the cluster's one.
    pub fn not_found_namespace(namespace: &str) -> Self {
        Self {
            details: Some(json!({ "name": namespace, "kind": "namespaces" })),
            ..Self::new(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
            )
        }
    }

    /// 409 for a second object `name` of `kind`.
    pub fn already_exists(kind: Kind, name: &str) -> Self {
        Self {
            details: Some(json!({ "name": name, "group": kind.group(), "kind": kind.plural() })),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.qualified()),
            )
        }
    }

    /// 422 Invalid for object `name` of `kind` (named as `Job.batch`), one cause per field:
    /// (field path, "Required value: …" / "Invalid value: …").
    pub fn invalid(kind: Kind, name: &str, causes: &[(String, String)]) -> Self {
        let what = match kind.group() {
            "" => kind.name().to_owned(),
            group => format!("{}.{group}", kind.name()),
        };
        Self::invalid_fields(&what, name, causes)
            .with_details(json!({ "name": name, "group": kind.group(), "kind": kind.name() }))
    }

    /// 422 Invalid for something that is not a stored kind (`PodLogOptions`).
    pub fn invalid_fields(what: &str, name: &str, causes: &[(String, String)]) -> Self {
        let listed: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let message = match listed.as_slice() {
            [one] => format!("{what} \"{name}\" is invalid: {one}"),
            many => format!("{what} \"{name}\" is invalid: [{}]", many.join(", ")),
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, m)| {
                let reason = m.split(':').next().unwrap_or_default();
                let reason = match reason {
                    "Required value" => "FieldValueRequired",
                    "Unsupported value" => "FieldValueNotSupported",
                    "Duplicate value" => "FieldValueDuplicate",
                    "Not found" => "FieldValueNotFound",
                    "Forbidden" => "FieldValueForbidden",
                    _ => "FieldValueInvalid",
                };
                json!({ "reason": reason, "message": m, "field": field })
            })
            .collect();
        Self {
            details: Some(json!({ "name": name, "kind": what, "causes": causes })),
            ..Self::new(422, "Invalid", message)
        }
    }

    /// The same failure with `details`, keeping causes already set.
    pub fn with_details(mut self, mut details: Value) -> Self {
        if let Some(causes) = self.details.as_ref().map(|d| d["causes"].clone()) {
            if !causes.is_null() {
                details["causes"] = causes;
            }
        }
        self.details = Some(details);
        self
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).expect("invariant: API errors use real codes");
        (code, axum::Json(self.status())).into_response()
    }
}

/// The `Status` a finished deletion answers with.
pub fn deleted(kind: Kind, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": { "name": name, "group": kind.group(), "kind": kind.plural(), "uid": uid },
    })
}
