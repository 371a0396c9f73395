"""CPU LoRA training step: Law-Polyglot (`trainer bench-train`) against HF transformers + PEFT,
in the same script, same shape, same thread count. Prints a table and a BENCHMARKS.md row.

Usage: python3 bench/train_step_cpu.py [--trainer PATH] [--threads 2] [--hidden 256 --layers 4
       --heads 4 --inter 1024 --vocab 1024 --batch 4 --seq 128 --steps 10]
Needs: pip install torch transformers peft; cargo build --release -p trainer.
"""
import argparse, json, os, platform, subprocess, time

ap = argparse.ArgumentParser()
default_bin = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "trainer")
ap.add_argument("--trainer", default=default_bin)
ap.add_argument("--threads", type=int, default=2)
for k, v in dict(hidden=256, layers=4, heads=4, inter=1024, vocab=1024, batch=4, seq=128, steps=10).items():
    ap.add_argument(f"--{k}", type=int, default=v)
a = ap.parse_args()

env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
cmd = [a.trainer, "bench-train", "--hidden", a.hidden, "--layers", a.layers, "--heads", a.heads,
       "--inter", a.inter, "--vocab", a.vocab, "--batch", a.batch, "--seq", a.seq, "--steps", a.steps]
out = subprocess.run([str(c) for c in cmd], env=env, check=True, capture_output=True, text=True).stdout
ours = json.loads(out.strip().splitlines()[-1])

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
from peft import LoraConfig, get_peft_model

torch.set_num_threads(a.threads)
torch.manual_seed(0)
cfg = GPTNeoXConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                    num_attention_heads=a.heads, intermediate_size=a.inter, rotary_pct=0.5,
                    use_parallel_residual=True, max_position_embeddings=max(a.seq, 128),
                    tie_word_embeddings=False)
m = get_peft_model(GPTNeoXForCausalLM(cfg), LoraConfig(r=8, lora_alpha=16, target_modules=["query_key_value"],
                                                        task_type="CAUSAL_LM"))
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
ids = torch.tensor([[(b * 7919 + i * 31) % a.vocab for i in range(a.seq)] for b in range(a.batch)])
for i in range(a.steps + 3):
    if i == 3:
        t = time.time()
    loss = m(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
dt = (time.time() - t) / a.steps
hf = {"ms_per_step": dt * 1e3, "tokens_per_s": a.batch * a.seq / dt}

shape = f"h{a.hidden} L{a.layers} heads{a.heads} F{a.inter} V{a.vocab} b{a.batch}x{a.seq}"
print(f"{'impl':<14}{'ms/step':>10}{'tokens/s':>12}")
print(f"{'law-polyglot':<14}{ours['ms_per_step']:>10.1f}{ours['tokens_per_s']:>12.0f}")
print(f"{'hf+peft':<14}{hf['ms_per_step']:>10.1f}{hf['tokens_per_s']:>12.0f}")
ratio = ours["tokens_per_s"] / hf["tokens_per_s"]
print(f"ratio ours/HF tokens/s: {ratio:.2f}  ({shape}, {a.threads} threads, {platform.processor() or platform.machine()}, "
      f"{os.cpu_count()} cpus, torch {torch.__version__})")
print(f"| {shape} | {a.threads} | {ours['tokens_per_s']:.0f} | {hf['tokens_per_s']:.0f} | {ratio:.2f} |")
