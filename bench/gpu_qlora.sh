#!/usr/bin/env bash
# QLoRA on a lent GPU (issue 5's "the same for QLoRA"), ours and HF + PEFT + bitsandbytes on the
# same card, a table printed last. Budget: under 4 minutes (a deadline cuts each step).
#   - HF + PEFT + bitsandbytes (torch_qlora_gpu.py): NF4 with double quantization, bf16
#     compute, LoRA r8 on query_key_value, polyglot-ko-1.3b shape (random init), batch 8 x 512;
#   - ours: `bench-train --quant nf4 --dtype bf16` at the same shape (quantized on the host after
#     a random init), plain and with --grad-checkpointing: tokens/s, peak memory (nvidia-smi),
#     time to the first finished step.
# Build here: .gpu/plain/trainer.gz (bench/README.md) and the small bitsandbytes wheel
# (bash bench/make_bnb_wheel.sh). Run: `bash bench/gpu_qlora.sh` with carry [".gpu/plain", ".whl"],
# timeout_s 270. Run it after gpu_bench.sh (the dense numbers and the HF peer come first).
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu-qlora 230
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n' > cubecl.toml
echo "card: $GPU"
. "$(dirname "$0")/gpu_peak.sh"

t=$(cap 110); [ "$t" -gt 0 ] && peak "$W/torch.peak" timeout "$t" python3 bench/torch_qlora_gpu.py "$W/torch" --steps 5 \
  > "$W/torch.json" 2> "$W/torch.err"
run_train nf4 "$T" 75 --layers "$LAYERS" --steps 5 --dtype "$DTYPE" --quant nf4
run_train nf4-ckpt "$T" 75 --layers "$LAYERS" --steps 5 --dtype "$DTYPE" --quant nf4 --grad-checkpointing
rm -f cubecl.toml

theirs=$(j "$W/torch.json" tokens_per_s)
ours=$(j "$W/train-nf4.json" tokens_per_s); ckpt=$(j "$W/train-nf4-ckpt.json" tokens_per_s)
echo
echo "card: $GPU (budget: under 4 minutes; $SECONDS s used)"
echo "| QLoRA (NF4 + double quantization, bf16 compute), r8 qkv, 1.3b shape, 8 x 512 | law-polyglot | HF + PEFT + bitsandbytes |"
echo "|---|---|---|"
echo "| tokens/s | $ours ($(ratio "$ours")x), + checkpointing: $ckpt ($(ratio "$ckpt")x) | $theirs |"
echo "| peak GPU memory (nvidia-smi MiB; torch: max allocated GiB), GPU utilisation at the end | $(cat "$W/train-nf4.peak" 2>/dev/null), + checkpointing: $(cat "$W/train-nf4-ckpt.peak" 2>/dev/null) | $(j "$W/torch.json" peak_mem_gib) GiB; $(cat "$W/torch.peak" 2>/dev/null) |"
echo "| first step done after process start (s; ours includes quantizing on the host) | $(j "$W/train-nf4.json" first_step_done_s), + checkpointing: $(j "$W/train-nf4-ckpt.json" first_step_done_s) | load + quantize: $(j "$W/torch.json" load_s) |"
pack_out --exclude='mem.*'
