#!/usr/bin/env bash
# `make test`: set up what is missing, start the stack, run the whole suite against the real
# servers, then stop what this run started (a stack that was already up is left running).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=common.sh
source "$HERE/common.sh"
cd "$YIDI_ROOT"

"$HERE/python.sh"
was_up=$({ "$HERE/stack.sh" status 2>/dev/null || true; } | awk '$2 == "running" {print $1}' | tr '\n' ' ')
started=()
for part in kafka postgres redis; do
  [[ " $was_up " == *" $part "* ]] || started+=("$part")
done
"$HERE/stack.sh" start all
cleanup() { ((${#started[@]})) && "$HERE/stack.sh" stop "${started[@]}" || true; }
trap cleanup EXIT

eval "$(bash "$HERE/env.sh")"
# Warnings are errors (pyproject); CI=true turns a missing server into a failure, not a skip.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
