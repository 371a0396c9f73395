#!/usr/bin/env bash
# The trainer's CUDA path, with no GPU: every kernel it launches compiled by the real NVRTC for
# an H200 (sm_90a), every cuBLAS product's arguments checked (and a few products computed, on
# the host, against the CPU's), and the host side run through CUDA's driver calls (fake_cuda.c
# says what is and is not checked). Run it before spending a
# lent GPU's minutes, and in CI (.ci/run).
#
#   bash tools/fake-cuda/check.sh [TRAINER]
#
# TRAINER: a trainer binary built with `--features cuda` (default: builds the dev profile's
# with `--features cuda,wgpu`). NVRTC 13.0 and CUDA's headers come from NVIDIA's wheels on PyPI
# (tools/fake-cuda/env.sh: about 95 MB, checked against their sha256, kept in
# ~/.cache/law-polyglot/cuda-13.0); only `curl` and `unzip` are needed, no Python. A run fails
# on a compilation error, a product cuBLAS would reject, a fallback from cuBLAS to CubeCL or
# from CubeCL's stream to GPU-side flags ("stream not found"), or a non-zero exit. `--census` also prints the 1.3B shape's kernel launches per training step, by
# kernel.
set -euo pipefail
cd "$(dirname "$0")/../.."

census=0
args=()
for a in "$@"; do
  if [ "$a" = --census ]; then census=1; else args+=("$a"); fi
done

. tools/fake-cuda/env.sh

TRAINER="${args[0]:-}"
if [ -z "$TRAINER" ]; then
  log "building the trainer (dev profile, --features cuda,wgpu)"
  cargo build -q -p trainer --features cuda,wgpu
  TRAINER="${CARGO_TARGET_DIR:-target}/debug/trainer"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failed=0
# run NAME ARGS...: the trainer's command under the fake driver, judged by its exit status and
# its output
run() {
  local name=$1
  shift
  local out="$WORK/$name.log" rc=0
  "$TRAINER" "$@" >"$out" 2>&1 || rc=$?
  local bad
  bad=$(grep -m 3 -E 'Compilation Error|fake cuBLAS: .* rejected|warning: (a )?cuBLAS|using CubeCL|stream not found|panicked' "$out" || true)
  if [ "$rc" != 0 ] || [ -n "$bad" ] || ! grep -q '^fake-cuda: [1-9]' "$out"; then
    failed=1
    log "FAILED: $name (exit $rc): trainer $*"
    [ -n "$bad" ] && printf '%s\n' "$bad" >&2
    grep -m 1 -A 8 'Compilation Error' "$out" >&2 || tail -n 25 "$out" >&2
  else
    log "ok: $name: $(grep '^fake-cuda: ' "$out" | tail -n 1 | cut -d' ' -f2-)"
  fi
}

SHAPE=(--hidden 2048 --heads 16 --inter 8192 --vocab 30080 --batch 8 --seq 512 --layers 24
  --lora-r 8 --lora-dropout 0.05)
run bf16 bench-train --device cuda "${SHAPE[@]}" --steps 1 --dtype bf16
run bf16-timeline bench-train --device cuda "${SHAPE[@]}" --steps 1 --dtype bf16 --timeline
run f32 bench-train --device cuda "${SHAPE[@]}" --steps 1 --dtype f32
run qlora bench-train --device cuda "${SHAPE[@]}" --steps 1 --dtype bf16 --quant nf4
run qlora-no-dq bench-train --device cuda "${SHAPE[@]}" --steps 1 --dtype bf16 --quant nf4 \
  --no-double-quant
run grad-checkpointing bench-train --device cuda "${SHAPE[@]}" --steps 1 --dtype bf16 \
  --grad-checkpointing
run sft-bf16 sft --device cuda --dtype bf16 --max-steps 2 --show-answers 1 --out "$WORK/sft"
FAKE_CUDA_DEVICES=2 run sft-2-devices sft --device cuda --devices 0,1 --dtype bf16 \
  --max-steps 2 --show-answers 0 --out "$WORK/sft2"
# each replica queued from a thread of its own, on the stream the main thread would use
FAKE_CUDA_DEVICES=2 LAW_POLYGLOT_REPLICAS=threads run sft-2-threads sft --device cuda \
  --devices 0,1 --dtype bf16 --max-steps 2 --show-answers 0 --out "$WORK/sft4"
run sft-qlora sft --device cuda --dtype bf16 --quant nf4 --grad-checkpointing --max-steps 2 \
  --show-answers 0 --out "$WORK/sft3"
# our cuBLAS calls computed on the host against the CPU's products (layouts, views at offsets,
# accumulation into rows); the command fails beyond a tolerance
FAKE_CUDA_GEMM=compute run products bench-matmul --device cuda --check-host
run generate generate --device cuda --max-new-tokens 4 --prompt "헌법 제1조는?"
run generate-nf4 generate --device cuda --quant nf4 --max-new-tokens 4 --prompt "헌법 제1조는?"

if [ "$census" = 1 ]; then
  # launches of 1 and of 3 timed steps (each after 3 warm-up steps): the difference over 2
  for n in 1 3; do
    FAKE_CUDA_QUIET=1 FAKE_CUDA_CENSUS="$WORK/census$n.tsv" "$TRAINER" bench-train \
      --device cuda "${SHAPE[@]}" --steps $n --dtype bf16 >/dev/null 2>&1
  done
  echo "kernel launches per step, 1.3B shape, bf16, 8 x 512 (launches, elements' threads, kernel):"
  awk -F'\t' 'FNR == 1 { next } FILENAME ~ /census1/ { n[$4] -= $1; t[$4] -= $3; next }
    { n[$4] += $1; t[$4] += $3 }
    END { for (k in n) if (n[k] > 0) { printf "%6.1f %10.0f  %s\n", n[k] / 2, t[k] / 2, k; s += n[k] / 2 }
          printf "%6.1f in all\n", s }' "$WORK/census1.tsv" "$WORK/census3.tsv" | sort -rn
fi

if [ "$failed" != 0 ]; then
  log "some runs failed"
  exit 1
fi
log "every run compiled and ran under the stand-in driver"
