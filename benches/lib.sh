# Shared by the bench scripts (sourced, not run): the operator token their servers start with,
# waiting for a server, and onboarding the tenant they read.

TOKEN="bench-operator-token-0123456789abcdef"

healthy() { # base URL; waits up to 60 s for the server's /healthz, fails if it never answers
  for _ in $(seq 1 600); do curl -skf "$1/healthz" >/dev/null && return; sleep 0.1; done
  return 1
}

onboard() { # base URL; prints the admin API key of a new tenant "bench" with 50 users
  local key
  key=$(curl -skf -X POST "$1/api/v1/platform/tenants" -H "Authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d '{"slug":"bench"}' \
        | python3 -c 'import sys,json;print(json.load(sys.stdin)["admin_api_key"])')
  for i in $(seq 1 50); do
    curl -skf -o /dev/null -X POST "$1/t/bench/api/v1/users" -H "Authorization: Bearer $key" \
      -H 'content-type: application/json' -d "{\"email\":\"user$i@example.com\",\"display_name\":\"User $i\"}"
  done
  echo "$key"
}
