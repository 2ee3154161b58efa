#!/usr/bin/env bash
# `make run`: applies the topology under a fresh topic prefix, publishes a
# synthetic feed (consents first), runs all stages until idle, and prints a summary
# read back from the topics.
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
echo
"$BIN" summary
echo
echo "keys: $CONSENTRY_KEY_FILE; vault: $CONSENTRY_VAULT (resolve tokens with: $BIN vault serve --callers FILE)"
