#!/usr/bin/env bash
# Run the four Yidi services in the background on the local stack, each its own process.
#   deploy/local/services.sh start|stop|restart|status [filing|eligibility|pricing|clearing ...]
# A further instance of a service is <service>@<n> (n = 2..9), e.g. `start pricing@2`: its own
# YIDI_INSTANCE (<instance>-<n>) and metrics port (the service's + 100 × (n − 1): pricing@2 on 9203).
# stop, status and restart without names cover every instance started.
# Logs: .local/log/<name>.log; pid files: .local/run/<name>.pid.
# Readiness: a service is up when its /metrics says yidi_service_up 1 (its stages run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=common.sh
source "$HERE/common.sh"
eval "$(bash "$HERE/env.sh")"

ALL=(filing eligibility pricing clearing)
declare -A PORT=([filing]=9101 [eligibility]=9102 [pricing]=9103 [clearing]=9104)
RUN="$YIDI_LOCAL/run"
LOG="$YIDI_LOCAL/log"
PY="$YIDI_ROOT/.venv/bin/python"
mkdir -p "$RUN" "$LOG"
cd "$YIDI_ROOT"

say() { printf 'services: %s\n' "$*" >&2; }
# The pid of a service's pid file when that process is alive and is that service: a pid file left
# by a machine's restart may name a pid another process has since, which stop must not kill.
pid_of() { live_pid "$RUN/$1.pid" "-m services.$(service_of "$1")" || true; }
svc_alive() { [[ -n $(pid_of "$1") ]]; }
# GET /metrics of a local port: curl when the machine has it, else bash's /dev/tcp (a fresh
# machine may have no curl).
metrics() {
  if command -v curl >/dev/null; then curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null; return; fi
  local fd
  exec {fd}<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&"$fd"
  timeout 2 cat <&"$fd"
  exec {fd}>&-
}
service_of() { printf '%s' "${1%@*}"; }
number_of() { if [[ $1 == *@* ]]; then printf '%s' "${1#*@}"; else printf 1; fi; }
port_of() { printf '%s' $(( ${PORT[$(service_of "$1")]} + 100 * ($(number_of "$1") - 1) )); }
valid() {
  local svc n
  svc=$(service_of "$1"); n=$(number_of "$1")
  [[ -n ${PORT[$svc]:-} && $n =~ ^[1-9]$ && ( $1 != *@* || $n -ge 2 ) ]] \
    || { say "unknown service $1 (filing, eligibility, pricing, clearing, or one of them @2..@9)"; exit 2; }
}
# The body read whole first: under pipefail, grep -q leaving early could fail curl (SIGPIPE) and so
# the check, and status said "running" of a ready service.
up() {
  local body
  body=$(metrics "$(port_of "$1")") || return 1
  grep -Eq "^yidi_service_up\{service=\"$(service_of "$1")\"\} 1(\.0)?$" <<<"$body"
}

start_one() {
  local svc=$1
  if svc_alive "$svc"; then say "$svc already running (pid $(pid_of "$svc"))"; return; fi
  # A process holding the metrics port (an orphan of an earlier run) would answer the readiness
  # check for this one, which dies on the port.
  if port_open "$(port_of "$svc")"; then
    say "127.0.0.1:$(port_of "$svc") (${svc}'s metrics) is in use by $(port_holder "$(port_of "$svc")"): stop it first"; return 1
  fi
  # A plain background command, so $! is the service's own pid (setsid does not fork here:
  # a background job of a script is not a process-group leader).
  local -a extra=()
  if (( $(number_of "$svc") > 1 )); then  # two processes of one instance name would fence each other
    extra=("YIDI_INSTANCE=${YIDI_INSTANCE:-$("$PY" -c 'from yidi.platform.settings import Settings; print(Settings().instance)')}-$(number_of "$svc")")
  fi
  env "${extra[@]}" YIDI_METRICS_PORT="$(port_of "$svc")" \
    nohup setsid "$PY" -m "services.$(service_of "$svc")" </dev/null >>"$LOG/$svc.log" 2>&1 9>&- &
  echo $! >"$RUN/$svc.pid"
}

wait_up() {
  local svc=$1 deadline=$((SECONDS + 90))
  while true; do
    if ! svc_alive "$svc"; then say "$svc exited; last lines of $LOG/$svc.log:"; tail -n 30 "$LOG/$svc.log" >&2; return 1; fi
    up "$svc" && break
    if ((SECONDS > deadline)); then say "$svc not ready after 90s; see $LOG/$svc.log"; return 1; fi
    sleep 0.3
  done
  say "$svc ready (pid $(pid_of "$svc"), metrics http://127.0.0.1:$(port_of "$svc")/metrics)"
}

stop_one() {
  local svc=$1 p
  p=$(pid_of "$svc")
  if [[ -z $p ]]; then rm -f "$RUN/$svc.pid"; return; fi
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 150); do alive "$p" || break; sleep 0.1; done
  if alive "$p"; then say "$svc did not stop in 15s, killing"; kill -KILL "$p" 2>/dev/null || true; fi
  rm -f "$RUN/$svc.pid"
  say "$svc stopped"
}

cmd=${1:-status}; shift || true
if [[ $cmd != status ]]; then
  # One start or stop at a time: two starts at once both found a service stopped and its port free,
  # and one of the two processes ran on with no pid file, which `make stop` never stopped (the
  # install review, session 49). Taken before the instances are listed (a start's pid file written
  # meanwhile is seen), and a start gives it back once its processes are launched, before it waits
  # for them to be ready. The services do not inherit it (9>&- above).
  exec 9>"$RUN/.services.lock"
  flock -w 300 9 || { say "timed out waiting for another services.sh start or stop"; exit 1; }
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=("${ALL[@]}")
  if [[ $cmd == stop || $cmd == status || $cmd == restart ]]; then  # and every further instance started
    for f in "$RUN"/*@*.pid; do [[ -e $f ]] && targets+=("$(basename "$f" .pid)"); done
  fi
fi
for s in "${targets[@]}"; do valid "$s"; done
case $cmd in
  start)
    # The others start (and are waited for) when one cannot: the exit status then says so.
    failed=0; begun=()
    for s in "${targets[@]}"; do if start_one "$s"; then begun+=("$s"); else failed=1; fi; done
    exec 9>&-  # launched, pid files written: a stop need not wait for them to be ready
    for s in "${begun[@]}"; do wait_up "$s" || failed=1; done
    exit "$failed" ;;
  stop) for s in "${targets[@]}"; do stop_one "$s"; done ;;
  restart) for s in "${targets[@]}"; do stop_one "$s"; done; exec 9>&-; "$0" start "${targets[@]}" ;;
  status)
    for s in "${targets[@]}"; do
      if svc_alive "$s"; then state=running; up "$s" && state="running, ready" ; else state=stopped; fi
      printf '%-12s %-16s %s\n' "$s" "$state" "$(port_of "$s")"
    done ;;
  *) echo "usage: $0 start|stop|restart|status [service ...]" >&2; exit 2 ;;
esac
