//! `dispatch agents`: what a user sees when asking which argv each agent runs. The listing is
//! text for people, so the tests read its lines.

use crate::support::{dispatch, Test};

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
        ["env", "OPENAI_API_KEY"]
    );
    assert!(line(codex, "prompt").ends_with("stdin"));
    assert!(line(codex, "mount").contains("~/.codex -> /home/agent/.codex (read-only)"));

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
