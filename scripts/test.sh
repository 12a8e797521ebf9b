#!/usr/bin/env bash
# Installs what the tests need (idempotently: a second run fetches nothing), runs
# every test of the workspace and ends with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! scripts/install-test-deps.sh; then
    echo "PREWARM TESTS FAILED: could not install the test dependencies (scripts/install-test-deps.sh; needs root and the package registries)"
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: every test binary runs, so the summary counts them all.
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s+=$6} END {print s+0}')
if [ "$status" -eq 0 ]; then
    echo "PREWARM TESTS PASSED: $passed passed, $failed failed"
else
    echo "PREWARM TESTS FAILED: $passed passed, $failed failed (cargo exit $status)"
fi
exit "$status"
