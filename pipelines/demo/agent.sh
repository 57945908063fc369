#!/bin/sh
# The demo's scripted agent: a stand-in for a real coding agent that needs no network and no
# API key. It reads the prompt dispatch hands it, then fixes the bugs the demo repositories are
# known to have. Real agents (codex, claude, gemini, local) get the same prompt file.
set -eu
prompt="$1"
if [ ! -s "$prompt" ]; then
    echo "no prompt at $prompt" >&2
    exit 2
fi
echo "scripted agent: read $(wc -c < "$prompt") bytes of prompt in $(pwd)"
if [ -f greet.sh ] && grep -q 'Helo' greet.sh; then
    sed -i 's/Helo/Hello/' greet.sh
    echo "fixed the greeting in greet.sh"
fi
if [ -f calc.sh ] && grep -q 'a - b' calc.sh; then
    sed -i 's/a - b/a + b/' calc.sh
    echo "fixed add() in calc.sh"
fi
echo "scripted agent: done"
