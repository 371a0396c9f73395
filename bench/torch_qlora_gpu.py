"""Peer baseline for QLoRA on a GPU: HF transformers + PEFT + bitsandbytes on a GPT-NeoX of the
polyglot-ko-1.3b shape (random init, as torch_gpu_baseline.py), its linear weights in NF4 with
double quantization and bf16 compute (BitsAndBytesConfig load_in_4bit, nf4,
bnb_4bit_use_double_quant, bnb_4bit_compute_dtype=bfloat16), LoRA r8 on query_key_value with
dropout 0.05, AdamW, batch 8 x 512. `embed_out` stays bf16 (transformers skips the output
embedding). Without prepare_model_for_kbit_training, so that it does the same work as ours;
--grad-checkpointing adds HF's per-layer recomputation.

Usage: python3 torch_qlora_gpu.py OUTDIR [--steps N] [--grad-checkpointing]
(needs bitsandbytes: bench/make_bnb_wheel.sh). Prints one JSON line.
"""
import json, os, shutil, sys, tempfile, time

import torch
from peft import LoraConfig, get_peft_model
from transformers import BitsAndBytesConfig, GPTNeoXConfig, GPTNeoXForCausalLM

out = sys.argv[1]
steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 5
ckpt = "--grad-checkpointing" in sys.argv
os.makedirs(out, exist_ok=True)
t0 = time.time()
cfg = GPTNeoXConfig(vocab_size=30080, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                    intermediate_size=8192, rotary_pct=0.5, rotary_emb_base=10000, use_parallel_residual=True,
                    max_position_embeddings=2048, layer_norm_eps=1e-5, hidden_act="gelu", tie_word_embeddings=False)
cfg._attn_implementation = "sdpa"
torch.manual_seed(0)
tmp = tempfile.mkdtemp()  # not under OUTDIR, which the GPU script archives
GPTNeoXForCausalLM(cfg).to(dtype=torch.bfloat16).save_pretrained(tmp)
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.bfloat16)
model = GPTNeoXForCausalLM.from_pretrained(tmp, quantization_config=q, dtype=torch.bfloat16, device_map="cuda")
shutil.rmtree(tmp)
if ckpt:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["query_key_value"],
                                         task_type="CAUSAL_LM"))
model.train()
load_s = time.time() - t0
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
bs, seq = 8, 512
ids = torch.randint(0, cfg.vocab_size, (bs, seq), device="cuda")
torch.cuda.reset_peak_memory_stats()
for i in range(3 + steps):
    if i == 3:
        torch.cuda.synchronize(); t = time.time()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
torch.cuda.synchronize(); dt = (time.time() - t) / steps
print(json.dumps({"what": f"hf+peft+bnb QLoRA nf4-dq r8 qkv 1.3b-shape bf16 bs{bs} seq{seq}"
                          + (" ckpt" if ckpt else ""),
                  "tokens_per_s": bs * seq / dt, "step_s": dt, "load_s": load_s,
                  "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                  "torch": torch.__version__}), flush=True)
