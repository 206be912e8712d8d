# shellcheck shell=bash
# Helpers shared by kafka.sh and cassandra.sh (sourced, not run).

CACHE="${HERALD_CACHE:-$HOME/.cache/herald}"

# port_open PORT: true if something accepts TCP on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PIDFILE PATTERN: print the pid if it runs and its command line has PATTERN.
pid_alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
  echo "$pid"
}

# stop_pid NAME PIDFILE PATTERN: TERM, wait up to 60 s, then KILL; remove the pid file.
stop_pid() {
  local name="$1" pidf="$2" pat="$3" pid i
  if ! pid="$(pid_alive "$pidf" "$pat")"; then
    echo "[$name] not running"
    rm -f "$pidf"
    return 0
  fi
  echo "[$name] stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "[$name] still alive after 60 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$pidf"
  echo "[$name] stopped"
}

# need_jars NAME: fail unless install-peers.sh has put the jars in the cache.
need_jars() {
  if [[ ! -f $CACHE/$1/lib/.complete ]]; then
    echo "[$1] no jars in $CACHE/$1/lib: run ops/scripts/install-peers.sh first" >&2
    exit 1
  fi
}

# fail_with_log NAME LOGFILE PIDFILE PATTERN MESSAGE: print the log tail, kill the half-started server, exit 1.
fail_with_log() {
  echo "[$1] $5; last lines of $2:" >&2
  tail -n 40 "$2" >&2 || true
  stop_pid "$1" "$3" "$4" >&2
  exit 1
}
