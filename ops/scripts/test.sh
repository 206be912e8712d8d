#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what is missing (apt, pip, Kafka
# and Cassandra jars), starts real Kafka (KRaft) and Cassandra on loopback, runs every
# test against both the embedded and the scale-out backends, and stops the servers.
# Usage: ops/scripts/test.sh [extra cargo test args]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${HERALD_CACHE:-$HOME/.cache/herald}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# One build per run: incremental caches only cost disk here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "[test] installing peers (apt, pip, Maven jars) if missing"
"$here/install-peers.sh"

peers="$(mktemp -d /tmp/herald-test-peers.XXXXXX)"
stop_peers() { "$here/peers.sh" stop "$peers" || true; rm -rf "$peers"; }
trap stop_peers EXIT
echo "[test] starting Kafka and Cassandra in $peers"
"$here/peers.sh" start "$peers"

export HERALD_TEST_KAFKA="127.0.0.1:${KAFKA_PORT:-9092}"
export HERALD_TEST_CQL="127.0.0.1:${CQL_PORT:-9042}"
cd "$root"
echo "[test] tests of the workspace (Kafka $HERALD_TEST_KAFKA, CQL $HERALD_TEST_CQL)"
status=0
if (($# == 0)); then
  # Every test binary built once, then run in parallel (TEST_JOBS, default 3), longest first;
  # the script prints the closing `N passed, N failed` line.
  TEST_HISTORY="${TEST_HISTORY:-$cache/test-durations.json}" \
    python3 "$here/run-tests.py" "$peers/tests" | tee "$peers/summary.log" || status=$?
  summary="$(tail -n 1 "$peers/summary.log")"
else
  # Extra arguments (a filter, -p crate …): plain cargo test, one binary after the other.
  log="$peers/cargo-test.log"
  cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
  passed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
  failed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s += $6} END {print s + 0}')
  summary="$passed passed, $failed failed"
fi
stop_peers
trap - EXIT
# One closing line over every test binary.
echo "$summary"
exit "$status"
