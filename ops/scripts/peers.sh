#!/usr/bin/env bash
# Start or stop both test peers: Kafka in DIR/kafka, Cassandra in DIR/cassandra.
# Usage: peers.sh start|stop|status DIR   (env as for kafka.sh and cassandra.sh)
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
dir="$2"

case "$1" in
  start)
    # One after the other: the machine has 2 cores.
    "$here/kafka.sh" start "$dir/kafka"
    # A failed start leaves nothing running.
    "$here/cassandra.sh" start "$dir/cassandra" || { "$here/kafka.sh" stop "$dir/kafka"; exit 1; }
    ;;
  stop)
    # Both are stopped by their pid files even if the first stop fails.
    rc=0
    "$here/cassandra.sh" stop "$dir/cassandra" || rc=$?
    "$here/kafka.sh" stop "$dir/kafka" || rc=$?
    exit "$rc"
    ;;
  status)
    rc=0
    "$here/kafka.sh" status "$dir/kafka" || rc=$?
    "$here/cassandra.sh" status "$dir/cassandra" || rc=$?
    exit "$rc"
    ;;
  *) usage ;;
esac
