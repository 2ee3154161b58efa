#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target for FUZZ_SECONDS (default 60) each.
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP=1 enables them on the
# stable toolchain these machines have.
set -euo pipefail
SECS="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
for t in hl7_parse normalize fhir_check topology wire_decode token_parse consent_ledger dates vault_api; do
  echo "== fuzz $t (${SECS}s)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536
done
