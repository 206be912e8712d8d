#!/usr/bin/env bash
# The bounce MX's throughput (issue 12), in one run: Postfix's smtp-source sends a genuine
# Postfix DSN (engine/tests/feedback/postfix-user-unknown.eml, addressed to the VERP return
# path of a real message) N times with 20 sessions, into smtp-sink (the ceiling) and into
# Herald's bounce MX (embedded log and store, roles = ["project", "bounces"]: every DSN is
# parsed, classified and its BounceReceived fsynced before the 250, while the feedback
# projector applies them). A new connection per message, then connections reused (-d).
# Usage: [BOUNCE_NODE=1] [MESSAGES=N] benches/feedback/inbound.sh (BOUNCE_NODE=1: the listener alone, roles = ["bounces"])
#   (after cargo build --release -p herald -p herald-loadtest -p herald-benches)
set -euo pipefail
. "$(dirname "$0")/../../loadtest/scripts/common.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERP=$TARGET_DIR/release/verp
[ -x "$HERALD" ] && [ -x "$VERP" ] || { echo "build first: cargo build --release -p herald -p herald-loadtest -p herald-benches" >&2; exit 1; }
SESSIONS=${SESSIONS:-20}
SECRET=bench-feedback-secret-0123456789
cleanup() { kill ${HERALD_PID:-} ${SINK_PID:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

HTTP=$(free_port); BPORT=$(free_port)
cat > "$WORK/herald.toml" <<TOML
[storage]
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$HTTP"
[smtp]
listen = "127.0.0.1:0"
[bounces]
listen = "127.0.0.1:$BPORT"
hostname = "mx.herald.test"
default_domain = "bounces.herald.test"
secret = "$SECRET"
messages_per_second_per_ip = 0
max_connections_per_ip = 1000
[cluster]
roles = ROLES
[[accounts]]
id = "bench"
api_keys = ["k"]
from_domains = "any"
TOML
serve() { # roles (TOML array)
  sed "s/^roles = .*/roles = $1/" "$WORK/herald.toml" > "$WORK/node.toml"
  RUST_LOG=warn "$HERALD" serve --config "$WORK/node.toml" >> "$WORK/herald.log" 2>&1 & HERALD_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BPORT") 2>/dev/null && break; sleep 0.1; done
}
serve '["project", "bounces"]'

# A real message (accepted and projected) whose VERP address the DSNs go to.
id=$(curl -s -H 'Authorization: Bearer k' -H 'Content-Type: application/json' "http://127.0.0.1:$HTTP/v1/send" \
  -d '{"envelope":"news@sender.test","recipient":"bob@example.org","bouncetracking":true,"body":"From: news@sender.test\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"][0]["id"])')
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer k' "http://127.0.0.1:$HTTP/v1/messages/$id")" = 200 ] && break; sleep 0.1
done
addr=$("$VERP" "$SECRET" bench "$id" bounces.herald.test)
tr -d '\r' < "$ROOT/engine/tests/feedback/postfix-user-unknown.eml" |
  sed "s/b-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@bounce.sender.test/$addr/g" > "$WORK/dsn.eml"
# BOUNCE_NODE=1: the listener alone, as on a bounce MX node of a cluster (roles =
# ["bounces"]; the BounceReceived events wait in the log for a projector elsewhere).
if [ "${BOUNCE_NODE:-0}" = 1 ]; then
  kill "$HERALD_PID"; wait "$HERALD_PID" 2>/dev/null || true
  serve '["bounces"]'
fi
events() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -F' ' '/^herald_bounce_mx_messages_total\{outcome="events"\}/ {print $2}'; }

source_run() { # port [flags] → msg/s
  local port=$1; shift
  local t0 t1; t0=$(now)
  smtp-source "$@" -F "$WORK/dsn.eml" -m "$MESSAGES" -s "$SESSIONS" -f mailer-daemon@relay.test -t "$addr" "127.0.0.1:$port" >"$WORK/source.out" 2>&1
  t1=$(now); rate "$MESSAGES" "$t0" "$t1"
}

printf 'DSN: %s bytes, to %s; %s messages, %s sessions\n' "$(wc -c < "$WORK/dsn.eml")" "$addr" "$MESSAGES" "$SESSIONS"
before=0
for flags in "" "-d"; do
  sport=$(free_port); smtp_sink "$sport"
  s=$(source_run "$sport" $flags); kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=
  h=$(source_run "$BPORT" $flags)
  after=$(events); n=$(( ${after%.*} - before )); before=${after%.*}
  printf 'smtp-source %-3s → smtp-sink %8.0f msg/s, → Herald bounce MX %8.0f msg/s (%s events), ratio %.2f\n' \
    "$flags" "$s" "$h" "$n" "$(echo "$h / $s" | bc -l)"
  [ "$n" = "$MESSAGES" ] || { echo "Herald made $n events for $MESSAGES DSNs" >&2; tail -20 "$WORK/herald.log" >&2; exit 1; }
done
