#!/usr/bin/env bash
# Figures for issue 17, in one run on this machine (embedded backends):
#  1. 10,000 messages (MESSAGES) through `herald serve` with roles smtp + deliver, delivered
#     to Postfix's smtp-sink through Knot: then the metric count, the series count of
#     /metrics, and the time per /metrics scrape against a /healthz request (SCRAPES of
#     each, one keep-alive connection).
#  2. The live projector catching up on that log: the node restarted with
#     roles = ["project"] (its projector group never read the log), timed from its first
#     answer on /healthz to herald_projector_events_total reaching every event.
#  3. `herald replay --projection messages` of the same log into an empty store.
# Prints the figures and the replay / live ratio.
# Usage: benches/ops/figures.sh   (HERALD=path/to/herald, default target/release/herald)
set -euo pipefail
TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}
HERALD=${HERALD:-$TARGET_DIR/release/herald}
MESSAGES=${MESSAGES:-10000}
SCRAPES=${SCRAPES:-100}
[ -x "$HERALD" ] || { echo "build first: cargo build --release -p herald" >&2; exit 1; }
WORK=$(mktemp -d /tmp/herald-ops-figures.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%d\n", s}'; }

DNS_PORT=$(free_port); SINK_PORT=$(free_port); HTTP=$(free_port)
mkdir -p "$WORK/knot"
printf '$ORIGIN example.test.\n$TTL 3600\n@ SOA ns hostmaster 1 60 60 600 60\n@ NS ns\nns A 127.0.0.1\n@ MX 10 mx\nmx A 127.0.0.1\n' > "$WORK/knot/example.test.zone"
printf 'server:\n  rundir: "%s"\n  listen: 127.0.0.1@%s\ndatabase:\n  storage: "%s"\nzone:\n  - domain: example.test\n    file: "%s/example.test.zone"\n' \
  "$WORK/knot" "$DNS_PORT" "$WORK/knot" "$WORK/knot" > "$WORK/knot/knot.conf"
knotd -c "$WORK/knot/knot.conf" >/dev/null 2>&1 & KNOT_PID=$!
smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 256 > "$WORK/sink.out" 2>&1 & SINK_PID=$!
cleanup() { kill "$KNOT_PID" "$SINK_PID" ${HERALD_PID:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

config() {
  cat > "$WORK/herald.toml" <<TOML
[storage]
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$HTTP"
[smtp]
listen = "127.0.0.1:0"
[bounces]
listen = "127.0.0.1:0"
[tracking]
listen = "127.0.0.1:0"
[delivery]
dns_servers = ["127.0.0.1:$DNS_PORT"]
mx_port = $SINK_PORT
helo_name = "mta.herald.test"
domain_concurrency = 20
[cluster]
roles = $1
[[accounts]]
id = "bench"
api_keys = ["k"]
from_domains = "any"
TOML
}
start() {
  RUST_LOG=warn "$HERALD" serve --config "$WORK/herald.toml" > "$WORK/herald.log" 2>&1 & HERALD_PID=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && return; sleep 0.1; done
  echo "herald did not start" >&2; cat "$WORK/herald.log" >&2; exit 1
}
stop() { kill -TERM "$HERALD_PID"; wait "$HERALD_PID" || true; HERALD_PID=; }

# 1. Ingest and deliver.
config '["smtp", "deliver"]'; start
python3 - "$HTTP" "$MESSAGES" <<'PY'
import http.client, json, sys, threading
port, total = int(sys.argv[1]), int(sys.argv[2])
body = "From: a@sender.test\r\nSubject: figures\r\n\r\n" + "x" * 2000 + "\r\n"
def worker(start, step):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(start, total, step):
        c.request("POST", "/v1/send", json.dumps({"envelope": "a@sender.test", "recipient": f"r{i}@example.test", "body": body}),
                  {"Authorization": "Bearer k", "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 202, r.status
threads = [threading.Thread(target=worker, args=(i, 8)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
PY
for _ in $(seq 1800); do [ "$(metric herald_delivery_attempts_total)" -ge "$MESSAGES" ] && break; sleep 0.2; done
sleep 11  # one lag sample after the last delivery
curl -s "http://127.0.0.1:$HTTP/metrics" > "$WORK/metrics.txt"
families=$(grep -c '^# TYPE ' "$WORK/metrics.txt")
series=$(grep -vc '^#' "$WORK/metrics.txt")
bytes=$(wc -c < "$WORK/metrics.txt")
read -r scrape_ms healthz_ms < <(python3 - "$HTTP" "$SCRAPES" <<'PY'
import http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
def per(path):
    start = time.perf_counter()
    for _ in range(n):
        c.request("GET", path); c.getresponse().read()
    return (time.perf_counter() - start) * 1000 / n
per("/metrics")  # warm up
print(f"{per('/metrics'):.3f} {per('/healthz'):.3f}")
PY
)
delivered=$(metric 'herald_delivery_attempts_total')
stop
events=$((MESSAGES + delivered))

# 2. The live projector from the start of that log.
config '["project"]'; start
t0=$(date +%s.%N)
for _ in $(seq 3000); do [ "$(metric herald_projector_events_total)" -ge "$events" ] && break; sleep 0.1; done
t1=$(date +%s.%N)
projected=$(metric herald_projector_events_total)
live=$(echo "$projected / ($t1 - $t0)" | bc -l)
stop

# 3. Replay into an empty store.
mv "$WORK/data/projection.redb" "$WORK/projection.redb.live"
out=$(RUST_LOG=warn "$HERALD" replay --config "$WORK/herald.toml" --projection messages)
applied=$(echo "$out" | grep -o '([0-9]* applied)' | tr -dc 0-9)
secs=$(echo "$out" | grep -o 'in [0-9.]* s' | cut -d' ' -f2)
replay=$(echo "$applied / $secs" | bc -l)

printf 'metrics (families exported after the run): %s\n' "$families"
printf 'series after %s messages: %s (%s bytes)\n' "$MESSAGES" "$series" "$bytes"
printf '/metrics: %.2f ms per scrape (/healthz: %.2f ms on the same connection)\n' "$scrape_ms" "$healthz_ms"
printf 'live projector catching up: %.0f events/s (%s events)\n' "$live" "$projected"
printf 'herald replay: %s (%.0f events applied/s)\n' "$out" "$replay"
printf 'replay / live projector: %.2f\n' "$(echo "$replay / $live" | bc -l)"
