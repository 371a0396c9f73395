#!/usr/bin/env bash
# Where our LoRA step's time goes besides the GPU's kernels (issue 5), on a lent GPU, in one
# run: budget under 5.5 minutes (a deadline cuts each step). Two builds side by side:
#   - .gpu/plain/trainer.gz: this tree;
#   - .gpu/prev/trainer.gz (optional): the build it is compared with (BUILT_FROM names it),
#     run with LAW_POLYGLOT_MATMUL=cublas-async (GPU-side stream waits in every build since
#     9b87273); where both multiply the same way their losses agree to the bit.
# Measures, polyglot-ko-1.3b shape, LoRA r8 qkv, bf16:
#   - HF + PEFT's tokens/s at batch 8 x 512 (torch_gpu_baseline.py --quick), the peer;
#   - ours at batch 8, both builds, and this one with attention whole (LAW_POLYGLOT_ATTENTION_
#     BLOCKS=1) and in 4 query blocks (the default is 2: shared/src/attention_blocks.rs); each
#     row also splits a step into the host's time to queue
#     forward and backward and its wait for the GPU to finish them (a wait near 0: the host
#     sets the pace);
#   - this build with its kernels' scalar loads and one cube per row (LAW_POLYGLOT_KERNELS=
#     scalar, as before vector loads and warp rows): what those bring;
#   - ours at batch 1 and 16 (the host's work per step does not depend on the batch: a step
#     time that hardly shrinks from 8 to 1 is the host's);
#   - QLoRA (NF4 + double quantization), this build;
#   - a CubeCL kernel profile of 4 layers, this build (`profile` in gpu_peak.sh: cuBLAS's
#     kernels are not in it);
#   - first, correctness: `trainer check-device` (the demo model's forward, stage by stage,
#     against the CPU's), 4 SFT steps of the demo on the CPU and the GPU (f32 and bf16: the same
#     losses), its greedy answer on both, and a small f32 step in both builds (same weights:
#     losses that agree to rounding). A random model's loss cannot show a wrong kernel;
#     these can;
#   - if nsys is on the machine, a trace of 3 steps of 4 layers: every kernel's time, cuBLAS's
#     included, and the GPU's idle time between them.
# Run: `bash bench/gpu_host.sh` with carry [".gpu/plain", ".gpu/prev"], timeout_s 420
# (BUDGET=S: the deadline, 330 s by default; the 1.3B rows need 300 or more).
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu-host "${BUDGET:-330}"
printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n' > cubecl.toml
echo "card: $GPU"
. "$(dirname "$0")/gpu_peak.sh"
TP=./.gpu/prev/trainer
B1=${SHAPE/--batch 8/--batch 1}
B16=${SHAPE/--batch 8/--batch 16}

# correctness first, cheap (a random model's loss cannot show a wrong kernel; these can): the
# demo model's greedy answer on the CPU and on the GPU; its forward stage by stage against the
# CPU's (check-device); 4 SFT steps of it on the CPU and on the GPU in f32 and bf16 (the same
# batches: the losses and the eval loss must follow the CPU's); and a small f32 step in both
# builds (every kernel, backward included: the same seeded weights, so the losses agree to
# rounding). Where this build's small step fails (a kernel NVRTC rejects, say), its error is
# printed and the rows after it run with the scalar kernels (LAW_POLYGLOT_KERNELS=scalar), so
# the run still measures something.
for d in cpu cuda; do
  t=$(cap 30); [ "$t" -gt 0 ] && timeout "$t" "$T" generate --prompt "대한민국헌법 제1조의 내용은 무엇인가요?" \
    --max-new-tokens 24 --device "$([ "$d" = cpu ] && echo cpu || echo "$DEV")" > "$W/gen-$d.txt" 2> "$W/gen-$d.err"
done
t=$(cap 30); [ "$t" -gt 0 ] && timeout "$t" "$T" check-device --device "$DEV" > "$W/check-device.md" 2>&1
for d in cpu-f32 "$DEV-f32" "$DEV-bf16"; do
  t=$(cap 40); [ "$t" -gt 0 ] && timeout "$t" "$T" sft --max-steps 4 --lora-dropout 0 --log-every 1 --show-answers 0 \
    --device "${d%-*}" --dtype "${d##*-}" --out "$W/sft-$d" > "$W/sft-$d.log" 2>&1
done
SMALL="--hidden 512 --heads 8 --inter 2048 --vocab 4096 --batch 2 --seq 256 --lora-r 8 --lora-dropout 0"
SHAPE=$SMALL run_train check "$T" 30 --layers 2 --steps 4 --dtype f32
SHAPE=$SMALL LAW_POLYGLOT_MATMUL=cublas-async run_train check-prev "$TP" 30 --layers 2 --steps 4 --dtype f32
if ! grep -q 'rc=0' "$W/train-check.peak" 2>/dev/null; then
  echo "THE SMALL STEP FAILED on $DEV; the rows below run with LAW_POLYGLOT_KERNELS=scalar:"
  grep -m2 -A14 -i 'error' "$W/train-check.err" | head -40
  export LAW_POLYGLOT_KERNELS=scalar
fi

t=$(cap 90); [ "$t" -gt 0 ] && peak "$W/torch.peak" timeout "$t" python3 bench/torch_gpu_baseline.py "$W/torch" --quick \
  > "$W/torch.jsonl" 2> "$W/torch.err"
t=$(cap 30); [ "$t" -gt 0 ] && timeout "$t" "$T" bench-matmul --device "$DEV" --check > "$W/check.jsonl" 2> "$W/check.err"
t=$(cap 30); [ "$t" -gt 0 ] && timeout "$t" "$T" bench-matmul --device "$DEV" --check-host > "$W/check-host.jsonl" 2> "$W/check-host.err"
run_train new "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
LAW_POLYGLOT_ATTENTION_BLOCKS=1 run_train blocks1 "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
LAW_POLYGLOT_MATMUL=cublas-async run_train prev "$TP" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
LAW_POLYGLOT_ATTENTION_BLOCKS=4 run_train blocks4 "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
LAW_POLYGLOT_KERNELS=scalar run_train scalar "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
SHAPE=$B1 run_train b1 "$T" 30 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
SHAPE=$B16 run_train b16 "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE"
run_train nf4 "$T" 40 --layers "$LAYERS" --steps 6 --dtype "$DTYPE" --quant nf4
# profiled with run 4's ordering (cuBLAS on a stream of its own): with cuBLAS's products
# queued on CubeCL's stream the profiled run stalled at the first product (H200, 2026-11-27)
LAW_POLYGLOT_MATMUL=cublas-flags profile plain "$T"
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${NSYS:-not found}"
t=$(cap 60 10)
if [ -n "$NSYS" ] && [ "$t" -gt 0 ]; then
  timeout "$t" "$NSYS" profile -t cuda -o "$W/step" --force-overwrite true "$T" bench-train --device "$DEV" $SHAPE \
    --layers 4 --steps 3 --dtype "$DTYPE" > "$W/nsys.out" 2>&1
  t=$(cap 40 5); [ "$t" -gt 0 ] && [ -f "$W/step.nsys-rep" ] && timeout "$t" "$NSYS" stats -r cuda_gpu_kern_sum,cuda_api_sum \
    -f csv -o "$W/stats" "$W/step.nsys-rep" > "$W/nsys-stats.out" 2>&1
  rm -f "$W/step.sqlite"
fi
rm -f cubecl.toml

theirs=$(tj "hf+peft" tokens_per_s)
[ -f "$W/profile-plain.md" ] && { echo; echo "CubeCL kernels, 4 layers:"; cat "$W/profile-plain.md"; }
for f in "$W"/stats*.csv; do [ -f "$f" ] && { echo; echo "$(basename "$f"):"; head -25 "$f" | cut -c1-220; }; done
echo
echo "card: $GPU (budget: under 5.5 minutes; $SECONDS s used); HF + PEFT, bf16, 8 x 512: $theirs tokens/s"
echo "| LoRA r8 qkv step, 1.3b shape, bf16 | tokens/s (against HF + PEFT at 8 x 512), ms/step, host queue/wait ms, peak |"
echo "|---|---|"
echo "| 8 x 512, this build ($(cat .gpu/plain/BUILT_FROM 2>/dev/null | cut -c1-12)) | $(row train-new) |"
echo "| 8 x 512, previous build ($(cat .gpu/prev/BUILT_FROM 2>/dev/null | cut -c1-20)) | $(row train-prev) |"
echo "| 8 x 512, this build, attention whole (LAW_POLYGLOT_ATTENTION_BLOCKS=1; default 2 query blocks) | $(row train-blocks1) |"
echo "| 8 x 512, this build, attention in 4 query blocks | $(row train-blocks4) |"
echo "| 8 x 512, this build, scalar loads and a cube per row (LAW_POLYGLOT_KERNELS=scalar) | $(row train-scalar) |"
echo "| 1 x 512, this build | $(row train-b1) |"
echo "| 4 layers, profiled (CubeCL kernels timed one by one) | $(row profile-plain) |"
echo "| 16 x 512, this build | $(row train-b16) |"
echo "| QLoRA NF4 + DQ, 8 x 512, this build | $(row train-nf4) |"
echo "| first 3 losses: this build; previous; attention whole; in 4 blocks; scalar kernels | $(losses "$W/train-new.json"); $(losses "$W/train-prev.json"); $(losses "$W/train-blocks1.json"); $(losses "$W/train-blocks4.json"); $(losses "$W/train-scalar.json") |"
echo "| f32 check, 2 small layers, first 3 losses: this build; previous | $(losses "$W/train-check.json"); $(losses "$W/train-check-prev.json") |"
echo "| demo model's forward on $DEV, stage by stage against the CPU (check-device) | $(grep -v '^|' "$W/check-device.md" | head -2 | tr '\n' ' ' | cut -c1-200) |"
echo "| demo SFT, 4 steps, losses (eval after): cpu; $DEV f32; $DEV bf16 | $(sftl cpu-f32); $(sftl "$DEV-f32"); $(sftl "$DEV-bf16") |"
echo "| demo model's greedy answer, CPU = $DEV | $(cmp -s "$W/gen-cpu.txt" "$W/gen-cuda.txt" && [ -s "$W/gen-cpu.txt" ] && echo yes || echo "NO: $(head -c 120 "$W/gen-cuda.txt" | tr '\n' ' ')") |"
echo "| how cuBLAS was ordered (this build) | $(grep -h -m1 -o "cuBLAS queues[^(]*\|CubeCL's stream not found[^;]*" "$W/train-new.err" 2>/dev/null) |"
echo "| bench-matmul --check, largest relative difference | $(grep -o '"rel_err":[0-9.e+-]*' "$W/check.jsonl" 2>/dev/null | cut -d: -f2 | sort -g | tail -1) |"
echo "| bench-matmul --check-host (products against the CPU's, accumulation into rows included) | $(grep -c '"rel_err"' "$W/check-host.jsonl" 2>/dev/null) products, largest relative difference $(grep -o '"rel_err":[0-9.e+-]*' "$W/check-host.jsonl" 2>/dev/null | cut -d: -f2 | sort -g | tail -1); $(grep -m1 -o 'Error: .*' "$W/check-host.err" 2>/dev/null || echo within tolerance) |"
pack_out --exclude='mem.*' --exclude='*.nsys-rep'
