#!/usr/bin/env bash
# Latency of reading a secret through the API, with the local key store and with OpenBao.
#
# Starts two release servers on SQLite, each with a tenant "bench" holding the secret
# "erp-token": one with the local key store (the embedded default), one with
# FLOWGATE_KEYSTORE=vault against an OpenBao dev server on a free loopback port (KV v2 at
# `secret/`, as the dev server mounts it; Flowgate mounts `transit/` itself when it is missing).
# It then drives wrk --latency over TLS with keep-alive, with the tenant admin's API key, against
#   1. GET /t/bench/api/v1/secrets/erp-token/value   the value (authentication, Cedar decision,
#      metadata read, key-store read — a KV v2 read over HTTP with OpenBao — and one audit event)
#   2. GET /t/bench/api/v1/secrets                   the list (names and versions, no value, no
#      key-store access; audited as well: every call is, reads through the group-commit writer)
#   3. GET /healthz                                  the floor: TLS + HTTP + middleware
# on both servers, in alternating rounds (so that a machine that speeds up or slows down during
# the run affects all alike), and prints the median over the rounds of each scenario's p50, p90
# and p99 latency and requests per second, the value read's cost over the list, and the audit
# events the rounds added beside the responses wrk counted (one event per call).
#
# Usage: benches/secrets.sh [seconds per round, default 5] [connections, default 8]
#        [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-5}"
CONNECTIONS="${2:-8}"
ROUNDS="${3:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowgate/release}"
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
BAO_DIR="$HOME/.cache/flowgate/tools/venv/bin"  # where scripts/test installs OpenBao's `bao`
command -v bao >/dev/null || PATH="$PATH:$BAO_DIR"
command -v bao >/dev/null || { echo "no \`bao\` on PATH or in $BAO_DIR (scripts/test installs it)" >&2; exit 1; }
# The servers refuse unknown FLOWGATE_* variables, and this run sets its own.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^FLOWGATE_' || true)

work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)…" >&2
cargo build --release --quiet
# A copy: a build started elsewhere during the run must not swap the binary under the servers.
cp "$CARGO_TARGET_DIR/release/flowgate" "$work/flowgate"

# Three free loopback ports: OpenBao's, whose next one (its cluster listener) must be free as
# well, and the two servers'.
read -r BAO_PORT LOCAL_PORT VAULT_PORT < <(python3 - <<'PY'
import socket
held = []
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); held.append(s); return s.getsockname()[1]
while True:
    bao = free()
    try:
        s = socket.socket(); s.bind(("127.0.0.1", bao + 1)); held.append(s); break
    except OSError:
        pass
print(bao, free(), free())
PY
)
. benches/lib.sh
BAO_TOKEN="bench-root-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
BAO_ADDR="http://127.0.0.1:$BAO_PORT"

wait_for() { # url pid log: until the url answers 2xx, or the process dies
  for _ in $(seq 1 150); do
    curl -skf -o /dev/null "$1" && return
    kill -0 "$2" 2>/dev/null || { echo "exited while starting; see $3:" >&2; tail -n 20 "$3" >&2; exit 1; }
    sleep 0.1
  done
  echo "did not answer $1; see $3" >&2; exit 1
}

# OpenBao in memory; its own HOME, so that the dev server's token helper leaves ~/.vault-token be.
mkdir -p "$work/bao-home"
HOME="$work/bao-home" bao server -dev -dev-root-token-id="$BAO_TOKEN" \
  -dev-listen-address="127.0.0.1:$BAO_PORT" >"$work/bao.log" 2>&1 &
pids+=($!)
wait_for "$BAO_ADDR/v1/sys/health" "$!" "$work/bao.log"

start() { # name port [VAR=value…]: starts a server, its data in $work/name
  local name=$1 port=$2
  shift 2
  mkdir -p "$work/$name"
  env FLOWGATE_DATA_DIR="$work/$name" FLOWGATE_LISTEN="127.0.0.1:$port" FLOWGATE_OPERATOR_TOKEN="$TOKEN" \
    FLOWGATE_RATE_LIMIT_PRINCIPAL=1000000 FLOWGATE_RATE_LIMIT_TENANT=1000000 \
    FLOWGATE_RATE_LIMIT_SOURCE=1000000 "$@" \
    "$work/flowgate" serve >"$work/$name/server.log" 2>&1 &
  pids+=($!)
  wait_for "https://127.0.0.1:$port/healthz" "$!" "$work/$name/server.log"
}

start local "$LOCAL_PORT"
start vault "$VAULT_PORT" FLOWGATE_KEYSTORE=vault FLOWGATE_VAULT_ADDR="$BAO_ADDR" FLOWGATE_VAULT_TOKEN="$BAO_TOKEN"

SECRET_VALUE="erp-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
json() { python3 -c "import sys,json;print(json.load(sys.stdin)$1)"; }

setup() { # port expected_backend; prints the admin key of a new tenant "bench" holding erp-token
  local base="https://127.0.0.1:$1" key backend value
  key=$(curl -skf -X POST "$base/api/v1/platform/tenants" -H "Authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d '{"slug":"bench"}' | json '["admin_api_key"]')
  curl -skf -o /dev/null -X POST "$base/t/bench/api/v1/secrets" -H "Authorization: Bearer $key" \
    -H 'content-type: application/json' -d "{\"name\":\"erp-token\",\"value\":\"$SECRET_VALUE\"}"
  # What is measured must be what it says: the value comes back, from the key store named.
  value=$(curl -skf "$base/t/bench/api/v1/secrets/erp-token/value" -H "Authorization: Bearer $key" | json '["value"]')
  [ "$value" = "$SECRET_VALUE" ] || { echo "port $1: the secret read back is not the one written" >&2; exit 1; }
  backend=$(curl -skf "$base/t/bench/api/v1/encryption-key" -H "Authorization: Bearer $key" | json '["backend"]')
  [ "$backend" = "$2" ] || { echo "port $1: key store is '$backend', not '$2'" >&2; exit 1; }
  echo "$key"
}
LOCAL_KEY=$(setup "$LOCAL_PORT" local)
VAULT_KEY=$(setup "$VAULT_PORT" vault)
# …and with OpenBao the value is in its KV v2, not in the server's data directory.
curl -sf -X LIST "$BAO_ADDR/v1/secret/metadata/flowgate/tenants/bench/secret-value" \
  -H "X-Vault-Token: $BAO_TOKEN" | json '["data"]["keys"]' | grep -q . \
  || { echo "the secret value is not in OpenBao's KV" >&2; exit 1; }
[ ! -e "$work/vault/keystore" ] || { echo "the OpenBao server made a local key store" >&2; exit 1; }

# Scenarios, in the order of each round: label, port, path, key.
scenarios=(
  "value local|$LOCAL_PORT|/t/bench/api/v1/secrets/erp-token/value|$LOCAL_KEY"
  "value openbao|$VAULT_PORT|/t/bench/api/v1/secrets/erp-token/value|$VAULT_KEY"
  "list local|$LOCAL_PORT|/t/bench/api/v1/secrets|$LOCAL_KEY"
  "list openbao|$VAULT_PORT|/t/bench/api/v1/secrets|$VAULT_KEY"
  "healthz local|$LOCAL_PORT|/healthz|"
  "healthz openbao|$VAULT_PORT|/healthz|"
)

measure() { # seconds port path key: prints "p50 p90 p99 (µs) req/s non-2xx socket-errors requests"
  local header=()
  [ -n "$4" ] && header=(-H "Authorization: Bearer $4")
  wrk -t2 -c"$CONNECTIONS" -d"$1s" --latency "${header[@]}" "https://127.0.0.1:$2$3" | awk '
    function us(v) {  # wrk prints 850.00us, 1.23ms, 1.02s, 2.00m
      if (v ~ /us$/) return v + 0
      if (v ~ /ms$/) return v * 1000
      if (v ~ /m$/)  return v * 60e6
      if (v ~ /s$/)  return v * 1e6
      return v + 0
    }
    /Latency Distribution/ { dist = 1 }
    dist && $1 == "50%" { p50 = us($2) }
    dist && $1 == "90%" { p90 = us($2) }
    dist && $1 == "99%" { p99 = us($2) }
    /Requests\/sec/ { rps = $2 }
    $2 == "requests" && $3 == "in" { total = $1 }
    /Non-2xx or 3xx responses/ { bad = $NF }
    /Socket errors/ { gsub(/,/, ""); errors = $4 + $6 + $8 + $10 }
    END { printf "%.1f %.1f %.1f %s %d %d %d\n", p50, p90, p99, rps, bad, errors, total }'
}

echo "warming up…" >&2
for s in "${scenarios[@]}"; do
  IFS='|' read -r _ port path key <<<"$s"
  measure 1 "$port" "$path" "$key" >/dev/null
done
audit_counts() { # tenant database: prints its number of secret.read and secret.list audit events
  python3 - "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(*(db.execute("SELECT count(*) FROM audit_events WHERE action = ?", (a,)).fetchone()[0]
        for a in ("secret.read", "secret.list")))
PY
}
# The tenants' audit trails (SQLite: <data>/tenants/bench.db), counted before and after the rounds.
LOCAL_DB="$work/local/tenants/bench.db"
VAULT_DB="$work/vault/tenants/bench.db"
audit_before="$(audit_counts "$LOCAL_DB") $(audit_counts "$VAULT_DB")"
echo "wrk --latency: $ROUNDS alternating rounds of ${DURATION}s, $CONNECTIONS connections, 2 threads, TLS with keep-alive" >&2
results="$work/results"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for s in "${scenarios[@]}"; do
    IFS='|' read -r label port path key <<<"$s"
    line=$(measure "$DURATION" "$port" "$path" "$key")
    echo "$round|$label|$line" >>"$results"
    echo "  round $round  $label: $line" >&2
  done
done

audit_after="$(audit_counts "$LOCAL_DB") $(audit_counts "$VAULT_DB")"

python3 - "$results" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$(nproc)" "$audit_before" "$audit_after" <<'PY'
import statistics, sys
path, rounds, duration, connections, cores, before, after = sys.argv[1:]
runs = {}
for line in open(path):
    _, label, fields = line.rstrip("\n").split("|")
    p50, p90, p99, rps, bad, errors, total = fields.split()
    runs.setdefault(label, []).append((float(p50), float(p90), float(p99), float(rps), int(bad), int(errors), int(total)))
med = {label: [statistics.median(r[i] for r in rs) for i in range(4)] + [sum(r[i] for r in rs) for i in (4, 5, 6)]
       for label, rs in runs.items()}
def ms(us):
    return f"{us / 1000:8.3f}"
print(f"\nsecret reads: median of {rounds} rounds × {duration} s, {connections} connections, wrk -t2, TLS keep-alive, SQLite, {cores} cores")
print(f"{'scenario':16s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} {'non-2xx':>8s} {'sock err':>8s}")
for label, (p50, p90, p99, rps, bad, errors, _) in med.items():
    print(f"{label:16s} {ms(p50)} {ms(p90)} {ms(p99)} {rps:8.0f} {bad:8d} {errors:8d}")
print()
for store in ("local", "openbao"):
    v, l = med[f"value {store}"], med[f"list {store}"]
    print(f"value − list, {store:7s}: p50 {(v[0] - l[0]) / 1000:+.3f} ms, p99 {(v[2] - l[2]) / 1000:+.3f} ms,"
          f" throughput {v[3] / l[3]:.0%} of the list's")
vl, vo = med["value local"], med["value openbao"]
print(f"value, openbao − local: p50 {(vo[0] - vl[0]) / 1000:+.3f} ms, p99 {(vo[2] - vl[2]) / 1000:+.3f} ms,"
      f" throughput {vo[3] / vl[3]:.0%} of local's")
# Every call is audited (reads through the group-commit writer), the list as well as the value:
# the events the rounds added, beside the responses wrk counted (which leave out calls still in
# flight when a run stops, at most one per connection).
events = [a - b for a, b in zip(map(int, after.split()), map(int, before.split()))]
for store, (reads, lists) in zip(("local", "openbao"), (events[:2], events[2:])):
    print(f"audit events in the rounds, {store:7s}: secret.read {reads} for {med[f'value {store}'][6]} value reads,"
          f" secret.list {lists} for {med[f'list {store}'][6]} lists")
if any(m[4] or m[5] for m in med.values()):
    print("WARNING: some requests failed (non-2xx or socket errors): the figures above include them")
PY
