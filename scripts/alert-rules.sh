#!/usr/bin/env bash
# The alert rules, checked and unit-tested by promtool (Debian's
# `prometheus` package, installed if absent): `promtool check rules` on
# the rules file and `promtool test rules` on its tests, where each alert
# fires on the series that should fire it and stays quiet on a healthy one.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
if ! command -v promtool >/dev/null; then
  echo "alert rules: installing promtool (Debian's prometheus package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
fi
promtool check rules consentry-rules.yaml
promtool test rules consentry-rules.test.yaml consentry-rules-baseline.test.yaml
