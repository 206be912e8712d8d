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
cargo test --workspace "$@"
