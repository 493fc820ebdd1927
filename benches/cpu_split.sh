#!/usr/bin/env bash
# Where the CPU of a tenant read goes on PostgreSQL: the server's and PostgreSQL's CPU time per
# request of the authorized, audited read of a 50-user page and of the same read on the
# `insecure-bench` build (no authentication, decision or audit), one after the other on one
# fresh database each, from /proc of the server and of every postgres process over a wrk run.
# With PERF=1 it also records the secure server with perf (benches/results/perf-secure.data).
#
# Usage: benches/cpu_split.sh [seconds, default 8]   (after benches/load.sh built the binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-8}"
. benches/lib.sh
out=benches/results
[ -x "$out/flowgate-secure" ] && [ -x "$out/flowgate-insecure" ] \
  || { echo "run benches/load.sh first: it builds $out/flowgate-{secure,insecure}" >&2; exit 1; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

ticks() { # pids… → their user + system CPU ticks
  local total=0
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

measure() { # binary port label
  local db="cpu_split_$$_$2" dir pid key perf_pid="" before_server before_pg rate
  dir=$(mktemp -d)
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
  env FLOWGATE_DATA_DIR="$dir" FLOWGATE_LISTEN="127.0.0.1:$2" FLOWGATE_OPERATOR_TOKEN="$TOKEN" \
      FLOWGATE_INSECURE_BENCH=1 FLOWGATE_RATE_LIMIT_PRINCIPAL=1000000 \
      FLOWGATE_RATE_LIMIT_TENANT=1000000 FLOWGATE_RATE_LIMIT_SOURCE=1000000 \
      FLOWGATE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
      "$1" serve >>"$dir/server.log" 2>&1 &
  pid=$!
  healthy "https://127.0.0.1:$2" || { echo "the server did not start; see $dir/server.log" >&2; exit 1; }
  key=$(onboard "https://127.0.0.1:$2")
  local url="https://127.0.0.1:$2/t/bench/api/v1/users"
  wrk -t2 -c32 -d3s -H "Authorization: Bearer $key" "$url" >/dev/null  # warm-up
  before_server=$(ticks "$pid")
  before_pg=$(ticks $(pgrep -u postgres postgres))
  if [ "${PERF:-0}" = 1 ] && [ "$3" = secure ]; then
    perf record -F 499 -g -p "$pid" -o "$out/perf-secure.data" -- sleep "$SECONDS_RUN" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  rate=$(wrk -t2 -c32 -d"${SECONDS_RUN}s" -H "Authorization: Bearer $key" "$url" | awk '/^Requests\/sec/ {print $2}')
  [ -n "$perf_pid" ] && wait "$perf_pid"
  python3 -c "
rate, seconds, tick = float('$rate'), $SECONDS_RUN, $TICK_US
requests = rate * seconds
server = ($(ticks "$pid") - $before_server) * tick / requests
pg = ($(ticks $(pgrep -u postgres postgres)) - $before_pg) * tick / requests
print(f'$3: {rate:,.0f} req/s, server {server:.0f} µs/request, PostgreSQL {pg:.0f} µs/request')"
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db WITH (FORCE)"
  rm -rf "$dir"
}

measure "$out/flowgate-secure" 18543 secure
measure "$out/flowgate-insecure" 18544 insecure
