#!/usr/bin/env bash
# One prepared run on a lent GPU machine (device tool): where does the time to the first CUDA
# training step go, and what does one LoRA step of the polyglot-ko-1.3b shape cost, beside HF +
# PEFT on the same card. Expects a trainer built here with `--features cuda`, stripped and gzipped
# at .gpu/trainer.gz (device tool: carry [".gpu"]).
# Usage (on the GPU machine, from the repo root): bash bench/gpu_probe.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-probe}
mkdir -p "$OUT"
T=./.gpu/trainer
[ -f .gpu/trainer.gz ] && gunzip -f .gpu/trainer.gz  # carried gzipped: the tree that travels is capped at 64 MiB
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
ls "$CUDA_PATH/include/cuda.h" >/dev/null 2>&1 || echo "warning: no CUDA headers under $CUDA_PATH"
# Persistent caches for this run (compiled PTX); logs of compilation to count kernels.
cat > cubecl.toml <<TOML
[compilation]
cache = { file = "/tmp/cubecl-cache" }
[compilation.logger]
level = "basic"
file = "$OUT/compile.log"
TOML
run() { # name timeout args...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s%N)
  timeout "$limit" "$T" bench-train --device cuda "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  local rc=$?
  local t1=$(date +%s%N)
  echo "$name rc=$rc wall=$(( (t1 - t0) / 1000000 ))ms $(tail -c 400 "$OUT/$name.json") $(grep -m1 'first step' "$OUT/$name.err")"
  echo "  kernels compiled so far: $(grep -c -i 'compil' "$OUT/compile.log" 2>/dev/null || echo 0)"
}
run tiny 150 --hidden 256 --layers 2 --heads 4 --inter 1024 --vocab 1024 --batch 4 --seq 128 --steps 5
run tiny-again 60 --hidden 256 --layers 2 --heads 4 --inter 1024 --vocab 1024 --batch 4 --seq 128 --steps 5
run ko13b-lora 300 --hidden 2048 --layers 24 --heads 16 --inter 8192 --vocab 30080 --batch 8 --seq 512 --steps 3
timeout 150 python3 bench/torch_gpu_baseline.py "$OUT/torch" --quick 2>&1 | grep '^{' | tee "$OUT/torch.jsonl"
tail -c 2000 "$OUT/ko13b-lora.err"
rm -f cubecl.toml
