#!/usr/bin/env bash
# The whole pipeline on a fixed synthetic feed (`synth --seed 7 --patients
# 2000`, 15k source records), release build, one process, on a fresh local
# broker: source records/s, (event, purpose) records/s, Kafka records
# written per source record (by kind: internal topics, audit, ledgers,
# state tables, destinations, disclosures, quarantine) and the process's
# peak memory. The feed's consents are read into the consent table first
# (a run of its own), as `make run` does.
#
#   scripts/bench-pipeline.sh [PATIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS="${1:-2000}"
BIN="${CONSENTRY_BIN:-${CARGO_TARGET_DIR:-target}/release/consentry}"
[ -x "$BIN" ] || cargo build --release --bins >/dev/null
export CONSENTRY_TOPIC_PREFIX="bench-pipe-$(date +%s)."
export CONSENTRY_SESSION_TIMEOUT_MS=6000
export RUST_LOG=warn
work="$(mktemp -d)"
export CONSENTRY_KEY_FILE="$work/keys.json" CONSENTRY_VAULT="$work/vault.redb"
scripts/stack.sh down >/dev/null; scripts/stack.sh up >/dev/null
"$BIN" keys init --environment non-production --file "$CONSENTRY_KEY_FILE" >/dev/null
"$BIN" topics apply >/dev/null
"$BIN" synth --seed 7 --patients "$PATIENTS" --only consents >/dev/null
"$BIN" run consent-ledger --exit-when-idle 2 --metrics-addr 127.0.0.1:0
"$BIN" synth --seed 7 --patients "$PATIENTS" --only ehr >/dev/null
# The run, timed, with its peak resident memory (the child's max RSS).
python3 - "$BIN" "$work/run.json" <<'PY'
import json, resource, subprocess, sys, time
t = time.monotonic()
subprocess.run([sys.argv[1], "run", "all", "--exit-when-idle", "5", "--metrics-addr", "127.0.0.1:0"], check=True)
wall = time.monotonic() - t
rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
json.dump({"wall_s": wall, "peak_rss_mb": rss_kb / 1024}, open(sys.argv[2], "w"))
PY
"$BIN" summary --json --ledgers > "$work/summary.json"
python3 - "$work/run.json" "$work/summary.json" "$PATIENTS" <<'PY'
import json, sys
run = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
topics = {t["topic"]: t for t in s["topics"]}
source = sum(t["records"] for t in s["topics"] if t["role"] == "Source")
kinds = {"Internal": "internal topics", "Audit": "audit", "AuditHeads": "audit", "Ledger": "idempotency ledgers",
         "State": "state tables", "ConsentState": "state tables", "Destination": "destinations",
         "Disclosures": "disclosure ledger", "Quarantine": "quarantine"}
written = {}
for t in s["topics"]:
    k = kinds.get(t["role"])
    if k:
        written[k] = written.get(k, 0) + t["records"]
total = sum(written.values())
events = topics.get("events.normalized", {}).get("records", 0)
pairs = topics.get("events.gated", {}).get("records", 0)
# Work time: the wall time less the 5 s idle wait before exit.
work = max(run["wall_s"] - 5, 0.001)
print(f"whole pipeline, {sys.argv[3]} patients (seed 7), one process, release build:")
print(f"  source records {source}, events {events}, (event, purpose) records {pairs}")
print(f"  wall {run['wall_s']:.1f} s, work {work:.1f} s (wall less the 5 s idle wait; group joins included)")
print(f"  {source / work:,.0f} source records/s, {pairs / work:,.0f} (event, purpose) records/s")
print(f"  Kafka records written: {total:,} = {total / max(source, 1):.1f} per source record")
for k, n in sorted(written.items(), key=lambda kv: -kv[1]):
    print(f"    {k:<22} {n:>9,}  {n / max(source, 1):5.1f} per source record")
print(f"  peak RSS of run all: {run['peak_rss_mb']:.0f} MB")
PY
rm -rf "$work"
