//! Tests of agent resolution: exact preset argv, key isolation, placeholders, overrides.

use super::presets::{CLAUDE_SYSTEM_NOTE, GEMINI_STDIN_NOTE};
use super::*;
use crate::spec::model::{AgentOutput, Mount};
use crate::spec::values::EnvName;

const BYPASS: &str = "--dangerously-bypass-approvals-and-sandbox";

/// Every provider key a preset may list, by pool.
const PROVIDER_KEYS: &[(&str, &[&str])] = &[
    ("codex", &["CODEX_API_KEY", "OPENAI_API_KEY"]),
    ("local", &["CODEX_API_KEY", "OPENAI_API_KEY"]),
    ("claude", &["ANTHROPIC_API_KEY"]),
    ("gemini", &["GEMINI_API_KEY", "GOOGLE_API_KEY"]),
    ("coderabbit", &["CODERABBIT_API_KEY"]),
];

fn ctx() -> ArgvContext {
    ArgvContext::new("develop")
}

fn resolve(text: &str) -> Invocation {
    resolve_with(text, &BTreeMap::new())
}

fn resolve_with(text: &str, custom: &BTreeMap<String, AgentDef>) -> Invocation {
    invocation(&AgentRef::parse(text).unwrap(), custom, &ctx())
        .unwrap_or_else(|e| panic!("{text} must resolve: {e}"))
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

fn codex_common() -> Vec<&'static str> {
    vec![
        "--json",
        BYPASS,
        "--skip-git-repo-check",
        "--color",
        "never",
        "--cd",
        "/workspace/repo",
        "--output-last-message",
        "/workspace/.meta/last-message.md",
    ]
}

#[test]
fn codex_execs_with_bypass_and_reads_stdin() {
    let mut expected = vec!["codex", "exec"];
    expected.extend(codex_common());
    expected.push("-");
    let inv = resolve("codex");
    assert_eq!(inv.argv, argv(&expected));
    assert_eq!(inv.prompt, PromptHandoff::Stdin);
    assert_eq!(inv.model, None);
    assert_eq!(inv.env_names, ["CODEX_API_KEY", "OPENAI_API_KEY"]);
    assert_eq!(
        inv.fixed_env,
        [
            ("HOME".to_owned(), "/home/agent".to_owned()),
            ("CODEX_HOME".to_owned(), "/home/agent/.codex".to_owned())
        ]
    );
    let copied: Vec<(&str, &str)> = inv.home_files.iter().map(|f| (f.from, f.to)).collect();
    assert_eq!(
        copied,
        [
            (".codex/auth.json", ".codex/auth.json"),
            (".codex/config.toml", ".codex/config.toml")
        ],
        "only the login and the configuration, copied, never mounted"
    );
    assert!(inv.config_mounts.is_empty());
    assert_eq!(inv.network, "bridge");
    assert_eq!(inv.workdir, "/workspace/repo");
    assert!(inv.extra_hosts.is_empty());

    let mut expected = vec!["codex", "exec"];
    expected.extend(codex_common());
    expected.extend(["--model", "gpt-5", "-"]);
    let inv = resolve("codex:gpt-5");
    assert_eq!(inv.argv, argv(&expected));
    assert_eq!(
        (inv.pool.as_str(), inv.model.as_deref()),
        ("codex", Some("gpt-5"))
    );
}

#[test]
fn codex_review_reviews_against_the_base() {
    let inv = resolve("codex:review");
    assert_eq!(
        inv.argv,
        argv(&[
            "codex",
            "exec",
            "review",
            "--json",
            BYPASS,
            "--skip-git-repo-check",
            "--ephemeral",
            "--base",
            "develop",
            "--output-last-message",
            "/workspace/.meta/last-message.md",
        ])
    );
    assert_eq!(inv.model, None);
    assert_eq!(inv.prompt, PromptHandoff::File);
    assert_eq!(inv.env_names, ["CODEX_API_KEY", "OPENAI_API_KEY"]);
}

#[test]
fn claude_prints_without_permissions_and_runs_as_root_in_its_sandbox() {
    let inv = resolve("claude:opus");
    assert_eq!(
        inv.argv,
        argv(&[
            "claude",
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--append-system-prompt",
            CLAUDE_SYSTEM_NOTE,
            "--model",
            "opus",
        ])
    );
    assert!(CLAUDE_SYSTEM_NOTE.contains("/workspace/repo"));
    assert!(CLAUDE_SYSTEM_NOTE.contains("Do not push"));
    assert_eq!(inv.prompt, PromptHandoff::Stdin);
    assert_eq!(inv.env_names, ["ANTHROPIC_API_KEY"]);
    assert_eq!(inv.pass_env, ["ANTHROPIC_BASE_URL"]);
    assert!(
        inv.fixed_env
            .contains(&("IS_SANDBOX".to_owned(), "1".to_owned())),
        "Claude Code refuses to skip permissions as root without it"
    );
    assert_eq!(inv.home_files[0].from, ".claude/.credentials.json");
    assert!(inv.config_mounts.is_empty());
    assert_eq!(
        resolve("claude").argv.len(),
        8,
        "no --model without a model"
    );
}

#[test]
fn gemini_runs_headless_with_the_prompt_on_stdin() {
    let inv = resolve("gemini:gemini-2.5-pro");
    assert_eq!(
        inv.argv,
        argv(&[
            "gemini",
            "--prompt",
            GEMINI_STDIN_NOTE,
            "--approval-mode",
            "yolo",
            "--skip-trust",
            "--output-format",
            "stream-json",
            "--model",
            "gemini-2.5-pro",
        ])
    );
    assert_eq!(inv.prompt, PromptHandoff::Stdin);
    assert_eq!(inv.env_names, ["GEMINI_API_KEY", "GOOGLE_API_KEY"]);
    assert!(inv
        .home_files
        .iter()
        .any(|f| f.from == ".gemini/settings.json"));
}

#[test]
fn local_runs_codex_against_the_hosts_ollama() {
    let local_argv = |model: &str| {
        let mut expected = vec!["codex", "exec", "--oss", "--local-provider", "ollama"];
        expected.extend(codex_common());
        expected.extend(["--model", model, "-"]);
        argv(&expected)
    };
    let inv = resolve("local");
    assert_eq!(inv.argv, local_argv("devstral-24b"));
    assert_eq!(inv.model.as_deref(), Some("devstral-24b"));
    assert_eq!(inv.extra_hosts, ["host.docker.internal:host-gateway"]);
    assert_eq!(inv.network, "bridge");
    assert_eq!(inv.env_names, ["CODEX_API_KEY", "OPENAI_API_KEY"]);
    assert!(inv.fixed_env.contains(&(
        "OLLAMA_HOST".to_owned(),
        "http://host.docker.internal:11434".to_owned()
    )));
    assert!(inv.fixed_env.contains(&(
        "CODEX_OSS_BASE_URL".to_owned(),
        "http://host.docker.internal:11434/v1".to_owned()
    )));
    let inv = resolve("local:qwen2.5-coder:32b");
    assert_eq!(inv.argv, local_argv("qwen2.5-coder:32b"));
}

#[test]
fn coderabbit_reviews_by_type_against_the_base() {
    let inv = resolve("coderabbit");
    assert_eq!(
        inv.argv,
        argv(&[
            "coderabbit",
            "review",
            "--plain",
            "--type",
            "all",
            "--base",
            "develop"
        ])
    );
    assert_eq!(inv.env_names, ["CODERABBIT_API_KEY"]);
    assert_eq!(inv.model, None);
    assert!(inv.config_mounts.is_empty());
    assert_eq!(
        resolve("coderabbit:committed").argv,
        argv(&[
            "coderabbit",
            "review",
            "--plain",
            "--type",
            "committed",
            "--base",
            "develop"
        ])
    );
    let err = invocation(
        &AgentRef::parse("coderabbit:everything").unwrap(),
        &BTreeMap::new(),
        &ctx(),
    )
    .unwrap_err();
    assert!(
        err.contains("coderabbit:everything") && err.contains("`coderabbit:uncommitted`"),
        "{err}"
    );
}

#[test]
fn no_preset_puts_the_prompt_or_a_shell_into_argv() {
    for (name, inv) in presets_table("main") {
        for element in &inv.argv {
            assert!(!element.contains("sh -c"), "{name}: {element}");
            assert!(
                !element.contains("prompt.md"),
                "{name} names the prompt file: {element}"
            );
        }
        assert!(
            !matches!(inv.argv[0].as_str(), "sh" | "bash" | "/bin/sh"),
            "{name} runs a shell"
        );
        assert!(inv.config_mounts.iter().all(|m| m.read_only), "{name}");
        assert_eq!(inv.network, "bridge", "{name}");
        // A preset that takes no prompt on stdin must not pretend to read one.
        if inv.prompt == PromptHandoff::File {
            assert!(
                matches!(
                    name.as_str(),
                    "codex:review" | "coderabbit" | "coderabbit:committed"
                ),
                "{name}"
            );
        }
    }
}

#[test]
fn every_agent_gets_only_its_own_providers_keys() {
    let all: Vec<&str> = PROVIDER_KEYS
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect();
    for (name, inv) in presets_table("main") {
        let own = PROVIDER_KEYS
            .iter()
            .find(|(pool, _)| *pool == inv.pool)
            .map(|(_, keys)| *keys)
            .unwrap_or_else(|| panic!("{name}: no provider keys known"));
        assert_eq!(inv.env_names, own, "{name}");
        for key in all.iter().filter(|k| !own.contains(k)) {
            assert!(
                !inv.env_names.iter().any(|n| n == key),
                "{name} lists {key}"
            );
            assert!(
                !inv.fixed_env.iter().any(|(n, _)| n == key),
                "{name} sets {key}"
            );
        }
    }
}

#[test]
fn presets_table_lists_every_pool() {
    let table = presets_table("main");
    for pool in PRESET_POOLS {
        assert!(
            table.iter().any(|(_, inv)| inv.pool == *pool),
            "{pool} missing"
        );
    }
    let names: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"codex:review") && names.contains(&"local:qwen2.5-coder:32b"));
}

fn custom_def(command: &[&str]) -> AgentDef {
    AgentDef {
        command: Some(argv(command)),
        ..AgentDef::default()
    }
}

#[test]
fn custom_agents_substitute_placeholders_inside_one_element() {
    let mut custom = BTreeMap::new();
    let mut def = custom_def(&[
        "my-agent",
        "--prompt-file={{ prompt_file }}",
        "--in",
        "{{workdir}}",
        "--out={{ meta_dir }}/out.md",
        "{{ model }} on {{ base }}",
    ]);
    def.env = vec![EnvName::parse("MY_API_KEY").unwrap()];
    def.image = Some("my-image".to_owned());
    def.model = Some("small".to_owned());
    def.mounts = vec![Mount {
        source: "~/.my-agent".to_owned(),
        target: "/home/agent/.my-agent".to_owned(),
        read_only: true,
    }];
    custom.insert("my-agent".to_owned(), def);
    let inv = resolve_with("my-agent", &custom);
    assert_eq!(
        inv.argv,
        argv(&[
            "my-agent",
            "--prompt-file=/workspace/.meta/prompt.md",
            "--in",
            "/workspace/repo",
            "--out=/workspace/.meta/out.md",
            "small on develop",
        ])
    );
    assert_eq!(inv.env_names, ["MY_API_KEY"]);
    assert_eq!(inv.prompt, PromptHandoff::File);
    assert_eq!(inv.image.as_deref(), Some("my-image"));
    assert_eq!(inv.network, "bridge");
    assert_eq!(inv.model.as_deref(), Some("small"));
    assert_eq!(
        inv.config_mounts[0].host_path(Path::new("/home/u")),
        PathBuf::from("/home/u/.my-agent")
    );
    assert_eq!(
        inv.fixed_env,
        [("HOME".to_owned(), "/home/agent".to_owned())],
        "a custom agent gets the unit's agent home too"
    );
    // The reference's model wins over the default.
    assert_eq!(
        resolve_with("my-agent:big", &custom).argv[5],
        "big on develop"
    );
}

#[test]
fn custom_agent_errors_name_the_agent() {
    let mut custom = BTreeMap::new();
    custom.insert("mine".to_owned(), custom_def(&["mine", "{{ prompt }}"]));
    let err = invocation(&AgentRef::parse("mine").unwrap(), &custom, &ctx()).unwrap_err();
    assert!(
        err.contains("unknown placeholder `{{ prompt }}`") && err.contains("`mine`"),
        "{err}"
    );

    custom.insert("mine".to_owned(), custom_def(&["mine", "{{ model }}"]));
    let err = invocation(&AgentRef::parse("mine").unwrap(), &custom, &ctx()).unwrap_err();
    assert!(err.contains("mine:MODEL"), "{err}");

    let err = invocation(&AgentRef::parse("nobody").unwrap(), &custom, &ctx()).unwrap_err();
    assert!(
        err.contains("unknown agent `nobody`") && err.contains("agents.nobody"),
        "{err}"
    );

    custom.insert("bare".to_owned(), AgentDef::default());
    let err = invocation(&AgentRef::parse("bare").unwrap(), &custom, &ctx()).unwrap_err();
    assert!(err.contains("`bare` has no `command`"), "{err}");
}

#[test]
fn overrides_of_a_preset_add_and_replace() {
    let mut custom = BTreeMap::new();
    custom.insert(
        "codex".to_owned(),
        AgentDef {
            image: Some("codex-image".to_owned()),
            env: vec![
                EnvName::parse("OPENAI_API_KEY").unwrap(),
                EnvName::parse("OPENAI_BASE_URL").unwrap(),
            ],
            mounts: vec![Mount {
                source: "/etc/codex-ca.pem".to_owned(),
                target: "/etc/ssl/codex-ca.pem".to_owned(),
                read_only: true,
            }],
            model: Some("gpt-5-mini".to_owned()),
            network: Some("corp".to_owned()),
            ..AgentDef::default()
        },
    );
    let inv = resolve_with("codex", &custom);
    assert_eq!(inv.image.as_deref(), Some("codex-image"));
    assert_eq!(
        inv.env_names,
        ["CODEX_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"],
        "names are added once"
    );
    assert_eq!(inv.config_mounts.len(), 1, "mounts are added");
    assert_eq!(inv.config_mounts[0].target, "/etc/ssl/codex-ca.pem");
    assert_eq!(inv.home_files.len(), 2, "the preset's home files stay");
    assert_eq!(inv.network, "corp");
    assert_eq!(
        inv.model.as_deref(),
        Some("gpt-5-mini"),
        "the model default applies"
    );
    assert_eq!(
        inv.argv[inv.argv.len() - 3..],
        argv(&["--model", "gpt-5-mini", "-"])
    );
    assert_eq!(
        inv.argv[1], "exec",
        "the preset argv stays without `command`"
    );
    // The reference's model still wins over the override's default.
    assert_eq!(
        resolve_with("codex:o3", &custom).model.as_deref(),
        Some("o3")
    );
    // The review mode takes the default model too.
    let review = resolve_with("codex:review", &custom);
    assert_eq!(review.argv[2], "review");
    assert_eq!(review.model.as_deref(), Some("gpt-5-mini"));
    // Other presets are untouched.
    assert_eq!(resolve_with("claude", &custom), resolve("claude"));
}

#[test]
fn an_override_with_a_command_replaces_the_argv() {
    let mut custom = BTreeMap::new();
    custom.insert(
        "claude".to_owned(),
        AgentDef {
            command: Some(argv(&[
                "claude-wrapper",
                "--model={{ model }}",
                "--file",
                "{{ prompt_file }}",
            ])),
            prompt: Some(PromptHandoff::File),
            ..AgentDef::default()
        },
    );
    let inv = resolve_with("claude:sonnet", &custom);
    assert_eq!(
        inv.argv,
        argv(&[
            "claude-wrapper",
            "--model=sonnet",
            "--file",
            "/workspace/.meta/prompt.md"
        ])
    );
    assert_eq!(inv.prompt, PromptHandoff::File);
    assert_eq!(
        inv.env_names,
        ["ANTHROPIC_API_KEY"],
        "the preset's keys stay"
    );
    assert_eq!(
        inv.home_files[0].from, ".claude/.credentials.json",
        "the preset's home files stay"
    );

    // Without `command`, `prompt` cannot change how the preset's argv reads the prompt.
    custom.insert(
        "gemini".to_owned(),
        AgentDef {
            prompt: Some(PromptHandoff::File),
            ..AgentDef::default()
        },
    );
    let err = invocation(&AgentRef::parse("gemini").unwrap(), &custom, &ctx()).unwrap_err();
    assert!(
        err.contains("agents.gemini") && err.contains("`command`"),
        "{err}"
    );
}

#[test]
fn config_mount_paths_expand_the_home() {
    let m = ConfigMount {
        host: PathBuf::from("~/.codex"),
        target: "/home/agent/.codex".to_owned(),
        read_only: true,
    };
    assert_eq!(
        m.host_path(Path::new("/home/me")),
        PathBuf::from("/home/me/.codex")
    );
    let abs = ConfigMount {
        host: PathBuf::from("/etc/x"),
        ..m
    };
    assert_eq!(
        abs.host_path(Path::new("/home/me")),
        PathBuf::from("/etc/x")
    );
}

#[test]
fn presets_print_json_events_and_continue_their_sessions() {
    let codex = resolve("codex:gpt-5");
    assert_eq!(codex.output, AgentOutput::CodexJson);
    let continued = codex
        .continued("0199-abc")
        .expect("codex continues a thread");
    let mut expected = vec!["codex", "exec"];
    expected.extend(codex_common());
    expected.extend(["--model", "gpt-5", "resume", "0199-abc", "-"]);
    assert_eq!(continued.argv, argv(&expected));
    let claude = resolve("claude");
    assert_eq!(claude.output, AgentOutput::ClaudeStreamJson);
    let continued = claude
        .continued("5b1c-77")
        .expect("claude continues a session");
    assert_eq!(continued.argv[..claude.argv.len()], claude.argv[..]);
    assert_eq!(
        continued.argv[claude.argv.len()..],
        argv(&["--resume", "5b1c-77"])[..]
    );
    assert_eq!(resolve("gemini").output, AgentOutput::GeminiStreamJson);
    assert!(
        resolve("gemini").continued("g1").is_none(),
        "gemini --resume takes no session id"
    );
    assert!(
        resolve("codex:review").continued("t").is_none(),
        "a review starts afresh"
    );
    assert_eq!(resolve("coderabbit").output, AgentOutput::Text);
    // An id is the agent's own output: one that is not an id a CLI gives is not passed on.
    let long = "a".repeat(201);
    for hostile in [
        "",
        "--last",
        "-",
        "a b",
        "x;rm -rf /",
        "id\n",
        long.as_str(),
    ] {
        assert!(codex.continued(hostile).is_none(), "{hostile:?}");
        assert!(claude.continued(hostile).is_none(), "{hostile:?}");
    }
}

#[test]
fn a_preset_override_with_its_own_command_declares_what_it_prints() {
    let ctx = ArgvContext::new("develop");
    let agent = AgentRef::parse("codex").unwrap();
    let mut def = custom_def(&["codex", "exec", "--json", "-"]);
    let custom = BTreeMap::from([("codex".to_owned(), def.clone())]);
    let inv = invocation(&agent, &custom, &ctx).unwrap();
    assert_eq!(
        inv.output,
        AgentOutput::Text,
        "an argv of one's own prints text unless told"
    );
    def.output = Some(AgentOutput::CodexJson);
    let custom = BTreeMap::from([("codex".to_owned(), def.clone())]);
    assert_eq!(
        invocation(&agent, &custom, &ctx).unwrap().output,
        AgentOutput::CodexJson
    );
    def.command = None;
    let custom = BTreeMap::from([("codex".to_owned(), def)]);
    let error = invocation(&agent, &custom, &ctx).expect_err("output without command");
    assert!(
        error.contains("`output` only applies together with `command`"),
        "{error}"
    );
}

#[test]
fn claude_gets_the_units_caps_as_its_own_and_other_clis_nothing() {
    let claude = resolve("claude").capped(Some(0.25), Some(3));
    let tail: Vec<&str> = claude
        .argv
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["--max-budget-usd", "0.2500", "--max-turns", "3"]);
    let continued = claude.continued("s-1").expect("claude continues");
    assert!(
        continued.argv.contains(&"--max-turns".to_owned()),
        "kept on --resume"
    );
    let codex = resolve("codex");
    assert_eq!(codex.clone().capped(Some(0.25), Some(3)).argv, codex.argv);
}
