#!/usr/bin/env bash
# `make run`: applies the topology under a fresh topic prefix, publishes a
# synthetic feed (consents first), runs all stages until idle, and prints a summary
# read back from the topics, where the dashboards are and how to watch a
# run in Prometheus, and the compliance report's headline.
set -euo pipefail
BIN="${CONSENTRY_BIN:-${CARGO_TARGET_DIR:-target}/debug/consentry}"
PATIENTS="${PATIENTS:-200}"
SEED="${SEED:-42}"
export CONSENTRY_TOPIC_PREFIX="${CONSENTRY_TOPIC_PREFIX:-run-$(date +%Y%m%d%H%M%S).}"
export CONSENTRY_SESSION_TIMEOUT_MS="${CONSENTRY_SESSION_TIMEOUT_MS:-6000}"
export RUST_LOG="${RUST_LOG:-warn}"
# Development keys and vault for this run (de-identify's date shifts,
# tokenize's tokens): a non-production key ring and an embedded vault file.
DEMO_DIR="${CONSENTRY_DEMO_DIR:-${TMPDIR:-/tmp}/consentry-demo-${CONSENTRY_TOPIC_PREFIX%.}}"
mkdir -p "$DEMO_DIR"
export CONSENTRY_KEY_FILE="${CONSENTRY_KEY_FILE:-$DEMO_DIR/keys.json}"
export CONSENTRY_VAULT="${CONSENTRY_VAULT:-$DEMO_DIR/vault.redb}"
[ -f "$CONSENTRY_KEY_FILE" ] || "$BIN" keys init --environment non-production --file "$CONSENTRY_KEY_FILE"

echo "== topology"
"$BIN" topology check
echo "== topics and schemas (prefix '$CONSENTRY_TOPIC_PREFIX')"
"$BIN" topics apply
echo "== synthetic consents, read into the consent table first (unknown consent is denied)"
"$BIN" synth --seed "$SEED" --patients "$PATIENTS" --only consents
"$BIN" run consent-ledger --exit-when-idle 2 --metrics-addr 127.0.0.1:0
echo "== synthetic EHR feed"
"$BIN" synth --seed "$SEED" --patients "$PATIENTS" --only ehr
echo "== pipeline (all stages, exits after 5 s without input)"
SECONDS=0
"$BIN" run all --exit-when-idle 5 --metrics-addr 127.0.0.1:0
echo "pipeline wall time: ${SECONDS} s (includes the 5 s idle wait and consumer-group joins)"
echo "== five patients withdraw their consent while the pipeline runs; it notifies every destination that holds their data"
"$BIN" run all --exit-when-idle 10 --metrics-addr 127.0.0.1:0 >"$DEMO_DIR/withdrawals.log" 2>&1 &
pipeline=$!
sleep 5  # the stages join their consumer groups (half the session timeout)
"$BIN" synth --seed "$SEED" --patients "$PATIENTS" --withdraw 5
wait "$pipeline"
echo
"$BIN" summary
echo
echo "keys: $CONSENTRY_KEY_FILE; vault: $CONSENTRY_VAULT (resolve tokens with: $BIN vault serve --callers FILE)"
"$BIN" report --since 1d --format html --output "$DEMO_DIR/report.html"
"$BIN" report --since 1d --format json --output "$DEMO_DIR/report.json"
echo
echo "== dashboards and alerts"
echo "Grafana dashboards: deploy/grafana/ (pipeline, privacy drift, vault access; as a ConfigMap: kubectl kustomize deploy/grafana)"
echo "alert rules: deploy/prometheus/ (runbooks: README.md, Alerts)"
echo "this run under a real Prometheus with those rules (http://127.0.0.1:9090, a new feed every minute):"
echo "  make observe CONSENTRY_TOPIC_PREFIX=$CONSENTRY_TOPIC_PREFIX CONSENTRY_DEMO_DIR=$DEMO_DIR"
echo
echo "== compliance report (whole: $DEMO_DIR/report.html, report.json; $BIN report --help)"
"$BIN" report --since 1d | sed -n '/^Headline/,/^$/p' | sed '/^$/d'

