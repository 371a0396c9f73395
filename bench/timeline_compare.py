"""Our GPU timeline (`trainer bench-train --timeline`'s JSON line) beside HF + PEFT's
(bench/torch_gpu_where.py's JSON), label by label, as a Markdown table.

Usage: python3 bench/timeline_compare.py OURS.json HF.json
"""
import json, sys


def rows(path, key):
    try:
        with open(path) as f:
            text = f.read()
        data = json.loads(text.strip().splitlines()[-1]) if key == "timeline" else json.loads(text)
        return {r["label"]: r for r in data.get(key) or []}
    except (OSError, ValueError, IndexError) as e:
        print(f"({path}: {e})")
        return {}


ours, hf = rows(sys.argv[1], "timeline"), rows(sys.argv[2], "rows")
labels = list(ours) + [l for l in hf if l not in ours]
print("| part of the step | ours, GPU ms (host-paced) | HF + PEFT, GPU ms (host-paced) | ours − HF |")
print("|---|---|---|---|")
total = [0.0, 0.0]
for l in labels:
    o, h = ours.get(l), hf.get(l)
    cell = lambda r: f"{r['gpu_ms']:.2f} ({r['host_paced_ms']:.2f})" if r else "–"
    diff = f"{(o['gpu_ms'] if o else 0) - (h['gpu_ms'] if h else 0):+.2f}"
    total[0] += o["gpu_ms"] if o else 0
    total[1] += h["gpu_ms"] if h else 0
    print(f"| {l} | {cell(o)} | {cell(h)} | {diff} |")
print(f"| total | {total[0]:.2f} | {total[1]:.2f} | {total[0] - total[1]:+.2f} |")
