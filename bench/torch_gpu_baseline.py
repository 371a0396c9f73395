"""(Copied from the team's shared peer baselines, ../shared/bench/torch_baseline.py.)
Peer baseline on a GPU: HF transformers + PEFT LoRA on a GPT-NeoX of the
polyglot-ko-1.3b shape (random init), torch matmul, HF generate.

Usage: python3 torch_baseline.py OUTDIR [--quick]
Prints one JSON line per measurement.
"""
import json, os, sys, time, math

import torch

out = sys.argv[1]
quick = "--quick" in sys.argv
os.makedirs(out, exist_ok=True)


def log(**kw):
    print(json.dumps(kw), flush=True)


def baseline():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    dev = "cuda"
    # matmul ceiling
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(); t = time.time(); n = 10
    for _ in range(n):
        a @ b
    torch.cuda.synchronize(); dt = (time.time() - t) / n
    log(what="torch bf16 matmul 8192^3", tflops=2 * 8192**3 / dt / 1e12)
    del a, b

    # polyglot-ko-1.3b shape
    cfg = GPTNeoXConfig(vocab_size=30080, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=8192, rotary_pct=0.5, rotary_emb_base=10000, use_parallel_residual=True,
                        max_position_embeddings=2048, layer_norm_eps=1e-5, hidden_act="gelu", tie_word_embeddings=False)
    from peft import LoraConfig, get_peft_model
    for attn in ["sdpa"]:
        torch.manual_seed(0)
        cfg._attn_implementation = attn
        model = GPTNeoXForCausalLM(cfg).to(dev, dtype=torch.bfloat16)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["query_key_value"], task_type="CAUSAL_LM"))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        bs, seq = 8, 512
        ids = torch.randint(0, cfg.vocab_size, (bs, seq), device=dev)
        torch.cuda.reset_peak_memory_stats()
        steps = 3 if quick else 10
        for i in range(3 + steps):
            if i == 3:
                torch.cuda.synchronize(); t = time.time()
            outp = model(input_ids=ids, labels=ids)
            outp.loss.backward()
            opt.step(); opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); dt = (time.time() - t) / steps
        log(what=f"hf+peft LoRA r8 qkv train 1.3b-shape bf16 bs{bs} seq{seq} attn={attn}", tokens_per_s=bs * seq / dt,
            step_s=dt, peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30)
        del model, opt, outp
        torch.cuda.empty_cache()

    # decode
    torch.manual_seed(0)
    cfg._attn_implementation = "sdpa"
    model = GPTNeoXForCausalLM(cfg).to(dev, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 32), device=dev)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        torch.cuda.synchronize(); t = time.time()
        model.generate(ids, max_new_tokens=128, do_sample=False, min_new_tokens=128)
        torch.cuda.synchronize(); dt = time.time() - t
    log(what="hf generate greedy 1.3b-shape bf16 bs1 128 new tokens", tokens_per_s=128 / dt)


if __name__ == "__main__":
    baseline()
