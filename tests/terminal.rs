//! Untrusted text on a terminal: what hostile agents write (a BLOCKED.md question, their
//! output), and a spec's PR title, reach `run`, `status`, `logs` and `prs` on a terminal
//! with their control sequences made visible; JSON and piped logs keep the exact text. (What
//! a hostile forge serves is in `forge.rs`, `plan_on_a_terminal_shows_hostile_names_visibly`.)

use crate::support::docker::available;
use crate::support::{unit, OnTerminal, Test};

/// One line an agent or a forge may write: an OSC 8 hyperlink whose target is not its text,
/// an OSC 52 clipboard write, a clear screen, a right-to-left override hiding an extension,
/// isolates, a C1 CSI, and a CR and backspace that overwrite what came before.
const HOSTILE: &str = "Which \x1b]8;;https://evil.example\x07database\x1b]8;;\x07? \
    \x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J \u{202e}gnp.exe\u{202c} \u{2066}iso\u{2069} \
    \u{9b}31m ok\r\x08FAIL";

/// What must never reach a terminal from text dispatch did not write itself.
const DRIVING: &[&str] = &[
    "\x1b]", "\x1b[2J", "\x07", "\x08", "\u{202e}", "\u{202c}", "\u{2066}", "\u{2067}", "\u{2068}",
    "\u{2069}", "\u{9b}", "\u{85}", "\u{80}",
];

/// The forms of [`HOSTILE`]'s sequences that show instead.
const VISIBLE: &[&str] = &[
    r"\x1b]8;;https://evil.example\x07database\x1b]8;;\x07",
    r"\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J",
    r"\u{202e}gnp.exe\u{202c}",
    r"\u{2066}iso\u{2069}",
    r"\u{9b}31m ok\r\x08FAIL",
];

/// Asserts that `bytes`, written on a terminal, hold none of [`DRIVING`]; with `own_escapes`
/// false (no progress bars drawn there) no ESC and no CR at all.
#[track_caller]
pub fn assert_inert(bytes: &[u8], own_escapes: bool) {
    let text = String::from_utf8_lossy(bytes);
    for sequence in DRIVING {
        assert!(
            !text.contains(sequence),
            "{sequence:?} reached the terminal:\n{text:?}"
        );
    }
    if !own_escapes {
        assert!(
            !text.contains(['\x1b', '\r']),
            "ESC or CR reached the terminal:\n{text:?}"
        );
    }
}

/// Asserts that every form of [`VISIBLE`] is in `terminal`'s stdout.
#[track_caller]
fn assert_visible(terminal: &OnTerminal) {
    for form in VISIBLE {
        terminal.expect_shown(form);
    }
}

/// Asks with [`HOSTILE`] (in `hostile`) when the behaviour is `ask`; prints it, then changes a
/// file, when it is `print`.
const AGENT: &str = r#"#!/bin/sh
case "$(cat behaviour)" in
  ask) cat hostile > BLOCKED.md ;;
  print) cat hostile; echo; echo "second line"; echo changed >> file.txt ;;
esac
"#;

#[test]
fn hostile_agent_text_is_shown_visibly_on_a_terminal_and_exactly_in_json() {
    if !available() {
        return;
    }
    let t = Test::new("hostile-text")
        .agent(AGENT)
        .repo("asks", &[("behaviour", "ask\n"), ("hostile", HOSTILE)])
        .repo("prints", &[("behaviour", "print\n"), ("hostile", HOSTILE)])
        .scripted_spec(
            r#"
            jobs:
              - id: j
                task: t
                repos: [asks, prints]
                qa: []
                pr: { title: "Fix \e]8;;https://evil.example\a{{ repo }}\e]8;;\a \u202Etxt.exe" }
            "#,
        );

    // JSON keeps what the agent wrote exactly.
    let report = t
        .run(&["run", "spec.yaml", "--output", "json"])
        .expect_status(1)
        .json();
    assert_eq!(unit(&report, "j/t/asks")["reason"], HOSTILE);

    // The run's progress bars and summary: the question shows as its visible form.
    let run = t
        .run_on_terminal(&["run", "spec.yaml", "--new", "--no-cache"])
        .expect_status(1);
    assert_inert(&run.stdout, false);
    assert_inert(&run.stderr, true);
    assert_visible(&run);

    let status = t.run(&["status", "--json"]).expect_status(0).json();
    let run_id = status["run"]["id"].as_str().expect("a run id").to_owned();
    assert_eq!(unit(&status, "j/t/asks")["reason"], HOSTILE);

    let status = t.run_on_terminal(&["status"]).expect_status(0);
    assert_inert(&status.stdout, false);
    assert_visible(&status);

    // The agent's log: visible on a terminal with its lines kept, exact when piped.
    let logs = &["logs", &run_id, "j/t/prints:agent"];
    let shown = t.run_on_terminal(logs).expect_status(0);
    assert_inert(&shown.stdout, false);
    assert_visible(&shown);
    shown.expect_shown(concat!(r"\u{9b}31m ok\r\x08FAIL", "\nsecond line\n"));
    let piped = t.run(logs).expect_status(0).stdout;
    assert!(
        piped.contains(&format!("{HOSTILE}\nsecond line\n")),
        "{piped:?}"
    );

    // The spec's PR title on the local forge.
    let prs = t.run_on_terminal(&["prs"]).expect_status(0);
    assert_inert(&prs.stdout, false);
    prs.expect_shown(r"Fix \x1b]8;;https://evil.example\x07prints\x1b]8;;\x07 \u{202e}txt.exe");
    let listed = t.run(&["prs", "--json"]).expect_status(0).json();
    assert_eq!(
        listed[0]["title"],
        "Fix \x1b]8;;https://evil.example\x07prints\x1b]8;;\x07 \u{202e}txt.exe"
    );
}
