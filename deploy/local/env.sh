#!/usr/bin/env bash
# Connection settings for the local stack started by deploy/local/stack.sh.
#   eval "$(deploy/local/env.sh)"      (any POSIX shell)
#   source deploy/local/env.sh         (bash only)
# Variables that are already set (and non-empty) win, so CI or a developer can point the
# code elsewhere: only the missing ones are printed / exported.

# Sourced: export the printed lines without leaking helper variables or `set -e` into the
# caller's shell.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
  eval "$(bash "${BASH_SOURCE[0]}")"
  return 0
fi

set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

emit() {
  if [[ -z ${!1:-} ]]; then printf 'export %s=%q\n' "$1" "$2"; fi
}

emit YIDI_KAFKA_BOOTSTRAP "127.0.0.1:$YIDI_KAFKA_PORT"
emit YIDI_DATABASE_URL "postgresql://$YIDI_PG_USER@127.0.0.1:$YIDI_PG_PORT/$YIDI_PG_DB"
emit YIDI_REDIS_URL "redis://127.0.0.1:$YIDI_REDIS_PORT/0"
