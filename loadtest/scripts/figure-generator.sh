#!/usr/bin/env bash
# Figure: herald-loadtest send versus Postfix's smtp-source, each into a fresh smtp-sink,
# 5 KB messages, 20 connections, in one run. Prints msg/s for each and the ratio.
set -euo pipefail
. "$(dirname "$0")/common.sh"
measure() { # label command... (the command gets the port as its last argument)
  local label=$1; shift
  local port; port=$(free_port); smtp_sink "$port"
  local t0 t1; t0=$(now); "$@" "127.0.0.1:$port" > "$WORK/out" 2>&1; t1=$(now)
  kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
  local n; n=$(smtp_sink_count)
  local r; r=$(rate "$n" "$t0" "$t1")
  printf '%-52s %6s msgs  %8.0f msg/s\n' "$label" "$n" "$r" >&2
  echo "$r"
}
lt() { local addr=${*: -1}; "$LOADTEST" send -n "$MESSAGES" -c 20 --size 5k --quiet "${@:1:$#-1}" --target "$addr"; }
src=$(measure "smtp-source -l 5120 -m $MESSAGES -s 20" smtp-source -l 5120 -m "$MESSAGES" -s 20)
ours=$(measure "herald-loadtest send -c 20 (reused connections)" lt)
src_d=$(measure "smtp-source -d (reused connections)" smtp-source -d -l 5120 -m "$MESSAGES" -s 20)
ours_new=$(measure "herald-loadtest send --new-connection-per-message" lt --new-connection-per-message)
printf 'reuse vs smtp-source:            %.2fx\n' "$(echo "$ours / $src" | bc -l)"
printf 'reuse vs smtp-source -d:         %.2fx\n' "$(echo "$ours / $src_d" | bc -l)"
printf 'per-message vs smtp-source:      %.2fx\n' "$(echo "$ours_new / $src" | bc -l)"
