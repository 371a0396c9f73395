#!/usr/bin/env bash
# Installs what the web site and its browser tests need, once, into a folder that
# survives between runs ($LAW_TOOLS, default ~/.cache/law-polyglot/tools):
#   chromium + chromium-driver + a Korean font for screenshots (apt), wasm-bindgen-cli at the exact version in Cargo.lock,
#   trunk 0.21.14 (0.22 needs a newer rustc), wasm-opt from binaryen 132 (npm; Debian's 108 breaks the module).
# Prints the bin folder to put on PATH as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${LAW_TOOLS:-$HOME/.cache/law-polyglot/tools}"
mkdir -p "$TOOLS/bin"
log() { echo "[web-tools] $*" >&2; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || [ ! -d /usr/share/fonts/truetype/nanum ]; then
  log "installing chromium and chromium-driver (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver fonts-nanum >&2
fi

WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock)
if ! "$TOOLS/bin/wasm-bindgen" --version 2>/dev/null | grep -q " $WB_VERSION\$"; then
  log "installing wasm-bindgen-cli $WB_VERSION (about 5 minutes)"
  env -u CARGO_TARGET_DIR cargo install -q wasm-bindgen-cli --version "=$WB_VERSION" --root "$TOOLS" --force >&2
fi

if ! "$TOOLS/bin/trunk" --version 2>/dev/null | grep -q "0.21.14"; then
  log "installing trunk 0.21.14 (about 10 minutes)"
  env -u CARGO_TARGET_DIR cargo install -q trunk --version =0.21.14 --locked --root "$TOOLS" --force >&2
fi

if ! "$TOOLS/bin/wasm-opt" --version 2>/dev/null | grep -q "version 132"; then
  log "installing wasm-opt (binaryen 132, npm)"
  mkdir -p "$TOOLS/npm"
  (cd "$TOOLS/npm" && npm install --silent --no-audit --no-fund binaryen@132 >&2)
  ln -sf "$TOOLS/npm/node_modules/.bin/wasm-opt" "$TOOLS/bin/wasm-opt"
fi
echo "$TOOLS/bin"
