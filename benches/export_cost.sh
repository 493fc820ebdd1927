#!/usr/bin/env bash
# The cost of OTLP export in instructions (issue 14), where wall-clock ratios on a shared 2-core
# box swing by ±20 %: the release server runs under callgrind twice on the same data (a tenant
# with 50 users, on tmpfs), once without export and once exporting to the OTLP receiver of
# tests/peers/otlp in its discarding mode; after a warm-up the counters are zeroed, wrk reads
# `GET /t/bench/api/v1/users` for 30 s, the export threads are given time to post what those
# requests made, and the instructions of every thread of the server are divided by the requests
# answered. Prints both and their ratio (the exporting server's throughput, were instructions
# all that counted; the receiver's own work is not in it).
#
# Usage: benches/export_cost.sh   (after benches/load.sh, or with the release binary built)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowgate/target}"
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/flowgate"
. benches/lib.sh
PYTHON="${XDG_CACHE_HOME:-$HOME/.cache}/flowgate/tools/venv/bin/python3"
URL=https://127.0.0.1:18450
data=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$data"' EXIT

# Checkpoints every 5 s: a server's first checkpoint re-walks every event since the last one
# signed (what it has not appended itself), the warm-up's; with the default minute it fell in
# the counted 30 s or not by chance, and weighed more per request in the slower exporting run
# (15k instructions per read of a 78k difference, in one run).
serve() { # extra environment…; runs the server (under $WRAP) and waits for it
  env FLOWGATE_DATA_DIR="$data" FLOWGATE_LISTEN=127.0.0.1:18450 FLOWGATE_OPERATOR_TOKEN="$TOKEN" \
    FLOWGATE_RATE_LIMIT_PRINCIPAL=1000000 FLOWGATE_RATE_LIMIT_TENANT=1000000 \
    FLOWGATE_RATE_LIMIT_SOURCE=1000000 FLOWGATE_AUDIT_CHECKPOINT_INTERVAL_MS=5000 \
    "$@" ${WRAP:-} "$BIN" serve >>"$data/server.log" 2>&1 &
  SERVER=$!
  healthy "$URL" 120 && return
  echo "the server did not start; see $data/server.log" >&2; exit 1
}

WRAP="" serve
key=$(onboard "$URL")
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

OTLP_RECEIVER_DISCARD=1 "$PYTHON" tests/peers/otlp/receiver.py "$data/otlp" >"$data/otlp.out" &
receiver=$!
for _ in $(seq 1 50); do [ -s "$data/otlp.out" ] && break; sleep 0.1; done
receiver_port=$(python3 -c 'import sys,json;print(json.load(sys.stdin)["port"])' <"$data/otlp.out")

per_request() { # label extra-environment…; prints instructions per request
  local label=$1; shift
  WRAP="valgrind --tool=callgrind --callgrind-out-file=$data/$label.%p" serve "$@"
  wrk -t1 -c4 -d10s -H "Authorization: Bearer $key" "$URL/t/bench/api/v1/users" >/dev/null
  callgrind_control -z "$SERVER" >/dev/null 2>&1
  local answered
  answered=$(wrk -t1 -c4 -d30s -H "Authorization: Bearer $key" "$URL/t/bench/api/v1/users" \
             | awk '/requests in/ {print $1}')
  sleep 7  # longer than the span batches' delay: what these requests made is posted
  callgrind_control -d "$SERVER" >/dev/null 2>&1
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  # The dump after zeroing is the first one (<file>.<pid>.1); `totals:` sums every thread.
  awk -v n="$answered" '/^totals:/ {print int($2 / n)}' "$data/$label".*.1
}

plain=$(per_request plain)
exporting=$(per_request exporting FLOWGATE_OTLP_ENDPOINT="http://127.0.0.1:$receiver_port")
kill "$receiver" 2>/dev/null || true
python3 - "$plain" "$exporting" <<'PY'
import sys
plain, exporting = map(int, sys.argv[1:])
print(f"instructions per secured read: {plain} without export, {exporting} exporting over OTLP"
      f" | exporting/not (as throughput) {plain / exporting:6.1%}")
PY
