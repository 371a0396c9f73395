#!/usr/bin/env bash
# Data parallel training's host side (issue 5, `--devices`): the time to queue one step on N
# CUDA devices with each replica's work queued from a thread of its own, against one thread
# queueing every device in turn (LAW_POLYGLOT_REPLICAS=threads / sequential, in one run).
# No GPU computes here: the devices are tools/fake-cuda's stand-in (N of them, kernels
# compiled by the real NVRTC and counted, not run), so a row is the host's time alone: what
# a step cannot go below however fast the GPUs are. The polyglot-ko-1.3b shape at batch
# 1 x 512 per device (the host's work hardly depends on the batch; the stand-in holds "device"
# memory in host memory, about 3.5 GB a device at batch 1).
#
# The point of threads needs cores: each CubeCL device has a host thread of its own besides
# the one queueing its work, both spinning while they wait, so the trainer picks threads by
# default only with two cores a device. Run this where there are enough:
#   - here: `bash bench/replicas_host.sh [TRAINER] [N...]` (NVRTC from tools/fake-cuda/env.sh);
#   - on the lent GPU machine (16 cores, no internet, its own NVRTC): pack the stand-in with
#     `bash bench/replicas_host.sh --pack` (into .gpu/fake), then
#     `run(command="bash bench/replicas_host.sh .gpu/plain/trainer 1 2 4 8",
#          carry=[".gpu/plain", ".gpu/fake"], timeout_s=240)`.
# TRAINER: a trainer built with `--features cuda` (default .gpu/plain/trainer, unpacked from its
# .gz where needed). Prints a table last.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --pack ]; then
  . tools/fake-cuda/env.sh
  mkdir -p .gpu/fake
  cp "$FAKE/libfakecuda.so" .gpu/fake/
  echo "packed $(du -h .gpu/fake/libfakecuda.so | cut -f1) into .gpu/fake"
  exit 0
fi

TRAINER=${1:-.gpu/plain/trainer}
shift || true
COUNTS=${*:-"1 2"}
[ -f "$TRAINER.gz" ] && [ ! -f "$TRAINER" ] && gunzip -k "$TRAINER.gz"
if [ -f .gpu/fake/libfakecuda.so ] && [ -z "${FAKE:-}" ]; then
  # the GPU machine: the carried stand-in in front of the machine's own libcuda, and its NVRTC
  FAKE=/tmp/fake-cuda
  mkdir -p "$FAKE"
  cp .gpu/fake/libfakecuda.so "$FAKE/"
  for name in libcuda.so libcuda.so.1 libcublas.so libcublas.so.13; do
    ln -sf libfakecuda.so "$FAKE/$name"
  done
  export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
  NVRTC_DIR=$( { ls "$CUDA_PATH"/lib64/libnvrtc.so* "$CUDA_PATH"/lib/libnvrtc.so* 2>/dev/null
    python3 -c 'import glob, os, nvidia
for d in nvidia.__path__: print("\n".join(glob.glob(os.path.join(d, "**", "libnvrtc.so*"), recursive=True)))' 2>/dev/null
  } | head -1 | xargs -r dirname)
  export LD_LIBRARY_PATH="$FAKE${NVRTC_DIR:+:$NVRTC_DIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  . tools/fake-cuda/env.sh
fi
echo "cores: $(nproc); trainer: $TRAINER ($(cat "$(dirname "$TRAINER")/BUILT_FROM" 2>/dev/null || echo "built here"))"

W=$(mktemp -d)
SHAPE="--hidden 2048 --heads 16 --inter 8192 --vocab 30080 --batch 1 --seq 512 --layers 24
  --lora-r 8 --lora-dropout 0.05 --dtype bf16 --steps 20"
field() { grep -o "\"$2\":[0-9.e+-]*" "$1" 2>/dev/null | head -1 | cut -d: -f2 |
  awk '{ printf "%.1f", $1 }'; }
rows=""
for n in $COUNTS; do
  devices=$(seq -s, 0 $((n - 1)))
  for mode in sequential threads; do
    [ "$n" = 1 ] && [ "$mode" = threads ] && continue
    out="$W/$n-$mode.json"
    # shellcheck disable=SC2086
    FAKE_CUDA_QUIET=1 FAKE_CUDA_DEVICES=$n LAW_POLYGLOT_REPLICAS=$mode timeout 120 \
      "$TRAINER" bench-train --device cuda $SHAPE --devices "$devices" > "$out" 2> "$W/$n-$mode.err" ||
      { echo "FAILED: $n devices, $mode"; tail -n 5 "$W/$n-$mode.err"; }
    rows="$rows$n $mode $(field "$out" ms_per_step) $(field "$out" queue_ms_per_step)\n"
  done
done
echo
echo "| devices | replicas | host ms/step | queue ms/step | sequential ÷ threads |"
echo "|---|---|---|---|---|"
printf "$rows" | while read -r n mode ms queue; do
  ratio=""
  if [ "$mode" = threads ]; then
    seq_ms=$(printf "$rows" | awk -v n="$n" '$1 == n && $2 == "sequential" { print $3 }')
    ratio=$(awk -v a="$seq_ms" -v b="$ms" 'BEGIN { if (a > 0 && b > 0) printf "%.2f×", a / b }')
  fi
  echo "| $n | ${mode/sequential/one thread} | $ms | $queue | $ratio |"
done
rm -rf "$W"
