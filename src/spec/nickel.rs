//! Nickel loader: a `.ncl` spec -> [`Node`] with spans.
//!
//! Uses `nickel-lang-core` (pinned) rather than the `nickel-lang` embedding crate because only
//! the core exposes the position table, and every diagnostic must point at the line a value
//! came from, even inside a file the spec imports. Imports resolve relative to the importing
//! file. Nickel's own errors (syntax, contracts, evaluation) keep Nickel's message and span.

use std::collections::HashMap;
use std::path::Path as FsPath;

use nickel_lang_core::error::{Diagnostic, IntoDiagnostics, LabelStyle};
use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::eval::value::{NickelValue, ValueContentRef};
use nickel_lang_core::files::{FileId as NickelFileId, Files};
use nickel_lang_core::position::{PosTable, TermPos};
use nickel_lang_core::program::{Program, ProgramBuilder};
use nickel_lang_core::serialize::{self, ExportFormat};

use super::node::{Key, Node, Value};
use super::problem::Problem;
use super::source::{FileId, Sources, Span};

/// Evaluates the Nickel spec whose text is registered in `sources` as `main` (named `path`,
/// which imports are relative to) and converts the result into a [`Node`]. Files the spec
/// imports are added to `sources` as needed.
pub fn load(path: &FsPath, main: FileId, sources: &mut Sources) -> Result<Node, Vec<Problem>> {
    let whole_file = Span::new(main, 0, 0);
    let text = sources.get(main).text.as_str().to_owned();
    let mut program: Program<CacheImpl> = ProgramBuilder::new()
        .add_source(std::io::Cursor::new(text), path.as_os_str())
        .build()
        .map_err(|error| {
            vec![Problem::new(
                whole_file,
                format!("cannot load the Nickel spec: {error}"),
                "here",
            )]
        })?;
    let result = program.eval_full_for_export();
    let files = program.files();
    let mut converter = Converter {
        files: &files,
        pos_table: program.pos_table(),
        sources,
        ids: HashMap::new(),
        main,
        main_path: path,
        problems: Vec::new(),
    };
    match result {
        Ok(value) => {
            let node = converter.node(&value, whole_file);
            if converter.problems.is_empty() {
                Ok(node)
            } else {
                Err(converter.problems)
            }
        }
        Err(error) => {
            let mut files = files.clone();
            let diagnostics = error.into_diagnostics(&mut files);
            converter.files = &files;
            Err(diagnostics
                .into_iter()
                .map(|d| converter.problem(d, whole_file))
                .collect())
        }
    }
}

struct Converter<'a> {
    files: &'a Files,
    pos_table: &'a PosTable,
    sources: &'a mut Sources,
    ids: HashMap<NickelFileId, FileId>,
    main: FileId,
    main_path: &'a FsPath,
    problems: Vec<Problem>,
}

impl Converter<'_> {
    /// Our id of a Nickel file, registering its text on first use.
    fn file(&mut self, id: NickelFileId) -> FileId {
        if let Some(ours) = self.ids.get(&id) {
            return *ours;
        }
        let name = self.files.name(id).to_string_lossy().into_owned();
        // The main file is already registered under the name the user typed.
        let ours = if FsPath::new(self.files.name(id)) == self.main_path {
            self.main
        } else {
            self.sources.add(name, self.files.source(id).to_owned())
        };
        self.ids.insert(id, ours);
        ours
    }

    fn span(&mut self, pos: TermPos, fallback: Span) -> Span {
        match pos {
            TermPos::Original(raw) | TermPos::Inherited(raw) => {
                let file = self.file(raw.src_id);
                Span::new(file, raw.start.to_usize(), raw.end.to_usize())
            }
            TermPos::None => fallback,
        }
    }

    fn node(&mut self, value: &NickelValue, parent: Span) -> Node {
        let span = self.span(value.pos(self.pos_table), parent);
        let value = match value.content_ref() {
            ValueContentRef::Null => Value::Null,
            ValueContentRef::Bool(b) => Value::Bool(b),
            ValueContentRef::Number(number) => match i64::try_from(number) {
                Ok(i) => Value::Int(i),
                Err(_) => match serialize::to_string(ExportFormat::Json, value)
                    .ok()
                    .and_then(|t| t.parse().ok())
                {
                    Some(x) => Value::Float(x),
                    None => {
                        self.problems.push(Problem::new(
                            span,
                            "this number cannot be represented",
                            "number",
                        ));
                        Value::Null
                    }
                },
            },
            ValueContentRef::String(text) => Value::Str(text.to_string()),
            ValueContentRef::Array(array) => {
                Value::Seq(array.iter().map(|item| self.node(item, span)).collect())
            }
            ValueContentRef::Record(record) => {
                let mut entries = Vec::new();
                if let Some(data) = record.into_opt() {
                    for (ident, field) in &data.fields {
                        let hidden = field.metadata.0.as_ref().is_some_and(|m| m.not_exported);
                        let Some(value) = field.value.as_ref().filter(|_| !hidden) else {
                            continue;
                        };
                        let key_span = self.span(ident.pos, span);
                        let child = self.node(value, key_span);
                        entries.push((
                            Key {
                                name: ident.label().to_owned(),
                                span: key_span,
                            },
                            child,
                        ));
                    }
                }
                Value::Map(entries)
            }
            ValueContentRef::EnumVariant(variant) if variant.arg.is_none() => {
                Value::Str(variant.tag.label().to_owned())
            }
            other => {
                let what = match other {
                    ValueContentRef::EnumVariant(_) => "an enum variant with an argument",
                    ValueContentRef::Label(_)
                    | ValueContentRef::CustomContract(_)
                    | ValueContentRef::Type(_) => "a contract or type",
                    ValueContentRef::Term(_) | ValueContentRef::Thunk(_) => {
                        "a function or an unevaluated term"
                    }
                    _ => "a value that has no YAML or JSON form",
                };
                self.problems.push(Problem::new(
                    span,
                    format!("a spec cannot hold {what}"),
                    "here",
                ));
                Value::Null
            }
        };
        Node { span, value }
    }

    /// A Nickel diagnostic as a [`Problem`] at its primary label.
    fn problem(&mut self, diagnostic: Diagnostic<NickelFileId>, fallback: Span) -> Problem {
        let primary = diagnostic
            .labels
            .iter()
            .find(|l| l.style == LabelStyle::Primary)
            .or(diagnostic.labels.first());
        let (span, label) = match primary {
            Some(label) => {
                let file = self.file(label.file_id);
                let text_len = self.sources.get(file).text.len();
                let start = label.range.start.min(text_len);
                (
                    Span::new(file, start, label.range.end.min(text_len)),
                    label.message.clone(),
                )
            }
            None => (fallback, String::new()),
        };
        let mut help: Vec<String> = diagnostic
            .labels
            .iter()
            .filter(|l| l.style == LabelStyle::Secondary && !l.message.is_empty())
            .map(|l| l.message.clone())
            .collect();
        help.extend(diagnostic.notes.iter().cloned());
        let label = if label.is_empty() {
            "here".to_owned()
        } else {
            label
        };
        let problem = Problem::new(span, format!("Nickel: {}", diagnostic.message), label);
        if help.is_empty() {
            problem
        } else {
            problem.with_help(help.join("\n"))
        }
    }
}
