//! The Nickel contract of specs (`schemas/dispatch.ncl`), generated from the JSON schema of
//! the model so the two cannot drift. Nickel specs apply it with
//! `let Spec = import "dispatch.ncl" in { ... } | Spec` (dispatch serves this text for that
//! import, see [`super::nickel::CONTRACT_IMPORT`]). The contract checks shapes
//! and field names; formats (durations, names) are checked by dispatch after evaluation.

use std::fmt::Write as _;

use serde_json::Value as Json;

/// The contract as Nickel source.
pub fn nickel_contract() -> String {
    let schema = super::json_schema();
    let mut out = String::new();
    out.push_str("# The contract of dispatch specs (version 1), for Nickel specs:\n");
    out.push_str("#   let Spec = import \"dispatch.ncl\" in { version = 1, ... } | Spec\n");
    out.push_str("# dispatch serves this text for that import; other Nickel tools find it with\n");
    out.push_str("# `--import-path` pointing at this file's directory.\n");
    out.push_str("# Generated from the spec model by `dispatch schema --nickel`; do not edit.\n");
    out.push_str("let rec Defs = {\n");
    if let Some(defs) = schema.get("$defs").and_then(Json::as_object) {
        for (name, def) in defs {
            let _ = writeln!(out, "  {name} = {},", contract(def, 1));
        }
    }
    out.push_str("}\nin\n");
    out.push_str(&contract(schema, 0));
    out.push('\n');
    out
}

fn indent(level: usize) -> String {
    "  ".repeat(level)
}

fn string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '%' => quoted.push_str("\\%"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn contract(schema: &Json, level: usize) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Json::as_str) {
        return format!("Defs.{}", reference.rsplit('/').next().unwrap_or("Dyn"));
    }
    if let Some(alternatives) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Json::as_array)
    {
        let parts: Vec<String> = alternatives.iter().map(|a| contract(a, level)).collect();
        return format!("std.contract.any_of [{}]", parts.join(", "));
    }
    if let Some(values) = schema.get("enum").and_then(Json::as_array) {
        let words: Vec<String> = values.iter().filter_map(Json::as_str).map(string).collect();
        return format!(
            "std.contract.from_predicate (fun value => std.is_string value && std.array.elem value [{}])",
            words.join(", ")
        );
    }
    let kind = match schema.get("type") {
        Some(Json::String(t)) => t.as_str(),
        Some(Json::Array(ts)) => ts
            .iter()
            .filter_map(Json::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ => return "Dyn".to_owned(),
    };
    match kind {
        "string" => "String".to_owned(),
        "integer" => "std.number.Integer".to_owned(),
        "number" => "Number".to_owned(),
        "boolean" => "Bool".to_owned(),
        "null" => "std.contract.Equal null".to_owned(),
        "array" => match schema.get("items") {
            Some(items) => format!("Array ({})", contract(items, level)),
            None => "Array Dyn".to_owned(),
        },
        "object" => record(schema, level),
        _ => "Dyn".to_owned(),
    }
}

fn record(schema: &Json, level: usize) -> String {
    let Some(properties) = schema.get("properties").and_then(Json::as_object) else {
        return match schema.get("additionalProperties") {
            Some(additional) if additional.is_object() => {
                format!("{{ _ | {} }}", contract(additional, level))
            }
            _ => "{ .. }".to_owned(),
        };
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Json::as_array)
        .map(|r| r.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("{\n");
    for (name, property) in properties {
        let _ = write!(
            out,
            "{}{name}\n{}| {}",
            indent(level + 1),
            indent(level + 2),
            contract(property, level + 2)
        );
        if !required.contains(&name.as_str()) {
            let _ = write!(out, "\n{}| optional", indent(level + 2));
        }
        if let Some(doc) = property.get("description").and_then(Json::as_str) {
            let _ = write!(out, "\n{}| doc {}", indent(level + 2), string(doc));
        }
        out.push_str(",\n");
    }
    if schema.get("additionalProperties") != Some(&Json::Bool(false)) {
        let _ = writeln!(out, "{}..", indent(level + 1));
    }
    let _ = write!(out, "{}}}", indent(level));
    out
}
