#!/usr/bin/env bash
# Installs the identity-provider test peers: the OIDC peer's npm packages (exact versions from
# oidc/package-lock.json) and, when missing, SimpleSAMLphp + PHP + xmlsec1 from Debian.
# Idempotent; run as root (CI and the dev machines are root).
set -euo pipefail
cd "$(dirname "$0")"

need=()
for pkg in simplesamlphp php-cli php-xml php-mbstring xmlsec1; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

(cd oidc && npm ci --no-audit --no-fund --loglevel=error)
echo "test peers installed: oidc-provider $(node -p "require('./oidc/node_modules/oidc-provider/package.json').version"), simplesamlphp $(dpkg-query -W -f='${Version}' simplesamlphp)"
