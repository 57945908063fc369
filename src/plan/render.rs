//! Plan rendering: a readable tree, stable JSON, Graphviz DOT and Mermaid.

use std::fmt::Write as _;

use super::{NodeKind, Plan, Qa, Unit};
use crate::report::text::{shown, shown_lines};
use crate::spec::model::MergePolicy;
use crate::spec::problem::plural;

/// The plan as pretty JSON with a trailing newline; byte-stable for the same spec.
pub fn json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan)
        .expect("the plan serializes: it holds only strings, numbers and lists");
    text.push('\n');
    text
}

/// One line of counts: `3 units, 15 nodes in 1 job`.
pub fn count_line(plan: &Plan) -> String {
    let c = plan.counts;
    format!(
        "{} {}, {} {} in {} {}",
        c.units,
        plural(c.units, "unit"),
        c.nodes,
        plural(c.nodes, "node"),
        c.jobs,
        plural(c.jobs, "job")
    )
}

/// A tree grouped by job and repository, ending with the count line.
pub fn text(plan: &Plan) -> String {
    text_with_detected(plan, &std::collections::HashMap::new())
}

/// The tree, showing for units with detected QA the steps their repository implies now
/// (`detected`: unit id -> commands). Names, branches and issue titles come from forges and
/// specs: the tree shows them through [`shown`] and [`shown_lines`], so none of them can drive
/// the terminal (JSON keeps them exact).
pub fn text_with_detected(
    plan: &Plan,
    detected: &std::collections::HashMap<String, Vec<String>>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan for {}", plan.spec);
    let mut current_job = "";
    for unit in &plan.units {
        if unit.job != current_job {
            current_job = &unit.job;
            let units = plan.units.iter().filter(|u| u.job == unit.job).count();
            let _ = writeln!(
                out,
                "\njob {} ({} {}, agent {})",
                unit.job,
                units,
                plural(units, "unit"),
                unit.agent
            );
        }
        let mut title = format!("{}/{}", shown(&unit.org), shown(&unit.repo));
        if let Some(issue) = unit.issue {
            let _ = write!(title, " issue #{issue}");
            if let Some(text) = &unit.issue_title {
                let short: String = text.chars().take(60).collect();
                let more = if short.len() < text.len() { "…" } else { "" };
                let _ = write!(title, " ({}{more})", shown(&short));
            }
        }
        if let Some(pr) = unit.pr {
            let _ = write!(title, " PR #{pr}");
        }
        if let Some(tag) = &unit.tag {
            let _ = write!(title, " from tag {}", shown(tag));
        }
        let base = unit.base.as_deref().unwrap_or("the default branch");
        let _ = writeln!(
            out,
            "  {title}  [{} -> {}]",
            shown(&unit.branch),
            shown(base)
        );
        if let Some(wave) = unit.wave {
            let _ = writeln!(out, "  │  rollout wave {wave}");
        }
        if let Some(preview) = &unit.publish {
            let by = preview
                .author
                .as_deref()
                .map_or(String::new(), |a| format!(", opened by {}", shown(a)));
            let pr = preview
                .pr
                .as_deref()
                .map_or(String::new(), |pr| format!(" ({}{by})", shown(pr)));
            let closes = match preview.closes_if_unchanged {
                true => "; closed if the agent changes nothing",
                false => "",
            };
            let _ = writeln!(out, "  │  publish: {}{pr}{closes}", preview.action.as_str());
        }
        for (i, node) in unit.nodes.iter().enumerate() {
            let branch = if i + 1 == unit.nodes.len() {
                "└─"
            } else {
                "├─"
            };
            let description = match (node.kind, &unit.qa, detected.get(&unit.id)) {
                (NodeKind::Qa, Qa::Auto, Some(commands)) if commands.is_empty() => {
                    "detected at run time; the repository has no marker file now, so no QA"
                        .to_owned()
                }
                (NodeKind::Qa, Qa::Auto, Some(commands)) => {
                    let quoted: Vec<String> = commands.iter().map(|c| format!("`{c}`")).collect();
                    format!("detected: {}", quoted.join(", "))
                }
                _ => describe(unit, node.kind),
            };
            let _ = writeln!(out, "    {branch} {:<8} {description}", node.kind.as_str());
            for need in node
                .needs
                .iter()
                .filter(|n| !n.starts_with(&format!("{}:", unit.id)))
            {
                let _ = writeln!(out, "    │           waits for {need}");
            }
        }
    }
    let _ = writeln!(out, "\n{}", count_line(plan));
    for entry in &plan.unresolved {
        let _ = writeln!(
            out,
            "not resolved: job {} {}: {} (the forge was not asked)",
            entry.job, entry.entry, entry.selects
        );
    }
    // What the lines above hold of the spec and the forge besides (workspaces, agents, QA
    // commands, PR references), each on its line.
    match shown_lines(&out) {
        std::borrow::Cow::Borrowed(_) => out,
        std::borrow::Cow::Owned(shown) => shown,
    }
}

fn describe(unit: &Unit, kind: NodeKind) -> String {
    match kind {
        NodeKind::Prep => format!("clone {}/{} into {}", unit.org, unit.repo, unit.workspace),
        NodeKind::Agent => {
            let mut text = format!("{} in {} (timeout {})", unit.agent, unit.image, unit.timeout);
            if unit.fix_attempts > 0 {
                let _ = write!(
                    text,
                    "; up to {} runs: a QA failure goes back to the agent {} {}",
                    1 + unit.fix_attempts,
                    unit.fix_attempts,
                    plural(unit.fix_attempts as usize, "time")
                );
            }
            text
        }
        NodeKind::Qa => match &unit.qa {
            Qa::Auto => "detected from marker files at run time (go.mod, Cargo.toml, package.json, composer.json, pyproject.toml)".to_owned(),
            Qa::None => "none".to_owned(),
            Qa::Steps(steps) => steps.iter().map(|s| format!("`{}`", s.run)).collect::<Vec<_>>().join(", "),
        },
        NodeKind::Publish => format!("push {} and open a PR", unit.branch),
        NodeKind::Review => "review the PR".to_owned(),
        NodeKind::Merge => match unit.merge {
            MergePolicy::WhenGreen => "merge when QA and the forge's checks are green".to_owned(),
            MergePolicy::Never => "never".to_owned(),
        },
    }
}

/// Graphviz DOT: one cluster per unit.
pub fn dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];",
        quote(&plan.spec)
    );
    for (i, unit) in plan.units.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{i} {{\n    label={};",
            quote(&unit.id)
        );
        for node in &unit.nodes {
            let _ = writeln!(
                out,
                "    {} [label={}];",
                quote(&node.id),
                quote(node.kind.as_str())
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for node in plan.units.iter().flat_map(|u| &u.nodes) {
        for need in &node.needs {
            let _ = writeln!(out, "  {} -> {};", quote(need), quote(&node.id));
        }
    }
    out.push_str("}\n");
    out
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Mermaid flowchart: one subgraph per unit; node ids are `n0`, `n1`, ... with labels.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut ids = std::collections::HashMap::new();
    for (u, unit) in plan.units.iter().enumerate() {
        let _ = writeln!(out, "  subgraph u{u}[\"{}\"]", mermaid_text(&unit.id));
        for node in &unit.nodes {
            let id = format!("n{}", ids.len());
            let _ = writeln!(out, "    {id}[\"{}\"]", node.kind.as_str());
            ids.insert(node.id.as_str(), id);
        }
        out.push_str("  end\n");
    }
    for node in plan.units.iter().flat_map(|u| &u.nodes) {
        for need in &node.needs {
            if let (Some(from), Some(to)) = (ids.get(need.as_str()), ids.get(node.id.as_str())) {
                let _ = writeln!(out, "  {from} --> {to}");
            }
        }
    }
    out
}

fn mermaid_text(text: &str) -> String {
    text.replace('"', "#quot;")
}
