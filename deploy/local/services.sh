#!/usr/bin/env bash
# Run the four Yidi services in the background on the local stack, each its own process.
#   deploy/local/services.sh start|stop|restart|status [filing|eligibility|pricing|clearing ...]
# Logs: .local/log/<service>.log; pid files: .local/run/<service>.pid.
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
pid_of() { [[ -f $RUN/$1.pid ]] && cat "$RUN/$1.pid" || true; }
svc_alive() { local p; p=$(pid_of "$1"); [[ -n $p ]] && alive "$p"; }
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
up() { metrics "${PORT[$1]}" | grep -Eq "^yidi_service_up\{service=\"$1\"\} 1(\.0)?$"; }

start_one() {
  local svc=$1
  if svc_alive "$svc"; then say "$svc already running (pid $(pid_of "$svc"))"; return; fi
  # A plain background command, so $! is the service's own pid (setsid does not fork here:
  # a background job of a script is not a process-group leader).
  YIDI_METRICS_PORT=${PORT[$svc]} nohup setsid "$PY" -m "services.$svc" </dev/null >>"$LOG/$svc.log" 2>&1 &
  echo $! >"$RUN/$svc.pid"
}

wait_up() {
  local svc=$1 deadline=$((SECONDS + 90))
  until up "$svc"; do
    if ! svc_alive "$svc"; then say "$svc exited; last lines of $LOG/$svc.log:"; tail -n 30 "$LOG/$svc.log" >&2; return 1; fi
    if ((SECONDS > deadline)); then say "$svc not ready after 90s; see $LOG/$svc.log"; return 1; fi
    sleep 0.3
  done
  say "$svc ready (pid $(pid_of "$svc"), metrics http://127.0.0.1:${PORT[$svc]}/metrics)"
}

stop_one() {
  local svc=$1 p
  p=$(pid_of "$svc")
  if [[ -z $p ]] || ! alive "$p"; then rm -f "$RUN/$svc.pid"; return; fi
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 150); do alive "$p" || break; sleep 0.1; done
  if alive "$p"; then say "$svc did not stop in 15s, killing"; kill -KILL "$p" 2>/dev/null || true; fi
  rm -f "$RUN/$svc.pid"
  say "$svc stopped"
}

cmd=${1:-status}; shift || true
targets=("$@"); ((${#targets[@]})) || targets=("${ALL[@]}")
case $cmd in
  start)
    for s in "${targets[@]}"; do start_one "$s"; done
    for s in "${targets[@]}"; do wait_up "$s"; done ;;
  stop) for s in "${targets[@]}"; do stop_one "$s"; done ;;
  restart) for s in "${targets[@]}"; do stop_one "$s"; done; "$0" start "${targets[@]}" ;;
  status)
    for s in "${targets[@]}"; do
      if svc_alive "$s"; then state=running; up "$s" && state="running, ready" ; else state=stopped; fi
      printf '%-12s %-16s %s\n' "$s" "$state" "${PORT[$s]}"
    done ;;
  *) echo "usage: $0 start|stop|restart|status [service ...]" >&2; exit 2 ;;
esac
