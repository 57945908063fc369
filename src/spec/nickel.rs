//! Nickel loader: a `.ncl` spec -> [`Node`] with spans, evaluated in a child process under a
//! time and a memory budget, reading only files inside the spec's directory tree.
//!
//! Uses `nickel-lang-core` (pinned) rather than the `nickel-lang` embedding crate because only
//! the core exposes the position table, and every diagnostic must point at the line a value
//! came from, even inside a file the spec imports. Imports resolve relative to the importing
//! file; `import "dispatch.ncl"` finds dispatch's own contract (the text of
//! `dispatch schema --nickel`) when no such file is beside the importer. Nickel's own errors
//! (syntax, contracts, evaluation) keep Nickel's message and span.
//!
//! # Bounds
//!
//! A spec may be hostile (CI validates pull requests), and nickel-lang-core has no way to stop
//! an evaluation: `let rec f = fun x => f x in f 1` runs until memory runs out. A thread left
//! running would keep its CPU and memory, and could hold Nickel's global identifier table when
//! abandoned. So the spec is evaluated by dispatch itself in a child process
//! ([`EVALUATOR_COMMAND`], see [`serve`]), which this process kills at
//! [`NICKEL_TIME_BUDGET`]. The child limits itself before it reads anything: address space
//! [`NICKEL_MEMORY_BUDGET`] (an allocation past it aborts the child), CPU time just over the
//! time budget (in case this process dies first; it also dies with its parent), no core dump.
//! It resolves every import itself, each to a file inside the spec's tree ([`SpecTree`]),
//! registers their texts in Nickel's cache, and then lowers its open-file limit to the three
//! standard streams, so the evaluation cannot open a file at all: an import the walk did not see
//! fails as not found. The child answers on stdout with the document (flattened, see [`Flat`])
//! or the problems, and the texts of the files they point into; nothing else crosses.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use nickel_lang_core::ast::{Ast, AstAlloc, Import, InputFormat, Node as AstNode};
use nickel_lang_core::cache::{normalize_path, CacheHub, ImportResolver, SourcePath};
use nickel_lang_core::error::{Diagnostic, IntoDiagnostics, LabelStyle, NullReporter};
use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::eval::value::{NickelValue, ValueContentRef};
use nickel_lang_core::eval::{VirtualMachine, VmContext};
use nickel_lang_core::files::{FileId as NickelFileId, Files};
use nickel_lang_core::position::{PosTable, RawSpan, TermPos};
use nickel_lang_core::serialize::{self, ExportFormat};
use nickel_lang_core::traverse::{TraverseAlloc, TraverseControl};
use serde::{Deserialize, Serialize};

use super::node::{too_deep, Budget, Key, Node, Value, MAX_DEPTH};
use super::problem::Problem;
use super::source::{FileId, Sources, Span};
use super::tree::SpecTree;

/// Longest a Nickel spec may take to evaluate (wall clock, imports included); a real spec takes
/// well under a second.
pub const NICKEL_TIME_BUDGET: Duration = Duration::from_secs(10);

/// Most address space the evaluating process may map, in bytes (`RLIMIT_AS`). The allocator
/// reserves 1 GiB of it up front, so an evaluation has about 1 GiB; a real spec needs about
/// 60 MiB. An allocation past it aborts the evaluator, which [`load`] reports as a problem.
pub const NICKEL_MEMORY_BUDGET: u64 = 2 << 30;

/// Most bytes of the evaluator's answer this process reads (the document and the texts of the
/// files its problems point into).
const ANSWER_MAX_BYTES: u64 = 256 << 20;

/// Most bytes of the evaluator's stderr kept, to tell why it stopped.
const STDERR_MAX_BYTES: u64 = 64 << 10;

/// The hidden `dispatch` command that evaluates one spec for [`load`] ([`serve`] is its body).
pub const EVALUATOR_COMMAND: &str = "nickel-evaluator";

/// What `import "dispatch.ncl"` finds when no such file is beside the importing file.
pub const CONTRACT_IMPORT: &str = "dispatch.ncl";

/// The directory Nickel searches for [`CONTRACT_IMPORT`] after the importer's: it exists only in
/// the evaluator's memory.
const BUILTIN_DIR: &str = "/<dispatch>";

static EVALUATOR: OnceLock<PathBuf> = OnceLock::new();

/// Names the `dispatch` binary that evaluates Nickel specs; without it, the running program is
/// (the right choice inside dispatch). A program that embeds the library and is not dispatch
/// (the integration tests) calls this once before it loads a Nickel spec.
pub fn set_evaluator(program: PathBuf) {
    let _ = EVALUATOR.set(program);
}

/// What the evaluator is asked: one spec.
#[derive(Serialize, Deserialize)]
struct Request {
    /// The spec file as the user named it.
    spec: PathBuf,
    /// The canonical directory of the spec ([`SpecTree::root`]).
    root: PathBuf,
    /// The spec's text.
    text: String,
}

/// What the evaluator answers. Its file ids count from the spec (0) on; `files` are the files
/// after the spec, in order.
#[derive(Serialize, Deserialize)]
struct Answer {
    files: Vec<(String, String)>,
    outcome: Result<Vec<Flat>, Vec<Problem>>,
}

/// One value of a document in pre-order: a list or mapping is followed by its items. A flat
/// list crosses the pipe without the nesting limits of JSON parsers.
#[derive(Serialize, Deserialize)]
struct Flat {
    span: Span,
    /// The key of a mapping entry.
    key: Option<Key>,
    value: Leaf,
}

/// A [`Value`] without its children.
#[derive(Serialize, Deserialize)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A list of this many items.
    Seq(usize),
    /// A mapping of this many entries.
    Map(usize),
}

fn flatten(node: &Node, key: Option<&Key>, out: &mut Vec<Flat>) {
    let value = match &node.value {
        Value::Null => Leaf::Null,
        Value::Bool(b) => Leaf::Bool(*b),
        Value::Int(i) => Leaf::Int(*i),
        Value::Float(x) => Leaf::Float(*x),
        Value::Str(s) => Leaf::Str(s.clone()),
        Value::Seq(items) => Leaf::Seq(items.len()),
        Value::Map(entries) => Leaf::Map(entries.len()),
    };
    out.push(Flat {
        span: node.span,
        key: key.cloned(),
        value,
    });
    match &node.value {
        Value::Seq(items) => items.iter().for_each(|item| flatten(item, None, out)),
        Value::Map(entries) => entries
            .iter()
            .for_each(|(key, value)| flatten(value, Some(key), out)),
        _ => {}
    }
}

/// The node `flatten` wrote, or `None` when the list is not one (or nests too deep).
fn unflatten(items: &mut impl Iterator<Item = Flat>, depth: usize) -> Option<(Option<Key>, Node)> {
    let flat = items.next()?;
    if depth > MAX_DEPTH {
        return None;
    }
    let value = match flat.value {
        Leaf::Null => Value::Null,
        Leaf::Bool(b) => Value::Bool(b),
        Leaf::Int(i) => Value::Int(i),
        Leaf::Float(x) => Value::Float(x),
        Leaf::Str(s) => Value::Str(s),
        Leaf::Seq(n) => Value::Seq(
            (0..n)
                .map(|_| unflatten(items, depth + 1).map(|(_, node)| node))
                .collect::<Option<_>>()?,
        ),
        Leaf::Map(n) => Value::Map(
            (0..n)
                .map(|_| unflatten(items, depth + 1).and_then(|(key, node)| Some((key?, node))))
                .collect::<Option<_>>()?,
        ),
    };
    Some((
        flat.key,
        Node {
            span: flat.span,
            value,
        },
    ))
}

/// Evaluates the Nickel spec whose text is registered in `sources` as `main` (named `path`,
/// which imports are relative to) in the evaluator, and converts the result into a [`Node`].
/// Files the problems point into are added to `sources` after `main`, which must be the last
/// file added so far (the evaluator numbers files from the spec on).
pub fn load(path: &FsPath, main: FileId, sources: &mut Sources) -> Result<Node, Vec<Problem>> {
    assert_eq!(
        main.0 as usize + 1,
        sources.len(),
        "the Nickel spec is the last file of its sources: the evaluator's file ids follow it"
    );
    let whole_file = Span::new(main, 0, 0);
    let fail = |stop: Stop| {
        let help = stop.help();
        vec![Problem::new(whole_file, stop.to_string(), "in this spec").with_help(help)]
    };
    let tree = SpecTree::of(path).map_err(|error| fail(Stop::Start(error)))?;
    let request = Request {
        spec: path.to_owned(),
        root: tree.root().to_owned(),
        text: sources.get(main).text.as_str().to_owned(),
    };
    let answer = evaluate(&request).map_err(fail)?;
    let files = answer.files.len();
    let shift = |span: Span| -> Option<Span> {
        let file = FileId(main.0.checked_add(span.file.0)?);
        (span.file.0 as usize <= files).then_some(Span { file, ..span })
    };
    let broken = || fail(Stop::Answer("a span points outside its files".to_owned()));
    for (name, text) in answer.files {
        sources.add(name, text);
    }
    let in_file = |span: Span, sources: &Sources| {
        span.start <= span.end && span.end <= sources.get(span.file).text.len()
    };
    match answer.outcome {
        Ok(flat) => {
            let mut shifted = Vec::with_capacity(flat.len());
            for mut item in flat {
                item.span = shift(item.span)
                    .filter(|s| in_file(*s, sources))
                    .ok_or_else(broken)?;
                if let Some(key) = &mut item.key {
                    key.span = shift(key.span)
                        .filter(|s| in_file(*s, sources))
                        .ok_or_else(broken)?;
                }
                shifted.push(item);
            }
            let mut items = shifted.into_iter();
            match (unflatten(&mut items, 1), items.next()) {
                (Some((None, node)), None) => Ok(node),
                _ => Err(fail(Stop::Answer("the document is malformed".to_owned()))),
            }
        }
        Err(problems) => problems
            .into_iter()
            .map(|mut problem| {
                problem.span = shift(problem.span)
                    .filter(|s| in_file(*s, sources))
                    .ok_or_else(broken)?;
                Ok(problem)
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(|problems| {
                if problems.is_empty() {
                    Err(broken())
                } else {
                    Err(problems)
                }
            }),
    }
}

/// Why the evaluator gave no answer.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("the Nickel evaluation did not finish within {} s", NICKEL_TIME_BUDGET.as_secs())]
    Time,
    #[error("the Nickel evaluation needed more than {} MiB of memory", NICKEL_MEMORY_BUDGET >> 20)]
    Memory,
    #[error("the Nickel evaluation recursed too deeply")]
    Stack,
    #[error("the evaluated spec is larger than {} MiB", ANSWER_MAX_BYTES >> 20)]
    Large,
    #[error("the Nickel evaluator stopped: {0}")]
    Crashed(String),
    #[error("cannot start the Nickel evaluator: {0}")]
    Start(io::Error),
    #[error("the Nickel evaluator's answer is unreadable: {0}")]
    Answer(String),
}

impl Stop {
    fn help(&self) -> &'static str {
        match self {
            Stop::Time | Stop::Memory | Stop::Stack | Stop::Large => {
                "look for a recursion without a base case (`let rec f = fun x => f x in f 1`) or \
                 a value that grows without end; a spec evaluates in well under a second"
            }
            _ => "this is a bug in dispatch or in nickel-lang-core",
        }
    }
}

/// Runs the evaluator on `request` within [`NICKEL_TIME_BUDGET`].
fn evaluate(request: &Request) -> Result<Answer, Stop> {
    let program = match EVALUATOR.get() {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(Stop::Start)?,
    };
    let input = serde_json::to_vec(request).map_err(|e| Stop::Start(io::Error::other(e)))?;
    let mut child = Command::new(program)
        .arg(EVALUATOR_COMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Stop::Start)?;
    let (stdin, stdout, stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(stdin), Some(stdout), Some(stderr)) => (stdin, stdout, stderr),
            _ => unreachable!("all three streams of the evaluator are piped"),
        };
    let (sender, answer) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = stdout.take(ANSWER_MAX_BYTES + 1).read_to_end(&mut bytes);
        let _ = sender.send(read.map(|_| bytes));
    });
    let errors = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.take(STDERR_MAX_BYTES).read_to_end(&mut bytes);
        bytes
    });
    // The evaluator reads all of its input before anything else; when it dies first, its status
    // says why, so a failed write is not an error of its own.
    let mut stdin = stdin;
    let _ = stdin.write_all(&input);
    drop(stdin);
    let received = answer.recv_timeout(NICKEL_TIME_BUDGET);
    let in_time = !matches!(received, Err(mpsc::RecvTimeoutError::Timeout));
    let too_large = matches!(&received, Ok(Ok(bytes)) if bytes.len() as u64 > ANSWER_MAX_BYTES);
    if !in_time || too_large {
        // Only this child, by its handle; it may be blocked on a full pipe or still running.
        let _ = child.kill();
    }
    let status = child.wait().map_err(Stop::Start)?;
    let _ = reader.join();
    let stderr = String::from_utf8_lossy(&errors.join().unwrap_or_default()).into_owned();
    if !in_time {
        return Err(Stop::Time);
    }
    if too_large {
        return Err(Stop::Large);
    }
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        return Err(match status.signal() {
            Some(libc::SIGXCPU | libc::SIGKILL) => Stop::Time,
            _ if stderr.contains("overflowed its stack") => Stop::Stack,
            _ if stderr.contains("memory allocation") || stderr.contains("allocate") => {
                Stop::Memory
            }
            _ => Stop::Crashed(status.to_string()),
        });
    }
    let bytes = match received {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return Err(Stop::Answer(error.to_string())),
        Err(_) => return Err(Stop::Answer("no answer".to_owned())),
    };
    serde_json::from_slice(&bytes).map_err(|e| Stop::Answer(e.to_string()))
}

/// Sets a resource limit of this process (soft and hard).
fn limit(resource: libc::__rlimit_resource_t, value: u64) {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct, which lives for the call.
    unsafe { libc::setrlimit(resource, &limit) };
}

/// The body of the hidden [`EVALUATOR_COMMAND`]: limits this process, reads one request from
/// stdin, evaluates it and writes the answer to stdout. Returns the exit status (0 once an
/// answer is written, problems included).
pub fn serve() -> u8 {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and reads nothing else.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    limit(libc::RLIMIT_CORE, 0);
    limit(libc::RLIMIT_AS, NICKEL_MEMORY_BUDGET);
    let cpu = NICKEL_TIME_BUDGET.as_secs() + 1;
    let soft = libc::rlimit {
        rlim_cur: cpu,
        rlim_max: cpu + 1,
    };
    // SAFETY: as in `limit`.
    unsafe { libc::setrlimit(libc::RLIMIT_CPU, &soft) };
    let mut input = Vec::new();
    if io::stdin().read_to_end(&mut input).is_err() {
        return 1;
    }
    let Ok(request) = serde_json::from_slice::<Request>(&input) else {
        return 1;
    };
    drop(input);
    let answer = evaluate_here(&request);
    let mut out = io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &answer).map_err(io::Error::from);
    match written.and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Evaluates the request in this process (the evaluator's side of [`load`]).
fn evaluate_here(request: &Request) -> Answer {
    let tree = SpecTree::at(request.root.clone());
    let mut sources = Sources::default();
    let main = sources.add(request.spec.display().to_string(), request.text.clone());
    let whole_file = Span::new(main, 0, 0);
    let answer = |sources: Sources, outcome| Answer {
        files: sources
            .files()
            .iter()
            .skip(1)
            .map(|f| (f.name.clone(), f.text.as_str().to_owned()))
            .collect(),
        outcome,
    };
    let main_path = match normalize_path(&request.spec) {
        Ok(path) => path,
        Err(error) => {
            let problem = Problem::new(
                whole_file,
                format!("cannot resolve the spec's path: {error}"),
                "here",
            );
            return answer(sources, Err(vec![problem]));
        }
    };
    let mut cache = CacheHub::new();
    let main_id = cache.sources.add_string(
        SourcePath::Path(main_path.clone(), InputFormat::Nickel),
        request.text.clone(),
    );
    cache.sources.add_string(
        SourcePath::Path(
            PathBuf::from(BUILTIN_DIR).join(CONTRACT_IMPORT),
            InputFormat::Nickel,
        ),
        super::contract::nickel_contract(),
    );
    cache
        .sources
        .add_import_paths(std::iter::once(PathBuf::from(BUILTIN_DIR)));
    let refused = register_imports(&mut cache, main_id, &main_path, &tree);
    // From here on no file can be opened: everything the spec may read is in the cache.
    limit(libc::RLIMIT_NOFILE, 3);

    let mut context: VmContext<CacheHub, CacheImpl> =
        VmContext::new(cache, io::sink(), NullReporter {});
    let result = if refused.is_empty() {
        Some(context.prepare_eval(main_id).and_then(|prepared| {
            Ok(VirtualMachine::new(&mut context).eval_full_for_export_closure(prepared.into())?)
        }))
    } else {
        None
    };
    let files = context.import_resolver.files().clone();
    let mut converter = Converter {
        files: &files,
        pos_table: &context.pos_table,
        sources: &mut sources,
        ids: HashMap::new(),
        main,
        main_path: &main_path,
        problems: Vec::new(),
        budget: Budget::default(),
        stopped: false,
    };
    let outcome = match result {
        None => Err(refused
            .into_iter()
            .map(|(span, message)| {
                let span = converter.span(TermPos::Original(span), whole_file);
                Problem::new(span, message, "this import")
                    .with_help("keep the files a spec imports in its own directory")
            })
            .collect()),
        Some(Ok(value)) => {
            let node = converter.node(&value, whole_file, 1);
            if converter.problems.is_empty() {
                let mut flat = Vec::new();
                flatten(&node, None, &mut flat);
                Ok(flat)
            } else {
                Err(std::mem::take(&mut converter.problems))
            }
        }
        Some(Err(error)) => {
            let mut files = files.clone();
            let diagnostics = error.into_diagnostics(&mut files);
            converter.files = &files;
            let problems: Vec<Problem> = diagnostics
                .into_iter()
                .map(|d| converter.problem(d, whole_file))
                .collect();
            if problems.is_empty() {
                Err(vec![Problem::new(
                    whole_file,
                    "Nickel: evaluation failed",
                    "here",
                )])
            } else {
                Err(problems)
            }
        }
    };
    answer(sources, outcome)
}

/// Finds every `import "path"` of the spec and of the Nickel files it imports, checks that each
/// stays in the tree, and registers the text of each in the cache under the name Nickel will
/// look it up by. An import of a file that does not exist is left to Nickel (it looks among the
/// built-ins, then says it found nothing). Returns the refused imports: where, and why.
fn register_imports(
    cache: &mut CacheHub,
    main: NickelFileId,
    main_path: &FsPath,
    tree: &SpecTree,
) -> Vec<(RawSpan, String)> {
    let mut refused = Vec::new();
    let mut seen: HashSet<(PathBuf, InputFormat)> = HashSet::new();
    seen.insert((main_path.to_owned(), InputFormat::Nickel));
    let mut queue = vec![main];
    while let Some(file) = queue.pop() {
        let dir = cache
            .get_path(file)
            .map(PathBuf::from)
            .and_then(|p| p.parent().map(FsPath::to_owned))
            .unwrap_or_default();
        let mut imports: Vec<(OsString, InputFormat, TermPos)> = Vec::new();
        {
            let alloc = AstAlloc::new();
            // A file that does not parse is reported by Nickel itself, before any import.
            let Ok(ast) = cache.sources.parse_nickel(&alloc, file) else {
                continue;
            };
            let ast: &Ast<'_> = alloc.alloc(ast);
            ast.traverse_ref(
                &mut |ast: &Ast<'_>, _: &()| {
                    if let AstNode::Import(Import::Path { path, format }) = &ast.node {
                        imports.push(((*path).to_owned(), *format, ast.pos));
                    }
                    TraverseControl::<(), ()>::Continue
                },
                &(),
            );
        }
        for (written, format, pos) in imports {
            let shown = written.to_string_lossy().into_owned();
            let at = match pos {
                TermPos::Original(span) | TermPos::Inherited(span) => span,
                TermPos::None => continue,
            };
            if FsPath::new(&written).is_absolute() {
                refused.push((at, super::tree::TreeError::Absolute(shown).to_string()));
                continue;
            }
            let Ok(candidate) = normalize_path(dir.join(&written)) else {
                continue;
            };
            if !seen.insert((candidate.clone(), format)) {
                continue;
            }
            // Not there at all (not even a dangling link): Nickel looks elsewhere or says so.
            if std::fs::symlink_metadata(&candidate).is_err() {
                continue;
            }
            match tree.read(&dir.join(&written), &shown) {
                Ok(text) => {
                    let id = cache
                        .sources
                        .add_string(SourcePath::Path(candidate, format), text);
                    if format == InputFormat::Nickel {
                        queue.push(id);
                    }
                }
                Err(error) => refused.push((at, error.to_string())),
            }
        }
    }
    refused
}

struct Converter<'a> {
    files: &'a Files,
    pos_table: &'a PosTable,
    sources: &'a mut Sources,
    ids: HashMap<NickelFileId, FileId>,
    main: FileId,
    main_path: &'a FsPath,
    problems: Vec<Problem>,
    /// What the document holds so far.
    budget: Budget,
    /// Whether a limit was passed (reported once; the rest is not converted).
    stopped: bool,
}

impl Converter<'_> {
    /// Our id of a Nickel file, registering its text on first use.
    fn file(&mut self, id: NickelFileId) -> FileId {
        if let Some(ours) = self.ids.get(&id) {
            return *ours;
        }
        let name = match FsPath::new(self.files.name(id)).strip_prefix(BUILTIN_DIR) {
            Ok(builtin) => format!("{} (built into dispatch)", builtin.display()),
            Err(_) => self.files.name(id).to_string_lossy().into_owned(),
        };
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

    /// The node of `value` at nesting level `depth`; past a limit, a problem and `null`.
    fn node(&mut self, value: &NickelValue, parent: Span, depth: usize) -> Node {
        let span = self.span(value.pos(self.pos_table), parent);
        let null = Node {
            span,
            value: Value::Null,
        };
        let bytes = match value.content_ref() {
            ValueContentRef::String(text) => text.len(),
            _ => 0,
        };
        let over = if depth > MAX_DEPTH {
            Err(too_deep())
        } else {
            self.budget.charge(1, bytes)
        };
        if self.stopped || self.limit(over, span) {
            return null;
        }
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
            ValueContentRef::Array(array) => Value::Seq(
                array
                    .iter()
                    .map(|item| self.node(item, span, depth + 1))
                    .collect(),
            ),
            ValueContentRef::Record(record) => {
                let mut entries = Vec::new();
                if let Some(data) = record.into_opt() {
                    for (ident, field) in &data.fields {
                        let hidden = field.metadata.0.as_ref().is_some_and(|m| m.not_exported);
                        let Some(value) = field.value.as_ref().filter(|_| !hidden) else {
                            continue;
                        };
                        let key_span = self.span(ident.pos, span);
                        let charged = self.budget.charge(0, ident.label().len());
                        if self.stopped || self.limit(charged, key_span) {
                            break;
                        }
                        let child = self.node(value, key_span, depth + 1);
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

    /// Whether `charged` passed a limit; the first time, that is a problem at `span`.
    fn limit(&mut self, charged: Result<(), String>, span: Span) -> bool {
        let Err(message) = charged else {
            return false;
        };
        self.stopped = true;
        self.problems.push(
            Problem::new(span, message, "here")
                .with_help("a spec is a small document; generate less"),
        );
        true
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
