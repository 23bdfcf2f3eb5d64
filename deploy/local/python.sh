#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv, Python 3.11): every package deploy/requirements.lock
# pins, each file checked against the lock's sha256 (pip --require-hashes), then the project itself,
# editable. Idempotent and quiet: it only runs pip when pyproject.toml or the lock is newer than
# .venv/.installed-stamp (or the venv is missing/broken).
#   PYTHON=/path/to/python3.11 deploy/local/python.sh   to choose the interpreter.
#   deploy/local/python.sh --renew-lock                  (make lock) after a dependency of
#     pyproject.toml changed: resolve them afresh in a venv of their own, without the old pins,
#     and write what was installed, with the index's hashes, to deploy/requirements.lock and
#     deploy/requirements-runtime.lock (deploy/local/lock.py); then make venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

VENV="$YIDI_ROOT/.venv"
STAMP="$VENV/.installed-stamp"
PYPROJECT="$YIDI_ROOT/pyproject.toml"
# The versions tested, with their files' hashes: every package of .venv (the file says how to renew it).
LOCK="$YIDI_ROOT/deploy/requirements.lock"
WANT="3.11"   # pyproject.toml: requires-python = ">=3.11,<3.12"

log() { printf 'python: %s\n' "$*" >&2; }
die() { printf 'python: error: %s\n' "$*" >&2; exit 1; }
is_wanted() { "$1" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$WANT')" 2>/dev/null; }
# A fresh Debian/Ubuntu machine may lack Python 3.11 or its venv module (python3-venv, a package
# of its own there): install them, as stack.sh installs Postgres and Redis.
apt_get() {
  # stack.sh's installer: apt-get update tried three times 30 s apart (on a machine just booted,
  # apt-daily holds the package lists' lock), the log's tail shown on failure. Its update failing
  # was ignored here, and the install then failed against empty or stale lists (a review, session 49).
  command -v apt-get >/dev/null || return 1
  "$YIDI_ROOT/deploy/local/stack.sh" packages "$@"
}
find_python() {
  local c
  for c in "python$WANT" python3 python; do
    if command -v "$c" >/dev/null && is_wanted "$(command -v "$c")"; then command -v "$c"; return 0; fi
  done
  return 1
}

if [[ ${1:-} == --renew-lock ]]; then
  py=${PYTHON:-$(find_python)} || die "no Python $WANT found (set PYTHON=/path/to/python$WANT)"
  is_wanted "$py" || die "$py is not a Python $WANT interpreter"
  fresh=$(mktemp -d)
  trap 'rm -rf "$fresh"' EXIT
  "$py" -m venv "$fresh/venv"
  (cd "$YIDI_ROOT" && "$fresh/venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]') \
    || die "pip install -e '.[dev]' (without the lock) failed"
  "$fresh/venv/bin/python" "$HERE/lock.py" || die "writing the locks failed"
  log "review the diff of deploy/requirements*.lock, make venv, run the suite"
  exit 0
fi

# .checkout names the checkout the venv was made in (written as it is made; the stamp names it too):
# its editable install and its scripts' shebangs hold that path, so a venv copied from another
# checkout ran that one's code (a review, session 49). A venv whose pip failed keeps its .checkout,
# and only pip runs again.
CHECKOUT="$VENV/.checkout"
ours() { [[ -f $CHECKOUT && $(<"$CHECKOUT") == "$YIDI_ROOT" ]] || [[ -f $STAMP && $(<"$STAMP") == "$YIDI_ROOT" ]]; }

# Fast path, before any locking: venv works, is this checkout's, and the stamp is not older than
# pyproject.toml or the lock.
if ours && [[ ! $PYPROJECT -nt $STAMP && ! $LOCK -nt $STAMP ]] && is_wanted "$VENV/bin/python"; then
  exit 0
fi

# Serialise concurrent runs (e.g. parallel make targets) so pip never runs twice at once.
mkdir -p "$YIDI_LOCAL"
exec 9>"$YIDI_LOCAL/.venv.lock"
flock -w 900 9 || die "timed out waiting for another python.sh"

t0=${EPOCHREALTIME//[!0-9]/}
if [[ -e $VENV ]] && ! ours; then
  log "making .venv again: it was made for another checkout (or before its stamp named one)"
  rm -rf "$VENV"
fi
if ! is_wanted "$VENV/bin/python"; then
  py=${PYTHON:-}
  if [[ -z $py ]]; then
    py=$(find_python) || { apt_get "python$WANT" "python$WANT-venv" && py=$(find_python); } || py=""
  fi
  if [[ -n ${PYTHON:-} ]] && ! is_wanted "$py"; then die "PYTHON=$PYTHON is not a Python $WANT interpreter"; fi
  if [[ -z $py ]] || ! is_wanted "$py"; then die "no Python $WANT found (set PYTHON=/path/to/python$WANT)"; fi
  # A venv from another interpreter version (or whose interpreter vanished) is rebuilt.
  rm -rf "$VENV"
  if ! "$py" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_get "python$WANT-venv" || apt_get python3-venv || die "$py has no venv module (apt-get install python$WANT-venv)"
    "$py" -m venv "$VENV"
  fi
  printf '%s\n' "$YIDI_ROOT" >"$CHECKOUT"
  log "created .venv ($("$VENV/bin/python" -V 2>&1))"
fi

if [[ ! -f $STAMP || $PYPROJECT -nt $STAMP || $LOCK -nt $STAMP ]]; then
  pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
  # The dependencies from the lock alone, each file checked against its hashes (a file from a
  # tampered index or mirror, or a version the lock does not name, is refused), none resolved afresh.
  (cd "$YIDI_ROOT" && "${pip[@]}" install -q --require-hashes --no-deps -r "$LOCK") \
    || die "pip install --require-hashes -r deploy/requirements.lock failed"
  # Then the project, editable (libs/ and services/ are used in place), built by the locked
  # setuptools in .venv: pip does not check the hashes of an isolated build environment.
  (cd "$YIDI_ROOT" && "${pip[@]}" install -q --no-deps --no-build-isolation -e .) \
    || die "pip install --no-deps -e . failed"
  # Nothing resolved the dependencies above: say so if the lock lacks one pyproject.toml needs.
  check=$("${pip[@]}" check 2>&1) \
    || { printf '%s\n' "$check" >&2; die "the packages of .venv do not satisfy one another: make lock if deploy/requirements.lock lacks one; rm -rf .venv && make venv if .venv holds packages the lock no longer names"; }
  # The stamp carries the later of the two files' times: any later edit of either makes it "newer" again.
  printf '%s\n' "$YIDI_ROOT" >"$STAMP"
  if [[ $LOCK -nt $PYPROJECT ]]; then touch -r "$LOCK" "$STAMP"; else touch -r "$PYPROJECT" "$STAMP"; fi
  d=$(( (${EPOCHREALTIME//[!0-9]/} - t0) / 100000 ))
  log "installed deploy/requirements.lock and -e . into .venv in $((d / 10)).$((d % 10))s"
fi
