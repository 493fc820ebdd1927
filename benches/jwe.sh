#!/usr/bin/env bash
# JWE A256GCM round trips beside `openssl speed -evp aes-256-gcm`, in one run (benches/jwe.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowgate/target}"
openssl version
exec cargo bench --bench jwe "$@"
