#!/usr/bin/env bash
# A lent GPU's one call (issue 5): the measurements planned in BENCHMARKS.md, in one command.
# A lent machine goes back after 30 s idle, so three separate calls risk a fresh start (minutes
# of the 15) between them. Under the device tool's 10-minute limit, in order of importance:
#   1. gpu_host.sh (BUDGET 320): this build against .gpu/prev beside HF + PEFT, correctness
#      first (the demo's SFT losses and greedy answer on the GPU against the CPU's);
#   2. gpu_where.sh (BUDGET 180): where the step's GPU time goes, ours beside HF's, part by part;
#   3. replicas_host.sh 1 2 4 8 (about 60 s, needs .gpu/fake): data parallel's host side, each
#      replica from a thread of its own against one thread, on stand-in devices (no GPU).
# Each script's whole output goes to $OUT/<script>.txt (and its own archive to $OUT); their last
# lines are printed at the end, the tables among them.
# Build and pack first (bench/README.md): .gpu/plain (this tree), .gpu/prev (the build compared
# against), and `bash bench/replicas_host.sh --pack` (.gpu/fake). Then:
#   run(command="bash bench/gpu_session.sh", carry=[".gpu/plain", ".gpu/prev", ".gpu/fake"],
#       timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-/tmp/gpu-session}
mkdir -p "$LOGS"
start=$SECONDS
step() { # name command...: the command's output into $LOGS/name.txt, and how long it took
  local name=$1 t0=$SECONDS
  shift
  "$@" > "$LOGS/$name.txt" 2>&1
  echo "$name: exit $?, $((SECONDS - t0)) s" >> "$LOGS/times.txt"
}
: > "$LOGS/times.txt"
BUDGET=320 step gpu_host bash bench/gpu_host.sh
BUDGET=180 step gpu_where bash bench/gpu_where.sh
if [ -f .gpu/fake/libfakecuda.so ] && [ $((SECONDS - start)) -lt 520 ]; then
  step replicas_host timeout $((585 - (SECONDS - start))) bash bench/replicas_host.sh .gpu/plain/trainer 1 2 4 8
fi
for name in gpu_host gpu_where replicas_host; do
  [ -f "$LOGS/$name.txt" ] || continue
  echo
  echo "======== $name (the last lines; all of it in $name.txt)"
  tail -n 45 "$LOGS/$name.txt"
done
echo
cat "$LOGS/times.txt"
