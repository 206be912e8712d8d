#!/usr/bin/env bash
# Figure: herald-loadtest send over REST versus wrk posting the same 5 KB JSON request to a
# release `herald serve` (embedded backends, fresh data directory for each tool), 20
# connections, DURATION seconds each (default 10). Delivery fails (no DNS); it does not matter.
set -euo pipefail
. "$(dirname "$0")/common.sh"
DURATION=${DURATION:-10}
python3 - "$WORK/post.lua" <<'PY'
import json, sys
head = ("X-Herald-Loadtest: wrk-1 1700000000000000\r\nFrom: Herald loadtest <loadtest@sender.test>\r\n"
        "To: <rcpt1@example.test>\r\nSubject: Herald load test 1\r\nMessage-ID: <wrk-1@loadtest.herald.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
line = "The quick brown fox jumps over the lazy dog while Herald measures its latency."[:76] + "\r\n"
body = head
while len(body) + len(line) <= 5120:
    body += line
body += line[:max(0, 5120 - len(body) - 2)] + "\r\n"
doc = json.dumps({"envelope": "loadtest@sender.test", "recipient": ["rcpt1@example.test"], "body": body})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                             'wrk.headers["Authorization"] = "Bearer demo-key"\nwrk.body = ' + json.dumps(doc) + "\n")
PY
start_herald() { # port
  cat > "$WORK/herald-$1.toml" <<TOML
[storage]
data_dir = "$WORK/data-$1"
[http]
listen = "127.0.0.1:$1"
[bounces]
listen = "127.0.0.1:0"
[tracking]
listen = "127.0.0.1:0"
[delivery]
helo_name = "mta.herald.localhost"
retry_initial_secs = 60
dns_servers = ["127.0.0.1:9"]
mx_port = 9
[backend]
log = "embedded"
store = "embedded"
[[accounts]]
id = "demo"
api_keys = ["demo-key"]
TOML
  "$HERALD" serve --config "$WORK/herald-$1.toml" > "$WORK/herald-$1.log" 2>&1 & HERALD_PID=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/metrics" && return; sleep 0.1; done
  echo "herald did not start" >&2; exit 1
}
port=$(free_port); start_herald "$port"
wrk -t2 -c20 -d"${DURATION}s" -s "$WORK/post.lua" --latency "http://127.0.0.1:$port/v1/send" > "$WORK/wrk.out"
kill "$HERALD_PID"; wait "$HERALD_PID" 2>/dev/null || true
grep -q Non-2xx "$WORK/wrk.out" && echo "wrk got non-2xx responses: $(grep Non-2xx "$WORK/wrk.out")" >&2
theirs=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
port=$(free_port); start_herald "$port"
"$LOADTEST" send --target "http://127.0.0.1:$port" --api-key demo-key -c 20 --duration "${DURATION}s" --size 5k --json --quiet > "$WORK/ours.json"
kill "$HERALD_PID"; wait "$HERALD_PID" 2>/dev/null || true
ours=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['errors']==0 and not r['refused_by_code'], r; print(r['throughput'])" "$WORK/ours.json")
printf 'wrk %8.0f req/s (p99 %s)  herald-loadtest %8.0f msg/s (p99 %sus)  ratio %.2fx\n' "$theirs" \
  "$(awk '/ 99%/ {print $2}' "$WORK/wrk.out")" "$ours" \
  "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latency']['p99_us'])" "$WORK/ours.json")" "$(echo "$ours / $theirs" | bc -l)"
