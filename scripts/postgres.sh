#!/usr/bin/env bash
# PostgreSQL for the vault store's test suite (127.0.0.1:5432, user
# postgres, trust auth, as these machines provide it): installed from
# Debian's packages if absent (with trust for local TCP: test machines
# only), started if not answering. Idempotent; quiet when all is well.
set -euo pipefail

if ! command -v pg_isready >/dev/null; then
  echo "postgres: installing PostgreSQL"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  hba="$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)"
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main reload 2>/dev/null || true
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "postgres: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432 || { echo "postgres: not answering on 127.0.0.1:5432"; exit 1; }
fi
