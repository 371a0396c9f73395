#!/usr/bin/env bash
# Second prepared GPU run: burn-cuda f32 matmul TFLOP/s and greedy decode of the polyglot-ko-1.3b
# shape (random weights on the device), with the trainer built here at .gpu/trainer.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-probe2}
mkdir -p "$OUT"
[ -f .gpu/trainer.gz ] && gunzip -f .gpu/trainer.gz  # carried gzipped: the tree that travels is capped at 64 MiB
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n' > cubecl.toml
for n in 4096 8192; do
  timeout 120 ./.gpu/trainer bench-matmul --device cuda --size $n --reps 10 2>&1 | tail -1 | tee -a "$OUT/matmul.jsonl"
done
timeout 240 ./.gpu/trainer bench-forward --device cuda --config bench/polyglot-ko-1.3b.config.json \
  --prompt-len 128 --decode-steps 64 --reps 2 2>&1 | tail -1 | tee "$OUT/decode.json"
rm -f cubecl.toml
