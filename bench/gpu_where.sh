#!/usr/bin/env bash
# Where the LoRA step's GPU time goes, ours against HF + PEFT's, part by part (issue 5), on a
# lent GPU in about 2 minutes (BUDGET=S, 240 s by default):
#   - `trainer check-device` first (the demo model's forward against the CPU's, stage by stage);
#   - HF + PEFT (bench/torch_gpu_where.py): its step time, a CUDA-event timeline of its step
#     with our labels (module hooks), and its kernels by family (torch.profiler);
#   - ours (.gpu/plain): the step as bench-train times it, then with `--timeline` (CUDA events
#     at the model's marks, shared/src/timeline.rs);
#   - last, the two timelines side by side (bench/timeline_compare.py).
# polyglot-ko-1.3b shape, LoRA r8 qkv with dropout 0.05, bf16, batch 8 x 512.
# Run: `bash bench/gpu_where.sh` with carry [".gpu/plain"], timeout_s 300.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu-where "${BUDGET:-240}"
printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n' > cubecl.toml
echo "card: $GPU"
. "$(dirname "$0")/gpu_peak.sh"
t=$(cap 30); [ "$t" -gt 0 ] && timeout "$t" "$T" check-device --device "$DEV" > "$W/check-device.md" 2>&1
t=$(cap 120 60); [ "$t" -gt 0 ] && peak "$W/torch.peak" timeout "$t" python3 bench/torch_gpu_where.py "$W/torch-where.json" ${TORCH_ARGS:-} \
  > "$W/torch-where.md" 2> "$W/torch-where.err"
run_train new "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
run_train timeline "$T" 40 --layers "$LAYERS" --steps 4 --dtype "$DTYPE" --timeline
rm -f cubecl.toml

echo
echo "check-device: $(grep -v '^|' "$W/check-device.md" | head -2 | tr '\n' ' ' | cut -c1-200)"
echo "HF + PEFT:"; cat "$W/torch-where.md" 2>/dev/null || true
grep -A3 -i 'error\|Traceback' "$W/torch-where.err" 2>/dev/null | tail -8
echo
echo "ours: $(j "$W/train-new.json" ms_per_step) ms a step ($(j "$W/train-new.json" tokens_per_s) tokens/s), $(j "$W/train-timeline.json" ms_per_step) with the marks; peak $(cut -d' ' -f1 "$W/train-new.peak" 2>/dev/null)"
sed -n '/GPU timeline/,/^total/p' "$W/train-timeline.err"
grep -m3 -i 'error\|panic\|no marks' "$W/train-timeline.err"
echo
python3 bench/timeline_compare.py "$W/train-timeline.json" "$W/torch-where.json"
pack_out --exclude='mem.*'
