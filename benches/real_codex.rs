//! The real codex through dispatch against the same codex run directly (issue 12).
//!
//! 20 units of `dispatch run` with the `codex` preset (codex-cli 0.163.0 in the image
//! `scripts/agent-images` builds) at `limits.total: 8`, against 20 `docker run` of the same
//! image with the same argv, environment and prompt (the preset's [`dispatch::agents`]
//! invocation), 8 at a time (`xargs -P8`), in the same process, against the same scripted
//! OpenAI server on an `--internal` network. Every codex gets the same conversation: one
//! `exec` tool call that edits `file.txt`, then a final message. dispatch's side is its whole
//! unit (clone, agent, commit, push, PR on the local forge), with `--no-cache`; the direct side
//! gets its clones and homes made before its clock starts. The two sides alternate in order
//! over three rounds.
//!
//! Also measured, from the engine's `create` events and the server's arrival times: the time
//! from a container's creation to its first model request (`POST /v1/responses`, after codex's
//! WebSocket attempt), per container, as a median per side.
//!
//! Run with `cargo bench --bench real_codex` (needs Docker and `scripts/install-deps
//! --agent-images`); prints the times, the ratio and the medians, asserts nothing about time.

#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch::agents::{self, ArgvContext};
use dispatch::spec::values::AgentRef;
use support::model::openai::{OpenAiServer, Seen, Step};
use support::model::{agent_image, ModelNetwork};
use support::Test;

const UNITS: usize = 20;
const KEY: &str = "sk-bench-0000000000000000";

/// The unit `rNN` a prompt or a container name speaks of.
fn unit_of(text: &str) -> Option<usize> {
    text.match_indices("t/r").find_map(|(at, _)| {
        text.get(at + 3..at + 5)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
    })
}

fn nanos(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// Creation times of the containers created between `since` and `until`, by unit: from the
/// `dispatch.node` label (`fix/t/r07:agent`) or the name (`bench-direct-t/r07` is no name,
/// so `bench-direct-t-r07`).
fn created(since: SystemTime, until: SystemTime) -> BTreeMap<usize, u128> {
    let out = Command::new("docker")
        .args([
            "events",
            "--since",
            &format!("{:.3}", since.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()),
            "--until",
            &format!("{:.3}", until.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() + 1.0),
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--format",
            "{{.TimeNano}} {{.Actor.Attributes.name}} {{index .Actor.Attributes \"dispatch.node\"}}",
        ])
        .output()
        .expect("docker events runs");
    let mut times = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(time), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let node = parts.next().unwrap_or("");
        let unit = if node.ends_with(":agent") {
            unit_of(node)
        } else if let Some(rest) = name.strip_prefix("bench-direct-t-r") {
            rest.parse().ok()
        } else {
            None
        };
        if let (Some(unit), Ok(time)) = (unit, time.parse::<u128>()) {
            times.entry(unit).or_insert(time);
        }
    }
    times
}

/// The median time from each container's creation to its first model request.
fn first_request_median(requests: &[Seen], created: &BTreeMap<usize, u128>) -> (Duration, usize) {
    let mut first: BTreeMap<usize, u128> = BTreeMap::new();
    for seen in requests.iter().filter(|s| s.is_response()) {
        let tool_outputs = seen.inputs("custom_tool_call_output").len();
        let unit = seen.body.as_ref().and_then(|b| unit_of(&b.to_string()));
        if let (0, Some(unit)) = (tool_outputs, unit) {
            first.entry(unit).or_insert(nanos(seen.at));
        }
    }
    let mut waits: Vec<Duration> = first
        .iter()
        .filter_map(|(unit, at)| {
            let made = created.get(unit)?;
            Some(Duration::from_nanos(at.checked_sub(*made)? as u64))
        })
        .collect();
    waits.sort();
    let median = waits.get(waits.len() / 2).copied().unwrap_or_default();
    (median, waits.len())
}

/// The fixture of dispatch's side: 20 repositories with `file.txt` = `broken`, the codex
/// preset on the model's network, the user's codex config naming the server.
fn fixture(network: &ModelNetwork, server: &OpenAiServer, image: &str) -> Test {
    let config = format!("openai_base_url = \"{}\"\n", server.base_url);
    let repos: Vec<String> = (0..UNITS).map(|i| format!("r{i:02}")).collect();
    let t = repos.iter().fold(
        Test::new("bench-real-codex").file("user/.codex/config.toml", &config),
        |t, repo| t.repo(repo, &[("file.txt", "broken\n")]),
    );
    let t = t.spec(&format!(
        r#"
        version: 1
        name: bench
        forge: {{ kind: local, seed: repos }}
        defaults: {{ org: t, agent: codex, image: dispatch-busybox, timeout: 5m }}
        limits: {{ total: 8 }}
        agents:
          codex: {{ image: "{image}", network: {network} }}
        jobs:
          - {{ id: fix, task: Make file.txt say fixed, repos: [{repos}], qa: [] }}
        "#,
        network = network.name,
        repos = repos.join(", "),
    ));
    let home = t.path("user");
    t.env("HOME", home.to_str().expect("a UTF-8 path"))
        .env("CODEX_API_KEY", KEY)
}

/// One `dispatch run`: its wall time.
fn dispatch_round(t: &Test) -> Duration {
    let _ = std::fs::remove_dir_all(t.path(".dispatch/workspaces"));
    for file in ["dispatch.db", "dispatch.db-wal", "dispatch.db-shm"] {
        let _ = std::fs::remove_file(t.path(&format!(".dispatch/{file}")));
    }
    let _ = Command::new("sync").status();
    let start = Instant::now();
    let out = t.run(&["run", "spec.yaml", "--no-cache", "--output", "json"]);
    let elapsed = start.elapsed();
    let report = out.json();
    let changed = report["units"].as_array().map_or(0, |u| {
        u.iter().filter(|u| u["outcome"] == "changed").count()
    });
    assert_eq!(changed, UNITS, "every unit changed: {report}");
    elapsed
}

/// The direct side's clones, homes and prompts, then `xargs -P8 docker run`: its wall time.
fn direct_round(dir: &Path, t: &Test, network: &ModelNetwork, image: &str) -> Duration {
    let invocation = agents::invocation(
        &AgentRef::parse("codex").expect("an agent ref"),
        &BTreeMap::new(),
        &ArgvContext::new("main"),
    )
    .expect("the codex preset");
    let _ = std::fs::remove_dir_all(dir);
    let mut commands = String::new();
    for i in 0..UNITS {
        let unit = dir.join(format!("r{i:02}"));
        let repo = unit.join("repo");
        let bare = t.path(&format!(".dispatch/forge/t/r{i:02}.git"));
        let cloned = Command::new("git")
            .args(["clone", "--quiet"])
            .arg(&bare)
            .arg(&repo)
            .status()
            .expect("git runs");
        assert!(cloned.success());
        let home = unit.join("home");
        std::fs::create_dir_all(home.join(".codex")).expect("the home");
        std::fs::copy(
            t.path("user/.codex/config.toml"),
            home.join(".codex/config.toml"),
        )
        .expect("the config");
        std::fs::write(
            unit.join("prompt.md"),
            format!("Make file.txt say fixed.\n\nRepository: `t/r{i:02}`\n"),
        )
        .expect("the prompt");
        let mut argv: Vec<String> = vec![
            "docker".into(),
            "run".into(),
            "--rm".into(),
            "-i".into(),
            format!("--name=bench-direct-t-r{i:02}"),
            format!("--network={}", network.name),
            format!("--volume={}:/workspace/repo", repo.display()),
            format!("--volume={}:/home/agent", home.display()),
            format!("--workdir={}", invocation.workdir),
            "--env=HOME=/home/agent".into(),
        ];
        for name in &invocation.env_names {
            argv.push(format!("--env={name}={KEY}"));
        }
        for (name, value) in &invocation.fixed_env {
            argv.push(format!("--env={name}={value}"));
        }
        argv.push(image.to_owned());
        argv.extend(invocation.argv.iter().cloned());
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        commands.push_str(&format!(
            "{} < '{}' > '{}' 2>&1\n",
            quoted.join(" "),
            unit.join("prompt.md").display(),
            unit.join("out.jsonl").display()
        ));
    }
    std::fs::write(dir.join("commands"), commands).expect("the commands");
    let _ = Command::new("sync").status();
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tr '\\n' '\\0' < '{}' | xargs -0 -P8 -I{{}} sh -c '{{}}'",
            dir.join("commands").display()
        ))
        .status()
        .expect("sh runs");
    let elapsed = start.elapsed();
    assert!(status.success(), "every direct codex exited 0");
    for i in 0..UNITS {
        let text =
            std::fs::read_to_string(dir.join(format!("r{i:02}/repo/file.txt"))).unwrap_or_default();
        assert_eq!(text, "fixed\n", "the direct codex {i} edited its clone");
    }
    elapsed
}

fn main() {
    if !support::docker::available() {
        eprintln!("real_codex: the Docker engine is not reachable");
        std::process::exit(1);
    }
    let image = agent_image("codex");
    let network = ModelNetwork::create("bench-codex");
    let server = OpenAiServer::start_each(
        &network,
        KEY,
        vec![
            Step::shell("printf 'fixed\\n' > file.txt"),
            Step::message("file.txt now says fixed."),
        ],
    );
    let t = fixture(&network, &server, &image);
    let direct_dir: PathBuf = t.path("direct");
    // Warm-up: seeds the forge, checks the image, warms the engine and the page cache.
    dispatch_round(&t);
    let mut rounds = Vec::new();
    let (mut dispatch_waits, mut direct_waits) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (mut d, mut x) = (Duration::ZERO, Duration::ZERO);
        for side in 0..2 {
            let since = SystemTime::now();
            let seen_before = server.requests().len();
            let dispatch_side = (round + side) % 2 == 0;
            if dispatch_side {
                d = dispatch_round(&t);
            } else {
                x = direct_round(&direct_dir, &t, &network, &image);
            }
            let requests = server.requests().split_off(seen_before);
            let (median, count) =
                first_request_median(&requests, &created(since, SystemTime::now()));
            assert_eq!(count, UNITS, "a first request of every container");
            match dispatch_side {
                true => dispatch_waits.push(median),
                false => direct_waits.push(median),
            }
        }
        println!(
            "round {round}: dispatch run {:.2} s, xargs -P8 docker run {:.2} s, ratio {:.3}; \
             create -> first model request, median: dispatch {:.2} s, direct {:.2} s",
            d.as_secs_f64(),
            x.as_secs_f64(),
            d.as_secs_f64() / x.as_secs_f64(),
            dispatch_waits.last().unwrap().as_secs_f64(),
            direct_waits.last().unwrap().as_secs_f64(),
        );
        rounds.push((d, x));
    }
    let mean = |f: fn(&(Duration, Duration)) -> Duration| {
        rounds.iter().map(|r| f(r).as_secs_f64()).sum::<f64>() / rounds.len() as f64
    };
    let (d, x) = (mean(|r| r.0), mean(|r| r.1));
    let mid = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    println!(
        "{UNITS} units of the real codex at total 8: dispatch run {d:.2} s, xargs -P8 docker run \
         {x:.2} s, ratio {:.3} (means of {} rounds); median create -> first model request: \
         dispatch {:.2} s, direct {:.2} s",
        d / x,
        rounds.len(),
        mid(dispatch_waits),
        mid(direct_waits),
    );
}
