#!/usr/bin/env bash
# `make bench`: in-process stage throughput (criterion) and the broker
# comparison (a stage against a raw pass-through on the same broker), with a
# short report at the end. Release builds.
set -euo pipefail
out="${CARGO_TARGET_DIR:-target}/bench-report.txt"
mkdir -p "$(dirname "$out")"
cargo bench --bench stages -- --noplot 2>&1 | tee /tmp/consentry-bench-stages.txt
cargo bench --bench broker 2>&1 | tee /tmp/consentry-bench-broker.txt
{
  echo "Consentry benchmark report ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores)"
  echo
  echo "in-process, one core (criterion median):"
  awk '/^stages\//{name=$1} /time:/{ if (name!="") { print "  " name "  " $0; name="" } } /thrpt:/{print "  " $0}' /tmp/consentry-bench-stages.txt \
    | sed -e 's/^ *\(stages\/[^ ]*\) *time: */  \1  time /'
  echo
  sed -n '/^broker benchmark/,$p' /tmp/consentry-bench-broker.txt
} | tee "$out"
echo "report: $out"
