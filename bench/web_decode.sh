#!/usr/bin/env bash
# Decode speed of the web package (public/models/law-tiny-demo, q4) on every backend it runs on,
# in one script: natively on burn-flex (CPU) and burn-wgpu (Vulkan; lavapipe on a machine without
# a GPU), and in headless Chromium on WebGPU (SwiftShader) and on the wasm CPU fallback (the
# browser test's own measurements). Same question, greedy, 64 new tokens at most.
# Needs: trainer built with --features wgpu ($TRAINER), web/dist built, chromium (tools/install_web_tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${TRAINER:-${CARGO_TARGET_DIR:-target}/release/trainer}
PKG=public/models/law-tiny-demo
Q="헌법 제10조의 내용은 무엇인가요?"
row() { printf '| %-28s | %14s | %14s |\n' "$1" "$2" "$3"; }
stats() { # device rep -> "ttft tps"
  "$T" generate --model "$PKG" --prompt "$Q" --max-new-tokens 64 --device "$1" --stats 2>&1 >/dev/null |
    sed -n 's/.*first token \([0-9.]*\) ms, decode \([0-9.]*\) tokens.*/\1 \2/p'
}
declare -A R
for dev in cpu wgpu; do
  R[$dev-1]=$(stats $dev); R[$dev-2]=$(stats $dev)
done
LOG=$(mktemp)
LAW_BROWSER_TESTS=1 cargo test -q -p e2e --test web_app -- --nocapture >"$LOG" 2>&1 || { tail -40 "$LOG"; exit 1; }
browser() { # label -> "ttft tps"
  grep "^$1: " "$LOG" | head -1 | sed -n 's/.*"tps":"\([0-9.]*\)".*"ttft_ms":"\([0-9.]*\)".*/\2 \1/p' |
    awk '{ printf "%.1f %.1f", $1, $2 }'
}
B1=$(browser "first visit"); B2=$(browser "reload"); B3=$(browser "no WebGPU")
echo
row "backend (package $PKG)" "first token ms" "decode tok/s"
row "---" "---" "---"
row "native flex CPU, 1st run" ${R[cpu-1]}
row "native flex CPU, 2nd run" ${R[cpu-2]}
row "native wgpu, 1st run" ${R[wgpu-1]}
row "native wgpu, 2nd run" ${R[wgpu-2]}
row "Chromium WebGPU, 1st visit" $B1
row "Chromium WebGPU, reload" $B2
row "Chromium wasm CPU (flex)" $B3
for f in web/dist/*.wasm; do
  printf 'wasm %s: %s bytes raw, %s gzipped\n' "$(basename "$f")" "$(stat -c %s "$f")" "$(gzip -9c "$f" | wc -c)"
done
printf 'first load: %s bytes (site) + %s bytes (model package)\n' \
  "$(find web/dist -maxdepth 1 -type f -printf '%s\n' | paste -sd+ | bc)" \
  "$(grep -o '"total_bytes": [0-9]*' $PKG/manifest.json | grep -o '[0-9]*$')"
