#!/usr/bin/env bash
# A lent GPU's short call (issue 5, about 4 minutes): this build against the one before it, and
# both peers in the same run.
#   1. Correctness of this build (.gpu/plain):
#      - `trainer check-device`;
#      - the demo's 4 SFT steps on the CPU and in bf16 on the GPU;
#      - its greedy answer on both.
#   2. Speed: this build and .gpu/prev (BUILT_FROM names it), in turns (new, prev, new, prev),
#      at the polyglot-ko-1.3b shape, LoRA r8 qkv, dropout 0.05, bf16, 8 x 512; then this
#      build at 16 x 512, and with `--timeline` (where the step's GPU time goes).
#   3. HF + PEFT in the same run, twice: torch_gpu_baseline.py --quick and torch_gpu_where.py
#      (the same model and step, and its kernels by family). The peer is the faster of the two:
#      HF's first process on a fresh machine was 13-23 % slower than its next one there
#      (2026-11-28), where ours varies by ~2 %.
#   4. QLoRA (NF4 + double quantization): ours, and HF + PEFT + bitsandbytes
#      (torch_qlora_gpu.py, with the wheel from bench/make_bnb_wheel.sh in .whl).
# Build and pack first (bench/README.md): .gpu/plain (this tree) and .gpu/prev. Then:
#   run(command="bash bench/gpu_compare.sh", carry=[".gpu/plain", ".gpu/prev", ".whl"],
#       timeout_s=420)
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu-compare "${BUDGET:-330}"
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n' > cubecl.toml
echo "card: $GPU"
. "$(dirname "$0")/gpu_peak.sh"
TP=./.gpu/prev/trainer

t=$(cap 30); [ "$t" -gt 0 ] && timeout "$t" "$T" check-device --device "$DEV" > "$W/check-device.md" 2>&1
for d in cpu "$DEV"; do
  t=$(cap 40); [ "$t" -gt 0 ] && timeout "$t" "$T" sft --max-steps 4 --lora-dropout 0 --log-every 1 --show-answers 0 \
    --device "$d" --dtype "$([ "$d" = cpu ] && echo f32 || echo "$DTYPE")" --out "$W/sft-$d" > "$W/sft-$d.log" 2>&1
  t=$(cap 30); [ "$t" -gt 0 ] && timeout "$t" "$T" generate --prompt "대한민국헌법 제1조의 내용은 무엇인가요?" \
    --max-new-tokens 24 --device "$d" > "$W/gen-$d.txt" 2> "$W/gen-$d.err"
done
for round in 1 2; do
  run_train "new$round" "$T" 40 --layers "$LAYERS" --steps 8 --dtype "$DTYPE"
  run_train "prev$round" "$TP" 40 --layers "$LAYERS" --steps 8 --dtype "$DTYPE"
done
run_train timeline "$T" 40 --layers "$LAYERS" --steps 4 --dtype "$DTYPE" --timeline
SHAPE=${SHAPE/--batch 8/--batch 16} run_train b16 "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
t=$(cap 90 60); [ "$t" -gt 0 ] && timeout "$t" python3 bench/torch_gpu_baseline.py "$W/torch" --quick \
  > "$W/torch.jsonl" 2> "$W/torch.err"
t=$(cap 90 60); [ "$t" -gt 0 ] && peak "$W/torch.peak" timeout "$t" python3 bench/torch_gpu_where.py "$W/torch-where.json" \
  > "$W/torch-where.md" 2> "$W/torch-where.err"
run_train nf4 "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE" --quant nf4
t=$(cap 120 5); [ "$t" -gt 0 ] && peak "$W/torch-qlora.peak" timeout "$t" python3 bench/torch_qlora_gpu.py "$W/torch-qlora" \
  --steps 5 > "$W/torch-qlora.json" 2> "$W/torch-qlora.err"
rm -f cubecl.toml

# HF's step time (ms): torch_gpu_baseline.py's and torch_gpu_where.py's (without its hooks), the
# faster of the two the peer
base_ms=$(awk -v s="$(tj "hf+peft" step_s)" 'BEGIN { if (s > 0) printf "%.1f", s * 1e3 }')
where_ms=$(grep -o '"plain_ms": *[0-9.e+-]*' "$W/torch-where.json" 2>/dev/null | cut -d: -f2 | tr -d ' ')
hf_ms=$(printf '%s\n' $base_ms $where_ms | sort -g | head -1)
theirs=$(awk -v ms="$hf_ms" 'BEGIN { if (ms > 0) printf "%.0f", 8 * 512 / ms * 1e3 }')
echo
echo "HF + PEFT (torch_gpu_where.py):"
head -3 "$W/torch-where.md" 2>/dev/null
grep -A3 -i 'Traceback' "$W/torch-where.err" 2>/dev/null | tail -4
echo
sed -n '/GPU timeline/,/^total/p' "$W/train-timeline.err"
echo
python3 bench/timeline_compare.py "$W/train-timeline.json" "$W/torch-where.json"
echo
echo "card: $GPU ($SECONDS s used); HF + PEFT, bf16, 8 x 512, same run: ${base_ms:-?} and ${where_ms:-?} ms/step; the peer: ${hf_ms:-?} ms, ${theirs:-?} tokens/s"
echo "| LoRA r8 qkv step, 1.3b shape, bf16 | tokens/s (against HF + PEFT), ms/step, host queue/wait ms, peak |"
echo "|---|---|"
for r in 1 2; do
  echo "| 8 x 512, this build ($(cut -c1-12 .gpu/plain/BUILT_FROM 2>/dev/null)), turn $r | $(row "train-new$r") |"
  echo "| 8 x 512, previous build ($(cut -c1-12 .gpu/prev/BUILT_FROM 2>/dev/null)), turn $r | $(row "train-prev$r") |"
done
echo "| 16 x 512, this build | $(row train-b16) |"
echo "| QLoRA NF4 + DQ, 8 x 512, this build | $(row train-nf4) |"
echo "| QLoRA peer: HF + PEFT + bitsandbytes, 8 x 512 | $(j "$W/torch-qlora.json" tokens_per_s) tok/s, $(cat "$W/torch-qlora.peak" 2>/dev/null); ours ÷ theirs: $(theirs=$(j "$W/torch-qlora.json" tokens_per_s) ratio "$(j "$W/train-nf4.json" tokens_per_s)")x |"
echo "| first 3 losses: this build; previous | $(losses "$W/train-new1.json"); $(losses "$W/train-prev1.json") |"
echo "| demo model's forward on $DEV against the CPU (check-device) | $(grep -v '^|' "$W/check-device.md" | head -2 | tr '\n' ' ' | cut -c1-160) |"
echo "| demo SFT, 4 steps, losses (eval after): cpu f32; $DEV $DTYPE | $(sftl cpu); $(sftl "$DEV") |"
echo "| demo model's greedy answer, CPU = $DEV | $(cmp -s "$W/gen-cpu.txt" "$W/gen-$DEV.txt" && [ -s "$W/gen-cpu.txt" ] && echo yes || echo "NO: $(head -c 120 "$W/gen-$DEV.txt" | tr '\n' ' ')") |"
pack_out --exclude='mem.*' --exclude='torch-qlora/*'
