# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Sourced (never executed) by the deploy/local scripts: the one place for paths and ports.
# It must not change shell options, because env.sh may be sourced into a user's shell.

# The repository root is two levels above this file, wherever the checkout lives.
YIDI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
# All local state (servers' data, logs, pid files, downloaded jars). Ignored by git.
YIDI_LOCAL="$YIDI_ROOT/.local"

# Loopback-only ports, deliberately away from the standard ones (9092/5432/6379),
# so a system Kafka, PostgreSQL or Redis on the same machine is never disturbed.
YIDI_KAFKA_PORT=19092
YIDI_KAFKA_CONTROLLER_PORT=19093
YIDI_PG_PORT=15432
YIDI_REDIS_PORT=16379

# What the application connects as (stack.sh creates the role and database).
YIDI_PG_USER=yidi
YIDI_PG_DB=yidi

# PID exists and is not a zombie. Daemons are re-parented to init, and some inits (like
# this sandbox's) reap only every couple of seconds: a zombie must count as exited.
alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

# Something (anyone) accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Who listens on TCP PORT, for an error message: "pid N (its command line)", or how to find
# out when ss is missing or the process is another user's (ss names only the caller's own).
port_holder() {
  local line pid cmd
  if ! command -v ss >/dev/null 2>&1; then
    printf "a process (lsof -i :%s names it)" "$1"
    return 0
  fi
  line=$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n1)
  if [[ $line =~ pid=([0-9]+) ]]; then
    pid=${BASH_REMATCH[1]}
    cmd=$(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)
    printf 'pid %s (%s)' "$pid" "${cmd% }"
  else
    printf "another user's process (sudo ss -ltnp 'sport = :%s' names it)" "$1"
  fi
}

# pid from FILE if that process is alive and its command line contains PATTERN
# (guards against a stale pid file whose number was reused by another process).
live_pid() {
  local file=$1 pattern=$2 pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" || return 1
  echo "$pid"
}
