#!/usr/bin/env bash
# `make observe`: a run under a real Prometheus with the shipped alert
# rules, for the dashboards (deploy/grafana/) and alerts. Starts the
# pipeline with its metrics on 127.0.0.1:9464, Prometheus (Debian's, installed if absent) on
# 127.0.0.1:9090 scraping it, and a synthetic feed (with a drifted
# admission) every minute, until Ctrl-C.
#
# Given the topic prefix and directory `make run` printed, it goes on with
# that run's topics, keys and vault; otherwise it starts a run of its own.
#   make observe CONSENTRY_TOPIC_PREFIX=run-…. CONSENTRY_DEMO_DIR=/tmp/consentry-demo-run-…
# OBSERVE_SECONDS stops it after that long (0: until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CONSENTRY_BIN:-${CARGO_TARGET_DIR:-target}/debug/consentry}"
export CONSENTRY_TOPIC_PREFIX="${CONSENTRY_TOPIC_PREFIX:-observe-$(date +%Y%m%d%H%M%S).}"
export CONSENTRY_SESSION_TIMEOUT_MS="${CONSENTRY_SESSION_TIMEOUT_MS:-6000}"
export RUST_LOG="${RUST_LOG:-warn}"
DEMO_DIR="${CONSENTRY_DEMO_DIR:-${TMPDIR:-/tmp}/consentry-demo-${CONSENTRY_TOPIC_PREFIX%.}}"
mkdir -p "$DEMO_DIR"
export CONSENTRY_KEY_FILE="${CONSENTRY_KEY_FILE:-$DEMO_DIR/keys.json}"
export CONSENTRY_VAULT="${CONSENTRY_VAULT:-$DEMO_DIR/vault.redb}"
METRICS="${OBSERVE_METRICS_ADDR:-127.0.0.1:9464}"
PROMETHEUS="${OBSERVE_PROMETHEUS_ADDR:-127.0.0.1:9090}"
SECONDS_TO_RUN="${OBSERVE_SECONDS:-0}"

if ! command -v prometheus >/dev/null; then
  echo "observe: installing Prometheus (Debian's prometheus package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
fi
[ -f "$CONSENTRY_KEY_FILE" ] || "$BIN" keys init --environment non-production --file "$CONSENTRY_KEY_FILE"
"$BIN" topics apply >/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN" run all --metrics-addr "$METRICS" >"$DEMO_DIR/observe-pipeline.log" 2>&1 &
pids+=($!)
mkdir -p "$DEMO_DIR/prometheus"
cat >"$DEMO_DIR/prometheus/prometheus.yml" <<YAML
global: { scrape_interval: 5s, evaluation_interval: 5s }
rule_files: ["$PWD/deploy/prometheus/consentry-rules.yaml"]
scrape_configs:
  - job_name: consentry
    static_configs:
      - targets: ["$METRICS"]
YAML
prometheus --config.file="$DEMO_DIR/prometheus/prometheus.yml" \
  --storage.tsdb.path="$DEMO_DIR/prometheus/data" \
  --web.listen-address="$PROMETHEUS" >"$DEMO_DIR/prometheus/prometheus.log" 2>&1 &
pids+=($!)

echo "observe: pipeline metrics on http://$METRICS/metrics (topic prefix '$CONSENTRY_TOPIC_PREFIX')"
echo "observe: Prometheus with the shipped rules on http://$PROMETHEUS (alerts: http://$PROMETHEUS/alerts)"
echo "observe: dashboards: import deploy/grafana/*.json into a Grafana whose Prometheus datasource is http://$PROMETHEUS"
echo "observe: a synthetic feed every minute; Ctrl-C stops everything"
started=$SECONDS
batch=0
while :; do
  # New patients each minute (their own ids: never duplicates of the last).
  first=$((100000 + batch * 100)); batch=$((batch + 1))
  "$BIN" synth --seed "$first" --patients 20 --first-patient "$first" --only consents >/dev/null
  "$BIN" synth --seed "$first" --patients 20 --first-patient "$first" --only ehr >/dev/null
  # One patient's messages with a Z-segment the topology does not list.
  "$BIN" synth --seed "$first" --patients 1 --first-patient $((first + 50)) --only ehr --drift-segment ZQX >/dev/null
  for _ in $(seq 1 60); do
    sleep 1
    if [ "$SECONDS_TO_RUN" -gt 0 ] && [ $((SECONDS - started)) -ge "$SECONDS_TO_RUN" ]; then
      exit 0
    fi
  done
done
