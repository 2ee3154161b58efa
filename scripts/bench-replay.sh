#!/usr/bin/env bash
# Replay against the live pipeline, on one fresh broker in one run
# (release build): `make run`'s pipeline over a synthetic feed, then
# `replay plan` and `replay apply` of a policy that takes one field from
# outcomes-analytics. Prints the live rate (source records over the
# pipeline's working time, its idle wait left out), the planning rate
# (normalized events over the plan's wall time; target three times the
# live rate) and the apply rate (corrections written over the apply's
# wall time, which includes reading and replaying the history; target
# the live rate).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/consentry"
cargo build --release --quiet --bin consentry
scripts/stack.sh down >/dev/null
scripts/stack.sh up >/dev/null
export CONSENTRY_TOPIC_PREFIX="bench-replay-$(date +%s)."
export CONSENTRY_BIN="$bin"
log=/tmp/consentry-bench-replay-run.txt
scripts/run-demo.sh >"$log" 2>&1
wall=$(sed -n 's/^pipeline wall time: \([0-9.]*\) s.*/\1/p' "$log")
sources=$(awk '$2 == "Source" { n += $3 } END { print n + 0 }' "$log")
policy=$(mktemp --suffix=.yaml)
sed -e 's/demographics.state, encounter.encounter_class]/demographics.state]/' \
    -e 's/^policy_version: .*/policy_version: "bench-replay"/' topology.yaml >"$policy"
export CONSENTRY_KEY_FILE="/tmp/consentry-demo-${CONSENTRY_TOPIC_PREFIX%.}/keys.json"
export CONSENTRY_VAULT="/tmp/consentry-demo-${CONSENTRY_TOPIC_PREFIX%.}/vault.redb"
start=$(date +%s.%N)
set +e
"$bin" replay plan --policy "$policy" >/tmp/consentry-bench-replay-plan.txt 2>&1
rc=$?
set -e
end=$(date +%s.%N)
[ "$rc" = 3 ] || { echo "replay plan exited $rc (expected 3):"; cat /tmp/consentry-bench-replay-plan.txt; exit 1; }
events=$(sed -n 's/.* over \([0-9]*\) normalized events.*/\1/p' /tmp/consentry-bench-replay-plan.txt)
astart=$(date +%s.%N)
"$bin" replay apply --policy "$policy" --json >/tmp/consentry-bench-replay-apply.json 2>/tmp/consentry-bench-replay-apply.err \
  || { echo "replay apply failed:"; cat /tmp/consentry-bench-replay-apply.err; exit 1; }
aend=$(date +%s.%N)
rm -f "$policy"
read -r corrections writes < <(python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["applied"]; print(a["corrections"], a["write_seconds"])' /tmp/consentry-bench-replay-apply.json)
awk -v wall="$wall" -v src="$sources" -v ev="$events" -v s="$start" -v e="$end" \
    -v n="$corrections" -v w="$writes" -v ast="$astart" -v aen="$aend" 'BEGIN {
  work = wall - 5; if (work < 1) work = 1; plan = e - s;
  live = src / work; planned = ev / plan;
  printf "replay benchmark (one fresh broker, release build):\n";
  printf "  live pipeline: %d source records in %.0f s of work (%.0f s wall less the 5 s idle wait): %.0f records/s\n", src, work, wall, live;
  printf "  replay plan:   %d normalized events in %.1f s: %.0f events/s (%.2fx the live rate; target 3x)\n", ev, plan, planned, planned / live;
  apply = aen - ast; replayed = ev / apply;
  printf "  replay apply:  %d normalized events replayed and %d corrections written in %.1f s: %.0f events/s (%.2fx the live rate; target 1x)\n", ev, n, apply, replayed, replayed / live;
  printf "                 the writing alone: %d corrections in %.2f s, %.0f corrections/s (%.2fx the live rate)\n", n, w, n / w, (n / w) / live;
}'
