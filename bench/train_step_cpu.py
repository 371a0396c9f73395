"""CPU LoRA training step: Law-Polyglot (`trainer bench-train`) against HF transformers + PEFT,
in the same script, same shape, same thread count. Each side runs in its own child process
under `/usr/bin/time`, so the peak RSS of each is its own. Prints a table and a BENCHMARKS.md row.

Usage: python3 bench/train_step_cpu.py [--trainer PATH] [--threads 2] [--hidden 256 --layers 4
       --heads 4 --inter 1024 --vocab 1024 --batch 4 --seq 128 --steps 10] [--grad-checkpointing]
--grad-checkpointing: ours `bench-train --grad-checkpointing` (per-layer recomputation);
HF `gradient_checkpointing_enable(use_reentrant=False)` (the same per-layer recomputation).
--quant nf4: QLoRA. Ours `bench-train --quant nf4`; HF loads the same random model with
`BitsAndBytesConfig(load_in_4bit, nf4, double quantization, compute dtype float32)` (needs
bitsandbytes; its CPU kernels) and adds the same LoRA. `embed_out` stays f32 on both sides.
Needs: pip install torch transformers peft; cargo build --release -p trainer; GNU time.
"""
import argparse, json, os, platform, subprocess, sys, time

SHAPE_KEYS = dict(hidden=256, layers=4, heads=4, inter=1024, vocab=1024, batch=4, seq=128, steps=10)


def hf_child(a):
    """The HF + PEFT side (run in a child process): prints one JSON line."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                        num_attention_heads=a.heads, intermediate_size=a.inter, rotary_pct=0.5,
                        use_parallel_residual=True, max_position_embeddings=max(a.seq, 128),
                        tie_word_embeddings=False)
    base = GPTNeoXForCausalLM(cfg)
    if a.quant == "nf4":
        import tempfile
        from transformers import BitsAndBytesConfig
        tmp = tempfile.mkdtemp()
        base.save_pretrained(tmp)
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
        base = GPTNeoXForCausalLM.from_pretrained(tmp, quantization_config=q, dtype=torch.float32,
                                                  device_map="cpu")
    if a.grad_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    m = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["query_key_value"],
                                        task_type="CAUSAL_LM"))
    m.train()
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
    print(json.dumps({"ms_per_step": dt * 1e3, "tokens_per_s": a.batch * a.seq / dt,
                      "torch": torch.__version__}))


def timed(cmd, env):
    """Run `cmd` under GNU time: (its last stdout line as JSON, peak RSS in MB)."""
    p = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M"] + [str(c) for c in cmd], env=env,
                       check=True, capture_output=True, text=True)
    rss = [l for l in p.stderr.splitlines() if l.startswith("maxrss_kb=")][-1]
    return json.loads(p.stdout.strip().splitlines()[-1]), int(rss.split("=")[1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    default_bin = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "trainer")
    ap.add_argument("--trainer", default=default_bin)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--quant", choices=["none", "nf4"], default="none")
    ap.add_argument("--hf-child", action="store_true", help=argparse.SUPPRESS)
    for k, v in SHAPE_KEYS.items():
        ap.add_argument(f"--{k}", type=int, default=v)
    a = ap.parse_args()
    if a.hf_child:
        return hf_child(a)

    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    shape_args = [x for k in SHAPE_KEYS for x in (f"--{k}", getattr(a, k))]
    ckpt = ["--grad-checkpointing"] if a.grad_checkpointing else []
    ckpt += ["--quant", a.quant]
    ours, ours_mb = timed([a.trainer, "bench-train"] + shape_args + ckpt, env)
    hf, hf_mb = timed([sys.executable, __file__, "--hf-child", "--threads", a.threads] + shape_args + ckpt, env)

    shape = f"h{a.hidden} L{a.layers} heads{a.heads} F{a.inter} V{a.vocab} b{a.batch}x{a.seq}"
    shape += " ckpt" if a.grad_checkpointing else ""
    shape += " nf4" if a.quant == "nf4" else ""
    print(f"{'impl':<14}{'ms/step':>10}{'tokens/s':>12}{'peak RSS MB':>14}")
    print(f"{'law-polyglot':<14}{ours['ms_per_step']:>10.1f}{ours['tokens_per_s']:>12.0f}{ours_mb:>14.0f}")
    print(f"{'hf+peft':<14}{hf['ms_per_step']:>10.1f}{hf['tokens_per_s']:>12.0f}{hf_mb:>14.0f}")
    ratio = ours["tokens_per_s"] / hf["tokens_per_s"]
    mem = ours_mb / hf_mb
    print(f"ratio ours/HF tokens/s: {ratio:.2f}, peak RSS ours/HF: {mem:.2f}  ({shape}, {a.threads} threads, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {hf['torch']})")
    print(f"| {shape} | {a.threads} | {ours['tokens_per_s']:.0f} | {hf['tokens_per_s']:.0f} | {ratio:.2f} "
          f"| {ours_mb:.0f} MB | {hf_mb:.0f} MB | {mem:.2f} |")


if __name__ == "__main__":
    main()
