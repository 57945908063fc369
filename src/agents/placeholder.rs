//! Placeholders in a custom agent's argv: `{{ prompt_file }}`, `{{ model }}`, `{{ workdir }}`,
//! `{{ meta_dir }}` and `{{ base }}`.
//!
//! Substitution is plain string replacement inside one argv element: the element stays one
//! argument whatever the value holds (no shell, no splitting, no escaping). This is not a
//! template language: there are no filters, conditions or expressions, and an unknown name is
//! an error rather than an empty string.

/// The names a placeholder may use, in the order error messages list them.
pub const NAMES: &[&str] = &["prompt_file", "model", "workdir", "meta_dir", "base"];

/// The values placeholders are replaced with.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    /// `{{ prompt_file }}`.
    pub prompt_file: &'a str,
    /// `{{ model }}`; using it without a model is an error.
    pub model: Option<&'a str>,
    /// `{{ workdir }}`.
    pub workdir: &'a str,
    /// `{{ meta_dir }}`.
    pub meta_dir: &'a str,
    /// `{{ base }}`.
    pub base: &'a str,
}

/// Replaces every placeholder in one argv element of agent `agent`.
///
/// Spaces inside the braces are optional (`{{model}}` and `{{ model }}` are the same).
pub fn substitute(element: &str, values: &Values<'_>, agent: &str) -> Result<String, String> {
    let mut out = String::with_capacity(element.len());
    let mut rest = element;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "agent `{agent}`: argv element `{}` opens a placeholder with `{{{{` but never closes it with `}}}}`",
                element.escape_debug()
            ));
        };
        let name = after[..end].trim();
        let value = match name {
            "prompt_file" => values.prompt_file,
            "workdir" => values.workdir,
            "meta_dir" => values.meta_dir,
            "base" => values.base,
            "model" => values.model.ok_or_else(|| {
                format!(
                    "agent `{agent}` uses `{{{{ model }}}}` but no model is given: write `{agent}:MODEL` or set `agents.{agent}.model`"
                )
            })?,
            _ => {
                return Err(format!(
                    "agent `{agent}`: unknown placeholder `{{{{ {} }}}}` in argv element `{}`; known placeholders: {}",
                    name.escape_debug(),
                    element.escape_debug(),
                    NAMES
                        .iter()
                        .map(|n| format!("`{{{{ {n} }}}}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            prompt_file: "/workspace/.meta/prompt.md",
            model: Some("m 1"),
            workdir: "/workspace/repo",
            meta_dir: "/workspace/.meta",
            base: "main",
        }
    }

    #[test]
    fn replaces_inside_one_element() {
        let v = values();
        assert_eq!(
            substitute("--prompt-file={{ prompt_file }}", &v, "a").unwrap(),
            "--prompt-file=/workspace/.meta/prompt.md"
        );
        assert_eq!(
            substitute("{{model}}@{{ base }}", &v, "a").unwrap(),
            "m 1@main"
        );
        assert_eq!(substitute("plain", &v, "a").unwrap(), "plain");
    }

    #[test]
    fn unknown_unclosed_and_missing_model_are_errors() {
        let v = values();
        let err = substitute("{{ prompt }}", &v, "mine").unwrap_err();
        assert!(err.contains("unknown placeholder `{{ prompt }}`"), "{err}");
        assert!(err.contains("mine"), "{err}");
        let err = substitute("x{{ base", &v, "mine").unwrap_err();
        assert!(err.contains("never closes"), "{err}");
        let no_model = Values { model: None, ..v };
        let err = substitute("{{ model }}", &no_model, "mine").unwrap_err();
        assert!(err.contains("mine:MODEL"), "{err}");
    }
}
