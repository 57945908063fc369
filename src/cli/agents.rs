//! `dispatch agents [SPEC]`: what each agent preset (and each custom agent of SPEC) runs.
//!
//! For every agent: the reference, the exact argv (shell-quoted for display only; dispatch
//! never runs it through a shell), the environment variable names passed through, fixed
//! environment values, how the prompt is handed over, the mounts and the network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::{CommandError, Ui};
use crate::agents::{self, handoff_name, ArgvContext, Invocation, PRESET_EXAMPLES};
use crate::spec::values::{AgentRef, PRESET_POOLS};

/// Base branch shown in the argv when the spec names none.
const SHOWN_BASE: &str = "main";

/// Arguments of `dispatch agents`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A spec whose `agents:` overrides and custom agents are shown too.
    pub spec: Option<PathBuf>,
}

/// Prints every preset and, with a spec, its custom agents; an agent that does not resolve is
/// reported where it comes and gives status 1, after the others are shown.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    let (custom, base) = match &args.spec {
        Some(path) => {
            let loaded = ui.load_spec(path)?;
            let base = loaded
                .spec
                .defaults
                .base
                .as_ref()
                .map_or_else(|| SHOWN_BASE.to_owned(), ToString::to_string);
            (loaded.spec.agents, base)
        }
        None => (BTreeMap::new(), SHOWN_BASE.to_owned()),
    };
    let ctx = ArgvContext::new(&base);
    let mut refs: Vec<String> = PRESET_EXAMPLES.iter().map(|s| (*s).to_owned()).collect();
    refs.extend(
        custom
            .keys()
            .filter(|name| !PRESET_POOLS.contains(&name.as_str()))
            .cloned(),
    );
    let mut out = format!(
        "Base branch shown as `{base}`; a run uses each target's base. The prompt is always also at {}.\n",
        agents::PROMPT_FILE
    );
    let mut status = 0;
    for text in &refs {
        let resolved =
            AgentRef::parse(text).and_then(|agent| agents::invocation(&agent, &custom, &ctx));
        match resolved {
            Ok(inv) => describe(&mut out, text, &inv),
            Err(message) => {
                status = CommandError::failure(message).report();
            }
        }
    }
    print!("{out}");
    Ok(status)
}

fn describe(out: &mut String, name: &str, inv: &Invocation) {
    let argv: Vec<String> = inv.argv.iter().map(|a| shell_quote(a)).collect();
    let _ = writeln!(out, "\n{name}");
    let _ = writeln!(out, "  argv     {}", argv.join(" "));
    let env = if inv.env_names.is_empty() {
        "(none)".to_owned()
    } else {
        inv.env_names.join(" ")
    };
    let _ = writeln!(out, "  env      {env}");
    if !inv.pass_env.is_empty() {
        let _ = writeln!(out, "  passes   {} (when set)", inv.pass_env.join(" "));
    }
    if !inv.fixed_env.is_empty() {
        let fixed: Vec<String> = inv
            .fixed_env
            .iter()
            .map(|(k, v)| shell_quote(&format!("{k}={v}")))
            .collect();
        let _ = writeln!(out, "  set      {}", fixed.join(" "));
    }
    let _ = writeln!(out, "  prompt   {}", handoff_name(inv.prompt));
    for file in &inv.home_files {
        let _ = writeln!(
            out,
            "  copies   ~/{} -> {}/{} (into the unit's agent home, when it exists)",
            file.from,
            agents::AGENT_HOME,
            file.to
        );
    }
    for mount in &inv.config_mounts {
        let mode = if mount.read_only {
            "read-only"
        } else {
            "read-write"
        };
        let _ = writeln!(
            out,
            "  mount    {} -> {} ({mode})",
            mount.host.display(),
            mount.target
        );
    }
    let mut network = inv.network.clone();
    if !inv.extra_hosts.is_empty() {
        let _ = write!(network, " (hosts: {})", inv.extra_hosts.join(", "));
    }
    let _ = writeln!(out, "  network  {network}");
    if let Some(image) = &inv.image {
        let _ = writeln!(out, "  image    {image}");
    }
}

/// Quotes `arg` for display like a POSIX shell would need it; plain words stay bare.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting_is_for_display_only_and_round_trips_quotes() {
        assert_eq!(shell_quote("--cd"), "--cd");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
