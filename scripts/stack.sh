#!/usr/bin/env bash
# Starts or stops the local stack: tansu (memory storage) and rivven-schema,
# both on 127.0.0.1. Safe to call twice: `up` leaves running servers alone,
# `down` ignores stopped ones. Pid and log files live in $CONSENTRY_RUN_DIR.
#
#   scripts/stack.sh up|down|status
set -euo pipefail

TOOLS_DIR="${CONSENTRY_TOOLS_DIR:-$HOME/.local/share/consentry-tools}"
RUN_DIR="${CONSENTRY_RUN_DIR:-$HOME/.local/state/consentry-stack}"
BOOTSTRAP="${CONSENTRY_BOOTSTRAP:-127.0.0.1:9092}"
REGISTRY="${CONSENTRY_SCHEMA_REGISTRY:-http://127.0.0.1:8081}"
mkdir -p "$RUN_DIR"

broker_host="${BOOTSTRAP%%,*}"; broker_port="${broker_host##*:}"; broker_host="${broker_host%:*}"
reg_hostport="${REGISTRY#http://}"; reg_hostport="${reg_hostport%%/*}"
reg_port="${reg_hostport##*:}"; reg_host="${reg_hostport%:*}"

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
registry_ok() { curl -fsS -o /dev/null --max-time 2 "$REGISTRY/subjects" 2>/dev/null; }
running() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

wait_for() { # name, probe...
  local name="$1"; shift
  for _ in $(seq 1 100); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  echo "stack: $name did not answer within 20 s; log: $RUN_DIR/$name.log" >&2
  tail -n 20 "$RUN_DIR/$name.log" >&2 || true
  return 1
}

up() {
  if tcp_open "$broker_host" "$broker_port"; then
    echo "stack: broker already answering on $broker_host:$broker_port"
  else
    [ -x "$TOOLS_DIR/tansu" ] || { echo "stack: tansu missing; run 'make tools'" >&2; exit 1; }
    setsid "$TOOLS_DIR/tansu" broker \
      --listener-url "tcp://$broker_host:$broker_port" \
      --advertised-listener-url "tcp://$broker_host:$broker_port" \
      --storage-engine memory://tansu/ >"$RUN_DIR/tansu.log" 2>&1 < /dev/null &
    echo $! > "$RUN_DIR/tansu.pid"
    wait_for tansu tcp_open "$broker_host" "$broker_port"
    echo "stack: broker up on $broker_host:$broker_port (pid $(cat "$RUN_DIR/tansu.pid"))"
  fi
  if registry_ok; then
    echo "stack: schema registry already answering at $REGISTRY"
  else
    [ -x "$TOOLS_DIR/rivven-schema" ] || { echo "stack: rivven-schema missing; run 'make tools'" >&2; exit 1; }
    setsid "$TOOLS_DIR/rivven-schema" serve --host "$reg_host" --port "$reg_port" \
      --compatibility BACKWARD --log-level warn >"$RUN_DIR/rivven-schema.log" 2>&1 < /dev/null &
    echo $! > "$RUN_DIR/rivven-schema.pid"
    wait_for rivven-schema registry_ok
    echo "stack: schema registry up at $REGISTRY (pid $(cat "$RUN_DIR/rivven-schema.pid"))"
  fi
}

stop() { # name
  if running "$1"; then
    local pid; pid="$(cat "$RUN_DIR/$1.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stack: stopped $1 (pid $pid)"
  else
    echo "stack: $1 not running"
  fi
  rm -f "$RUN_DIR/$1.pid"
}

case "${1:-}" in
  up) up ;;
  down) stop rivven-schema; stop tansu ;;
  status)
    tcp_open "$broker_host" "$broker_port" && echo "broker: up" || echo "broker: down"
    registry_ok && echo "registry: up" || echo "registry: down" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
