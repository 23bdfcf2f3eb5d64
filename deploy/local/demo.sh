#!/usr/bin/env bash
# Send the demo settlements (deploy/demo/requests) through yidi-gateway and judge them, for `make
# run`: every request answered, and none refused but request 05 (NOT_FILED until Ma Jun's demo
# filing is approved: deploy/demo/filing). Exit 1, saying why, otherwise: "Yidi is running" must
# mean settlements went through.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$HERE/env.sh"
DEMO="$YIDI_ROOT/deploy/demo/requests"
OUT="$YIDI_LOCAL/log/demo-answers.txt"
mkdir -p "$YIDI_LOCAL/log"

rc=0
"$YIDI_ROOT/.venv/bin/yidi-gateway" --summary send "$DEMO"/*.json | tee "$OUT" || rc=$?
case $rc in
  0|1) ;;
  2) echo "make run: Kafka did not acknowledge a demo request; is the broker up (make stack-status)?" >&2; exit 1 ;;
  3) echo "make run: a demo request got no answer; see .local/log/ and make services-status" >&2; exit 1 ;;
  *) echo "make run: yidi-gateway failed (exit $rc; its message is above)" >&2; exit 1 ;;
esac
answered=$(grep -c "" "$OUT" || true)
if (( answered < $(find "$DEMO" -name '*.json' | wc -l) )); then
  echo "make run: $answered answers for $(find "$DEMO" -name '*.json' | wc -l) demo requests (see $OUT)" >&2; exit 1
fi
# The answers are printed in the requests' order (the glob's): request 05's is the line of its file's
# place. Request 06 is the same person's (R5), so the person alone does not tell them apart.
expected=0
n=0
for file in "$DEMO"/*.json; do
  n=$((n + 1))
  [[ $(basename "$file") == 05-* ]] && expected=$n
done
unexpected=$(grep -n ": REFUSED " "$OUT" | grep -v "^$expected:[^:]*: REFUSED NOT_FILED: " || true)
if [[ -n $unexpected ]]; then
  echo "make run: demo settlements refused that should settle (only request 05 may be, NOT_FILED):" >&2
  grep ": REFUSED " "$OUT" >&2
  echo "see .local/log/ (is the reference data loaded? .venv/bin/yidi-load deploy/demo/refdata.json)" >&2
  exit 1
fi
