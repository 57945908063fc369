//! The scripted agent every fixture starts with, the QA script of its repositories, and the
//! spec head that runs it on the local forge.

/// The scripted agent (`agent.sh` of every fixture): what it does depends on the file
/// `behaviour` in the repository. It counts its runs in `meta/agent-runs`.
pub(super) const AGENT: &str = r#"#!/bin/sh
set -u
prompt="$1"
echo run >> /workspace/.meta/agent-runs
echo "agent run: $(cat behaviour) with $(wc -c < "$prompt") bytes of prompt"
case "$(cat behaviour)" in
  change) echo "changed" >> file.txt ;;
  none) ;;
  block) echo "Which database should the migration target?" > BLOCKED.md ;;
  fail) echo "boom: cannot continue"; exit 7 ;;
  sleep) sleep 60 ;;
  nap) sleep 1; echo "napped" >> file.txt ;;
  long) sleep 30; echo "late" >> file.txt ;;
  loud) head -c 52428800 /dev/zero; echo; echo "loud" >> file.txt ;;
  fix-on-retry)
    if grep -q "qa-says-not-ok" "$prompt"; then echo ok > status.txt; else echo wrong > status.txt; fi ;;
  qa-fails) echo "tried" >> file.txt ;;
  ask) if [ -f ANSWER.md ]; then echo "answered: $(cat ANSWER.md)" >> file.txt; else echo "Which port should the service use?" > BLOCKED.md; fi ;;
  flaky) if [ -f /workspace/.meta/failed-once ]; then echo "second try" >> file.txt; else touch /workspace/.meta/failed-once; exit 3; fi ;;
esac
"#;

/// `test.sh` of every repository of [`super::Test::scripted_repos`]: the QA step
/// `sh test.sh` fails for the behaviours that must fail QA.
pub(super) const TEST_SH: &str = r#"#!/bin/sh
case "$(cat behaviour)" in
  fix-on-retry) [ "$(cat status.txt)" = ok ] || { echo "qa-says-not-ok: status.txt is $(cat status.txt)"; exit 1; } ;;
  qa-fails) echo "qa-says-not-ok: always"; exit 1 ;;
esac
echo "tests pass"
"#;

/// The forge of [`super::Test::scripted_spec`]: the local forge seeded from `repos/`.
pub(super) const LOCAL_FORGE: &str = "{ kind: local, seed: repos }";

/// The head of a scripted spec: `forge`, org `org`, the busybox image and the agent `scripted`
/// running `agent.sh` with the prompt file. It ends inside `agents:`, so lines indented by two
/// more than the rest define more agents.
pub(super) fn head(forge: &str, org: &str) -> String {
    format!(
        r#"version: 1
name: t
forge: {forge}
defaults: {{ org: {org}, agent: scripted, image: dispatch-busybox, timeout: 20s }}
agents:
  scripted:
    command: [sh, /opt/agent.sh, "{{{{ prompt_file }}}}"]
    mounts: [{{ source: agent.sh, target: /opt/agent.sh }}]
    network: none
"#
    )
}
