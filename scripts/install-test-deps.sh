#!/usr/bin/env bash
# Installs what prewarm's tests need, idempotently. Safe to run again: packages
# already present are not fetched, and `apt-get update` runs at most once.
set -euo pipefail

# Debian packages the tests use: curl and openssl are the real TLS clients of the
# webhook tests (the node agent will add containerd and docker-registry).
APT_PACKAGES=(curl openssl ca-certificates)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "test dependencies present"
