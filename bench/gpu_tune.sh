#!/usr/bin/env bash
# What burn's autotune buys and costs at the polyglot-ko-1.3b shape, with a persisted tune cache
# (issue 5: "persist and ship the autotune cache"). Run on a lent GPU after gpu_bench.sh, in the
# same session if at least 5 minutes of device time are left (under 4.5 minutes, table last):
#   A. the autotune build, 2 layers at the full widths: tunes every matmul and reduction shape a
#      LoRA step has (one layer is not enough: the first layer needs no input gradient), and
#      writes the tune cache;
#   B. the autotune build, 24 layers, with that cache: time to the first step and tokens/s;
#   C. the plain build (no autotune), 24 layers: the same, for the ratio on the same card.
# Build here (bench/README.md): .gpu/autotune/trainer.gz (--features cuda,wgpu,autotune) beside
# .gpu/plain/trainer.gz. Run: `bash bench/gpu_tune.sh` with carry [".gpu/plain", ".gpu/autotune"],
# timeout_s 300. DEV, SHAPE, LAYERS, DTYPE as in gpu_bench.sh (dry runs). $OUT gets
# gpu-tune.tgz, the tune cache (autotune-cache/) included: commit it to ship it.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu-tune 265
# autotune tunes CubeCL's matmuls: both builds multiply on CubeCL here, not on cuBLAS
export LAW_POLYGLOT_MATMUL=cubecl
printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n[autotune]\ncache = { file = "%s" }\n' \
  "$W/autotune-cache" > cubecl.toml

run() { # name binary wanted_s reserve_s flags...
  local name=$1 bin=$2 t; t=$(cap "$3" "$4"); shift 4
  [ -x "$bin" ] && [ "$t" -gt 0 ] || { echo "skipped $name"; return; }
  timeout "$t" "$bin" bench-train --device "$DEV" $SHAPE --dtype "$DTYPE" "$@" \
    > "$W/$name.json" 2> "$W/$name.err"
  echo "$name: rc=$? $(grep -m1 'first step' "$W/$name.err")"
}
run tune "$TA" 150 80 --layers 2 --steps 3
run tuned "$TA" 60 25 --layers "$LAYERS" --steps 5
run plain "$T" 45 0 --layers "$LAYERS" --steps 5
rm -f cubecl.toml
find "$W/autotune-cache" -type f 2>/dev/null | sed 's/^/cache file: /'

tuned=$(j "$W/tuned.json" tokens_per_s); plain=$(j "$W/plain.json" tokens_per_s)
echo
echo "card: $GPU ($SECONDS s used)"
echo "| $DTYPE LoRA step, 1.3b widths | autotune | plain (no autotune) |"
echo "|---|---|---|"
echo "| tuning run, 2 layers: first step done (s) | $(j "$W/tune.json" first_step_done_s) | |"
echo "| $LAYERS layers: first step done (s) | $(j "$W/tuned.json" first_step_done_s) (tune cache warm) | $(j "$W/plain.json" first_step_done_s) |"
echo "| $LAYERS layers: tokens/s | $tuned | $plain (autotune/plain: $(awk -v a="$tuned" -v b="$plain" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')) |"
pack_out
