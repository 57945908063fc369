//! YAML loader: YAML text -> [`Node`] with spans.
//!
//! Built on saphyr-parser's event stream because a serde YAML deserializer forgets where
//! values were written, and every semantic diagnostic needs that. Scalars resolve by the YAML
//! 1.2 core schema; anchors, aliases and `<<` merge keys work; duplicate keys and multiple
//! documents are errors. The document is bounded as it is built: every value, and every copy an
//! alias makes, is charged to a [`Budget`] of [`MAX_VALUES`](super::node::MAX_VALUES) values and
//! [`MAX_TEXT_BYTES`](super::node::MAX_TEXT_BYTES), and nesting stops at [`MAX_DEPTH`], so an
//! alias bomb is an error at the alias that passes the limit.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};

use super::node::{too_deep, Budget, Key, Node, Value, MAX_DEPTH};
use super::problem::Problem;
use super::source::{FileId, Span};

/// Parses one YAML document. Syntax errors stop parsing (the parser cannot recover), but
/// duplicate keys are all collected.
pub fn parse(file: FileId, text: &str) -> Result<Node, Vec<Problem>> {
    let offsets = CharOffsets::new(text);
    let mut builder = Builder {
        file,
        text,
        offsets: &offsets,
        anchors: HashMap::new(),
        problems: Vec::new(),
        budget: Budget::default(),
        deepest: 0,
    };
    let mut parser = Parser::new_from_str(text);
    let mut events = Vec::new();
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => events.push((event, span)),
            Err(error) => {
                let at = offsets.byte(error.marker().index());
                let end = (at + 1).min(text.len()).max(at);
                return Err(vec![Problem::new(
                    Span::new(file, at, end),
                    format!("YAML syntax error: {}", error.info()),
                    "here",
                )]);
            }
        }
    }
    let mut iter = events.into_iter().peekable();
    let mut document: Option<Node> = None;
    while let Some((event, span)) = iter.next() {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                let node = builder.node(&mut iter, 1)?;
                if document.is_some() {
                    return Err(vec![Problem::new(
                        node.span,
                        "a spec holds exactly one YAML document",
                        "second document",
                    )
                    .with_help("remove the `---` separator or split the file")]);
                }
                document = Some(node);
            }
            _ => {
                return Err(vec![Problem::new(
                    builder.span(span),
                    "unexpected YAML event",
                    "here",
                )])
            }
        }
    }
    if !builder.problems.is_empty() {
        return Err(builder.problems);
    }
    match document {
        Some(node) if !matches!(node.value, Value::Null) => Ok(node),
        _ => Err(vec![Problem::new(
            Span::new(file, 0, text.len().min(1)),
            "the spec is empty",
            "empty file",
        )
        .with_help("start with `version: 1`")]),
    }
}

type Events<'a> = std::iter::Peekable<std::vec::IntoIter<(Event<'a>, YamlSpan)>>;

struct Builder<'o> {
    file: FileId,
    text: &'o str,
    offsets: &'o CharOffsets,
    anchors: HashMap<usize, Anchored>,
    problems: Vec<Problem>,
    /// What the document holds so far, alias copies included.
    budget: Budget,
    /// The deepest level a node was built at so far.
    deepest: usize,
}

/// An anchored node and what a copy of it costs.
struct Anchored {
    node: Node,
    cost: Budget,
    /// Levels of the node and everything in it (1 for a scalar).
    height: usize,
}

impl Builder<'_> {
    fn span(&self, span: YamlSpan) -> Span {
        Span::new(
            self.file,
            self.offsets.byte(span.start.index()),
            self.offsets.byte(span.end.index()),
        )
    }

    /// The node the next events make, at nesting level `depth` (1 for the document).
    fn node(&mut self, events: &mut Events<'_>, depth: usize) -> Result<Node, Vec<Problem>> {
        let Some((event, span)) = events.next() else {
            return Err(vec![Problem::new(
                Span::new(self.file, 0, 0),
                "unexpected end of YAML",
                "here",
            )]);
        };
        let here = self.span(span);
        let over = |message: String| {
            vec![Problem::new(here, message, "here")
                .with_help("a spec is a small document; write out what it needs")]
        };
        if depth > MAX_DEPTH {
            return Err(over(too_deep()));
        }
        let (before, deepest) = (self.budget, self.deepest);
        self.deepest = depth;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                self.budget.charge(1, text.len()).map_err(over)?;
                let value = if style == ScalarStyle::Plain && !forced_string {
                    resolve(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                (Node { span: here, value }, anchor)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(anchored) => {
                    let (cost, height) = (anchored.cost, anchored.height);
                    let alias = |message: String| {
                        vec![Problem::new(
                            here,
                            format!("this alias expands past a limit: {message}"),
                            "alias",
                        )
                        .with_help(
                            "YAML aliases copy what they point at; a spec needs few of them",
                        )]
                    };
                    if depth + height - 1 > MAX_DEPTH {
                        return Err(alias(too_deep()));
                    }
                    self.budget.charge(cost.values, cost.bytes).map_err(alias)?;
                    self.deepest = depth + height - 1;
                    (anchored.node.clone(), 0)
                }
                None => {
                    return Err(vec![Problem::new(
                        here,
                        "alias to an unknown anchor",
                        "unknown alias",
                    )])
                }
            },
            Event::SequenceStart(anchor, _) => {
                self.budget.charge(1, 0).map_err(over)?;
                let mut items = Vec::new();
                let mut end = here.end;
                loop {
                    if let Some((Event::SequenceEnd, _)) = events.peek() {
                        events.next();
                        break;
                    }
                    let item = self.node(events, depth + 1)?;
                    end = end.max(item.span.end);
                    items.push(item);
                }
                (
                    Node {
                        span: Span::new(self.file, here.start, end),
                        value: Value::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.budget.charge(1, 0).map_err(over)?;
                let mut entries: Vec<(Key, Node)> = Vec::new();
                let mut merged: Vec<(Key, Node)> = Vec::new();
                let mut end = here.end;
                loop {
                    if let Some((Event::MappingEnd, _)) = events.peek() {
                        events.next();
                        break;
                    }
                    let key_node = self.node(events, depth + 1)?;
                    let value = self.node(events, depth + 1)?;
                    end = end.max(value.span.end);
                    let name = match key_node.value {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(x) => x.to_string(),
                        Value::Null => "null".to_owned(),
                        Value::Seq(_) | Value::Map(_) => {
                            self.problems.push(Problem::new(
                                key_node.span,
                                "a mapping key must be a plain value",
                                "complex key",
                            ));
                            continue;
                        }
                    };
                    if name == "<<" {
                        self.merge_into(&mut merged, value);
                        continue;
                    }
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        let line = self.text[..first.span.start.min(self.text.len())]
                            .matches('\n')
                            .count()
                            + 1;
                        self.problems.push(
                            Problem::new(
                                key_node.span,
                                format!("duplicate key `{name}`"),
                                "defined again here",
                            )
                            .with_help(format!(
                                "the first `{name}` is at line {line}; remove one of them"
                            )),
                        );
                        continue;
                    }
                    entries.push((
                        Key {
                            name,
                            span: key_node.span,
                        },
                        value,
                    ));
                }
                for (key, value) in merged {
                    if !entries.iter().any(|(k, _)| k.name == key.name) {
                        entries.push((key, value));
                    }
                }
                (
                    Node {
                        span: Span::new(self.file, here.start, end),
                        value: Value::Map(entries),
                    },
                    anchor,
                )
            }
            _ => {
                return Err(vec![Problem::new(
                    here,
                    "unexpected YAML structure",
                    "here",
                )])
            }
        };
        let height = self.deepest - depth + 1;
        if anchor > 0 {
            let cost = self.budget.since(before);
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    cost,
                    height,
                },
            );
        }
        self.deepest = deepest.max(self.deepest);
        Ok(node)
    }

    /// `<<: *base` or `<<: [*a, *b]`: earlier sources win, explicit keys win over all.
    fn merge_into(&mut self, merged: &mut Vec<(Key, Node)>, value: Node) {
        let sources = match value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) => items,
            _ => {
                self.problems.push(Problem::new(
                    value.span,
                    "`<<` merges a mapping or a list of mappings",
                    "not a mapping",
                ));
                return;
            }
        };
        for source in sources {
            match source.value {
                Value::Map(entries) => {
                    for (key, node) in entries {
                        if !merged.iter().any(|(k, _)| k.name == key.name) {
                            merged.push((key, node));
                        }
                    }
                }
                _ => self.problems.push(Problem::new(
                    source.span,
                    "`<<` merges mappings only",
                    "not a mapping",
                )),
            }
        }
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Value::Int).unwrap_or_else(|_| {
            text.parse()
                .map_or(Value::Str(text.to_owned()), Value::Float)
        });
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    if is_float(unsigned) {
        if let Ok(x) = text.parse() {
            return Value::Float(x);
        }
    }
    Value::Str(text.to_owned())
}

/// `[0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)?` with at least one digit before the exponent.
fn is_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    digits_ok && exponent_ok && (mantissa.contains('.') || exponent.is_some())
}

/// Maps saphyr's character indices to byte offsets.
struct CharOffsets {
    /// Byte offset of each character, plus the length; empty for ASCII text (identity).
    table: Vec<usize>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let table = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect()
        };
        Self {
            table,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.table.is_empty() {
            char_index.min(self.len)
        } else {
            self.table.get(char_index).copied().unwrap_or(self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Node, Vec<Problem>> {
        parse(FileId(0), text)
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let node = load("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: hello\ng: 0x10\n").unwrap();
        assert!(matches!(node.get("a").unwrap().value, Value::Int(1)));
        assert!(matches!(&node.get("b").unwrap().value, Value::Str(s) if s == "1"));
        assert!(matches!(node.get("c").unwrap().value, Value::Bool(true)));
        assert!(matches!(node.get("d").unwrap().value, Value::Null));
        assert!(matches!(node.get("e").unwrap().value, Value::Float(x) if x == 1.5));
        assert!(matches!(&node.get("f").unwrap().value, Value::Str(s) if s == "hello"));
        assert!(matches!(node.get("g").unwrap().value, Value::Int(16)));
    }

    #[test]
    fn spans_point_at_values_in_bytes() {
        let text = "name: é\nrepo: go-io\n";
        let node = load(text).unwrap();
        let span = node.get("repo").unwrap().span;
        assert_eq!(&text[span.start..span.end], "go-io");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let problems = load("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].span.start, 10);
    }

    #[test]
    fn anchors_and_merge_keys() {
        let node = load("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        let other = node.get("other").unwrap();
        assert!(matches!(other.get("x").unwrap().value, Value::Int(1)));
        assert!(matches!(other.get("y").unwrap().value, Value::Int(3)));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let problems = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(problems[0].message.contains("YAML syntax error"));
    }
}
