# Shared helpers for the figure scripts (sourced). Loopback only; every process started
# here is stopped by its PID.
TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target}
LOADTEST=$TARGET_DIR/release/herald-loadtest
HERALD=$TARGET_DIR/release/herald
MESSAGES=${MESSAGES:-20000}
WORK=$(mktemp -d /tmp/herald-figures.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
[ -x "$LOADTEST" ] || { echo "build first: cargo build --release -p herald -p herald-loadtest" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
rate() { echo "$1 / ($3 - $2)" | bc -l; }  # messages start end
# Starts Postfix's smtp-sink with a counter; sets SINK_PID, SINK_OUT.
smtp_sink() { SINK_OUT=$WORK/smtp-sink-$1.out; smtp-sink -u nobody -c "127.0.0.1:$1" 256 > "$SINK_OUT" 2>&1 & SINK_PID=$!; sleep 0.5; }
# The last mesg=N the smtp-sink counter printed (its counter is \r-separated).
smtp_sink_count() { tr '\r' '\n' < "$SINK_OUT" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2; }
