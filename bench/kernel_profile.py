#!/usr/bin/env python3
"""Summarise a CubeCL kernel profile log (one training step) by kernel family.

CubeCL writes one line per launched kernel when its profiling logger is on (cubecl.toml:
`[profiling.logger] level = "basic"`, `file = "..."`), e.g.

    | 659.7µs    | MatmulEntry | TensorArgs | ... | SimpleMatmulFamily | ... | CudaRuntime

`bench-train` repeats the same step, so the kernel sequence is periodic: given the number of
steps in the log, this script finds the period (one step's kernels) at its end, skipping the
first steps, whose times include kernel compilation, and prints, per family, the launches per step, the time per step and its
share, largest first. Python standard library only (it runs on the GPU machine beside torch).

    python3 bench/kernel_profile.py cubecl.log --steps 5 [--top 25]   # bench-train --steps 2: 3 + 2
"""

import argparse
import re
import sys
from collections import defaultdict

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|(.*)$")
NOISE = re.compile(r"^(TensorArgs|Dynamic\w*|__\w+|Option|\(\)|\w+Runtime)$")


def family(fields):
    """A short label: the kernel name, plus the routine families of a matmul."""
    names = [f for f in fields if f and not NOISE.match(f)]
    if not names:
        return "?"
    head = names[0]
    if head.startswith("Matmul"):
        fams = [n.replace("Family", "") for n in names[1:] if n.endswith("MatmulFamily")]
        return f"{head}[{'/'.join(fams)}]" if fams else head
    return " ".join(names[:2])


def parse(path):
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                ms = float(m.group(1)) * UNITS[m.group(2)]
                fields = [x.strip() for x in m.group(3).split("|")]
                rows.append((family(fields), ms))
    return rows


def step_period(names, steps):
    """One step's kernel count n: the largest n whose last (steps - 2) blocks of n kernels
    repeat each other (the first step compiles and the second creates the optimizer state;
    two steps' worth would need twice as many repeats, so the largest n is one step). The
    last lines may be missing (the logger thread stops with the process): up to 63 are
    trimmed until a period of more than five kinds of kernel appears."""
    k = max(steps - 2, 2)
    for end_trim in range(0, 64):  # the async logger may lose the last lines at exit
        seq = names[: len(names) - end_trim]
        for n in range(len(seq) // k, 3, -1):
            if any(seq[-j] != seq[-j - n] for j in (1, 2, 3)):
                continue  # cheap rejection before comparing whole blocks
            block = seq[len(seq) - n :]
            # A step has many kinds of kernels (its matmuls may be cuBLAS's, not in the log):
            # this skips runs of a few kernels (the per-parameter updates).
            if seq[len(seq) - k * n : len(seq) - n] == seq[len(seq) - (k - 1) * n :] and len(
                set(block)
            ) > 5:
                return n, end_trim
    return None, 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--steps", type=int, required=True, help="training steps in the log")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    rows = parse(a.log)
    if not rows:
        sys.exit(f"{a.log}: no profile lines (was [profiling.logger] on?)")
    names = [r[0] for r in rows]
    n, trim = step_period(names, a.steps)
    if n is None:
        sys.exit(f"{a.log}: {len(rows)} kernels but no repeating step found")
    step = rows[len(rows) - trim - n : len(rows) - trim]
    per = defaultdict(lambda: [0, 0.0])
    for name, ms in step:
        per[name][0] += 1
        per[name][1] += ms
    total = sum(v[1] for v in per.values())
    print(f"one step: {n} kernel launches, {total:.1f} ms of kernel time (profiled, synchronised)")
    print("| kernel family | launches | ms | share |")
    print("|---|---|---|---|")
    for name, (cnt, ms) in sorted(per.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"| {name} | {cnt} | {ms:.2f} | {100 * ms / total:.1f} % |")


if __name__ == "__main__":
    main()
