"""Where HF + PEFT's LoRA training step spends its GPU time (issue 5), with the same labels as
`trainer bench-train --timeline` (shared/src/timeline.rs), for a side-by-side table.

The model and step are torch_gpu_baseline.py's (polyglot-ko-1.3b shape, random init, bf16,
SDPA attention, LoRA r8 on query_key_value with dropout 0.05, batch 8 x 512, AdamW). Module
hooks record a CUDA event where each part starts (forward pre-hooks, and backward pre-hooks
for the `.bwd` labels), as our model's marks do; the time between two events is the GPU's time
for the work between them. A kernel breakdown from torch.profiler follows (every kernel's
time, by family).

Usage: python3 bench/torch_gpu_where.py OUTFILE.json [--layers N] [--device cpu]
(--device cpu: a dry run of the hooks and the tables, host clocks instead of CUDA events).
Prints the tables on stdout and writes the rows as JSON.
"""
import json, sys, time

import torch

STEP, STARVED_MS = "step", 0.05


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


OUT = sys.argv[1]
LAYERS = int(arg("--layers", "24"))
DEV = arg("--device", "cuda")
CUDA = DEV == "cuda"
T0 = time.perf_counter()


class Marks:
    """Events with the host's time when each was queued (ms)."""

    def __init__(self):
        self.on, self.points = False, []

    def mark(self, label):
        if not self.on:
            return
        host = (time.perf_counter() - T0) * 1e3
        if CUDA:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
        else:
            ev = host
        self.points.append((label, ev, host))

    def take(self):
        if not self.points:  # none recorded (marks off)
            return []
        if CUDA:
            torch.cuda.synchronize()
            first = self.points[0][1]
            pts = [(l, first.elapsed_time(e), h) for l, e, h in self.points]
        else:
            pts = [(l, e - self.points[0][1], h) for l, e, h in self.points]
        self.points = []
        return pts


def summarize(points):
    """timeline.rs's `summarize`: per label, the GPU ms a step from its marks to the next,
    and the part in intervals whose end the GPU reached as the host queued it."""
    starts = [i for i, p in enumerate(points) if p[0] == STEP]
    rows = {}
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(points) - 1
        step = points[s:e + 1]
        offset = max(h - g for _, g, h in step)
        for (l, g0, _), (_, g1, h1) in zip(step, step[1:]):
            r = rows.setdefault(l, [0.0, 0.0, 0.0])
            r[0] += 1
            r[1] += g1 - g0
            if g1 + offset - h1 < STARVED_MS:
                r[2] += g1 - g0
    n = max(len(starts), 1)
    return [dict(label=l, marks=r[0] / n, gpu_ms=r[1] / n, host_paced_ms=r[2] / n) for l, r in rows.items()]


def table(rows, title):
    total = sum(r["gpu_ms"] for r in rows) or 1e-9
    out = [f"{title:<24} {'marks':>7} {'GPU ms':>9} {'share':>6} {'host-paced':>12}"]
    for r in rows:
        out.append(f"{r['label']:<24} {r['marks']:>7.1f} {r['gpu_ms']:>9.3f} {100 * r['gpu_ms'] / total:>5.1f}% {r['host_paced_ms']:>12.3f}")
    out.append(f"{'total':<24} {'':>7} {total:>9.3f} {'':>6} {sum(r['host_paced_ms'] for r in rows):>12.3f}")
    return "\n".join(out)


def hook(marks, module, before, after=None, bwd=None, bwd_after="bwd.other"):
    """Marks `before` where `module`'s forward starts and `after` where it ends; in backward,
    `bwd` (`before.bwd`) where its gradient starts and `bwd_after` where it ends."""
    hs = [module.register_forward_pre_hook(lambda *_: marks.mark(before))]
    if after:
        hs.append(module.register_forward_hook(lambda *_: marks.mark(after)))
    hs.append(module.register_full_backward_pre_hook(lambda *_: marks.mark(bwd or before + ".bwd")))
    hs.append(module.register_full_backward_hook(lambda *_: marks.mark(bwd_after)))
    return hs


def family(name):
    n = name.lower()
    for fam, keys in [("matmul", ["gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90", "sm80"]),
                      ("attention", ["flash", "fmha", "attention", "sdpa"]),
                      ("layernorm", ["layer_norm", "layernorm"]),
                      ("gelu", ["gelu"]),
                      ("softmax/loss", ["softmax", "nll", "cross_entropy"]),
                      ("dropout", ["dropout", "bernoulli"]),
                      ("optimizer", ["multi_tensor", "adam"]),
                      ("copy/cast", ["copy", "cast", "convert"])]:
        if any(k in n for k in keys):
            return fam
    return "other element-wise"


def main():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from peft import LoraConfig, get_peft_model
    big = CUDA
    cfg = GPTNeoXConfig(vocab_size=30080 if big else 512, hidden_size=2048 if big else 64,
                        num_hidden_layers=LAYERS, num_attention_heads=16 if big else 4,
                        intermediate_size=8192 if big else 256, rotary_pct=0.5, rotary_emb_base=10000,
                        use_parallel_residual=True, max_position_embeddings=2048, layer_norm_eps=1e-5,
                        hidden_act="gelu", tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    dtype = torch.bfloat16 if big else torch.float32
    model = GPTNeoXForCausalLM(cfg).to(DEV, dtype=dtype)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["query_key_value"], task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    bs, seq = (8, 512) if big else (2, 32)
    ids = torch.randint(0, cfg.vocab_size, (bs, seq), device=DEV)

    def step(marks=None):
        if marks:
            marks.mark(STEP)
        out = model(input_ids=ids, labels=ids)
        if marks:
            marks.mark("loss.bwd")
        out.loss.backward()
        if marks:
            marks.mark("optimizer")
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if CUDA else (lambda: None)
    for _ in range(3):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(3):
        step()
    sync()
    plain_ms = (time.perf_counter() - t) / 3 * 1e3

    marks, hooks = Marks(), []
    base = model.base_model.model
    for layer in base.gpt_neox.layers:
        hooks += hook(marks, layer.input_layernorm, "layernorm")
        hooks += hook(marks, layer.post_attention_layernorm, "layernorm")
        att = layer.attention
        # attention's core (rotary, SDPA) has no module: it runs after qkv's forward and
        # after dense's backward
        hooks += hook(marks, att.query_key_value, "qkv", after="attention")
        hooks += hook(marks, att.dense, "dense", after="residual", bwd_after="attention.bwd")
        hooks += hook(marks, layer.mlp.dense_h_to_4h, "fc1", after="gelu")
        hooks += hook(marks, layer.mlp.dense_4h_to_h, "fc2", after="residual", bwd_after="gelu.bwd")
    hooks += hook(marks, base.gpt_neox.final_layer_norm, "head", bwd="layernorm.bwd")
    head = base.embed_out if hasattr(base, "embed_out") else base.lm_head  # renamed in 5.x
    hooks += hook(marks, head, "head", after="loss")
    step(marks)  # the hooks' first run
    sync()
    marks.take()
    marks.on = True
    t = time.perf_counter()
    for _ in range(3):
        step(marks)
    marks.mark("end")
    sync()
    hooked_ms = (time.perf_counter() - t) / 3 * 1e3
    marks.on = False
    rows = summarize(marks.take())
    for h in hooks:
        h.remove()
    print(f"HF + PEFT, {LAYERS} layers, {bs} x {seq}: {plain_ms:.1f} ms a step, {hooked_ms:.1f} with the hooks")
    print(table(rows, "HF GPU timeline, a step"))

    fams, kernels = {}, {}
    if CUDA:
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                step()
            sync()
        for e in prof.events():
            if str(e.device_type).endswith("CUDA"):
                us = e.time_range.elapsed_us() / 2
                fams[family(e.name)] = fams.get(family(e.name), 0) + us / 1e3
                kernels[e.name] = kernels.get(e.name, 0) + us / 1e3
        print(f"\nHF kernels by family, ms a step (torch.profiler; sum {sum(fams.values()):.2f}):")
        for f, ms in sorted(fams.items(), key=lambda x: -x[1]):
            print(f"  {f:<20} {ms:8.3f}")
        print("HF's 15 longest kernels, ms a step:")
        for k, ms in sorted(kernels.items(), key=lambda x: -x[1])[:15]:
            print(f"  {ms:8.3f}  {k[:110]}")
    with open(OUT, "w") as f:
        json.dump(dict(plain_ms=plain_ms, hooked_ms=hooked_ms, rows=rows, families=fams,
                       kernels=sorted(kernels.items(), key=lambda x: -x[1])[:30]), f)


if __name__ == "__main__":
    main()
