#!/usr/bin/env bash
# Load benchmark of the request path, reported as ratios measured side by side in one run.
#
# For each database (SQLite always, PostgreSQL when it answers on 127.0.0.1:5432) it onboards a
# tenant with 50 users, starts the normal build and the `insecure-bench` build (no
# authentication, authorization or audit) side by side on the same storage, and drives wrk over
# TLS with keep-alive against
#   1. GET /healthz                          (the floor: TLS + HTTP + middleware)
#   2. GET /t/{t}/api/v1/users  secure       (authentication, Cedar decision, read, audit write)
#   3. GET /t/{t}/api/v1/users  insecure     (the read only: no authentication, decision or audit)
#   4. GET /healthz  on a bare actix-web + rustls server (examples/bare_healthz.rs: same TLS
#      versions, provider, certificate and body, nothing else) — the floor of the floor
# in alternating rounds, so that a machine that speeds up or slows down during the run affects
# all alike; it prints the median requests per second of each, and the medians of the rounds'
# ratios (each round's runs are neighbours in time).
# With FLOWGATE_BENCH_BASELINE=<git revision> it also builds that revision of Flowgate (in a
# throw-away worktree of this repository) and measures its secure read in the same rounds, on its
# own storage, so that a change is measured against what it replaced on the same machine:
#   5. GET /t/{t}/api/v1/users  secure, the baseline revision
# and, for sign-in (issue 11), in the same rounds:
#   6. GET /t/{t}/api/v1/users  secure, with a bearer access token (JWT) instead of the API key
#   7. POST /t/{t}/auth/token   client-credentials grant (benches/token.lua): tokens issued per
#      second, and per core (the box's cores, which wrk shares)
# and, for passkeys (issue 13), in the same rounds:
#   8. GET /t/{t}/api/v1/users  secure, with a person's session cookie (signed in through the
#      test OpenID provider, tests/peers/oidc, whose group the tenant makes Admin)
# and, for telemetry (issue 14), in the same rounds:
#   9. GET /t/{t}/api/v1/users  secure, exporting traces, metrics and audit logs over OTLP to
#      examples/otlp_sink.rs (a collector that reads and accepts each export request, on one
#      thread: the collector belongs on another machine, and this one takes the least CPU an
#      HTTP exchange can from the cores the server is measured on), on the same storage
# Targets: secure ≥ 90 % of insecure; Flowgate's /healthz ≥ 1/1.5 of the bare one; the secure read
# ≥ 4× the baseline on SQLite and ≥ 2× on PostgreSQL (issue 10, baseline 4dba1ae); the JWT read
# ≥ 95 % of the API-key read, and ≥ 1,200 tokens issued per second per core (issue 11); the
# session-cookie read ≥ 95 % of the API-key read (issue 13); the exporting read ≥ 95 % of the
# same read without export (issue 14).
#
# Usage: [FLOWGATE_BENCH_BASELINE=rev] benches/load.sh [seconds per round, default 5]
#        [connections, default 32] [rounds, default 9]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
DURATION="${1:-5}"
CONNECTIONS="${2:-32}"
ROUNDS="${3:-9}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowgate/target}"
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }

out=benches/results
mkdir -p "$out"
echo "building release binaries (normal and insecure-bench)…" >&2
cargo build --release --quiet
cp "$CARGO_TARGET_DIR/release/flowgate" "$out/flowgate-secure"
cargo build --release --quiet --features insecure-bench
cp "$CARGO_TARGET_DIR/release/flowgate" "$out/flowgate-insecure"
cargo build --release --quiet  # leave the normal build in place
cargo build --release --quiet --example bare_healthz --example otlp_sink
cp "$CARGO_TARGET_DIR/release/examples/bare_healthz" "$out/bare-healthz"
cp "$CARGO_TARGET_DIR/release/examples/otlp_sink" "$out/otlp-sink"
BASELINE="${FLOWGATE_BENCH_BASELINE:-}"
# Not a server setting: the servers started below refuse unknown FLOWGATE_* variables.
unset FLOWGATE_BENCH_BASELINE
rm -f "$out/flowgate-baseline"
if [ -n "$BASELINE" ]; then
  echo "building the baseline $BASELINE…" >&2
  tree=$(mktemp -d)
  git worktree add --quiet --detach "$tree" "$BASELINE"
  (cd "$tree" && cargo build --release --quiet)
  cp "$CARGO_TARGET_DIR/release/flowgate" "$out/flowgate-baseline"
  git worktree remove --force "$tree"
  cargo build --release --quiet  # leave the normal build in place
fi

PORT=18443
INSECURE_PORT=18444
BARE_PORT=18445
BASELINE_PORT=18446
EXPORT_PORT=18447

start() { # binary data_dir database_url port [VAR=value…]; prints the server's pid
  local env=(FLOWGATE_DATA_DIR="$2" FLOWGATE_LISTEN="127.0.0.1:$4" FLOWGATE_OPERATOR_TOKEN="$TOKEN"
             FLOWGATE_INSECURE_BENCH=1
             # One key at full speed: the limits are part of the path measured, not a cap on it.
             FLOWGATE_RATE_LIMIT_PRINCIPAL=1000000 FLOWGATE_RATE_LIMIT_TENANT=1000000
             FLOWGATE_RATE_LIMIT_SOURCE=1000000
             # The test OpenID provider of the session-cookie read listens on the loopback.
             FLOWGATE_IDP_PRIVATE_NETWORKS=127.0.0.0/8)
  [ -n "$3" ] && env+=(FLOWGATE_DATABASE_URL="$3")
  env+=("${@:5}")
  env "${env[@]}" "$1" serve >>"$2/server-$4.log" 2>&1 &
  local pid=$!
  healthy "https://127.0.0.1:$4" && { echo "$pid"; return; }
  echo "server did not start; see $2/server-$4.log" >&2; exit 1
}

stop() { # pids (started in a subshell, so not ours to wait for)
  kill "$@" 2>/dev/null || true
  for pid in "$@"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
}

rps() { # url [bearer]
  local header=()
  [ -n "${2:-}" ] && header=(-H "Authorization: Bearer $2")
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "${header[@]}" "$1" | awk '/Requests\/sec/ {print $2}'
}

client() { # port admin_key; prints "client_id client_secret" of an OAuth client of the admin's account
  local account
  account=$(curl -skf "https://127.0.0.1:$1/t/bench/api/v1/me" -H "Authorization: Bearer $2" \
            | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
  curl -skf -X POST "https://127.0.0.1:$1/t/bench/api/v1/clients" -H "Authorization: Bearer $2" \
    -H 'content-type: application/json' -d "{\"name\":\"bench\",\"service_account_id\":\"$account\"}" \
    | python3 -c 'import sys,json;c=json.load(sys.stdin);print(c["client_id"], c["client_secret"])'
}

access_token() { # port client_id client_secret
  curl -skf -X POST "https://127.0.0.1:$1/t/bench/auth/token" -u "$2:$3" -d grant_type=client_credentials \
    | python3 -c 'import sys,json;print(json.load(sys.stdin)["access_token"])'
}

rps_cookie() { # url cookie (name=value)
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -H "Cookie: $2" "$1" \
    | awk '/Requests\/sec/ {print $2}'
}

location() { # curl arguments…: the Location of the answer, resolved against the URL asked
  curl -sk -o /dev/null -w '%{redirect_url}' "$@"
}

PEER_PID=""
session_cookie() { # port admin_key; prints the session cookie of a person signed in through the
  # test OpenID provider (started here, stopped by `stop_peer`), whose group is made Admin
  local port=$1 key=$2 dir created idp redirect issuer jar url
  dir=$(mktemp -d)
  created=$(curl -skf -X POST "https://127.0.0.1:$port/t/bench/api/v1/identity-providers" \
    -H "Authorization: Bearer $key" -H 'content-type: application/json' \
    -d '{"name":"Bench IdP","kind":"oidc","preset":"generic","issuer":"http://127.0.0.1:9/x",
         "client_id":"bench","client_secret":"bench-secret","email_domains":["example.org"],
         "group_mappings":{"idp-admins":"admins"}}')
  idp=$(python3 -c 'import sys,json;print(json.loads(sys.argv[1])["id"])' "$created")
  redirect=$(python3 -c 'import sys,json;print(json.loads(sys.argv[1])["redirect_uri"])' "$created")
  python3 - "$redirect" >"$dir/config.json" <<'PY'
import json, sys
print(json.dumps({"preset": "generic",
  "accounts": [{"id": "bench-person", "claims": {"email": "person@example.org",
                "email_verified": True, "name": "Bench Person", "groups": ["idp-admins"]}}],
  "clients": [{"client_id": "bench", "client_secret": "bench-secret", "redirect_uris": [sys.argv[1]]}]}))
PY
  node tests/peers/oidc/provider.mjs "$dir/config.json" >"$dir/peer.out" 2>"$dir/peer.log" &
  PEER_PID=$!
  for _ in $(seq 1 150); do [ -s "$dir/peer.out" ] && break; sleep 0.1; done
  issuer=$(head -n1 "$dir/peer.out" | python3 -c 'import sys,json;print(json.load(sys.stdin)["issuer"])')
  curl -skf -o /dev/null -X PATCH "https://127.0.0.1:$port/t/bench/api/v1/identity-providers/$idp" \
    -H "Authorization: Bearer $key" -H 'content-type: application/json' -d "{\"issuer\":\"$issuer\"}"
  jar="$dir/cookies"
  url=$(location -c "$jar" -b "$jar" "https://127.0.0.1:$port/t/bench/auth/oidc/$idp/login")
  url=$(location -c "$jar" -b "$jar" "$url")
  url=$(location -c "$jar" -b "$jar" -X POST --data 'login=bench-person' "$url/login")
  url=$(location -c "$jar" -b "$jar" "$url")
  curl -sk -o /dev/null -c "$jar" -b "$jar" "$url"
  local group
  group=$(curl -skf "https://127.0.0.1:$port/t/bench/api/v1/groups" -H "Authorization: Bearer $key" \
    | python3 -c 'import sys,json;print(next(g["id"] for g in json.load(sys.stdin)["items"] if g["name"]=="admins"))')
  curl -skf -o /dev/null -X POST "https://127.0.0.1:$port/t/bench/api/v1/role-bindings" \
    -H "Authorization: Bearer $key" -H 'content-type: application/json' \
    -d "{\"role\":\"Admin\",\"subject\":{\"type\":\"group\",\"id\":\"$group\"},\"scope\":{\"type\":\"tenant\"}}"
  # The tenant's session cookie (`__Host-flowgate-session-<tenant>`), as name=value.
  awk '$6 ~ /^__Host-flowgate-session/ {print $6 "=" $7}' "$jar"
}

issuance() { # port client_id client_secret: tokens issued per second
  CLIENT_BASIC=$(printf '%s:%s' "$2" "$3" | base64 -w0) \
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s benches/token.lua "https://127.0.0.1:$1/t/bench/auth/token" \
    | awk '/Requests\/sec/ {print $2}'
}

run() { # label database_url(or empty) baseline_database_url(or empty)
  local label=$1 url=$2 data secure_pid insecure_pid key baseline_pid="" baseline_key="" baseline_data=""
  data=$(mktemp -d)
  secure_pid=$(start "$out/flowgate-secure" "$data" "$url" "$PORT")
  key=$(onboard "https://127.0.0.1:$PORT")
  local id secret token
  read -r id secret < <(client "$PORT" "$key")
  token=$(access_token "$PORT" "$id" "$secret")
  local cookie
  cookie=$(session_cookie "$PORT" "$key")
  [ -n "$cookie" ] || { echo "no session cookie: the sign-in through the test provider failed" >&2; exit 1; }
  # A cookie the server does not take would measure 401s.
  curl -skf -o /dev/null -H "Cookie: $cookie" "https://127.0.0.1:$PORT/t/bench/api/v1/users" \
    || { echo "the session cookie does not read the users page" >&2; exit 1; }
  if [ -x "$out/flowgate-baseline" ]; then
    baseline_data=$(mktemp -d)
    baseline_pid=$(start "$out/flowgate-baseline" "$baseline_data" "$3" "$BASELINE_PORT")
    baseline_key=$(onboard "https://127.0.0.1:$BASELINE_PORT")
  fi
  # Same storage, same tenant, same key: only the build differs.
  insecure_pid=$(start "$out/flowgate-insecure" "$data" "$url" "$INSECURE_PORT")
  "$out/bare-healthz" "127.0.0.1:$BARE_PORT" "$data/tls/cert.pem" "$data/tls/key.pem" &
  local bare_pid=$!
  healthy "https://127.0.0.1:$BARE_PORT" || { echo "the bare server did not start" >&2; exit 1; }
  # The exporting server: the secure build on the same storage, with a collector to talk to.
  local exported_pid="" sink_pid="" sink_port
  "$out/otlp-sink" >"$data/otlp.out" &
  sink_pid=$!
  for _ in $(seq 1 50); do [ -s "$data/otlp.out" ] && break; sleep 0.1; done
  sink_port=$(python3 -c 'import sys,json;print(json.load(sys.stdin)["port"])' <"$data/otlp.out")
  exported_pid=$(start "$out/flowgate-secure" "$data" "$url" "$EXPORT_PORT" \
    FLOWGATE_OTLP_ENDPOINT="http://127.0.0.1:$sink_port")
  local health=() secure=() insecure=() bare=() baseline=() jwt=() issued=() session=() exported=()
  for _ in $(seq 1 "$ROUNDS"); do
    bare+=("$(rps "https://127.0.0.1:$BARE_PORT/healthz")")
    health+=("$(rps "https://127.0.0.1:$PORT/healthz")")
    secure+=("$(rps "https://127.0.0.1:$PORT/t/bench/api/v1/users" "$key")")
    insecure+=("$(rps "https://127.0.0.1:$INSECURE_PORT/t/bench/api/v1/users" "$key")")
    [ -n "$baseline_pid" ] && baseline+=("$(rps "https://127.0.0.1:$BASELINE_PORT/t/bench/api/v1/users" "$baseline_key")")
    jwt+=("$(rps "https://127.0.0.1:$PORT/t/bench/api/v1/users" "$token")")
    session+=("$(rps_cookie "https://127.0.0.1:$PORT/t/bench/api/v1/users" "$cookie")")
    exported+=("$(rps "https://127.0.0.1:$EXPORT_PORT/t/bench/api/v1/users" "$key")")
    issued+=("$(issuance "$PORT" "$id" "$secret")")
    # Tokens live ten minutes: a fresh one for each round.
    token=$(access_token "$PORT" "$id" "$secret")
  done
  stop "$secure_pid" "$insecure_pid" "$bare_pid" $baseline_pid $PEER_PID $exported_pid $sink_pid
  rm -rf "$data" $baseline_data
  python3 - "$label" "${health[*]}" "${secure[*]}" "${insecure[*]}" "${bare[*]}" "${baseline[*]:-}" \
    "${jwt[*]}" "${issued[*]}" "${session[*]}" "${exported[*]}" "$(nproc)" <<'PY'
import statistics, sys
label, *runs, cores = sys.argv[1:]
health, secure, insecure, bare, baseline, jwt, issued, session, exported = (
    [float(x) for x in r.split()] for r in runs)
h, s, i, b = (statistics.median(r) for r in (health, secure, insecure, bare))
# Each round's runs are neighbours in time: their ratios are what drift spares.
def ratio(xs, ys):
    rs = [x / y for x, y in zip(xs, ys)]
    return statistics.median(rs), " ".join(f"{r:.0%}" for r in rs)
si, si_rounds = ratio(secure, insecure)
hb, hb_rounds = ratio(health, bare)
sh, _ = ratio(secure, health)
print(f"{label:10s} bare healthz {b:9.0f} req/s | healthz {h:9.0f} req/s | users secure {s:8.0f} req/s"
      f" | users insecure {i:8.0f} req/s\n"
      f"{'':10s} secure/insecure {si:6.1%} (rounds: {si_rounds}) | healthz/bare {hb:6.1%}"
      f" (rounds: {hb_rounds}) | secure/healthz {sh:6.1%}")
jk, jk_rounds = ratio(jwt, secure)
tokens = statistics.median(issued)
print(f"{'':10s} users with a JWT {statistics.median(jwt):8.0f} req/s | jwt/api-key {jk:6.1%} (rounds: {jk_rounds})"
      f" | tokens issued {tokens:8.0f}/s = {tokens / int(cores):6.0f}/s per core")
ck, ck_rounds = ratio(session, secure)
print(f"{'':10s} users with a session cookie {statistics.median(session):8.0f} req/s"
      f" | session/api-key {ck:6.1%} (rounds: {ck_rounds})")
ex, ex_rounds = ratio(exported, secure)
print(f"{'':10s} users secure, exporting over OTLP {statistics.median(exported):8.0f} req/s"
      f" | exporting/not {ex:6.1%} (rounds: {ex_rounds})")
if baseline:
    sb, sb_rounds = ratio(secure, baseline)
    print(f"{'':10s} users secure, baseline {statistics.median(baseline):8.0f} req/s"
          f" | secure/baseline {sb:5.2f}× (rounds: {' '.join(f'{r:.2f}' for r in (x / y for x, y in zip(secure, baseline)))})")
PY
}

echo "wrk: ${ROUNDS} alternating rounds of ${DURATION}s, ${CONNECTIONS} connections, 2 threads, TLS with keep-alive" >&2
run sqlite "" ""
if pg_isready -q -h 127.0.0.1 -p 5432; then
  db="flowgate_bench_$$"
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE ${db}_baseline"
  run postgres "postgres://postgres@127.0.0.1:5432/$db" "postgres://postgres@127.0.0.1:5432/${db}_baseline"
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db WITH (FORCE)"
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE ${db}_baseline WITH (FORCE)"
fi
