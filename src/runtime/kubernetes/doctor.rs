//! What `dispatch doctor` asks of a cluster before a run: does it answer, does the namespace
//! exist, may dispatch do there what the backend does, do the Secrets the spec names exist.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use super::{is_status, Kubernetes};
use crate::spec::model::RuntimeSpec;

/// What the backend does, per resource: (API group, resource, subresource, verbs).
pub const NEEDED: &[(&str, &str, &str, &[&str])] = &[
    (
        "batch",
        "jobs",
        "",
        &["create", "get", "list", "watch", "delete"],
    ),
    ("", "pods", "", &["get", "list", "watch"]),
    ("", "pods", "log", &["get"]),
    // Never deleted by dispatch: each is owned by its Job and goes with it.
    ("", "secrets", "", &["create", "get"]),
];

/// One line per check: `Ok` what holds, `Err` what would make a run fail.
pub async fn check(cluster: &Kubernetes, spec: &RuntimeSpec) -> Vec<Result<String, String>> {
    let mut lines = Vec::new();
    let namespace = cluster.namespace();
    match cluster.client().apiserver_version().await {
        Ok(version) => lines.push(Ok(format!(
            "the cluster answers (Kubernetes {})",
            version.git_version
        ))),
        Err(error) => {
            lines.push(Err(format!("the cluster does not answer: {error}")));
            return lines;
        }
    }
    // A Secret made with dryRun: the namespace must exist (nothing is stored).
    let probe = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("dispatch-doctor".to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match cluster.secrets().create(&dry, &probe).await {
        Ok(_) => lines.push(Ok(format!("namespace {namespace} exists"))),
        Err(e) if is_status(&e, 404) => lines.push(Err(format!(
            "namespace {namespace} does not exist (create it, or set runtime.namespace)"
        ))),
        // Refused or already there: the namespace exists; the reviews below say the rest.
        Err(e) if is_status(&e, 403) || is_status(&e, 409) => {
            lines.push(Ok(format!("namespace {namespace} exists")));
        }
        Err(error) => lines.push(Err(format!("namespace {namespace}: {error}"))),
    }
    let reviews: Api<SelfSubjectAccessReview> = Api::all(cluster.client().clone());
    for (group, resource, subresource, verbs) in NEEDED {
        let mut denied = Vec::new();
        for verb in *verbs {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(namespace.to_owned()),
                        group: Some((*group).to_owned()),
                        resource: Some((*resource).to_owned()),
                        subresource: (!subresource.is_empty()).then(|| (*subresource).to_owned()),
                        verb: Some((*verb).to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            match reviews.create(&PostParams::default(), &review).await {
                Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
                Ok(_) => denied.push((*verb).to_owned()),
                Err(error) => denied.push(format!("{verb} (cannot ask: {error})")),
            }
        }
        let what = if subresource.is_empty() {
            (*resource).to_owned()
        } else {
            format!("{resource}/{subresource}")
        };
        if denied.is_empty() {
            lines.push(Ok(format!(
                "may {} {what} in {namespace}",
                verbs.join(", ")
            )));
        } else {
            lines.push(Err(format!(
                "may not {} {what} in {namespace} (the README's \"Running on Kubernetes\" has the Role it needs)",
                denied.join(", ")
            )));
        }
    }
    for name in &spec.image_pull_secrets {
        match cluster.secrets().get(name).await {
            Ok(_) => lines.push(Ok(format!("image pull Secret {name} exists"))),
            Err(e) if is_status(&e, 404) => lines.push(Err(format!(
                "image pull Secret {name} does not exist in {namespace}"
            ))),
            Err(error) => lines.push(Err(format!("image pull Secret {name}: {error}"))),
        }
    }
    lines
}
