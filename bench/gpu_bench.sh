#!/usr/bin/env bash
# The GPU benchmark of issue 5, in one run on a lent GPU machine (device tool), our binary and
# HF + PEFT side by side on the same card, a table printed last. Budget: under 8 minutes.
#   - LoRA r8 on query_key_value, polyglot-ko-1.3b shape (random init), batch 8 x 512:
#     tokens/s and peak memory (nvidia-smi, polled), ours in bf16 (base matmuls), without and
#     with --grad-checkpointing (the f32 figures are in BENCHMARKS.md already);
#   - time from process start to the first finished training step (fresh kernel cache);
#   - matmul TFLOP/s (burn-cuda f32; torch bf16 from torch_gpu_baseline.py);
#   - greedy decode tokens/s: burn-cuda, burn-wgpu (Vulkan, if the machine has an NVIDIA ICD),
#     HF generate.
# Build here: CUDARC_CUDA_VERSION=13000 cargo build --release -p trainer --features cuda,wgpu,
# strip, gzip to .gpu/trainer.gz; run: `bash bench/gpu_bench.sh` with carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
T=./.gpu/trainer
[ -f .gpu/trainer.gz ] && gunzip -f .gpu/trainer.gz
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n' > cubecl.toml
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
peak() { # command... -> runs it while polling GPU memory; prints peak MiB on the last line
  local log=$OUT/mem.$$; : > "$log"
  ( while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$log"; sleep 0.2; done ) &
  local poll=$!
  "$@"; local rc=$?
  kill $poll 2>/dev/null; wait $poll 2>/dev/null
  echo "peak_mib=$(sort -n "$log" | tail -1) rc=$rc"
}
SHAPE="--hidden 2048 --layers 24 --heads 16 --inter 8192 --vocab 30080 --batch 8 --seq 512 --lora-r 8"
run_train() { # name flags...
  local name=$1; shift
  peak timeout 90 "$T" bench-train --device cuda $SHAPE --steps 5 "$@" \
    > "$OUT/train-$name.json" 2> "$OUT/train-$name.err"
  tail -1 "$OUT/train-$name.err" | tee "$OUT/train-$name.peak"
}
run_train bf16 --dtype bf16
run_train ckpt --dtype bf16 --grad-checkpointing
timeout 40 "$T" bench-matmul --device cuda --size 8192 --reps 10 > "$OUT/matmul.json" 2>&1
for dev in cuda wgpu; do
  timeout 40 "$T" bench-forward --device $dev --config bench/polyglot-ko-1.3b.config.json \
    --prompt-len 128 --decode-steps 64 --reps 2 > "$OUT/decode-$dev.json" 2>&1
done
peak timeout 120 python3 bench/torch_gpu_baseline.py "$OUT/torch" --quick > "$OUT/torch.jsonl" 2> "$OUT/torch.err"
tail -1 "$OUT/torch.err" > "$OUT/torch.peak"
rm -f cubecl.toml
j() { grep -o "\"$2\":[0-9.e+-]*" "$1" 2>/dev/null | head -1 | cut -d: -f2; }
tj() { grep -h "$1" "$OUT/torch.jsonl" 2>/dev/null | grep -o "\"$2\": [0-9.e+-]*" | head -1 | cut -d' ' -f2; }
ours=$(j "$OUT/train-bf16.json" tokens_per_s); theirs=$(tj "hf+peft" tokens_per_s)
ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')
echo
echo "card: $GPU (budget: under 8 minutes; the timeouts add up to 7 minutes)"
echo "| measure | law-polyglot | HF + PEFT (torch, bf16) |"
echo "|---|---|---|"
echo "| LoRA r8 qkv step, 1.3b shape, 8 x 512, tokens/s | bf16: $ours, bf16 + checkpointing: $(j "$OUT/train-ckpt.json" tokens_per_s) | $theirs (ours/HF bf16: $ratio) |"
echo "| peak GPU memory (nvidia-smi MiB; torch: max allocated GiB) | bf16: $(cat "$OUT/train-bf16.peak"), + checkpointing: $(cat "$OUT/train-ckpt.peak") | $(tj "hf+peft" peak_mem_gib) GiB; $(cat "$OUT/torch.peak") |"
echo "| first training step done after process start (s) | bf16: $(j "$OUT/train-bf16.json" first_step_done_s), + checkpointing: $(j "$OUT/train-ckpt.json" first_step_done_s) | |"
echo "| matmul 8192^3 TFLOP/s | f32: $(j "$OUT/matmul.json" tflops) | bf16: $(tj matmul tflops) |"
echo "| greedy decode, batch 1, ms/token | cuda: $(j "$OUT/decode-cuda.json" decode_ms_per_token), wgpu: $(j "$OUT/decode-wgpu.json" decode_ms_per_token) | generate: $(tj generate tokens_per_s) tokens/s |"
