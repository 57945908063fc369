//! `dispatch agents`: what a user sees when asking which argv each agent runs (the listing is
//! text for people, so the tests read its lines), and the agent home every agent container
//! gets.

use crate::support::docker::available;
use crate::support::{dispatch, outcomes, Test};

/// The block `dispatch agents` prints for agent `name`: its header line up to the next blank.
fn block<'a>(stdout: &'a str, name: &str) -> &'a str {
    let start = stdout
        .find(&format!("\n{name}\n"))
        .unwrap_or_else(|| panic!("no block for {name} in:\n{stdout}"))
        + 1;
    let rest = &stdout[start..];
    rest.find("\n\n").map_or(rest, |end| &rest[..end])
}

/// The line of `block` that starts with `key`.
fn line<'a>(block: &'a str, key: &str) -> &'a str {
    block
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{block}"))
}

#[test]
fn agents_lists_every_preset_with_its_exact_argv() {
    let out = dispatch(&["agents"]).expect_status(0);
    let codex = block(&out.stdout, "codex");
    let argv = line(codex, "argv");
    assert!(argv.contains("codex exec "), "{argv}");
    assert!(
        argv.contains("--dangerously-bypass-approvals-and-sandbox"),
        "{argv}"
    );
    assert!(
        argv.ends_with(" -"),
        "codex reads the prompt from stdin: {argv}"
    );
    assert_eq!(
        line(codex, "env").split_whitespace().collect::<Vec<_>>(),
        ["env", "CODEX_API_KEY", "OPENAI_API_KEY"]
    );
    assert!(line(codex, "prompt").ends_with("stdin"));
    assert!(
        line(codex, "copies").contains("~/.codex/auth.json -> /home/agent/.codex/auth.json"),
        "{codex}"
    );
    assert!(
        !codex.contains("mount"),
        "nothing of the user's home is mounted: {codex}"
    );
    assert!(line(codex, "set").contains("CODEX_HOME=/home/agent/.codex"));

    let claude = block(&out.stdout, "claude:opus");
    let argv = line(claude, "argv");
    assert!(
        argv.trim_start().starts_with("argv     claude --print"),
        "{argv}"
    );
    assert!(argv.contains("--model opus"), "{argv}");
    assert!(
        argv.contains("--append-system-prompt 'You are running"),
        "quoted for display: {argv}"
    );
    assert!(line(claude, "set").contains("IS_SANDBOX=1"), "{claude}");
    assert!(
        line(claude, "passes").contains("ANTHROPIC_BASE_URL"),
        "{claude}"
    );

    let review = block(&out.stdout, "codex:review");
    assert!(line(review, "argv").contains("exec review"));
    assert!(line(review, "argv").contains("--base main"));

    let local = block(&out.stdout, "local:qwen2.5-coder:32b");
    assert!(line(local, "argv").contains("--oss --local-provider ollama"));
    assert!(line(local, "network").contains("host.docker.internal:host-gateway"));

    for name in [
        "gemini",
        "coderabbit",
        "coderabbit:committed",
        "codex:gpt-5",
    ] {
        block(&out.stdout, name);
    }
}

#[test]
fn agents_shows_a_specs_custom_agents_and_overrides() {
    let t = Test::new("agents-cli").spec(
        r#"
        version: 1
        name: custom
        defaults: { base: develop }
        agents:
          my-agent:
            command: [my-agent, "--prompt-file={{ prompt_file }}"]
            env: [MY_API_KEY]
            image: my-image
          codex: { image: codex-image }
        jobs:
          - id: one
            task: Do it
            agent: my-agent
            repos: [core/go-io]
        "#,
    );
    let out = t.run(&["agents", "spec.yaml"]).expect_status(0);
    let mine = block(&out.stdout, "my-agent");
    assert!(
        line(mine, "argv").ends_with("my-agent --prompt-file=/workspace/.meta/prompt.md"),
        "{mine}"
    );
    assert!(line(mine, "env").ends_with("MY_API_KEY"));
    assert!(line(mine, "prompt").ends_with("file"));
    assert!(line(mine, "image").ends_with("my-image"));
    let codex = block(&out.stdout, "codex");
    assert!(line(codex, "image").ends_with("codex-image"), "{codex}");
    assert!(line(block(&out.stdout, "codex:review"), "argv").contains("--base develop"));
}

/// Stands in for codex (the preset's pool, so the preset's home files and environment apply):
/// records what it finds in its home, writes state where codex does, and leaves work that QA
/// fails once.
const HOME_AGENT: &str = r#"#!/bin/sh
set -u
meta=/workspace/.meta
{
  echo "home=$HOME codex_home=$CODEX_HOME uid=$(id -u)"
  echo "auth=$(cat "$CODEX_HOME/auth.json")"
  [ -e "$CODEX_HOME/sessions/one" ] && echo "session kept"
  [ -e "$HOME/.codex/ssh-key" ] && echo "saw a file it was not given"
} >> $meta/seen
mkdir -p "$CODEX_HOME/sessions" && echo state > "$CODEX_HOME/sessions/one"
echo "attempt" >> file.txt
"#;

#[test]
fn every_agent_gets_a_writable_home_of_its_unit_seeded_with_only_what_its_cli_needs() {
    if !available() {
        return;
    }
    let t = Test::new("agent-home")
        .agent(HOME_AGENT)
        .file("user/.codex/auth.json", "{\"OPENAI_API_KEY\":\"sk-test\"}")
        .file("user/.codex/config.toml", "model = \"gpt-5\"\n")
        .file("user/.codex/ssh-key", "not for agents")
        .repo("r1", &[("README", "hi\n")])
        .spec(
            r#"
            version: 1
            name: t
            forge: { kind: local, seed: repos }
            defaults: { org: t, agent: codex, image: dispatch-busybox, timeout: 20s }
            agents:
              codex:
                command: [sh, /opt/agent.sh]
                mounts: [{ source: agent.sh, target: /opt/agent.sh }]
                network: none
            jobs:
              - id: j
                task: t
                repos: [r1]
                fix_attempts: 1
                qa: [{ run: "[ -e /workspace/.meta/qa-once ] || { touch /workspace/.meta/qa-once; exit 1; }" }]
            "#,
        );
    let user = t.path("user");
    let t = t.env("HOME", user.to_str().expect("a UTF-8 path"));
    let before = std::fs::metadata(user.join(".codex/auth.json"))
        .and_then(|m| m.modified())
        .expect("the user's login");
    let report = t
        .run(&["run", "spec.yaml", "--output", "json"])
        .expect_status(0)
        .json();
    assert_eq!(outcomes(&report)["j/t/r1"], "changed", "{report}");
    let seen = std::fs::read_to_string(t.meta("r1", "j").join("seen")).expect("the agent ran");
    let runs: Vec<&str> = seen.lines().filter(|l| l.starts_with("home=")).collect();
    assert_eq!(runs.len(), 2, "one fix attempt: {seen}");
    assert!(
        runs[0].starts_with("home=/home/agent codex_home=/home/agent/.codex"),
        "{seen}"
    );
    assert!(
        seen.contains("auth={\"OPENAI_API_KEY\":\"sk-test\"}"),
        "{seen}"
    );
    assert!(
        seen.contains("session kept"),
        "the fix attempt finds what the first run wrote in its home: {seen}"
    );
    assert!(
        !seen.contains("saw a file"),
        "only the CLI's login and config are copied: {seen}"
    );
    // The user's own directory is never written.
    let mut left: Vec<String> = std::fs::read_dir(user.join(".codex"))
        .expect("the user's .codex")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["auth.json", "config.toml", "ssh-key"]);
    assert_eq!(
        std::fs::metadata(user.join(".codex/auth.json"))
            .and_then(|m| m.modified())
            .expect("the user's login"),
        before
    );
    let home = t.path(".dispatch/workspaces/t/r1/j/home/codex");
    assert!(home.join(".codex/sessions/one").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join(".codex/auth.json"))
        .expect("the copy")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the copied login is the user's alone");

    // A new run starts the home afresh from the user's files.
    t.run(&[
        "run",
        "spec.yaml",
        "--new",
        "--no-cache",
        "--output",
        "json",
    ])
    .expect_status(0);
    let seen = std::fs::read_to_string(t.meta("r1", "j").join("seen")).expect("seen");
    let third = seen
        .match_indices("\nhome=")
        .nth(1)
        .map(|(at, _)| &seen[at..])
        .unwrap_or_else(|| panic!("the second run ran its agent: {seen}"));
    assert!(
        third.contains("auth=") && !third.contains("session kept"),
        "the second run's agent starts in a fresh home: {third}"
    );
}

#[test]
fn an_image_without_what_its_agent_needs_fails_the_unit_naming_it() {
    if !available() {
        return;
    }
    let t = Test::new("image-lacks")
        .repo("r1", &[("README", "hi\n")])
        .repo("r2", &[("README", "hi\n")])
        .spec(
            r#"
            version: 1
            name: t
            forge: { kind: local, seed: repos }
            defaults: { org: t, image: dispatch-busybox, timeout: 20s }
            agents:
              scripted:
                command: [sh, -c, "echo fine >> README"]
                network: none
            jobs:
              - { id: claude, task: t, agent: claude, repos: [r1], qa: [] }
              - { id: sh, task: t, agent: scripted, repos: [r2], qa: [] }
            "#,
        );
    let report = t
        .run(&["run", "spec.yaml", "--output", "json"])
        .expect_status(1)
        .json();
    let got = outcomes(&report);
    assert_eq!(
        got["sh/t/r2"], "changed",
        "a program the image has: {report}"
    );
    assert_eq!(got["claude/t/r1"], "infra_error", "{report}");
    let reason = crate::support::unit(&report, "claude/t/r1")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("image `dispatch-busybox` lacks what the agent needs: `claude` (the agent's CLI), `bash` (Claude Code's Bash tool runs every command with it)"),
        "{reason}"
    );
    assert_eq!(
        std::fs::read_to_string(t.meta("r1", "claude").join("agent.log")).ok(),
        None,
        "no agent container ran"
    );
}

#[test]
fn doctor_checks_each_agents_image_credentials_and_network() {
    if !available() {
        return;
    }
    let t = Test::new("doctor-agents")
        .repo("r1", &[("README", "hi\n")])
        .file("user/.codex/auth.json", "{}")
        .spec(
            r#"
            version: 1
            name: t
            forge: { kind: local, seed: repos }
            defaults: { org: t, image: dispatch-busybox }
            agents:
              claude: { network: dispatch-no-such-network }
              scripted: { command: [sh, -c, "true"], network: none }
            jobs:
              - { id: a, task: t, agent: claude, repos: [r1] }
              - { id: b, task: t, agent: codex, repos: [r1] }
              - { id: c, task: t, agent: scripted, repos: [r1] }
            "#,
        );
    let home = t.path("user");
    let t = t
        .env("HOME", home.to_str().expect("a UTF-8 path"))
        .env("ANTHROPIC_API_KEY", "")
        .env("CODEX_API_KEY", "");
    let out = t.run(&["doctor", "spec.yaml"]).expect_status(1).stdout;
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line `{start}` in:\n{out}"))
            .to_owned()
    };
    assert!(line("FAIL  agent claude: image dispatch-busybox lacks")
        .ends_with("lacks claude (the agent's CLI), bash (Claude Code's Bash tool runs every command with it)"));
    assert!(line("FAIL  agent claude: network dispatch-no-such-network").contains("does not exist"));
    assert!(line("warn  agent claude: none of ANTHROPIC_API_KEY")
        .contains("there is no ~/.claude/.credentials.json"));
    assert!(line("ok    agent codex: no key set").contains("~/.codex/auth.json will be copied"));
    line("ok    agent scripted: image dispatch-busybox has sh");
}
