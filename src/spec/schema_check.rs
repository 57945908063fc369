//! Structural check of a loaded document against the JSON schema generated from the model.
//!
//! serde stops at the first error; this walk reports every unknown field (with a "did you
//! mean" hint), every type error, every missing field and every malformed typed value at once,
//! each at its span. It understands the subset of JSON Schema that schemars emits for the
//! model; deserialization runs only after this check passed.

use serde_json::Value as Json;

use super::node::{Node, Path, Value};
use super::problem::Problem;
use super::values::check_format;

/// Checks `node` against `root` (a schema with `$defs`), appending problems to `out`.
pub fn check(root: &Json, node: &Node, out: &mut Vec<Problem>) {
    Checker { root }.check(root, node, &Path::default(), out);
}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

struct Checker<'a> {
    root: &'a Json,
}

impl<'a> Checker<'a> {
    fn resolve(&self, schema: &'a Json) -> &'a Json {
        let mut schema = schema;
        while let Some(reference) = schema.get("$ref").and_then(Json::as_str) {
            let pointer = reference.trim_start_matches('#');
            match self.root.pointer(pointer) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn check(&self, schema: &'a Json, node: &Node, path: &Path, out: &mut Vec<Problem>) {
        let schema = self.resolve(schema);
        if let Some(alternatives) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Json::as_array)
        {
            self.check_alternatives(alternatives, node, path, out);
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Json::as_array) {
            for part in all {
                self.check(part, node, path, out);
            }
        }
        if let Some(types) = schema.get("type") {
            if !type_matches(types, &node.value) {
                out.push(Problem::new(
                    node.span,
                    format!(
                        "{} must be {}, found {}",
                        describe(path),
                        type_words(types),
                        node.value.kind()
                    ),
                    format!("expected {}", type_words(types)),
                ));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array) {
            let json = node.to_json();
            if !allowed.contains(&json) {
                let names: Vec<&str> = allowed.iter().filter_map(Json::as_str).collect();
                let mut problem = Problem::new(
                    node.span,
                    format!(
                        "{} must be one of {}, found {}",
                        describe(path),
                        quoted_list(&names),
                        json
                    ),
                    "not an allowed value",
                );
                if let Some(suggestion) = json
                    .as_str()
                    .and_then(|s| did_you_mean(s, names.iter().copied()))
                {
                    problem = problem.with_help(format!("did you mean `{suggestion}`?"));
                }
                out.push(problem);
                return;
            }
        }
        if let Some(constant) = schema.get("const") {
            if &node.to_json() != constant {
                out.push(Problem::new(
                    node.span,
                    format!("{} must be {constant}", describe(path)),
                    "unexpected value",
                ));
                return;
            }
        }
        match &node.value {
            Value::Int(_) | Value::Float(_) => self.check_number(schema, node, path, out),
            Value::Str(text) => self.check_string(schema, text, node, path, out),
            Value::Seq(items) => {
                if let Some(min) = schema.get("minItems").and_then(Json::as_u64) {
                    if (items.len() as u64) < min {
                        out.push(Problem::new(
                            node.span,
                            format!(
                                "{} needs at least {min} {}",
                                describe(path),
                                if min == 1 { "entry" } else { "entries" }
                            ),
                            "empty list",
                        ));
                    }
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &path.index(i), out);
                    }
                }
            }
            Value::Map(entries) => self.check_object(schema, entries, node, path, out),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn check_alternatives(
        &self,
        alternatives: &'a [Json],
        node: &Node,
        path: &Path,
        out: &mut Vec<Problem>,
    ) {
        let mut fitting = Vec::new();
        for alternative in alternatives {
            let mut problems = Vec::new();
            self.check(alternative, node, path, &mut problems);
            if problems.is_empty() {
                return;
            }
            let resolved = self.resolve(alternative);
            if resolved
                .get("type")
                .is_none_or(|t| type_matches(t, &node.value))
            {
                fitting.push((closeness(resolved, node), problems));
            }
        }
        // Several alternatives fit the value's type (mappings of different shapes): report
        // the problems of the closest one, the one whose fields the mapping uses most.
        let best = fitting
            .iter()
            .enumerate()
            .max_by_key(|(i, (closeness, problems))| {
                (
                    *closeness,
                    std::cmp::Reverse(problems.len()),
                    std::cmp::Reverse(*i),
                )
            })
            .map(|(i, _)| i);
        if let Some(best) = best {
            if fitting.len() == 1 || fitting[best].0 > (0, 0, 0) {
                out.append(&mut fitting.swap_remove(best).1);
                return;
            }
        }
        let mut words: Vec<String> = Vec::new();
        for word in alternatives
            .iter()
            .filter_map(|a| self.resolve(a).get("type").map(type_words))
        {
            if !words.contains(&word) {
                words.push(word);
            }
        }
        out.push(Problem::new(
            node.span,
            format!(
                "{} must be {}, found {}",
                describe(path),
                words.join(" or "),
                node.value.kind()
            ),
            "unexpected value",
        ));
    }

    fn check_number(&self, schema: &Json, node: &Node, path: &Path, out: &mut Vec<Problem>) {
        let value = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(x) => x,
            _ => return,
        };
        if let Some(min) = schema.get("minimum").and_then(Json::as_f64) {
            if value < min {
                let mut problem = Problem::new(
                    node.span,
                    format!("{} must be at least {min}, found {value}", describe(path)),
                    "too small",
                );
                if value == 0.0 && min >= 1.0 {
                    problem = problem.with_help("a limit of 0 would never let anything start; remove the entry for the default");
                }
                out.push(problem);
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Json::as_f64) {
            if value > max {
                out.push(Problem::new(
                    node.span,
                    format!("{} must be at most {max}, found {value}", describe(path)),
                    "too large",
                ));
            }
        }
    }

    fn check_string(
        &self,
        schema: &Json,
        text: &str,
        node: &Node,
        path: &Path,
        out: &mut Vec<Problem>,
    ) {
        if let Some(min) = schema.get("minLength").and_then(Json::as_u64) {
            if (text.chars().count() as u64) < min {
                out.push(Problem::new(
                    node.span,
                    format!("{} must not be empty", describe(path)),
                    "empty",
                ));
                return;
            }
        }
        if let Some(format) = schema.get("format").and_then(Json::as_str) {
            if let Some(Err(message)) = check_format(format, text) {
                out.push(Problem::new(
                    node.span,
                    format!("{}: {message}", describe(path)),
                    format!("not a valid {}", format.replace('-', " ")),
                ));
            }
        }
    }

    fn check_object(
        &self,
        schema: &'a Json,
        entries: &[(super::node::Key, Node)],
        node: &Node,
        path: &Path,
        out: &mut Vec<Problem>,
    ) {
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        for (key, value) in entries {
            if let Some(property) = properties.and_then(|p| p.get(&key.name)) {
                self.check(property, value, &path.key(&key.name), out);
                continue;
            }
            match additional {
                Some(Json::Bool(false)) => {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let mut problem = Problem::new(
                        key.span,
                        format!("unknown field `{}` {}", key.name, location_words(path)),
                        "unknown field",
                    );
                    problem = match did_you_mean(&key.name, known.iter().copied()) {
                        Some(suggestion) => {
                            problem.with_help(format!("did you mean `{suggestion}`?"))
                        }
                        None => problem.with_help(format!("known fields: {}", quoted_list(&known))),
                    };
                    out.push(problem);
                }
                Some(additional) if additional.is_object() => {
                    self.check(additional, value, &path.key(&key.name), out)
                }
                _ => {}
            }
        }
        if let Some(required) = schema.get("required").and_then(Json::as_array) {
            for name in required.iter().filter_map(Json::as_str) {
                if !entries.iter().any(|(k, _)| k.name == name) {
                    let span = entries.first().map_or(node.span, |(k, _)| k.span);
                    out.push(
                        Problem::new(
                            span,
                            format!("missing field `{name}` {}", location_words(path)),
                            format!("`{name}` is missing in this mapping"),
                        )
                        .with_help(missing_help(path, name)),
                    );
                }
            }
        }
    }
}

/// How much of an object schema a mapping uses: its required fields present, its known fields
/// present, then its keys that are near a known field (misspelt). Zero for a value that is
/// not a mapping.
fn closeness(schema: &Json, node: &Node) -> (usize, usize, usize) {
    let Value::Map(entries) = &node.value else {
        return (0, 0, 0);
    };
    let has = |name: &str| entries.iter().any(|(k, _)| k.name == name);
    let required = schema
        .get("required")
        .and_then(Json::as_array)
        .map_or(0, |r| {
            r.iter().filter_map(Json::as_str).filter(|n| has(n)).count()
        });
    let Some(properties) = schema.get("properties").and_then(Json::as_object) else {
        return (required, 0, 0);
    };
    let known = properties.keys().filter(|n| has(n)).count();
    let near = entries
        .iter()
        .filter(|(k, _)| !properties.contains_key(&k.name))
        .filter(|(k, _)| did_you_mean(&k.name, properties.keys().map(String::as_str)).is_some())
        .count();
    (required, known, near)
}

fn missing_help(path: &Path, name: &str) -> String {
    match (path.to_string().contains("qa["), name) {
        (true, "run") => "a QA step needs a command: `run: go test ./...`".to_owned(),
        _ => format!("add `{name}:`"),
    }
}

fn describe(path: &Path) -> String {
    if path.0.is_empty() {
        "the spec".to_owned()
    } else {
        format!("`{path}`")
    }
}

fn location_words(path: &Path) -> String {
    if path.0.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `{path}`")
    }
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_matches(types: &Json, value: &Value) -> bool {
    match types {
        Json::String(t) => one_type_matches(t, value),
        Json::Array(ts) => ts
            .iter()
            .filter_map(Json::as_str)
            .any(|t| one_type_matches(t, value)),
        _ => true,
    }
}

fn one_type_matches(t: &str, value: &Value) -> bool {
    match (t, value) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("string", Value::Str(_)) => true,
        ("array", Value::Seq(_)) | ("object", Value::Map(_)) => true,
        ("integer", Value::Int(_)) | ("number", Value::Int(_) | Value::Float(_)) => true,
        ("integer", Value::Float(x)) => x.fract() == 0.0 && x.is_finite(),
        _ => false,
    }
}

fn type_words(types: &Json) -> String {
    let word = |t: &str| match t {
        "null" => "null",
        "boolean" => "true or false",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        "integer" => "a whole number",
        "number" => "a number",
        _ => "a value",
    };
    match types {
        Json::String(t) => word(t).to_owned(),
        Json::Array(ts) => ts
            .iter()
            .filter_map(Json::as_str)
            .filter(|t| *t != "null")
            .map(word)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "a value".to_owned(),
    }
}
