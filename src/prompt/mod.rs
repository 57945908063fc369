//! Prompt templates: the built-in templates embedded from `templates/`, overridden or extended
//! by a spec's own template directory, rendered by minijinja with strict undefined.
//!
//! This is the one place that renders templates: prompts, personas, plans, PR titles and bodies.
//! Template names are paths without `.md`: task templates (`coding`), personas
//! (`personas/testing/tester`, referred to in specs as `testing/tester`), `pr-body`, `plan`.
//!
//! A spec's template directory is hostile input like the spec: every file and directory in it,
//! links included, must resolve inside the spec's tree ([`SpecTree`]), each directory is walked
//! once however many links lead to it (a link loop ends), and each file is read bounded.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::spec::tree::SpecTree;

/// Templates compiled into the binary: (name, text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("coding", include_str!("../../templates/coding.md")),
    (
        "conventions",
        include_str!("../../templates/conventions.md"),
    ),
    ("security", include_str!("../../templates/security.md")),
    ("review", include_str!("../../templates/review.md")),
    ("verify", include_str!("../../templates/verify.md")),
    ("plan", include_str!("../../templates/plan.md")),
    ("pr-body", include_str!("../../templates/pr-body.md")),
    (
        "personas/engineering/senior-developer",
        include_str!("../../templates/personas/engineering/senior-developer.md"),
    ),
    (
        "personas/testing/tester",
        include_str!("../../templates/personas/testing/tester.md"),
    ),
    (
        "personas/security/security-auditor",
        include_str!("../../templates/personas/security/security-auditor.md"),
    ),
    (
        "personas/docs/technical-writer",
        include_str!("../../templates/personas/docs/technical-writer.md"),
    ),
];

const PERSONA_PREFIX: &str = "personas/";

/// Everything a template can use. Every field is always defined; `issue.title` and
/// `issue.body` only when the forge told them.
#[derive(Clone, Debug, Serialize)]
pub struct PromptContext {
    /// The job's task.
    pub task: String,
    /// The job id.
    pub job: String,
    /// The agent reference, e.g. `codex:gpt-5`.
    pub agent: String,
    /// Organisation of the target.
    pub org: String,
    /// Repository of the target.
    pub repo: String,
    /// The branch the agent works on.
    pub branch: String,
    /// The base branch; none means the repository's default branch.
    pub base: Option<String>,
    /// The issue the unit works on.
    pub issue: Option<IssueContext>,
    /// The pull request the unit works on.
    pub pr: Option<u64>,
    /// The job's variables merged with the target's.
    pub variables: BTreeMap<String, serde_json::Value>,
    /// The rendered persona ("" without one).
    pub persona: String,
    /// The rendered plan ("" without one).
    pub plan: String,
    /// The QA commands that will run.
    pub qa: Vec<String>,
    /// 1 for the first agent run, 2+ for fix attempts after QA failures.
    pub attempt: u32,
    /// Output tail of the QA step that failed in the previous attempt.
    pub qa_failure: Option<String>,
}

/// An issue as templates see it.
#[derive(Clone, Debug, Serialize)]
pub struct IssueContext {
    /// The issue number.
    pub number: u64,
    /// Title, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Body, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Which templates a prompt is made of.
#[derive(Clone, Copy, Debug)]
pub struct PromptParts<'a> {
    /// Task template name.
    pub template: &'a str,
    /// Persona name (without `personas/`).
    pub persona: Option<&'a str>,
    /// Plan template name.
    pub plan: Option<&'a str>,
}

/// A template that failed to load or render.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderError {
    /// Template name.
    pub template: String,
    /// Where the template comes from (a path, or `built-in templates/NAME.md`).
    pub origin: String,
    /// The template text, for pointing at the line.
    pub text: String,
    /// 1-based line of the error, when known.
    pub line: Option<usize>,
    /// The undefined variable, when that is the problem.
    pub variable: Option<String>,
    /// minijinja's description.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template `{}` ({})", self.template, self.origin)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        match &self.variable {
            Some(variable) => write!(f, ": undefined variable `{variable}`"),
            None => write!(f, ": {}", self.message),
        }
    }
}

impl std::error::Error for RenderError {}

/// The template set of one spec.
pub struct Templates {
    env: Environment<'static>,
    origins: BTreeMap<String, (String, String)>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.origins.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Templates {
    /// The built-in templates plus every `*.md` under `dir` (when it exists), the latter
    /// overriding built-ins of the same name; `dir` and what is in it must be inside `tree`.
    pub fn load(dir: Option<&Path>, tree: &SpecTree) -> Result<Self, Vec<RenderError>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        let mut templates = Self {
            env,
            origins: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        for (name, text) in BUILTIN {
            templates.add(
                name,
                format!("built-in templates/{name}.md"),
                (*text).to_owned(),
                &mut errors,
            );
        }
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            let mut files = Vec::new();
            let mut visited = HashSet::new();
            match tree.holds(dir, &dir.display().to_string()) {
                Ok(canonical) => {
                    visited.insert(canonical);
                    collect_md(dir, tree, &mut visited, &mut files, &mut errors);
                }
                Err(error) => errors.push(unreadable(dir, error.to_string())),
            }
            files.sort();
            for file in files {
                let Ok(relative) = file.strip_prefix(dir) else {
                    continue;
                };
                let name = relative
                    .with_extension("")
                    .to_string_lossy()
                    .replace('\\', "/");
                match tree.read_held(&file, &file.display().to_string()) {
                    Ok(text) => templates.add(&name, file.display().to_string(), text, &mut errors),
                    Err(error) => errors.push(unreadable(&file, error.to_string())),
                }
            }
        }
        if errors.is_empty() {
            Ok(templates)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, name: &str, origin: String, text: String, errors: &mut Vec<RenderError>) {
        self.origins
            .insert(name.to_owned(), (origin.clone(), text.clone()));
        if let Err(error) = self.env.add_template_owned(name.to_owned(), text.clone()) {
            errors.push(RenderError {
                template: name.to_owned(),
                origin,
                text,
                line: error.line(),
                variable: None,
                message: error.detail().unwrap_or("syntax error").to_owned(),
            });
        }
    }

    /// Whether a task (or plan, or PR body) template of this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.origins.contains_key(name) && !name.starts_with(PERSONA_PREFIX)
    }

    /// Whether a persona of this name (`testing/tester`) exists.
    pub fn has_persona(&self, name: &str) -> bool {
        self.origins
            .contains_key(&format!("{PERSONA_PREFIX}{name}"))
    }

    /// Names of the task templates.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.origins
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with(PERSONA_PREFIX))
    }

    /// Names of the personas, as specs write them.
    pub fn persona_names(&self) -> impl Iterator<Item = &str> {
        self.origins
            .keys()
            .filter_map(|n| n.strip_prefix(PERSONA_PREFIX))
    }

    /// Renders a named template.
    pub fn render(&self, name: &str, context: &PromptContext) -> Result<String, Box<RenderError>> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| self.error(name, e, context))?;
        template
            .render(context)
            .map_err(|e| self.error(name, e, context))
    }

    /// Renders an inline template (a PR title written in the spec), named `label` in errors.
    pub fn render_inline(
        &self,
        label: &str,
        text: &str,
        context: &PromptContext,
    ) -> Result<String, Box<RenderError>> {
        let fail = |error: minijinja::Error| {
            Box::new(RenderError {
                template: label.to_owned(),
                origin: "inline in the spec".to_owned(),
                text: text.to_owned(),
                line: error.line(),
                variable: undefined_variable(&self.env, None, text, &error, context),
                message: error.detail().unwrap_or("render error").to_owned(),
            })
        };
        self.env.render_str(text, context).map_err(fail)
    }

    /// The full prompt: persona and plan rendered first, then the task template with both.
    pub fn prompt(
        &self,
        parts: PromptParts<'_>,
        context: &PromptContext,
    ) -> Result<String, Box<RenderError>> {
        let mut context = context.clone();
        if let Some(persona) = parts.persona {
            context.persona = self.render(&format!("{PERSONA_PREFIX}{persona}"), &context)?;
        }
        if let Some(plan) = parts.plan {
            context.plan = self.render(plan, &context)?;
        }
        self.render(parts.template, &context)
    }

    fn error(
        &self,
        name: &str,
        error: minijinja::Error,
        context: &PromptContext,
    ) -> Box<RenderError> {
        let (origin, text) = self
            .origins
            .get(name)
            .cloned()
            .unwrap_or_else(|| ("unknown".to_owned(), String::new()));
        Box::new(RenderError {
            template: display_name(name),
            origin,
            line: error.line(),
            variable: undefined_variable(&self.env, Some(name), &text, &error, context),
            text,
            message: error
                .detail()
                .map_or_else(|| error.kind().to_string(), str::to_owned),
        })
    }
}

fn display_name(name: &str) -> String {
    name.strip_prefix(PERSONA_PREFIX)
        .map_or_else(|| name.to_owned(), |p| format!("persona {p}"))
}

/// For an undefined-value error: the first variable the template uses that the context lacks.
fn undefined_variable(
    env: &Environment<'static>,
    name: Option<&str>,
    text: &str,
    error: &minijinja::Error,
    context: &PromptContext,
) -> Option<String> {
    if error.kind() != ErrorKind::UndefinedError {
        return None;
    }
    let variables = match name {
        Some(name) => env.get_template(name).ok()?.undeclared_variables(true),
        None => env.template_from_str(text).ok()?.undeclared_variables(true),
    };
    let json = serde_json::to_value(context).ok()?;
    let mut missing: Vec<String> = variables
        .into_iter()
        .filter(|dotted| {
            let mut value = &json;
            for part in dotted.split('.') {
                match value.get(part) {
                    Some(next) => value = next,
                    None => return true,
                }
            }
            false
        })
        .collect();
    missing.sort();
    // Prefer the variable on the failing line.
    let line_text = error
        .line()
        .and_then(|l| text.lines().nth(l.saturating_sub(1)))
        .unwrap_or("");
    missing
        .iter()
        .find(|v| line_text.contains(v.as_str()))
        .or(missing.first())
        .cloned()
}

/// The error of a template file or directory that is not read (its text is not quoted).
fn unreadable(path: &Path, message: String) -> RenderError {
    RenderError {
        template: path
            .file_stem()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        origin: path.display().to_string(),
        text: String::new(),
        line: None,
        variable: None,
        message,
    }
}

/// Every `*.md` under `dir` (as paths under `dir`, links not resolved, so names stay what the
/// user sees). A directory is entered once (`visited` holds canonical paths); a link that leads
/// out of the tree is an error.
fn collect_md(
    dir: &Path,
    tree: &SpecTree,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    errors: &mut Vec<RenderError>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let is_md = path.extension().is_some_and(|e| e == "md");
        if !kind.is_symlink() && !kind.is_dir() {
            if is_md {
                out.push(path);
            }
            continue;
        }
        // A directory, or a link to anything: where it really is decides.
        let canonical = match tree.holds(&path, &path.display().to_string()) {
            Ok(canonical) => canonical,
            Err(error) => {
                errors.push(unreadable(&path, error.to_string()));
                continue;
            }
        };
        if canonical.is_dir() {
            if visited.insert(canonical) {
                collect_md(&path, tree, visited, out, errors);
            }
        } else if is_md {
            out.push(path);
        }
    }
}
