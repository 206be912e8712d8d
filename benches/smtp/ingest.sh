#!/usr/bin/env bash
# Figures for SMTP ingestion (issue 3), in one run on this machine:
#  1. Postfix's smtp-source -l 5000 -m N -s 20 (a new connection per message) into
#     smtp-sink (the ceiling) and into Herald's SMTP listener on the embedded default
#     (durable accept: 250 only after fsync), with the full pipeline running: the worker
#     delivers every accepted message, DKIM RSA-2048 signed, to a second smtp-sink found
#     through Knot. Also with `[cluster] roles = ["smtp"]` (an ingest-only node).
#  2. The same load with STARTTLS, from herald-loadtest (smtp-source has no TLS), into
#     herald-loadtest's own TLS sink and into Herald.
# Usage: benches/smtp/ingest.sh   (after cargo build --release -p herald -p herald-loadtest)
set -euo pipefail
. "$(dirname "$0")/../../loadtest/scripts/common.sh"
[ -x "$HERALD" ] || { echo "build first: cargo build --release -p herald -p herald-loadtest" >&2; exit 1; }
SESSIONS=${SESSIONS:-20}

# Knot serving example.test with its MX on 127.0.0.1.
DNS_PORT=$(free_port)
mkdir -p "$WORK/knot"
printf '$ORIGIN example.test.\n$TTL 3600\n@ SOA ns hostmaster 1 60 60 600 60\n@ NS ns\nns A 127.0.0.1\n@ MX 10 mx\nmx A 127.0.0.1\n' > "$WORK/knot/example.test.zone"
printf 'server:\n  rundir: "%s"\n  listen: 127.0.0.1@%s\ndatabase:\n  storage: "%s"\nzone:\n  - domain: example.test\n    file: "%s/example.test.zone"\n' \
  "$WORK/knot" "$DNS_PORT" "$WORK/knot" "$WORK/knot" > "$WORK/knot/knot.conf"
knotd -c "$WORK/knot/knot.conf" >/dev/null 2>&1 & KNOT_PID=$!
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/dkim.pem" 2>/dev/null
cleanup() { kill "$KNOT_PID" ${HERALD_PID:-} ${SINK_PID:-} ${DSINK_PID:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# Starts Herald (embedded) with roles $1, SMTP on $2, delivering to smtp-sink on $3.
start_herald() {
  local roles=$1 port=$2 mx=$3 http; http=$(free_port)
  rm -rf "$WORK/data"
  cat > "$WORK/herald.toml" <<TOML
[storage]
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$http"
[smtp]
listen = "127.0.0.1:$port"
[bounces]
listen = "127.0.0.1:0"
hostname = "mx.herald.test"
max_connections_per_ip = 1000
[delivery]
dns_servers = ["127.0.0.1:$DNS_PORT"]
mx_port = $mx
helo_name = "mta.herald.test"
domain_concurrency = 20
[cluster]
roles = $roles
[[accounts]]
id = "bench"
api_keys = ["k"]
relay_networks = ["127.0.0.0/8"]
[[dkim]]
domain = "sender.test"
selector = "s1"
private_key = "$WORK/dkim.pem"
accounts = ["bench"]
TOML
  RUST_LOG=warn "$HERALD" serve --config "$WORK/herald.toml" > "$WORK/herald.log" 2>&1 & HERALD_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "herald did not listen" >&2; cat "$WORK/herald.log" >&2; exit 1
}
stop_herald() { kill "$HERALD_PID"; wait "$HERALD_PID" 2>/dev/null || true; HERALD_PID=; }
accepted() { curl -s "http://127.0.0.1:$(grep -m1 -o '127.0.0.1:[0-9]*' "$WORK/herald.toml" | cut -d: -f2)/metrics" | awk '/^herald_ingest_accepted_messages_total/ {print $2}'; }

source_run() { # port [smtp-source flags] → prints msg/s (smtp-source's start to exit)
  local port=$1; shift
  local t0 t1; t0=$(now)
  smtp-source "$@" -l 5000 -m "$MESSAGES" -s "$SESSIONS" -f news@sender.test -t b@example.test "127.0.0.1:$port" >"$WORK/source.out" 2>&1
  t1=$(now); rate "$MESSAGES" "$t0" "$t1"
}

# 1. smtp-sink ceiling.
port=$(free_port); smtp_sink "$port"
sink_rate=$(source_run "$port"); kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
sink_n=$(smtp_sink_count); SINK_PID=
printf '%-58s %8.0f msg/s (%s received)\n' "smtp-source → smtp-sink" "$sink_rate" "$sink_n"

herald_run() { # roles label [smtp-source flags]
  local roles=$1 label=$2; shift 2
  dport=$(free_port); smtp_sink "$dport"; DSINK_PID=$SINK_PID; SINK_PID=
  port=$(free_port); start_herald "$roles" "$port" "$dport"
  r=$(source_run "$port" "$@"); n=$(accepted)
  printf '%-58s %8.0f msg/s (%s accepted)  ratio %.2f\n' "$label" "$r" "$n" "$(echo "$r / $ceiling" | bc -l)"
  [ "$n" = "$MESSAGES" ] || { echo "Herald accepted $n of $MESSAGES" >&2; exit 1; }
  stop_herald; kill "$DSINK_PID"; wait "$DSINK_PID" 2>/dev/null || true; DSINK_PID=
}
ceiling=$sink_rate
herald_run '["smtp", "deliver", "project"]' "smtp-source → Herald (all roles)"
herald_run '["smtp"]' "smtp-source → Herald (roles = [\"smtp\"])"

# 1b. smtp-source -d: connections reused, as MTAs relaying to a smart host do.
port=$(free_port); smtp_sink "$port"
ceiling=$(source_run "$port" -d); kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=
printf '%-58s %8.0f msg/s\n' "smtp-source -d → smtp-sink" "$ceiling"
herald_run '["smtp", "deliver", "project"]' "smtp-source -d → Herald (all roles)" -d
herald_run '["smtp"]' "smtp-source -d → Herald (roles = [\"smtp\"])" -d

# 2. STARTTLS, herald-loadtest as the client (reused connections, and one per message).
lt() { "$LOADTEST" send -n "$MESSAGES" -c "$SESSIONS" --size 5k --quiet --starttls --json "$@"; }
lt_rate() { python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["accepted"] == d["sent"], d; print(d["throughput"])'; }
for mode in "" "--new-connection-per-message"; do
  port=$(free_port)
  "$LOADTEST" sink --listen "127.0.0.1:$port" --starttls -d 10m > "$WORK/ltsink.out" 2>&1 & SINK_PID=$!; sleep 0.5
  s=$(lt $mode --target "127.0.0.1:$port" | lt_rate); kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=
  dport=$(free_port); smtp_sink "$dport"; DSINK_PID=$SINK_PID; SINK_PID=
  port=$(free_port); start_herald '["smtp", "deliver", "project"]' "$port" "$dport"
  h=$(lt $mode --target "127.0.0.1:$port" | lt_rate)
  stop_herald; kill "$DSINK_PID"; wait "$DSINK_PID" 2>/dev/null || true; DSINK_PID=
  printf 'STARTTLS %-30s herald-loadtest sink %8.0f msg/s, Herald %8.0f msg/s, ratio %.2f\n' "${mode:-reused connections}" "$s" "$h" "$(echo "$h / $s" | bc -l)"
done
