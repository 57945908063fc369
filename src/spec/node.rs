//! The loaded document: a tree of values that remembers where each value and key came from.
//!
//! Both loaders (YAML and Nickel) produce a [`Node`]; the schema check, deserialization and
//! semantic validation all work on it, so both formats get the same diagnostics.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::source::Span;

/// Most values (scalars, lists and mappings) one spec document may hold, counted after YAML
/// aliases expand and after Nickel evaluates, so that a 300-byte alias bomb or a generated list
/// of millions stops with an error instead of taking gigabytes. A spec of 10,000 repositories
/// holds about 30,000.
pub const MAX_VALUES: usize = 1_000_000;

/// Most bytes of text (strings and keys) one spec document may hold, counted like
/// [`MAX_VALUES`] (an alias to a long string repeated many times counts each time).
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// Deepest nesting of lists and mappings in a spec document (a spec needs about 8); every later
/// stage walks the document recursively, so depth is bounded where the document is built.
pub const MAX_DEPTH: usize = 64;

/// What a document being built has used of [`MAX_VALUES`] and [`MAX_TEXT_BYTES`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Values so far.
    pub values: usize,
    /// Bytes of text so far.
    pub bytes: usize,
}

impl Budget {
    /// Charges `values` values holding `bytes` bytes of text; past a limit, the error says which
    /// (one sentence, for a [`Problem`](super::problem::Problem) at the value that passed it).
    pub fn charge(&mut self, values: usize, bytes: usize) -> Result<(), String> {
        self.values = self.values.saturating_add(values);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.values > MAX_VALUES {
            Err(format!("the spec holds more than {MAX_VALUES} values"))
        } else if self.bytes > MAX_TEXT_BYTES {
            Err(format!(
                "the spec holds more than {} MiB of text",
                MAX_TEXT_BYTES >> 20
            ))
        } else {
            Ok(())
        }
    }

    /// What was charged since `earlier`.
    pub fn since(&self, earlier: Budget) -> Budget {
        Budget {
            values: self.values - earlier.values,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

/// The error of a document nested deeper than [`MAX_DEPTH`].
pub fn too_deep() -> String {
    format!("the spec nests lists and mappings more than {MAX_DEPTH} levels deep")
}

/// A value with the span it was written at.
#[derive(Clone, Debug)]
pub struct Node {
    /// Where the value was written.
    pub span: Span,
    /// The value.
    pub value: Value,
}

/// A mapping key with its own span.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key was written.
    pub span: Span,
}

/// The shapes a value can take.
#[derive(Clone, Debug)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// Text.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, keys in source order.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// The word users know for this kind of value.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// One step of a path into a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// A path into a document, e.g. `jobs[1].needs[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Segment>);

impl Path {
    /// The path one key deeper.
    pub fn key(&self, key: &str) -> Path {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// The path one index deeper.
    pub fn index(&self, index: usize) -> Path {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, node)| node)
    }

    /// The key and value of `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The node at `path`, or the deepest node on the way there.
    pub fn find(&self, path: &Path) -> &Node {
        let mut node = self;
        for segment in &path.0 {
            let next = match (segment, &node.value) {
                (Segment::Key(key), _) => node.get(key),
                (Segment::Index(index), Value::Seq(items)) => items.get(*index),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    /// The span of the key at the end of `path` (for "unknown field" style errors), else the
    /// span of the value.
    pub fn key_span(&self, path: &Path) -> Span {
        if let Some((Segment::Key(last), parent)) = path.0.split_last() {
            let parent = self.find(&Path(parent.to_vec()));
            if let Some((key, _)) = parent.entry(last) {
                return key.span;
            }
        }
        self.find(path).span
    }

    /// The document as JSON, for deserializing into the model.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}
