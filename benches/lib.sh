# Shared by the bench scripts (sourced, not run): the operator token their servers start with,
# waiting for a server, and onboarding the tenant they read.

TOKEN="bench-operator-token-0123456789abcdef"

healthy() { # base URL [seconds, default 60]; waits for the server's /healthz, fails if it never answers
  for _ in $(seq 1 $((${2:-60} * 10))); do curl -skf "$1/healthz" >/dev/null && return; sleep 0.1; done
  return 1
}

onboard() { # base URL; prints the admin API key of a new tenant "bench" with 50 users
  # Run inside $(…), where bash does not apply `set -e`: every step says when it failed.
  local key
  key=$(curl -skf -X POST "$1/api/v1/platform/tenants" -H "Authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d '{"slug":"bench"}' \
        | python3 -c 'import sys,json;print(json.load(sys.stdin)["admin_api_key"])') \
    && [ -n "$key" ] || { echo "onboarding the bench tenant at $1 failed" >&2; return 1; }
  for i in $(seq 1 50); do
    curl -skf -o /dev/null -X POST "$1/t/bench/api/v1/users" -H "Authorization: Bearer $key" \
      -H 'content-type: application/json' -d "{\"email\":\"user$i@example.com\",\"display_name\":\"User $i\"}" \
      || { echo "creating the bench users at $1 failed" >&2; return 1; }
  done
  echo "$key"
}
