#!/usr/bin/env bash
# prewarm on this machine, no cluster needed: the test API server with the
# workload controllers, three nodes (each a test kubelet over its own
# containerd, on one pod network), a local registry with the seed's images,
# and prewarm installed as users install it: the image built from this
# checkout, the chart installed with the real Helm library, as Pods (see
# tests/src/installed.rs, the end-to-end tests' cluster too).
#
#   scripts/local-cluster.sh up       build, start in the background, print how to use it
#   scripts/local-cluster.sh status   is it running; nodes and jobs
#   scripts/local-cluster.sh down     stop everything
#
# Needs root (containerd) and what scripts/install-test-deps.sh installs (run here).
# DIR (default /tmp/prewarm-local-cluster) holds kubeconfigs, logs and state.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-/tmp/prewarm-local-cluster}
PIDFILE="$DIR/pid"
KUBECTL="${XDG_CACHE_HOME:-$HOME/.cache}/prewarm-test-tools/kubectl-venv/bin/kubectl"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
up)
    if running; then
        echo "already running (pid $(cat "$PIDFILE")):"; cat "$DIR/ready"; exit 0
    fi
    scripts/install-test-deps.sh >/dev/null
    cargo build --quiet --bins
    scripts/build-images.sh
    # Only a directory an earlier run made (or an empty one) is cleared.
    if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/local-cluster.log" ]; then
        echo "$DIR exists and is not a local cluster's directory: set DIR to another path" >&2; exit 1
    fi
    rm -rf "$DIR" && mkdir -p "$DIR"
    setsid "${CARGO_TARGET_DIR:-target}/debug/prewarm-local-cluster" --dir "$DIR" \
        --helm-python "${XDG_CACHE_HOME:-$HOME/.cache}/prewarm-test-tools/helm-venv/bin/python" >"$DIR/local-cluster.log" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 1200); do
        [ -f "$DIR/ready" ] && break
        running || { echo "it stopped while starting:"; tail -40 "$DIR/local-cluster.log"; exit 1; }
        sleep 0.2
    done
    [ -f "$DIR/ready" ] || { echo "not ready after 240 s:"; tail -40 "$DIR/local-cluster.log"; exit 1; }
    cat "$DIR/ready"
    cat <<EOT

Try it:
  export KUBECONFIG=$DIR/kubeconfig
  alias kubectl=$KUBECTL
  kubectl get pods -A
  kubectl get nodes,nodeimages
  kubectl apply -f api/tests/fixtures/seed/02-imagepulljob-names.yaml
  kubectl get imagepulljobs -w
Stop it with: scripts/local-cluster.sh down
EOT
    ;;
status)
    if running; then
        echo "running (pid $(cat "$PIDFILE"))"; cat "$DIR/ready"
        KUBECONFIG="$DIR/kubeconfig" "$KUBECTL" get pods,nodes,nodeimages,imagepulljobs,imagelistpulljobs,advancedcronjobs -A 2>&1 || true
    else
        echo "not running"; exit 1
    fi
    ;;
down)
    if running; then
        pid=$(cat "$PIDFILE")
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "stopped"
    else
        echo "not running"
    fi
    rm -f "$PIDFILE"
    ;;
*)
    echo "usage: $0 up|status|down" >&2; exit 2
    ;;
esac
