#!/usr/bin/env bash
# Local infrastructure for Yidi without Docker: Apache Kafka (KRaft, jars from Maven
# Central), a private PostgreSQL cluster and Redis, all on loopback-only ports, with all
# state under <repo>/.local/.
#
# Usage: deploy/local/stack.sh COMMAND [kafka|postgres|redis|all ...]
#   install [what]   Debian packages + Kafka jars (idempotent; fast no-op when present)
#   start  [what]    install, then start (already-running pieces are left alone)
#   stop   [what]    clean stop (pg fast shutdown, redis nosave, kafka SIGTERM then SIGKILL)
#   status [what]    one line per server; exit 0 only if every one asked for runs (3 otherwise)
#   logs   [what] [-f]  tail the logs (TAIL_LINES=40), -f to follow
#   reset            stop all three and delete all their data (keeps downloaded jars); no [what]
#   packages PKG...  install these Debian packages (apt-get update tried three times, as for the servers')
#   check-jars [DIR] check the Kafka jars (default: the installed ones) against kafka/jars.sha256
#
# Tunables (environment): KAFKA_VERSION (overrides the pom), KAFKA_HEAP_OPTS,
# KAFKA_JVM_PERFORMANCE_OPTS (the collector; Kafka's own scripts' default), KAFKA_OPTS,
# KAFKA_START_TIMEOUT (90 s), KAFKA_STOP_TIMEOUT (30 s), PG_BINDIR, JARS_UNPINNED=1 (resolve the
# jars without checking them against kafka/jars.sha256: to renew the list after a pom change).
# shellcheck disable=SC2012  # ls over our own jar and bin directory names is fine
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

LOG_DIR="$YIDI_LOCAL/log"
KAFKA_DIR="$YIDI_LOCAL/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$LOG_DIR/kafka.log"
KAFKA_POM="$HERE/kafka/pom.xml"
KAFKA_JARS_PINNED="$HERE/kafka/jars.sha256"
PG_LINK="$YIDI_LOCAL/pg"   # resolved to PG_DIR by pg_paths (may be a symlink, see there)
PG_LOG="$LOG_DIR/postgres.log"
REDIS_DIR="$YIDI_LOCAL/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"

ALL=(kafka postgres redis)

# ---------------------------------------------------------------- helpers

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# Microsecond clock; the digit filter copes with locales that print a decimal comma.
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
since() { local d=$(( ($(now_us) - $1) / 100000 )); printf '%d.%ds' $((d / 10)) $((d % 10)); }

# Wait up to SECONDS for PID to exit; returns 1 if it is still alive.
wait_exit() {
  local pid=$1 deadline=$(( $(now_us) + $2 * 1000000 ))
  while alive "$pid"; do
    (( $(now_us) < deadline )) || return 1
    sleep 0.1
  done
}

tail_log() {
  local file=$1
  printf 'stack: ---- last lines of %s ----\n' "$file" >&2
  tail -n "${TAIL_LINES:-40}" "$file" >&2 2>/dev/null || true
  printf 'stack: ----\n' >&2
}

# Keep the previous run's log as *.log.1 so readiness checks only see this run.
rotate_log() { [[ -f $1 ]] && mv -f "$1" "$1.1"; : >"$1"; }

# Replace @NAME@ placeholders in template $1 with the values given as NAME=VALUE.
# Bash substitution instead of sed so paths with any characters are safe.
render() {
  local text kv
  text=$(<"$1"); shift
  for kv in "$@"; do text=${text//"@${kv%%=*}@"/"${kv#*=}"}; done
  printf '%s\n' "$text"
}

# The lock serialises start/stop/reset/install (e.g. two `make test` at once). fd 9 holds
# it, so every daemon we launch gets `9>&-`: otherwise it would keep the lock forever.
take_lock() {
  mkdir -p "$YIDI_LOCAL"
  exec 9>"$YIDI_LOCAL/.stack.lock"
  flock -w 600 9 || die "another stack.sh has held $YIDI_LOCAL/.stack.lock for 10 minutes"
}

# .local and .local/log must be traversable by the postgres user even if root's umask
# is restrictive (the repo itself is root-owned).
make_dirs() {
  mkdir -p "$YIDI_LOCAL" "$LOG_DIR"
  chmod 755 "$YIDI_LOCAL" "$LOG_DIR"
}

# Sets SVCS to the services named by the command-line words; default (or "all") is every
# service. Runs in the main shell (not a $(...) subshell) so that die really exits.
SVCS=()
parse_services() {
  local w want=()
  (( $# )) || set -- all
  for w in "$@"; do
    case $w in
      all) want+=("${ALL[@]}") ;;
      kafka|postgres|redis) want+=("$w") ;;
      pg|postgresql) want+=(postgres) ;;
      *) die "unknown service '$w' (expected kafka, postgres, redis or all)" ;;
    esac
  done
  # de-duplicate, keeping ALL's order (kafka first: its JVM is the slowest to boot)
  SVCS=()
  for w in "${ALL[@]}"; do [[ " ${want[*]} " == *" $w "* ]] && SVCS+=("$w"); done
  return 0
}

# ---------------------------------------------------------------- installation

APT_UPDATED=0
apt_install() {
  (( $# )) || return 0
  local sudo=() t0
  t0=$(now_us)
  command -v apt-get >/dev/null || die "missing $*, and this is not a Debian/Ubuntu machine: install them by hand"
  if (( EUID != 0 )); then
    command -v sudo >/dev/null || die "missing Debian packages: $* (run as root, or: apt-get install $*)"
    sudo=(sudo)
  fi
  make_dirs
  log "installing Debian packages: $* (log: $LOG_DIR/apt.log)"
  # apt-get -o DPkg::Lock::Timeout=600 update only once per run, and only when something is actually missing.
  if (( ! APT_UPDATED )); then
    # Three tries 30 s apart: on a machine just booted, apt-daily holds the package lists' lock,
    # which DPkg::Lock::Timeout does not wait for; a mirror may also fail once.
    local try
    for try in 1 2 3; do
      "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update >>"$LOG_DIR/apt.log" 2>&1 && break
      ((try < 3)) || { tail_log "$LOG_DIR/apt.log"; die "apt-get update failed three times"; }
      log "apt-get update failed (try $try of 3; log: $LOG_DIR/apt.log); trying again in 30 s"
      sleep 30
    done
    APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" \
    >>"$LOG_DIR/apt.log" 2>&1 || { tail_log "$LOG_DIR/apt.log"; die "apt-get install $* failed"; }
  log "installed $* in $(since "$t0")"
}

# Major Java version of the given java binary (8 for 1.8.x), or nothing.
java_major() {
  local v
  v=$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
  v=${v#1.}
  echo "${v%%[.+-]*}"
}

# First Java >= 17 (Kafka 4.x brokers need 17): $JAVA_HOME, PATH, then /usr/lib/jvm.
find_java() {
  local j m
  for j in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [[ -n $j && -x $j ]] || continue
    m=$(java_major "$j")
    [[ $m =~ ^[0-9]+$ ]] && (( m >= 17 )) && { echo "$j"; return 0; }
  done
  return 1
}

# Highest installed PostgreSQL server, unless PG_BINDIR says otherwise or an existing
# cluster needs its own major version.
find_pg_bindir() {
  local ver="" d
  if [[ -n ${PG_BINDIR:-} ]]; then echo "$PG_BINDIR"; return 0; fi
  [[ -f $PG_LINK/data/PG_VERSION ]] && ver=$(<"$PG_LINK/data/PG_VERSION")
  if [[ -n $ver ]]; then
    [[ -x /usr/lib/postgresql/$ver/bin/postgres ]] && { echo "/usr/lib/postgresql/$ver/bin"; return 0; }
    return 1
  fi
  # The newest version whose server is installed: a newer client alone (postgresql-client-17 for
  # its pg_dump) has a bin directory without initdb.
  while read -r d; do
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/psql ]] && { echo "$d"; return 0; }
  done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr)
  return 1
}

kafka_jars_stamp() {
  # The jars are current when they were resolved from this exact pom (and version override).
  { cat "$KAFKA_POM"; echo "KAFKA_VERSION=${KAFKA_VERSION:-}"; } | sha256sum | cut -d' ' -f1
}

# Whether the jars are to be checked against $KAFKA_JARS_PINNED: not with KAFKA_VERSION (a version
# the list is not for) or JARS_UNPINNED=1 (renewing the list after a pom change).
jars_pinned() { [[ -z ${KAFKA_VERSION:-} && ${JARS_UNPINNED:-} != 1 ]]; }
# What .checked holds in a jars directory checked against this list.
kafka_jars_checked() { grep -v '^#' "$KAFKA_JARS_PINNED" | sha256sum | cut -d' ' -f1; }

# The jars in $1 are exactly those $KAFKA_JARS_PINNED names, each with its sha256 (a mirror or a
# cache serving other files with checksums of their own passed --strict-checksums: the install
# review, session 49). Dies naming what differs.
check_kafka_jars() {
  local dir=$1 want have
  want=$(grep -v '^#' "$KAFKA_JARS_PINNED" | awk '{print $2}' | sort)
  have=$(cd "$dir" && ls -1 *.jar 2>/dev/null | sort)
  [[ $want == "$have" ]] || die "the Kafka jars in $dir are not those $KAFKA_JARS_PINNED names: $(diff <(echo "$want") <(echo "$have") | grep '^[<>]' | head -5 | tr '\n' ' ')"
  (cd "$dir" && grep -v '^#' "$KAFKA_JARS_PINNED" | sha256sum --quiet --strict -c -) >"$LOG_DIR/jars-check.log" 2>&1 \
    || { tail_log "$LOG_DIR/jars-check.log"; die "a Kafka jar's sha256 in $dir is not the one $KAFKA_JARS_PINNED pins (a tampered mirror or cache?)"; }
}

# The installed jars are current (their pom's) and, where pinned, checked against this list: jars
# installed before the list, or without it (JARS_UNPINNED=1), are checked once now (and resolved
# again if they differ), not downloaded again.
kafka_jars_ok() {
  [[ -f $KAFKA_LIBS/.stamp && $(<"$KAFKA_LIBS/.stamp") == "$(kafka_jars_stamp)" ]] || return 1
  jars_pinned || return 0
  [[ -f $KAFKA_LIBS/.checked && $(<"$KAFKA_LIBS/.checked") == "$(kafka_jars_checked)" ]] && return 0
  ( check_kafka_jars "$KAFKA_LIBS" ) >/dev/null 2>&1 || return 1
  kafka_jars_checked >"$KAFKA_LIBS/.checked"
}

kafka_version() {
  local jar
  jar=$(ls "$KAFKA_LIBS"/kafka_2.13-*.jar 2>/dev/null | head -n1)
  jar=${jar##*/kafka_2.13-}
  echo "${jar%.jar}"
}

# Install the Debian packages the given services need (one apt-get run for all of them).
ensure_packages() {
  local s pkgs=()
  for s in "$@"; do
    case $s in
      kafka)
        find_java >/dev/null || pkgs+=(openjdk-17-jre-headless)
        # Maven is only needed to (re)resolve the jars.
        kafka_jars_ok || command -v mvn >/dev/null || pkgs+=(maven) ;;
      postgres)
        if [[ -z ${PG_BINDIR:-} ]] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then pkgs+=(postgresql); fi ;;
      redis)
        command -v redis-server >/dev/null && command -v redis-cli >/dev/null || pkgs+=(redis-server) ;;
    esac
  done
  # ss names the process holding a port in the stack's messages (lsof or nothing otherwise): a
  # minimal image lacks it. Only with packages installed anyway: it is not worth a sudo of its own.
  if ((${#pkgs[@]})) && ! command -v ss >/dev/null; then pkgs+=(iproute2); fi
  apt_install "${pkgs[@]}"
}

# Resolve kafka_2.13 + runtime closure + slf4j backend into .local/kafka/libs.
ensure_kafka_jars() {
  kafka_jars_ok && return 0
  local t0 tmp mvn_args=() pid
  # The broker running reads its classes from these jars: swapped under it, it would go on as the
  # old version (or fail on a class it had not loaded yet) while status named the new one.
  if pid=$(kafka_pid); then
    die "Kafka $(kafka_version) is running (pid $pid) and the jars are to change (kafka.version or KAFKA_VERSION changed): stop the stack first (make stop), then start it again"
  fi
  t0=$(now_us)
  command -v mvn >/dev/null || die "mvn not found (needed once to download the Kafka jars)"
  make_dirs
  mkdir -p "$KAFKA_DIR"
  [[ -n ${KAFKA_VERSION:-} ]] && mvn_args+=("-Dkafka.version=$KAFKA_VERSION")
  log "resolving Kafka jars from Maven Central (log: $LOG_DIR/maven.log)"
  # Download into a temporary directory and swap it in, so an interrupted download is
  # never mistaken for a complete one.
  tmp="$KAFKA_DIR/libs.tmp"
  rm -rf "$tmp"
  # --strict-checksums: a jar whose checksum does not match Maven Central's fails the download (by
  # default Maven only warns, and -q hid that). Two tries: a download broken off once is tried again.
  local try
  for try in 1 2; do
    mvn -B -q --strict-checksums -Dstyle.color=never -f "$KAFKA_POM" "${mvn_args[@]}" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$LOG_DIR/maven.log" 2>&1 && break
    ((try < 2)) || { tail_log "$LOG_DIR/maven.log"; die "mvn could not resolve the Kafka jars"; }
    log "mvn could not resolve the Kafka jars (log: $LOG_DIR/maven.log); trying again"
    rm -rf "$tmp"
  done
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn finished but no kafka_2.13 jar in $tmp"
  if jars_pinned; then
    check_kafka_jars "$tmp"  # dies, nothing installed, when they differ
    kafka_jars_checked >"$tmp/.checked"
  else
    log "the Kafka jars are not checked against $KAFKA_JARS_PINNED (KAFKA_VERSION or JARS_UNPINNED=1 set)"
  fi
  kafka_jars_stamp >"$tmp/.stamp"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  log "Kafka $(kafka_version) jars ready ($(ls "$KAFKA_LIBS"/*.jar | wc -l) jars) in $(since "$t0")"
}

install_for() {
  ensure_packages "$@"
  if [[ " $* " == *" kafka "* ]]; then ensure_kafka_jars; fi
}

# ---------------------------------------------------------------- kafka

KAFKA_T0=""

kafka_pid() { live_pid "$KAFKA_PID" kafka.Kafka; }

# Kafka cluster id: generated once per data directory and kept in .local/kafka/cluster.id.
kafka_cluster_id() {
  local f="$KAFKA_DIR/cluster.id" id
  if [[ -s $f ]]; then cat "$f"; return; fi
  # Data formatted earlier but the id file lost: reuse the id the storage was formatted with.
  id=$(sed -n 's/^cluster\.id=//p' "$KAFKA_DATA/meta.properties" 2>/dev/null || true)
  # Otherwise 16 random bytes, base64url without padding (22 chars), never starting with '-'
  # (the storage tool would take it for an option).
  while [[ -z $id || $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  echo "$id" >"$f"
  echo "$id"
}

# Start the JVM without waiting for it (postgres and redis start meanwhile); kafka_wait
# then waits for readiness.
kafka_launch() {
  local pid java cid p
  KAFKA_T0=""
  if pid=$(kafka_pid); then
    log "kafka already running (pid $pid) on 127.0.0.1:$YIDI_KAFKA_PORT ($(kafka_version))"
    # Still waited for: a broker left booting (a start interrupted with Ctrl-C: it runs in a
    # session of its own) was taken as ready, and the tests or services after it found no port.
    KAFKA_T0=$(now_us)
    return 0
  fi
  # A pid file left by a broker that died (SIGKILL, out of memory, a reboot) goes first: the new
  # JVM's wrapper writes its own a moment after the launch, and kafka_wait read the old one
  # meanwhile, took it for the new broker's death and dropped the new one's pid file (an orphan).
  rm -f "$KAFKA_PID"
  for p in "$YIDI_KAFKA_PORT" "$YIDI_KAFKA_CONTROLLER_PORT"; do
    port_open "$p" && die "127.0.0.1:$p is in use by $(port_holder "$p"), not this stack's Kafka: stop it first"
  done
  java=$(find_java) || die "no Java >= 17 found (Kafka 4.x needs it)"
  KAFKA_T0=$(now_us)
  make_dirs
  mkdir -p "$KAFKA_DATA"
  cid=$(kafka_cluster_id)
  render "$HERE/kafka/server.properties.in" \
    "KAFKA_PORT=$YIDI_KAFKA_PORT" "KAFKA_CONTROLLER_PORT=$YIDI_KAFKA_CONTROLLER_PORT" \
    "KAFKA_DATA_DIR=$KAFKA_DATA" >"$KAFKA_DIR/server.properties"
  rotate_log "$KAFKA_LOG"

  # Format only once: meta.properties marks formatted storage. Static quorum
  # (controller.quorum.voters), so no --standalone flag.
  if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
    "$java" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$cid" \
        -c "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1 9>&- \
      || { tail_log "$KAFKA_LOG"; die "formatting Kafka storage in $KAFKA_DATA failed"; }
    log "kafka storage formatted (cluster id $cid)"
  fi

  # shellcheck disable=SC2206  # KAFKA_HEAP_OPTS / KAFKA_OPTS are word lists on purpose
  local jvm=(
    ${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
    ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
    # slf4j-simple writes to stderr (-> kafka.log); add timestamps to its lines.
    -Dorg.slf4j.simpleLogger.showDateTime=true
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS"
    -Dkafka.logs.dir="$LOG_DIR"
    ${KAFKA_OPTS:-}
  )
  # setsid: own session, so Ctrl-C in the calling terminal/make does not kill the broker.
  # The wrapper writes its own pid and then execs java, so the pid file is java's pid.
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner bash
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID" \
    "$java" "${jvm[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    </dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
}

# Ready = the broker logged "Kafka Server started" (the line testcontainers waits for)
# and the client port accepts connections.
kafka_wait() {
  [[ -n $KAFKA_T0 ]] || return 0
  local timeout=${KAFKA_START_TIMEOUT:-90} deadline pid=""
  deadline=$(( KAFKA_T0 + timeout * 1000000 ))
  while :; do
    [[ -n $pid ]] || pid=$(cat "$KAFKA_PID" 2>/dev/null || true)
    if [[ -n $pid ]] && ! alive "$pid"; then
      tail_log "$KAFKA_LOG"; rm -f "$KAFKA_PID"
      die "kafka exited during startup (log: $KAFKA_LOG)"
    fi
    # (A running broker whose log was deleted since: its port alone.)
    if { [[ ! -f $KAFKA_LOG ]] || grep -q "Kafka Server started" "$KAFKA_LOG"; } && port_open "$YIDI_KAFKA_PORT"; then
      break
    fi
    if (( $(now_us) > deadline )); then
      tail_log "$KAFKA_LOG"
      # Stopped as `stop` does (SIGTERM, its grace, then SIGKILL), its pid file kept until it has
      # exited: dropped at once, a JVM slow to stop was left running where `make stop` saw none.
      kafka_stop
      die "kafka not ready after ${timeout}s (stopped it; log: $KAFKA_LOG)"
    fi
    sleep 0.2
  done
  log "kafka ready on 127.0.0.1:$YIDI_KAFKA_PORT ($(kafka_version)) in $(since "$KAFKA_T0")"
}

kafka_stop() {
  local pid timeout=${KAFKA_STOP_TIMEOUT:-30} t0
  if ! pid=$(kafka_pid); then
    rm -f "$KAFKA_PID"
    log "kafka not running"
    return 0
  fi
  t0=$(now_us)
  # SIGTERM runs the broker's shutdown hook (controlled shutdown, clean log close).
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_exit "$pid" "$timeout"; then
    log "kafka (pid $pid) still running after ${timeout}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_exit "$pid" 10 || die "kafka (pid $pid) survived SIGKILL"
  fi
  rm -f "$KAFKA_PID"
  log "kafka stopped in $(since "$t0")"
}

kafka_status() {
  local pid
  if pid=$(kafka_pid); then
    printf '%-9s running  pid %-7s 127.0.0.1:%s  (Kafka %s)\n' kafka "$pid" "$YIDI_KAFKA_PORT" "$(kafka_version)"
  else
    printf '%-9s stopped\n' kafka; return 1
  fi
}

# ---------------------------------------------------------------- postgres

PG_DIR="" PG_DATA="" PG_RUN="" PG_BIN=""

# Run a command as the postgres user when we are root (initdb/postgres refuse to run as
# root); from / so it never trips over a cwd that postgres may not read.
as_pg() {
  if (( EUID == 0 )); then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

# Work out where the cluster lives. Normally .local/pg. If the postgres user cannot reach
# .local (e.g. a checkout under /root, which is mode 700) or the socket path would exceed
# the 107-byte Unix limit, the cluster goes to /var/tmp/yidi-pg-<hash> and .local/pg
# becomes a symlink to it, so .local/pg is still the one place to look.
pg_paths() {
  local create=${1:-} alt
  if [[ ! -e $PG_LINK && -n $create ]]; then
    make_dirs
    if (( EUID == 0 )) && ! runuser -u postgres -- test -x "$YIDI_LOCAL" 2>/dev/null \
       || (( ${#PG_LINK} + 20 > 107 )); then
      alt="/var/tmp/yidi-pg-$(printf '%s' "$YIDI_ROOT" | sha256sum | cut -c1-12)"
      mkdir -p "$alt"
      ln -s "$alt" "$PG_LINK"
      log "postgres: the postgres user cannot use $PG_LINK directly; data lives in $alt (symlinked)"
    else
      mkdir -p "$PG_LINK"
    fi
  fi
  PG_DIR=$(readlink -f "$PG_LINK" 2>/dev/null || echo "$PG_LINK")
  PG_DATA="$PG_DIR/data"
  PG_RUN="$PG_DIR/run"
}

pg_running() {
  [[ -f $PG_DATA/postmaster.pid && -n $PG_BIN ]] || return 1
  pg_pid_file_stale && return 1
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# Whether postmaster.pid names a live process that is not this stack's postgres: left by a postmaster killed
# (a reboot, SIGKILL), its number taken since by another process. pg_ctl status called that
# running: start waited a minute and blamed Postgres, and stop sent the other process SIGINT (a
# review, session 49). Kafka's and Redis's pid files were checked so already (live_pid).
pg_pid_file_stale() {
  local pid cwd data
  pid=$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  # Our postmaster works in its data directory (it chdirs there): any other process, a postgres
  # of the system's or of another checkout included, is not ours. Unreadable: pg_ctl decides.
  cwd=$(readlink -f "/proc/$pid/cwd" 2>/dev/null) && [[ -n $cwd ]] || return 1
  data=$(cd "$PG_DATA" && pwd -P) || return 1
  [[ $cwd != "$data" ]]
}

pg_psql() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$YIDI_PG_PORT" -U postgres -d postgres
}

# Until the server accepts connections (pg_isready), for at most PG_READY_TIMEOUT seconds (60).
pg_wait_ready() {
  local limit=${PG_READY_TIMEOUT:-60} t0=$SECONDS
  until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$YIDI_PG_PORT" -t 2 >/dev/null 2>&1; do
    if (( SECONDS - t0 >= limit )); then
      tail_log "$PG_LOG"
      die "postgres (pid $1) runs but does not accept connections on 127.0.0.1:$YIDI_PG_PORT after ${limit}s (log: $PG_LOG)"
    fi
    sleep 0.2
  done
}

pg_start() {
  local t0 pid
  t0=$(now_us)
  pg_paths create
  PG_BIN=$(find_pg_bindir) || die "no PostgreSQL server binaries found for $PG_DATA (PG_VERSION $(cat "$PG_DATA/PG_VERSION" 2>/dev/null || echo '?')); install it or run: $0 reset"
  if pg_running; then
    pid=$(head -n1 "$PG_DATA/postmaster.pid")
    log "postgres already running (pid $pid) on 127.0.0.1:$YIDI_PG_PORT"
    # Running is not ready: a postmaster in crash recovery, still starting (one a start left when
    # interrupted) or stopped refuses connections or does not answer, and the tests or services
    # after this start would fail on their first query.
    pg_wait_ready "$pid"
    return 0
  fi
  port_open "$YIDI_PG_PORT" && die "127.0.0.1:$YIDI_PG_PORT is in use by $(port_holder "$YIDI_PG_PORT"), not this stack's PostgreSQL: stop it first"
  if pg_pid_file_stale; then
    # Postgres refuses to start beside a lock file whose pid is alive, whoever it is.
    log "postmaster.pid names pid $(head -n1 "$PG_DATA/postmaster.pid"), which is not this stack's postgres: a stale file, removed"
    rm -f "$PG_DATA/postmaster.pid"
  fi

  mkdir -p "$PG_RUN"
  if (( EUID == 0 )); then chown postgres:postgres "$PG_DIR" "$PG_RUN"; fi
  chmod 755 "$PG_DIR" "$PG_RUN"
  rotate_log "$PG_LOG"

  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    # Trust auth on loopback is fine for a private dev cluster; --no-locale (C) and UTF8
    # keep it independent of whatever LANG the machine or CI has.
    rm -rf "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --no-locale >>"$PG_LOG" 2>&1 9>&- \
      || { tail_log "$PG_LOG"; die "initdb failed"; }
    echo "include_if_exists = 'yidi.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
    log "postgres cluster initialised in $PG_DATA (PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'))"
  fi
  # Rewritten on every start so edits to the template take effect. wal_compression takes a
  # method (lz4) from PostgreSQL 15 on; before that only on/off (pglz).
  local major wal_compression=lz4
  major=$("$PG_BIN/postgres" --version | awk '{print $3}' | cut -d. -f1)
  (( major >= 15 )) || wal_compression=on
  render "$HERE/postgres/postgresql.conf.in" "PG_PORT=$YIDI_PG_PORT" "PG_RUN_DIR=$PG_RUN" \
    "PG_WAL_COMPRESSION=$wal_compression" | as_pg tee "$PG_DATA/yidi.conf" >/dev/null

  # No `pg_ctl -l`: that would open the log as the postgres user, who may not be allowed to
  # write in .local/log. Our shell opens it and the server inherits the descriptor.
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -t 60 start >>"$PG_LOG" 2>&1 9>&- \
    || { tail_log "$PG_LOG"; die "postgres did not start (log: $PG_LOG)"; }

  # The application's role and database, created once.
  pg_psql <<SQL >/dev/null || { tail_log "$PG_LOG"; die "could not create role/database $YIDI_PG_USER"; }
SELECT 'CREATE ROLE $YIDI_PG_USER LOGIN SUPERUSER'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$YIDI_PG_USER')\gexec
SELECT 'CREATE DATABASE $YIDI_PG_DB OWNER $YIDI_PG_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$YIDI_PG_DB')\gexec
SQL
  log "postgres ready on 127.0.0.1:$YIDI_PG_PORT (db $YIDI_PG_DB, user $YIDI_PG_USER) in $(since "$t0")"
}

pg_stop() {
  local t0
  t0=$(now_us)
  pg_paths
  PG_BIN=$(find_pg_bindir 2>/dev/null) || PG_BIN=""
  if ! pg_running; then log "postgres not running"; return 0; fi
  # fast = roll back open transactions and shut down cleanly (no crash recovery next time).
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
    || { tail_log "$PG_LOG"; die "postgres did not stop"; }
  log "postgres stopped in $(since "$t0")"
}

pg_status() {
  pg_paths
  PG_BIN=$(find_pg_bindir 2>/dev/null) || PG_BIN=""
  if pg_running; then
    printf '%-9s running  pid %-7s 127.0.0.1:%s  (PostgreSQL %s, db %s)\n' postgres \
      "$(head -n1 "$PG_DATA/postmaster.pid")" "$YIDI_PG_PORT" "$(cat "$PG_DATA/PG_VERSION")" "$YIDI_PG_DB"
  else
    printf '%-9s stopped\n' postgres; return 1
  fi
}

# ---------------------------------------------------------------- redis

redis_pid() { live_pid "$REDIS_PID" redis-server; }

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$YIDI_REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_start() {
  local t0 pid i
  t0=$(now_us)
  if pid=$(redis_pid); then
    log "redis already running (pid $pid) on 127.0.0.1:$YIDI_REDIS_PORT"
    return 0
  fi
  port_open "$YIDI_REDIS_PORT" && die "127.0.0.1:$YIDI_REDIS_PORT is in use by $(port_holder "$YIDI_REDIS_PORT"), not this stack's Redis: stop it first"
  make_dirs
  mkdir -p "$REDIS_DIR"
  rotate_log "$REDIS_LOG"
  # A cache/lock store for tests and local runs: no RDB snapshots, no AOF.
  redis-server --port "$YIDI_REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --dir "$REDIS_DIR" --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
    --save "" --appendonly no 9>&- \
    || { tail_log "$REDIS_LOG"; die "redis-server failed to start"; }
  for (( i = 0; i < 100; i++ )); do redis_ping && break; sleep 0.1; done
  redis_ping || { tail_log "$REDIS_LOG"; die "redis not answering on 127.0.0.1:$YIDI_REDIS_PORT"; }
  log "redis ready on 127.0.0.1:$YIDI_REDIS_PORT ($(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')) in $(since "$t0")"
}

redis_stop() {
  local pid t0
  t0=$(now_us)
  if ! pid=$(redis_pid); then rm -f "$REDIS_PID"; log "redis not running"; return 0; fi
  redis-cli -h 127.0.0.1 -p "$YIDI_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  if ! wait_exit "$pid" 10; then
    log "redis (pid $pid) ignored SHUTDOWN: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_exit "$pid" 5 || true
  fi
  rm -f "$REDIS_PID"
  log "redis stopped in $(since "$t0")"
}

redis_status() {
  local pid
  if pid=$(redis_pid); then
    printf '%-9s running  pid %-7s 127.0.0.1:%s\n' redis "$pid" "$YIDI_REDIS_PORT"
  else
    printf '%-9s stopped\n' redis; return 1
  fi
}

# ---------------------------------------------------------------- commands

cmd_install() {
  local t0; t0=$(now_us)
  parse_services "$@"
  take_lock
  install_for "${SVCS[@]}"
  log "install: everything present ($(since "$t0"))"
}

cmd_start() {
  local t0 svcs
  t0=$(now_us)
  parse_services "$@"; svcs=("${SVCS[@]}")
  take_lock
  if [[ -n ${STACK_STARTED_FILE:-} ]]; then
    # The servers this start launches, decided under the lock (make test stops these at its end):
    # decided from a status taken without it, a make test beside a make run still starting the
    # stack counted that run's servers as its own and stopped them under its services (a review,
    # session 49).
    local s
    for s in "${svcs[@]}"; do
      # In a subshell: a status that cannot tell (nothing installed yet) may die; then it starts.
      ( case $s in kafka) kafka_status ;; postgres) pg_status ;; redis) redis_status ;; esac ) >/dev/null 2>&1 \
        || echo "$s"
    done >>"$STACK_STARTED_FILE"
  fi
  install_for "${svcs[@]}"
  # Kafka's JVM boots in the background while postgres and redis start.
  if [[ " ${svcs[*]} " == *" kafka "* ]]; then kafka_launch; fi
  if [[ " ${svcs[*]} " == *" postgres "* ]]; then pg_start; fi
  if [[ " ${svcs[*]} " == *" redis "* ]]; then redis_start; fi
  if [[ " ${svcs[*]} " == *" kafka "* ]]; then kafka_wait; fi
  log "up: ${svcs[*]} ($(since "$t0"))"
}

cmd_stop() {
  local svcs s
  parse_services "$@"; svcs=("${SVCS[@]}")
  take_lock
  # Each in a subshell (their failures die): one that does not stop leaves the others to be
  # stopped, then the command fails naming it (a review, session 49: Redis was left running).
  local failed=()
  for s in "${svcs[@]}"; do
    ( case $s in kafka) kafka_stop ;; postgres) pg_stop ;; redis) redis_stop ;; esac ) || failed+=("$s")
  done
  (( ${#failed[@]} == 0 )) || die "did not stop: ${failed[*]}"
}

cmd_status() {
  local rc=0 s
  parse_services "$@"
  for s in "${SVCS[@]}"; do
    case $s in kafka) kafka_status || rc=3 ;; postgres) pg_status || rc=3 ;; redis) redis_status || rc=3 ;; esac
  done
  return "$rc"
}

cmd_logs() {
  local follow=0 words=() files=() s
  for s in "$@"; do [[ $s == -f ]] && follow=1 || words+=("$s"); done
  parse_services "${words[@]}"
  for s in "${SVCS[@]}"; do
    case $s in kafka) files+=("$KAFKA_LOG") ;; postgres) files+=("$PG_LOG") ;; redis) files+=("$REDIS_LOG") ;; esac
  done
  if (( follow )); then exec tail -n "${TAIL_LINES:-40}" -F "${files[@]}"; fi
  for s in "${files[@]}"; do
    [[ -f $s ]] || { echo "==> $s (missing) <=="; continue; }
    echo "==> $s <=="
    tail -n "${TAIL_LINES:-40}" "$s"
  done
}

cmd_reset() {
  cmd_stop all
  pg_paths
  # Data only: downloaded jars (.local/kafka/libs) and logs are kept.
  if [[ -L $PG_LINK ]]; then rm -rf "$PG_DIR"; fi
  rm -rf "$PG_LINK" "$KAFKA_DATA" "$KAFKA_DIR/cluster.id" "$KAFKA_DIR/server.properties" "$REDIS_DIR"
  log "reset: deleted Kafka, PostgreSQL and Redis data under $YIDI_LOCAL"
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;/^# shellcheck/d;s/^# \{0,1\}//;p}' "$0" >&2; }

main() {
  local cmd=${1:-}
  (( $# )) && shift
  case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    restart) cmd_stop "$@"; cmd_start "$@" ;;
    status) cmd_status "$@" ;;
    logs) cmd_logs "$@" ;;
    reset) (( $# == 0 )) || die "reset takes no argument: it stops all three servers and deletes all their data"
           cmd_reset ;;
    packages) (( $# )) || die "packages takes the Debian packages to install"
              take_lock; apt_install "$@" ;;
    check-jars) make_dirs; check_kafka_jars "${1:-$KAFKA_LIBS}"
                log "the Kafka jars in ${1:-$KAFKA_LIBS} are those $KAFKA_JARS_PINNED pins" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
