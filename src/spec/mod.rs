//! Specs: loading YAML and Nickel files into one model, with diagnostics that point at the
//! source.
//!
//! Loading runs in stages, each collecting every problem it finds before the next starts:
//! parse (YAML or Nickel) into a span-carrying [`node::Node`], check it against the schema
//! generated from [`model::Spec`], deserialize, then validate semantically (which includes
//! resolving targets and rendering templates). A spec that passes all stages is a
//! [`LoadedSpec`]; otherwise every problem comes back in one [`problem::SpecErrors`].
//!
//! A spec may be hostile (CI validates pull requests), so loading is bounded: files are read
//! only inside the spec's tree and bounded in size ([`tree`]), the document is bounded in values,
//! text and depth ([`node::MAX_VALUES`] and its neighbours), Nickel evaluates in a child process
//! under a time and memory budget ([`nickel`]), and what is printed is grouped and clipped
//! ([`problem`]).

pub mod contract;
pub mod model;
pub mod nickel;
pub mod node;
pub mod problem;
pub mod schema_check;
pub mod source;
pub mod tree;
pub mod validate;
pub mod values;
pub mod yaml;

use std::path::{Path, PathBuf};

use crate::plan::target::{self, Found, ResolvedTarget, Selection};
use crate::prompt::Templates;
use model::Spec;
use node::Node;
use problem::{Problem, SpecErrors};
use source::{Sources, Span};

/// A spec that passed every check, with what later stages need.
#[derive(Debug)]
pub struct LoadedSpec {
    /// The spec file as the user named it.
    pub path: PathBuf,
    /// The model.
    pub spec: Spec,
    /// The templates (built-in plus the spec's own).
    pub templates: Templates,
    /// Every job's targets, resolved, in spec order.
    pub targets: Vec<ResolvedTarget>,
    /// `select` entries not resolved yet ([`LoadedSpec::expand`] resolves them).
    pub selections: Vec<Selection>,
}

impl LoadedSpec {
    /// Adds the targets the forge found for the spec's `select` entries; the entries `found`
    /// has no answer for stay in `selections`.
    pub fn expand(&mut self, found: &Found) {
        self.selections = target::expand(&self.spec, &mut self.targets, &self.selections, found)
            .into_iter()
            .cloned()
            .collect();
    }
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read spec {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        error: std::io::Error,
    },
    /// The spec is invalid.
    #[error("{0}")]
    Invalid(SpecErrors),
}

/// The JSON schema of the model, generated once per process.
pub fn json_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let settings = schemars::generate::SchemaSettings::draft2020_12();
        let schema = settings.into_generator().into_root_schema_for::<Spec>();
        serde_json::to_value(schema).expect("a schemars schema is always valid JSON")
    })
}

/// The JSON schema as shipped in `schemas/dispatch.schema.json`: pretty, with a newline.
pub fn schema_json() -> String {
    let mut text =
        serde_json::to_string_pretty(json_schema()).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// The source format of a spec, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.ncl`.
    Nickel,
}

impl Format {
    /// The format of `path`, if dispatch knows its extension.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Some(Format::Yaml),
            Some("ncl") => Some(Format::Nickel),
            _ => None,
        }
    }
}

/// Loads and validates the spec at `path` (a regular file of at most
/// [`tree::SOURCE_MAX_BYTES`]).
pub fn load(path: &Path) -> Result<LoadedSpec, LoadError> {
    let text = tree::read_bounded(path).map_err(|error| LoadError::Io {
        path: path.display().to_string(),
        error,
    })?;
    load_text(path, text)
}

/// Loads and validates a spec whose text is already read (`path` gives its name, format and
/// the directory for templates and imports).
pub fn load_text(path: &Path, text: String) -> Result<LoadedSpec, LoadError> {
    load_with(path, text, None)
}

/// A job given apart from its spec: its YAML text, and the name of where it comes from (the
/// one-call form's command line), under which its problems are reported.
pub struct ExtraJob {
    /// Where it comes from, as diagnostics name it.
    pub source: String,
    /// One job as a YAML mapping.
    pub yaml: String,
}

/// Loads and validates the defaults spec at `path` (YAML, forge, defaults, limits, agents and
/// no jobs) with `job` as its one job: the one-call form. Problems of the job point into its
/// own source, problems of the rest into the file.
pub fn load_with_job(path: &Path, job: ExtraJob) -> Result<LoadedSpec, LoadError> {
    let text = tree::read_bounded(path).map_err(|error| LoadError::Io {
        path: path.display().to_string(),
        error,
    })?;
    load_with(path, text, Some(job))
}

/// [`load_text`], with `job` as the spec's one job when given.
fn load_with(path: &Path, text: String, job: Option<ExtraJob>) -> Result<LoadedSpec, LoadError> {
    let mut sources = Sources::default();
    let main = sources.add(path.display().to_string(), text);
    let invalid = |sources: Sources, mut problems: Vec<Problem>| {
        problems.sort_by_key(|p| (p.span.file, p.span.start));
        LoadError::Invalid(SpecErrors {
            path: path.display().to_string(),
            sources,
            problems,
        })
    };
    let doc = match Format::of(path) {
        Some(Format::Yaml) => {
            let text = sources.get(main).text.clone();
            yaml::parse(main, &text)
        }
        Some(Format::Nickel) => nickel::load(path, main, &mut sources),
        None => Err(vec![Problem::new(
            Span::new(main, 0, 0),
            format!("unknown spec format `{}`", path.display()),
            "here",
        )
        .with_help("name the spec `*.yaml`, `*.yml` or `*.ncl`")]),
    };
    let mut doc = doc.map_err(|problems| invalid(sources.clone(), problems))?;
    if let Some(job) = job {
        add_job(&mut doc, job, path, &mut sources)
            .map_err(|problems| invalid(sources.clone(), problems))?;
    }
    let spec =
        check_and_deserialize(&doc).map_err(|problems| invalid(sources.clone(), problems))?;

    let tree = tree::SpecTree::of(path).map_err(|error| {
        invalid(
            sources.clone(),
            vec![Problem::new(
                doc.span,
                format!("cannot find the spec's directory: {error}"),
                "in this spec",
            )],
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let written = spec.templates.as_deref().unwrap_or("templates");
    let template_dir = dir.join(written);
    // A `templates:` that names nothing is no error (the built-ins serve); one that names a
    // place outside the spec's tree is, before anything there is read.
    if let Some(written) = spec.templates.as_deref() {
        let named =
            Path::new(written).is_absolute() || std::fs::symlink_metadata(&template_dir).is_ok();
        let refused = tree.inside(&template_dir, written).err().filter(|_| named);
        if let Some(error) = refused {
            let at = doc.find(&node::Path::default().key("templates")).span;
            return Err(invalid(
                sources,
                vec![Problem::new(at, error.to_string(), "template directory")
                    .with_help("keep the templates in a directory beside the spec")],
            ));
        }
    }
    let templates = match Templates::load(Some(&template_dir), &tree) {
        Ok(templates) => templates,
        Err(errors) => {
            let problems = errors
                .iter()
                .map(|e| {
                    validate::template_problem(
                        e,
                        &mut sources,
                        "templates are loaded from the spec's template directory".to_owned(),
                    )
                })
                .collect();
            return Err(invalid(sources, problems));
        }
    };
    let (targets, selections, target_errors) = target::resolve(&spec);
    let mut problems: Vec<Problem> = target_errors
        .into_iter()
        .map(|e| {
            let problem = Problem::new(doc.find(&e.path).span, e.message, "here");
            match e.help {
                Some(help) => problem.with_help(help),
                None => problem,
            }
        })
        .collect();
    let input = validate::Input {
        spec: &spec,
        doc: &doc,
        templates: &templates,
        targets: &targets,
        samples: &selections
            .iter()
            .map(|s| s.sample(&spec))
            .collect::<Vec<_>>(),
    };
    problems.extend(validate::validate(&input, &mut sources));
    if !problems.is_empty() {
        return Err(invalid(sources, problems));
    }
    Ok(LoadedSpec {
        path: path.to_owned(),
        spec,
        templates,
        targets,
        selections,
    })
}

/// Puts `job` into the defaults spec `doc` as its `jobs`: refused for a spec that is not YAML
/// or has jobs of its own.
fn add_job(
    doc: &mut Node,
    job: ExtraJob,
    path: &Path,
    sources: &mut Sources,
) -> Result<(), Vec<Problem>> {
    let here = doc.span;
    let refuse = |at: Span, message: String| {
        Err(vec![Problem::new(at, message, "here").with_help(
            "a defaults spec holds forge, defaults, limits and agents; its jobs come from the \
             command line"
                .to_owned(),
        )])
    };
    if Format::of(path) != Some(Format::Yaml) {
        return refuse(
            here,
            format!("the defaults spec {} is not YAML", path.display()),
        );
    }
    let node::Value::Map(entries) = &mut doc.value else {
        return refuse(here, "the defaults spec is not a mapping".to_owned());
    };
    if let Some((key, _)) = entries.iter().find(|(key, _)| key.name == "jobs") {
        return refuse(
            key.span,
            format!("the defaults spec {} has jobs of its own", path.display()),
        );
    }
    let file = sources.add(job.source, job.yaml.clone());
    let parsed = yaml::parse(file, &job.yaml)?;
    let span = parsed.span;
    entries.push((
        node::Key {
            name: "jobs".to_owned(),
            span,
        },
        Node {
            span,
            value: node::Value::Seq(vec![parsed]),
        },
    ));
    Ok(())
}

/// Schema check, then serde. Problems of the schema check come all at once.
fn check_and_deserialize(doc: &Node) -> Result<Spec, Vec<Problem>> {
    let mut problems = Vec::new();
    schema_check::check(json_schema(), doc, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(doc.to_json()).map_err(|error| {
        vec![Problem::new(
            doc.span,
            format!("the spec does not fit the model: {error}"),
            "in this document",
        )]
    })
}
