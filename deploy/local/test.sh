#!/usr/bin/env bash
# `make test`: set up what is missing, start the stack, run the whole suite against the real
# servers, then stop what this run started (a stack that was already up is left running).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=common.sh
source "$HERE/common.sh"
cd "$YIDI_ROOT"

# One `make test` at a time on a checkout: a second one, counting the servers the first started as
# up before it, kept them, and the first stopped them at its end under the second's suite. The lock
# is this shell's alone (8>&- for everything it starts: a server started under it would hold it).
mkdir -p "$YIDI_LOCAL"
exec 8>"$YIDI_LOCAL/.test.lock"
if ! flock -n 8; then
  echo "test: another make test runs on this checkout; waiting for it to finish" >&2
  flock 8
fi

"$HERE/python.sh" 8>&-
# promtool (Debian's prometheus package) checks the Prometheus configs and alert rules, amtool
# (prometheus-alertmanager) the Alertmanager config and its routes.
if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null; then
  echo "test: installing Debian's prometheus and prometheus-alertmanager packages for promtool and amtool" >&2
  # stack.sh's apt-get: its update is tried three times, 30 s apart (apt-daily's lock on a machine
  # just booted), and its log's tail is shown when it fails.
  "$HERE/stack.sh" packages prometheus prometheus-alertmanager 8>&- \
    || echo "test: could not install prometheus or prometheus-alertmanager (see .local/log/apt.log)" >&2
fi
# The servers this run's start launches, as stack.sh decides it under its lock (a status taken here
# without it counted a make run's servers, still starting, as this run's to stop).
launched=$(mktemp)
# Set before the start: a start that fails part way (Kafka not ready in time) must not leave the
# servers it did start running, where the next run would count them as up before it and keep them.
cleanup() {
  local started=()
  mapfile -t started <"$launched"
  ((${#started[@]})) && "$HERE/stack.sh" stop "${started[@]}" 8>&- || true
  rm -f "$launched"
}
trap cleanup EXIT
STACK_STARTED_FILE="$launched" "$HERE/stack.sh" start all 8>&-

# Older packages than Debian 12's fail two checks of the suite (Ubuntu 22.04 ships both): say so
# first rather than leave it to the failures. $1 at least $2, as versions.
at_least() { printf '%s\n%s\n' "$2" "$1" | sort -C -V; }
too_old() {  # name, version found, version needed, what needs it
  [[ -n $2 ]] && ! at_least "$2" "$3" \
    && echo "test: $1 $2 is older than $3, which $4 needs: that test fails on this machine (Debian 12's packages have it)" >&2
  return 0
}
if command -v promtool >/dev/null; then
  too_old promtool "$(promtool --version 2>&1 | sed -n 's/^promtool, version \([0-9.]*\).*/\1/p' | head -n1)" 2.42 \
    "the alert rules' keep_firing_for"
fi
if command -v redis-server >/dev/null; then
  too_old redis-server "$(redis-server --version 2>&1 | sed -n 's/.* v=\([0-9.]*\).*/\1/p' | head -n1)" 7.0 \
    "min-replicas-to-write in scripts (the cache's stale marks when Redis refuses writes)"
fi

eval "$(bash "$HERE/env.sh")"
# Warnings are errors (pyproject); CI=true turns a missing server into a failure, not a skip.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" 8>&-
