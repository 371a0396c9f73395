# Sourced by gpu_bench.sh and gpu_tune.sh (`. bench/gpu_env.sh NAME SECONDS`): a fresh scratch
# folder $W (/tmp/NAME; $OUT gets one archive of it at the end: pack_out), the carried builds
# unpacked ($T plain, $TF fusion, $TA autotune: .gpu/<variant>/trainer.gz), the card's name,
# libcublas on LD_LIBRARY_PATH,
# a DEADLINE SECONDS from now (cap: a step's timeout within it), the LoRA step's shape and a
# JSON field reader.
# DEV, SHAPE, LAYERS and DTYPE can be overridden for a dry run without a GPU (bench/README.md).
W=${WORK:-/tmp/$1}
rm -rf "$W" && mkdir -p "$W"
DEADLINE=$((SECONDS + $2))
for z in .gpu/*/trainer.gz; do [ -f "$z" ] && gunzip -f "$z"; done
T=./.gpu/plain/trainer
TF=./.gpu/fusion/trainer
TA=./.gpu/autotune/trainer
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
# cuBLAS for our CUDA matmuls (shared/src/cublas.rs, loaded at run time): a CUDA toolkit's,
# else the one in PyTorch's nvidia wheels. Without it the binary multiplies on CubeCL.
CUBLAS_DIR=$( { ls /usr/local/cuda/lib64/libcublas.so.* /usr/local/cuda/targets/x86_64-linux/lib/libcublas.so.* 2>/dev/null
  python3 -c 'import glob, os, nvidia
for d in nvidia.__path__: print("\n".join(glob.glob(os.path.join(d, "**", "libcublas.so.*"), recursive=True)))' 2>/dev/null
} | head -1 | xargs -r dirname)
[ -n "$CUBLAS_DIR" ] && export LD_LIBRARY_PATH="$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "cublas: ${CUBLAS_DIR:-not found}"
DEV=${DEV:-cuda}
# polyglot-ko-1.3b widths, batch 8 x 512, LoRA r8 on query_key_value with dropout 0.05 as in
# torch_gpu_baseline.py.
SHAPE=${SHAPE:-"--hidden 2048 --heads 16 --inter 8192 --vocab 30080 --batch 8 --seq 512 --lora-r 8 --lora-dropout 0.05"}
LAYERS=${LAYERS:-24}
DTYPE=${DTYPE:-bf16}

cap() { # wanted_seconds [reserve_s] -> min(wanted, time left - reserve); 0 when under 15 s is left
  local left=$((DEADLINE - SECONDS - ${2:-0}))
  if [ "$left" -lt 15 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}
j() { # file field -> the first number of "field" in a JSON file (ours or Python's, with a space
  # after the colon), rounded for a table
  grep -o "\"$2\": *[0-9.e+-]*" "$1" 2>/dev/null | head -1 | cut -d: -f2 | tr -d ' ' |
    awk '{ if ($1 >= 100) printf "%.0f", $1; else printf "%.3g", $1 }'
}
pack_out() { # tar options... : $W into $OUT/NAME.tgz when the device tool gave an $OUT
  if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then tar czf "$OUT/$(basename "$W").tgz" -C "$W" "$@" .; fi
}
# The peer's numbers and the table cells every script prints: `tj match field` reads HF's
# torch.jsonl, `ratio ours` divides by $theirs (set by the script), `losses file` the first three,
# `row run` a bench-train run's cell and `sftl run` an `sft` run's losses.
tj() { grep -h "$1" "$W/torch.jsonl" 2>/dev/null | grep -o "\"$2\": [0-9.e+-]*" | head -1 | cut -d' ' -f2; }
ratio() { awk -v a="$1" -v b="$theirs" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
losses() { grep -o '"losses":\[[^]]*' "$1" 2>/dev/null | cut -d[ -f2 | cut -d, -f1-3; }
row() { # run (train-NAME or profile-NAME) -> "tokens/s (ratio), ms/step, host queue/wait, peak"
  local f=$W/$1.json
  echo "$(j "$f" tokens_per_s) tok/s ($(ratio "$(j "$f" tokens_per_s)")x), $(j "$f" ms_per_step) ms/step, $(j "$f" queue_ms_per_step)/$(j "$f" wait_ms_per_step), $(cut -d' ' -f1-2 "$W/$1.peak" 2>/dev/null)"
}
sftl() { # run (sft-NAME.log) -> its losses, and its eval loss after training
  echo "$(grep -o 'loss [0-9][0-9.]*' "$W/sft-$1.log" | cut -d' ' -f2 | tr '\n' ' ')(eval $(grep -o 'eval loss after training: [0-9.]*' "$W/sft-$1.log" | cut -d: -f2))"
}
