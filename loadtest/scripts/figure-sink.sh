#!/usr/bin/env bash
# Figure: herald-loadtest sink versus Postfix's smtp-sink, both fed by the same smtp-source
# command (5 KB, 20 sessions), saving off, in one run. Throughput is smtp-source's
# messages over its wall time. Runs once with a connection per message, once with -d.
set -euo pipefail
. "$(dirname "$0")/common.sh"
source_into() { # port flags...
  local port=$1; shift
  local t0 t1; t0=$(now); smtp-source "$@" -l 5120 -m "$MESSAGES" -s 20 "127.0.0.1:$port"; t1=$(now)
  rate "$MESSAGES" "$t0" "$t1"
}
for flags in "" "-d"; do
  port=$(free_port); smtp_sink "$port"
  theirs=$(source_into "$port" $flags); kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
  [ "$(smtp_sink_count)" = "$MESSAGES" ] || echo "smtp-sink saw $(smtp_sink_count) messages" >&2
  port=$(free_port)
  "$LOADTEST" sink --listen "127.0.0.1:$port" --duration 10m --json --quiet > "$WORK/sink.json" & pid=$!; sleep 0.5
  ours=$(source_into "$port" $flags); kill -INT "$pid"; wait "$pid"
  seen=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['messages'])" "$WORK/sink.json")
  [ "$seen" = "$MESSAGES" ] || echo "herald-loadtest sink saw $seen messages" >&2
  printf 'smtp-source %-3s  smtp-sink %8.0f msg/s  herald-loadtest sink %8.0f msg/s  ratio %.2fx\n' "$flags" "$theirs" "$ours" "$(echo "$ours / $theirs" | bc -l)"
done
