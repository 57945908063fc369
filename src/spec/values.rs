//! Typed values of a spec: durations, safe names, agent references, times of day and sizes.
//!
//! Each type is parsed once at the edge (deserialization) and carries its invariant from then
//! on; the core never re-validates the strings. Every type has a JSON-schema `format`, and
//! [`check_format`] is the one place that says what each format accepts, so the schema check
//! and deserialization agree by construction.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Checks a string against one of the spec's custom formats.
///
/// Returns `None` for a format this module does not own (the schema check then ignores it),
/// `Some(Err(message))` when the value is malformed.
pub fn check_format(format: &str, value: &str) -> Option<Result<(), String>> {
    Some(match format {
        "duration" => Duration::parse(value).map(drop),
        "job-id" => check_component(value, "job id"),
        "org" => check_component(value, "org"),
        "repo" => check_component(value, "repository name"),
        "branch" => check_ref(value, "branch", true),
        "tag" => check_ref(value, "tag", false),
        "agent-ref" => AgentRef::parse(value).map(drop),
        "time-of-day" => TimeOfDay::parse(value).map(drop),
        "byte-size" => ByteSize::parse(value).map(drop),
        "env-name" => check_env_name(value),
        "target" => check_short_target(value),
        "colour" => check_colour(value),
        "glob" => check_glob(value),
        _ => return None,
    })
}

/// Declares a validated string newtype with serde and schemars implementations.
macro_rules! string_type {
    ($(#[$doc:meta])* $name:ident, $format:literal, $description:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the value.
            pub fn parse(value: &str) -> Result<Self, String> {
                match check_format($format, value) {
                    Some(Err(message)) => Err(message),
                    _ => Ok(Self(value.to_owned())),
                }
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "format": $format, "description": $description })
            }
        }
    };
}

string_type!(
    /// A job id: one safe path component.
    JobId,
    "job-id",
    "Job id: letters, digits, '.', '_' and '-'; not starting with '-' or '.'."
);
string_type!(
    /// An organisation or user name on the forge: one safe path component.
    OrgName,
    "org",
    "Organisation or user: letters, digits, '.', '_' and '-'; not starting with '-' or '.'."
);
string_type!(
    /// A repository name: one safe path component.
    RepoName,
    "repo",
    "Repository name: letters, digits, '.', '_' and '-'; not starting with '-' or '.'."
);
string_type!(
    /// A branch name: safe path components separated by '/'.
    BranchName,
    "branch",
    "Branch: path components separated by '/', each safe (no '..', no leading '-' or '.', no spaces)."
);
string_type!(
    /// A tag name: one safe path component in git's ref syntax.
    TagName,
    "tag",
    "Tag: letters, digits and '.', '_', '-', '+'; no '/', no leading '-' or '.'."
);
string_type!(
    /// A target written as `repo` or `org/repo`.
    ShortTarget,
    "target",
    "A repository: `repo` (in the default org) or `org/repo`."
);
string_type!(
    /// A label colour: `#rrggbb`.
    Colour,
    "colour",
    "Colour as `#rrggbb`."
);
string_type!(
    /// A repository-name pattern: `*` is any run of characters, `?` one character.
    Glob,
    "glob",
    "Repository-name pattern: letters, digits, '.', '_', '-', with `*` and `?` as wildcards."
);
string_type!(
    /// The name of an environment variable (never its value).
    EnvName,
    "env-name",
    "Environment variable name: letters, digits and '_', not starting with a digit."
);

fn check_component(value: &str, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > 100 {
        return Err(format!("{what} `{value}` is longer than 100 characters"));
    }
    if value == "." || value == ".." || value.contains("..") {
        return Err(format!(
            "{what} `{value}` contains `..`, which could leave its directory"
        ));
    }
    if value.starts_with('/') {
        return Err(format!(
            "{what} `{value}` is an absolute path; give a plain name"
        ));
    }
    if value.starts_with('-') {
        return Err(format!(
            "{what} `{value}` starts with `-`, which a command could take for an option"
        ));
    }
    if value.starts_with('.') {
        return Err(format!(
            "{what} `{value}` starts with `.`; hidden names are not allowed"
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} `{}` contains {}; use letters, digits, '.', '_' and '-'",
            value.escape_debug(),
            describe_char(bad)
        ));
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    match c {
        '/' => "`/`".to_owned(),
        c if c.is_whitespace() => "whitespace".to_owned(),
        c if c.is_control() => format!("a control character ({:?})", c),
        c => format!("`{c}`"),
    }
}

/// Git ref rules (git-check-ref-format) plus our path-safety rules.
fn check_ref(value: &str, what: &str, allow_slash: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > 200 {
        return Err(format!("{what} `{value}` is longer than 200 characters"));
    }
    if value.starts_with('/') {
        return Err(format!(
            "{what} `{value}` is an absolute path; give a relative name"
        ));
    }
    if !allow_slash && value.contains('/') {
        return Err(format!(
            "{what} `{value}` contains `/`, which is not allowed in a {what}"
        ));
    }
    if value.contains("..") {
        return Err(format!("{what} `{value}` contains `..`"));
    }
    if value.contains("@{") || value == "@" {
        return Err(format!(
            "{what} `{value}` contains `@{{`, which git does not allow"
        ));
    }
    if let Some(bad) = value.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(format!(
            "{what} `{}` contains {}, which git does not allow",
            value.escape_debug(),
            describe_char(bad)
        ));
    }
    for component in value.split('/') {
        if component.is_empty() {
            return Err(format!(
                "{what} `{value}` has an empty path component (`//` or a trailing `/`)"
            ));
        }
        if component.starts_with('-') {
            return Err(format!(
                "{what} `{value}` has a component starting with `-`"
            ));
        }
        if component.starts_with('.') {
            return Err(format!(
                "{what} `{value}` has a component starting with `.`"
            ));
        }
        if component.ends_with(".lock") {
            return Err(format!(
                "{what} `{value}` has a component ending in `.lock`"
            ));
        }
    }
    if value.ends_with('.') {
        return Err(format!("{what} `{value}` ends with `.`"));
    }
    Ok(())
}

/// `repo` or `org/repo`.
fn check_short_target(value: &str) -> Result<(), String> {
    match value.split_once('/') {
        Some((org, repo)) if !org.is_empty() => {
            check_component(org, "org").and_then(|()| check_component(repo, "repository name"))
        }
        Some(_) => Err(format!(
            "target `{value}` is an absolute path; write `repo` or `org/repo`"
        )),
        None => check_component(value, "repository name"),
    }
}

fn check_colour(value: &str) -> Result<(), String> {
    match value.strip_prefix('#') {
        Some(hex) if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(()),
        _ => Err(format!(
            "colour `{}` is not `#rrggbb` (six hexadecimal digits after `#`)",
            value.escape_debug()
        )),
    }
}

fn check_glob(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("a name pattern is empty".to_owned());
    }
    match value.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-*?".contains(*c))) {
        None => Ok(()),
        Some(c) => Err(format!(
            "name pattern `{}` holds `{}`: repository names have letters, digits, `.`, `_` and `-`; `*` and `?` are the wildcards",
            value.escape_debug(),
            c.escape_debug()
        )),
    }
}

fn check_env_name(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    match chars.next() {
        None => Err("environment variable name is empty".to_owned()),
        Some(c) if c.is_ascii_digit() => Err(format!("environment variable name `{value}` starts with a digit")),
        _ if value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(()),
        _ => Err(format!(
            "environment variable name `{}` may only hold letters, digits and `_` (give the name, never the value)",
            value.escape_debug()
        )),
    }
}

/// A length of time written as `90s`, `10m`, `1h30m` or `2h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// Parses `1h30m`, `10m`, `90s`, `1h2m3s`: each unit at most once, in the order h, m, s.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = || {
            format!(
                "invalid duration `{}`: write it like `90s`, `10m` or `1h30m`",
                text.escape_debug()
            )
        };
        if text.is_empty() {
            return Err(fail());
        }
        let mut total: u64 = 0;
        let mut rest = text;
        let mut last_rank = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return Err(fail());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| fail())?;
            let (unit, rank) = match rest.as_bytes().get(digits) {
                Some(b'h') => (3600, 1),
                Some(b'm') => (60, 2),
                Some(b's') => (1, 3),
                _ => return Err(fail()),
            };
            if rank <= last_rank {
                return Err(fail());
            }
            last_rank = rank;
            total = total.checked_add(number * unit).ok_or_else(fail)?;
            rest = &rest[digits + 1..];
        }
        Ok(Self(std::time::Duration::from_secs(total)))
    }

    /// A duration of whole seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// The standard-library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for Duration {
    /// Canonical form: `1h30m`, `10m`, `90s` is shown as `1m30s`, zero as `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

/// Declares serde and schemars implementations for a type with `parse` and `Display`.
macro_rules! text_serde {
    ($name:ident, $format:literal, $description:literal) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "format": $format, "description": $description })
            }
        }
    };
}

text_serde!(
    Duration,
    "duration",
    "A duration such as `90s`, `10m` or `1h30m`."
);

/// The agent presets built into dispatch (the pool names they use).
pub const PRESET_POOLS: &[&str] = &["codex", "claude", "gemini", "local", "coderabbit"];

/// A reference to an agent: `pool` or `pool:model`, e.g. `codex`, `claude:opus`,
/// `local:qwen2.5-coder:32b`, `codex:review`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentRef {
    pool: String,
    model: Option<String>,
}

impl AgentRef {
    /// Parses `pool[:model]`. Whether the pool exists is checked by semantic validation.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (pool, model) = match text.split_once(':') {
            Some((pool, model)) => (pool, Some(model)),
            None => (text, None),
        };
        let pool_ok = !pool.is_empty()
            && !pool.starts_with('-')
            && pool
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !pool_ok {
            return Err(format!(
                "invalid agent `{}`: write `agent` or `agent:model`, e.g. `codex`, `claude:opus`, `local:devstral-24b`",
                text.escape_debug()
            ));
        }
        if let Some(model) = model {
            let model_ok = !model.is_empty()
                && !model.starts_with('-')
                && !model.contains("..")
                && model
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
            if !model_ok {
                return Err(format!(
                    "invalid model `{}` in agent `{}`: a model is letters, digits and `._-:/`, not empty, not starting with `-`",
                    model.escape_debug(),
                    text.escape_debug()
                ));
            }
        }
        Ok(Self {
            pool: pool.to_owned(),
            model: model.map(str::to_owned),
        })
    }

    /// The agent pool: the text before `:`.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The model, the text after the first `:`, if any.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

impl fmt::Display for AgentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            Some(model) => write!(f, "{}:{}", self.pool, model),
            None => f.write_str(&self.pool),
        }
    }
}

text_serde!(AgentRef, "agent-ref", "An agent: `codex`, `codex:MODEL`, `claude[:MODEL]`, `gemini[:MODEL]`, `local[:MODEL]`, `coderabbit[:TYPE]`, or a custom agent's name.");

/// A time of day in UTC, `HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
}

impl TimeOfDay {
    /// Parses `HH:MM` (24-hour clock).
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = || {
            format!(
                "invalid time `{}`: write it as `HH:MM` in UTC, e.g. `06:00`",
                text.escape_debug()
            )
        };
        let (h, m) = text.split_once(':').ok_or_else(fail)?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(fail());
        }
        let (hour, minute): (u8, u8) = (
            h.parse().map_err(|_| fail())?,
            m.parse().map_err(|_| fail())?,
        );
        if hour > 23 || minute > 59 {
            return Err(fail());
        }
        Ok(Self { hour, minute })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

text_serde!(TimeOfDay, "time-of-day", "A time of day in UTC, `HH:MM`.");

/// A size such as `512m`, `4g` or `1048576` (bytes): of memory, a log, a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    /// Parses a number of bytes with an optional `k`, `m` or `g` suffix (powers of 1024).
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = || {
            format!(
                "invalid size `{}`: write it like `512m` or `4g`",
                text.escape_debug()
            )
        };
        let lower = text.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('b').unwrap_or(&lower);
        let (digits, factor) = match trimmed.as_bytes().last() {
            Some(b'k') => (&trimmed[..trimmed.len() - 1], 1u64 << 10),
            Some(b'm') => (&trimmed[..trimmed.len() - 1], 1 << 20),
            Some(b'g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
            _ => (trimmed, 1),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail());
        }
        let value: u64 = digits.parse().map_err(|_| fail())?;
        let bytes = value.checked_mul(factor).ok_or_else(fail)?;
        if bytes == 0 {
            return Err(format!("size `{text}` is zero"));
        }
        Ok(Self(bytes))
    }

    /// A size of `bytes` (not zero).
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_multiple_of(1 << 30) {
            write!(f, "{}g", b >> 30)
        } else if b.is_multiple_of(1 << 20) {
            write!(f, "{}m", b >> 20)
        } else if b.is_multiple_of(1 << 10) {
            write!(f, "{}k", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

/// A number of bytes in words for people, to two or three significant digits: `812 bytes`,
/// `4.0 KiB`, `1.2 GiB` (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approx(pub u64);

impl fmt::Display for Approx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} bytes", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if value >= 100.0 {
            write!(f, "{value:.0} {}", UNITS[unit])
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

text_serde!(
    ByteSize,
    "byte-size",
    "A size: bytes, or a number with `k`, `m` or `g`."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_for_people() {
        let shown = |b: u64| Approx(b).to_string();
        assert_eq!(shown(812), "812 bytes");
        assert_eq!(shown(4096), "4.0 KiB");
        assert_eq!(shown(1_288_490_189), "1.2 GiB");
        assert_eq!(shown(300 << 20), "300 MiB");
    }

    #[test]
    fn durations_parse_and_print_canonically() {
        assert_eq!(Duration::parse("90s").unwrap().as_secs(), 90);
        assert_eq!(Duration::parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(Duration::parse("1h30m").unwrap().to_string(), "1h30m");
        assert_eq!(Duration::parse("90s").unwrap().to_string(), "1m30s");
        for bad in ["", "10", "m", "10x", "1m1h", "1h1h", "-5s", "1.5h", " 10m"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn components_reject_unsafe_names() {
        for bad in [
            "",
            "..",
            "a..b",
            "/etc",
            "-rf",
            ".hidden",
            "a b",
            "a/b",
            "tab\there",
            "nul\0",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        for good in ["go-io", "core.lib", "A_1"] {
            assert!(RepoName::parse(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn branches_allow_slashes_and_tags_do_not() {
        assert!(BranchName::parse("feature/x-1").is_ok());
        assert!(TagName::parse("v1/x").is_err());
        for bad in [
            "/abs", "a//b", "a/", "x..y", "-x", "a/.b", "a.lock", "a b", "a:b", "a@{1}",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn agent_refs_split_at_the_first_colon() {
        let r = AgentRef::parse("local:qwen2.5-coder:32b").unwrap();
        assert_eq!((r.pool(), r.model()), ("local", Some("qwen2.5-coder:32b")));
        for bad in ["", ":x", "codex:", "codex: x", "-x", "co dex"] {
            assert!(AgentRef::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(ByteSize::parse("4g").unwrap().bytes(), 4 << 30);
        assert!(ByteSize::parse("0").is_err());
        assert_eq!(TimeOfDay::parse("06:00").unwrap().to_string(), "06:00");
        assert!(TimeOfDay::parse("24:00").is_err());
    }
}
