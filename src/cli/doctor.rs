//! `dispatch doctor SPEC`: checks what a run of the spec needs before it starts: the Docker
//! engine and the images (or, on Kubernetes, the cluster: reachable, the namespace, the
//! permissions the backend needs, the Secrets the spec names), the forge (its token and every
//! target repository), and per agent: what its image must hold, the keys its CLI reads (or
//! the login it copies), its network. One line per check; exit 1 when anything would fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{state_dir, CommandError, Ui, EXIT_FAILURE};
use crate::agents::{self, ArgvContext};
use crate::forge::{any::AnyForge, options::RemoteOptions};
use crate::forge::{Forge, ForgeError};
use crate::plan;
use crate::report::text::shown_lines;
use crate::runtime::{docker::Docker, image, Runtime};

/// Arguments of `dispatch doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec.
    pub spec: PathBuf,
    /// State directory (default: `.dispatch/` beside the spec).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Check the runtime a run with this `--runtime` would use, whatever the spec's
    /// `runtime.kind` says.
    #[arg(long, value_enum)]
    pub runtime: Option<super::run::RuntimeArg>,
}

/// The checks' lines; what they say quotes forges and engines, so it is shown through
/// [`shown_lines`].
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&self, what: &str) {
        println!("ok    {}", shown_lines(what));
    }

    fn warn(&self, what: &str) {
        println!("warn  {}", shown_lines(what));
    }

    fn fail(&mut self, what: &str) {
        self.failed += 1;
        println!("FAIL  {}", shown_lines(what));
    }
}

/// Runs the checks.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    let mut loaded = ui.load_spec(&args.spec)?;
    let runtime = super::tokio_runtime(false)?;
    let state_dir = state_dir::for_spec(&args.spec, args.state_dir.as_deref());
    let kind = args.runtime.map_or(loaded.spec.runtime.kind, Into::into);
    let report = runtime.block_on(check(&mut loaded, &state_dir, kind));
    if report.failed == 0 {
        println!("\nall checks passed");
        Ok(0)
    } else {
        println!(
            "\n{} {} failed",
            report.failed,
            crate::spec::problem::plural(report.failed, "check")
        );
        Ok(EXIT_FAILURE)
    }
}

/// What the forge says of the token's scopes (GitHub's classic tokens report them with every
/// answer): publishing needs `repo` (`public_repo` reaches public repositories only).
fn token_scopes(report: &mut Report, forge: &AnyForge) {
    match forge.scopes() {
        None => report.ok(&format!(
            "the {} forge does not report the token's scopes; a missing permission shows as a \
             clear error at the first write",
            forge.name()
        )),
        Some(scopes) if scopes.iter().any(|s| s == "repo") => report.ok(&format!(
            "the token's scopes ({}) allow publishing",
            scopes.join(", ")
        )),
        Some(scopes) if scopes.iter().any(|s| s == "public_repo") => report.warn(&format!(
            "the token's scopes ({}) reach public repositories only; private ones need `repo`",
            scopes.join(", ")
        )),
        Some(scopes) => report.fail(&format!(
            "the token's scopes ({}) do not include `repo`: dispatch could not push branches \
             or open pull requests",
            if scopes.is_empty() {
                "none".to_owned()
            } else {
                scopes.join(", ")
            }
        )),
    }
}

async fn check(
    loaded: &mut crate::spec::LoadedSpec,
    state_dir: &Path,
    kind: crate::spec::model::RuntimeKind,
) -> Report {
    let mut report = Report::default();
    if !loaded.selections.is_empty() {
        match crate::plan::resolve::find(loaded, state_dir).await {
            Ok(found) => {
                for (entry, repos) in &found.selections {
                    let units: usize = repos.iter().map(|r| r.issues.len().max(1)).sum();
                    report.ok(&format!(
                        "{entry} selects {units} {} in {} {}",
                        crate::spec::problem::plural(units, "target"),
                        repos.len(),
                        if repos.len() == 1 {
                            "repository"
                        } else {
                            "repositories"
                        }
                    ));
                }
                loaded.expand(&found);
            }
            Err(error) => report.fail(&format!("`select` entries: {error}")),
        }
    }
    let plan = plan::build(loaded);
    let on_cluster = kind == crate::spec::model::RuntimeKind::Kubernetes;
    if on_cluster {
        check_cluster(&mut report, loaded).await;
    }
    match Docker::connect().await {
        _ if on_cluster => {}
        Ok(docker) => {
            report.ok("the Docker engine answers");
            // The units' images, and the images agents name of their own (`agents.X.image`).
            let mut images: BTreeSet<String> = plan.units.iter().map(|u| u.image.clone()).collect();
            for unit in &plan.units {
                for agent in std::iter::once(&unit.agent).chain(unit.review.as_ref()) {
                    if let Ok(invocation) =
                        agents::invocation(agent, &loaded.spec.agents, &ArgvContext::new("main"))
                    {
                        images.extend(invocation.image);
                    }
                }
            }
            for name in images {
                let buildable = name.trim_end_matches(":latest")
                    == image::busybox_image_tag().trim_end_matches(":latest");
                match docker.image_id(&name).await {
                    Ok(Some(_)) => report.ok(&format!("image {name} is present")),
                    Ok(None) if buildable => report.ok(&format!("image {name} is missing; dispatch builds it from the host's busybox-static")),
                    Ok(None) => report.fail(&format!("image {name} is missing (build or load it; no registry is used)")),
                    Err(error) => report.fail(&format!("image {name}: {error}")),
                }
            }
        }
        Err(error) => report.fail(&format!("{error} (start the engine, or set DOCKER_HOST)")),
    }
    let targets: BTreeSet<(String, String, Option<String>)> = plan
        .units
        .iter()
        .map(|u| (u.org.clone(), u.repo.clone(), u.url.clone()))
        .collect();
    let spec_dir = loaded.path.parent().unwrap_or(Path::new("."));
    match AnyForge::from_spec(&loaded.spec.forge, RemoteOptions::default()) {
        Ok(Some(forge)) => {
            report.ok(&format!("the {} forge's token is set", forge.name()));
            for (org, repo, url) in &targets {
                if url.is_some() {
                    continue;
                }
                match forge.default_branch(org, repo).await {
                    Ok(Some(branch)) => report.ok(&format!(
                        "{org}/{repo} is reachable (default branch {branch})"
                    )),
                    Ok(None) => report.ok(&format!("{org}/{repo} is reachable")),
                    Err(error @ ForgeError::Unauthorized { .. }) => {
                        report.fail(&format!("{org}/{repo}: {error}"));
                        break;
                    }
                    Err(error) => report.fail(&format!("{org}/{repo}: {error}")),
                }
            }
            token_scopes(&mut report, &forge);
        }
        Ok(None) => {
            let seed = loaded.spec.forge.seed.as_ref().map(|s| spec_dir.join(s));
            for (org, repo, url) in &targets {
                if url.is_some() {
                    continue;
                }
                let bare = crate::forge::local::LocalForge::root_in(state_dir)
                    .join(org)
                    .join(format!("{repo}.git"));
                let seeded = seed
                    .as_ref()
                    .is_some_and(|s| s.join(org).join(repo).is_dir());
                if bare.join("HEAD").exists() {
                    report.ok(&format!("{org}/{repo} is in the local forge"));
                } else if seeded {
                    report.ok(&format!(
                        "{org}/{repo} will be seeded from {}",
                        seed.as_ref()
                            .map_or(String::new(), |s| s.display().to_string())
                    ));
                } else {
                    report.fail(&format!(
                        "{org}/{repo} is not in the local forge ({}) and no forge.seed holds it",
                        bare.display()
                    ));
                }
            }
        }
        Err(error) => report.fail(&error.to_string()),
    }
    for (org, repo, url) in &targets {
        if let Some(url) = url.as_ref().filter(|u| !u.contains("://")) {
            let path = spec_dir.join(url);
            if path.exists() {
                report.ok(&format!("{org}/{repo} clones from {}", path.display()));
            } else {
                report.fail(&format!(
                    "{org}/{repo}: `url` {} does not exist",
                    path.display()
                ));
            }
        }
    }
    // Every agent a unit runs (its agent and its reviewer), with the image it runs in.
    let agents: BTreeSet<(&crate::spec::values::AgentRef, &str)> = plan
        .units
        .iter()
        .flat_map(|u| {
            std::iter::once(&u.agent)
                .chain(u.review.as_ref())
                .map(move |agent| (agent, u.image.as_str()))
        })
        .collect();
    // On a cluster the images are the cluster's: nothing here can look into them.
    let engine = match on_cluster {
        true => None,
        false => Docker::connect().await.ok(),
    };
    for (agent, unit_image) in agents {
        match agents::invocation(agent, &loaded.spec.agents, &ArgvContext::new("main")) {
            Ok(invocation) => {
                let image = invocation.image.as_deref().unwrap_or(unit_image);
                check_agent(&mut report, engine.as_ref(), agent, image, &invocation).await;
            }
            Err(error) => report.fail(&format!("agent {agent}: {error}")),
        }
    }
    report
}

/// What the Kubernetes backend needs of the spec's cluster: that it answers, that the
/// namespace exists, that dispatch may do there what it does (asked with
/// SelfSubjectAccessReviews), that the image pull Secrets the spec names exist, and that the
/// git tokens the pods get are set.
async fn check_cluster(report: &mut Report, loaded: &crate::spec::LoadedSpec) {
    use crate::runtime::kubernetes::Kubernetes;
    let spec = &loaded.spec.runtime;
    if let Err(why) = crate::spec::validate::kubernetes_reaches(&loaded.spec.forge) {
        report.fail(&format!("{} ({})", why.message, why.help));
    }
    let mut git = crate::runtime::kubernetes::GitTokens::default();
    for (field, name) in spec.git_token_envs(&loaded.spec.forge) {
        let Some(name) = name else {
            report.warn(&format!(
                "{field} and forge.token_env are not set: the pods reach the forge's git without a credential"
            ));
            continue;
        };
        match crate::forge::http::Secret::from_env(field, name.as_str()) {
            Ok(token) => {
                report.ok(&format!("the pods' git token {name} ({field}) is set"));
                if field.contains("write") {
                    git.write = Some(token);
                } else {
                    git.read = Some(token);
                }
            }
            Err(_) => report.fail(&format!("{name} ({field}) is not set or empty")),
        }
    }
    let cluster = match Kubernetes::connect(spec, git).await {
        Ok(cluster) => cluster,
        Err(error) => {
            report.fail(&format!(
                "{error} (check $KUBECONFIG, ~/.kube/config and runtime.context)"
            ));
            return;
        }
    };
    for line in crate::runtime::kubernetes::doctor::check(&cluster, spec).await {
        match line {
            Ok(ok) => report.ok(&ok),
            Err(failed) => report.fail(&failed),
        }
    }
}

/// The checks of one agent: its image holds what it needs, its credentials are there (a key
/// the CLI reads, or a login file in your home it copies), its network exists.
async fn check_agent(
    report: &mut Report,
    engine: Option<&Docker>,
    agent: &crate::spec::values::AgentRef,
    image: &str,
    invocation: &agents::Invocation,
) {
    if let Some(docker) = engine {
        let programs = invocation.programs();
        match docker.missing_programs(image, &programs).await {
            Ok(missing) if missing.is_empty() => report.ok(&format!(
                "agent {agent}: image {image} has {}",
                programs.join(", ")
            )),
            Ok(missing) => {
                let lacks: Vec<String> = invocation
                    .lacking(&missing)
                    .iter()
                    .map(|n| format!("{} ({})", n.program, n.why))
                    .collect();
                report.fail(&format!(
                    "agent {agent}: image {image} lacks {}",
                    lacks.join(", ")
                ));
            }
            // A missing image is reported with the images above.
            Err(crate::runtime::RuntimeError::ImageMissing(_)) => {}
            Err(error) => report.fail(&format!("agent {agent}: image {image}: {error}")),
        }
        let network = invocation.network.as_str();
        if !matches!(network, "" | "none" | "bridge" | "host") {
            match docker.network_exists(network).await {
                Ok(true) => report.ok(&format!("agent {agent}: network {network} exists")),
                Ok(false) => report.fail(&format!(
                    "agent {agent}: network {network} does not exist (create it with `docker network create {network}`)"
                )),
                Err(error) => report.fail(&format!("agent {agent}: network {network}: {error}")),
            }
        }
    }
    let set: Vec<&str> = invocation
        .env_names
        .iter()
        .filter(|n| std::env::var_os(n).is_some_and(|value| !value.is_empty()))
        .map(String::as_str)
        .collect();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let logins: Vec<&agents::HomeFile> = invocation.home_files.iter().filter(|f| f.login).collect();
    let found: Vec<String> = logins
        .iter()
        .filter(|f| home.join(f.from).is_file())
        .map(|f| format!("~/{}", f.from))
        .collect();
    if invocation.env_names.is_empty() {
        report.ok(&format!("agent {agent}: needs no key"));
    } else if !set.is_empty() {
        report.ok(&format!("agent {agent}: {} set", set.join(", ")));
    } else if !found.is_empty() {
        report.ok(&format!(
            "agent {agent}: no key set; the login {} will be copied into its home",
            found.join(", ")
        ));
    } else {
        report.warn(&format!(
            "agent {agent}: none of {} is set{} (the agent may need one)",
            invocation.env_names.join(", "),
            if logins.is_empty() {
                String::new()
            } else {
                format!(
                    " and there is no {}",
                    logins
                        .iter()
                        .map(|f| format!("~/{}", f.from))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )
            }
        ));
    }
}
