# Sourced by gpu_bench.sh, gpu_qlora.sh and gpu_host.sh after gpu_env.sh: `peak` runs a command
# while polling the GPU's memory and utilisation; `run_train` runs one `bench-train` under it;
# `profile` one profiled step.
peak() { # file command... -> runs the command while polling GPU memory and utilisation; writes
  # "peak_mib=N util_end=U rc=R" to file (U: median GPU utilisation % of the last 10 polls, the
  # steady steps); the process's CPU and wall seconds go to stderr (bash `time`): CPU ~ wall with
  # a low U means one host thread, not the GPU, sets the pace.
  local res=$1 log=$W/mem.$$; shift; : > "$log"
  ( while :; do nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits >> "$log"; sleep 0.2; done ) &
  local poll=$!
  local TIMEFORMAT='cpu_s=%U+%S wall_s=%R'
  time "$@"; local rc=$?
  kill $poll 2>/dev/null; wait $poll 2>/dev/null
  local util; util=$(tail -10 "$log" | cut -d, -f2 | sort -n | sed -n 5p | tr -d ' ')
  echo "peak_mib=$(cut -d, -f1 "$log" | sort -n | tail -1) util_end=${util:-?} rc=$rc" > "$res"
}
run_train() { # name binary wanted_s flags...
  local name=$1 bin=$2 t; t=$(cap "$3" 60); shift 3
  [ -x "$bin" ] && [ "$t" -gt 0 ] || { echo "skipped $name"; return; }
  peak "$W/train-$name.peak" timeout "$t" "$bin" bench-train --device "$DEV" $SHAPE "$@" \
    > "$W/train-$name.json" 2> "$W/train-$name.err"
  echo "$name: $(cat "$W/train-$name.peak") $(grep -o 'cpu_s=.*' "$W/train-$name.err" | tail -1), $(grep -m1 'first step' "$W/train-$name.err")"
}
profile() { # name binary: one profiled bf16 step, 4 layers (3 warm-up + 2 steps in the log)
  local name=$1 bin=$2 t; t=$(cap 45 40)
  [ -x "$bin" ] && [ "$t" -gt 0 ] || { echo "skipped profile $name"; return; }
  printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' \
    "$W/profile-$name.log" > cubecl.toml
  timeout "$t" "$bin" bench-train --device "$DEV" $SHAPE --layers 4 --steps 2 --dtype "$DTYPE" \
    > "$W/profile-$name.json" 2> "$W/profile-$name.err"
  printf '[compilation]\ncache = { file = "/tmp/cubecl-cache" }\n' > cubecl.toml
  python3 bench/kernel_profile.py "$W/profile-$name.log" --steps 5 --top 15 > "$W/profile-$name.md" 2>&1
}
