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
echo "[test] cargo test --workspace (Kafka $HERALD_TEST_KAFKA, CQL $HERALD_TEST_CQL)"
log="$peers/cargo-test.log"
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo's own last line is a doc-test summary).
passed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s += $6} END {print s + 0}')
stop_peers
trap - EXIT
echo "$passed passed, $failed failed"
exit "$status"
