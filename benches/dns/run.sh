#!/usr/bin/env bash
# Sender-domain figures, side by side in one run on this machine:
#  1. queries/s for a DKIM TXT (RSA-2048, two strings) from Herald's DNS server versus Knot
#     serving the same record (copied from Herald's answer), with dnsperf over UDP + EDNS;
#  2. wall time of verifying one domain end to end, cold and warm resolver cache
#     (benches/src/bin/dns_verify.rs), and of POST /v1/domains/{d}/verify (cold, plus the
#     event append and projection read-back).
# Needs: cargo build --release -p herald -p herald-benches; knotd, kdig, dnsperf
# (ops/scripts/install-peers.sh). Loopback only; every process started here is stopped by PID.
# Usage: benches/dns/run.sh [SECONDS_PER_RUN (default 10)] [CLIENTS (default 8)]
set -euo pipefail
SECS="${1:-10}"
CLIENTS="${2:-8}"
TARGET="${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}/release"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); HDNS=$(free_port); KNOT=$(free_port)

# Knot: the customer's zone (filled in below) and, for the comparison, a copy of the record.
mkdir -p "$WORK/knot"
zone_file() { # origin serial records...
  local o=$1 s=$2; shift 2
  printf '$ORIGIN %s.\n$TTL 60\n@ SOA ns.%s. hostmaster.%s. %s 60 60 600 60\n@ NS ns.%s.\nns A 127.0.0.1\n' "$o" "$o" "$o" "$s" "$o"
  printf '%s\n' "$@"
}
zone_file sender.test 1 > "$WORK/knot/sender.test.zone"
zone_file herald.test 1 > "$WORK/knot/herald.test.zone"
cat > "$WORK/knot/knot.conf" <<CONF
server:
  rundir: "$WORK/knot"
  listen: 127.0.0.1@$KNOT
database:
  storage: "$WORK/knot"
zone:
  - domain: sender.test
    file: "$WORK/knot/sender.test.zone"
  - domain: herald.test
    file: "$WORK/knot/herald.test.zone"
CONF
knotd -c "$WORK/knot/knot.conf" >/dev/null 2>&1 & PIDS+=($!)

cat > "$WORK/herald.toml" <<CONF
[storage]
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$HTTP"
[smtp]
enabled = false
[bounces]
listen = "127.0.0.1:0"
[dns]
enabled = true
zone = "herald.test"
listen = "127.0.0.1:$HDNS"
resolvers = ["127.0.0.1:$KNOT"]
sending_ips = ["192.0.2.10"]
tracking_ips = ["192.0.2.80"]
[[accounts]]
id = "bench"
api_keys = ["bench-key"]
CONF
RUST_LOG=warn "$TARGET/herald" serve --config "$WORK/herald.toml" & PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done
API=(-s -H "Authorization: Bearer bench-key")
curl "${API[@]}" -H 'content-type: application/json' -d '{"domain":"sender.test"}' "http://127.0.0.1:$HTTP/v1/domains" >/dev/null
RECORDS=$(curl "${API[@]}" "http://127.0.0.1:$HTTP/v1/domains/sender.test/records")
mapfile -t LINES < <(python3 -c '
import json,sys
for r in json.load(sys.stdin)["records"]:
    v = "\"%s\"" % r["value"] if r["type"] == "TXT" else r["value"]
    print("%s. %s %s" % (r["name"], r["type"], v))' <<<"$RECORDS")
zone_file sender.test 2 "${LINES[@]}" > "$WORK/knot/sender.test.zone"
DKIM=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["records"][0]["value"])' <<<"$RECORDS")
TOKEN=$(cut -d. -f2 <<<"$DKIM")
TXT=$(kdig @127.0.0.1 -p "$HDNS" +tcp +short "$DKIM" TXT)
zone_file herald.test 2 "${DKIM} TXT ${TXT}" > "$WORK/knot/herald.test.zone"
knotc -c "$WORK/knot/knot.conf" zone-reload sender.test >/dev/null
knotc -c "$WORK/knot/knot.conf" zone-reload herald.test >/dev/null
sleep 1
[[ "$(kdig @127.0.0.1 -p "$KNOT" +tcp +short "$DKIM" TXT)" == "$TXT" ]] || { echo "Knot does not serve the copy"; exit 1; }

echo "$DKIM TXT" > "$WORK/queries"
qps() { dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/queries" -l "$SECS" -c "$CLIENTS" -e -D 2>&1 | awk '/Queries per second/ {print $4} /Queries lost/ {lost=$3} END {}'; }
echo "DKIM TXT $DKIM ($(wc -c <<<"$TXT") bytes of TXT), dnsperf $SECS s, $CLIENTS clients, EDNS:"
echo "  herald: $(qps "$HDNS") queries/s"
echo "  knot:   $(qps "$KNOT") queries/s"
echo "  herald: $(qps "$HDNS") queries/s (again)"

"$TARGET/dns_verify" --resolver "127.0.0.1:$KNOT" --zone herald.test --domain sender.test --token "$TOKEN" --runs 50
START=$(date +%s%N)
for _ in $(seq 20); do curl "${API[@]}" -X POST "http://127.0.0.1:$HTTP/v1/domains/sender.test/verify" >/dev/null; done
echo "POST verify (cold resolver + append + read-back): $(( ($(date +%s%N) - START) / 20000000 )) ms mean over 20"
curl "${API[@]}" "http://127.0.0.1:$HTTP/v1/domains/sender.test" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("status:", d["status"])'
