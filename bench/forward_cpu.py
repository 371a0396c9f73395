#!/usr/bin/env python3
"""CPU forward benchmark: Law-Polyglot (`trainer bench-forward`, burn Flex backend) vs HF transformers.

Builds a random GPT-NeoX model with HF (seed 0, f32), saves it to a temp folder, then times, with
the same thread count and the same synthetic ids:
  - prefill: one forward of [1, P] ids filling the KV cache (tokens/s, higher is better);
  - decode:  S single-token forwards reusing the cache (ms/token, lower is better).
Each side does one warm-up rep, then reports the median of R reps. See bench/README.md.

    cargo build --release -p trainer
    python3 bench/forward_cpu.py [--threads 2] [--trainer PATH] [--hf-only]
"""
import argparse, inspect, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch
import transformers
import transformers.utils.logging as hf_logging
from transformers import DynamicCache, GPTNeoXConfig, GPTNeoXForCausalLM

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "fixtures" / "golden" / "tokenizer.json"


def default_trainer():
    target = os.environ.get("CARGO_TARGET_DIR")
    return Path(target) / "release" / "trainer" if target else REPO / "target" / "release" / "trainer"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", type=Path, default=default_trainer(),
                    help="trainer binary (default: $CARGO_TARGET_DIR/release/trainer, else target/release/trainer)")
    ap.add_argument("--threads", type=int, default=2, help="RAYON_NUM_THREADS for ours, torch.set_num_threads for HF")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=30080)
    ap.add_argument("--rotary-pct", type=float, default=0.5)
    ap.add_argument("--parallel-residual", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--act", default="gelu", help="hidden_act")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5, help="timed reps (after one warm-up rep); the median is reported")
    ap.add_argument("--hf-only", action="store_true", help="skip the Rust binary, time HF alone")
    a = ap.parse_args()
    if a.threads < 1 or a.reps < 1 or a.prompt_len < 1 or a.decode_steps < 1:
        ap.error("--threads, --reps, --prompt-len and --decode-steps must be >= 1")
    return a


def build_model(a, out_dir):
    cfg = GPTNeoXConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                        num_attention_heads=a.heads, intermediate_size=a.intermediate, rotary_pct=a.rotary_pct,
                        rotary_emb_base=10000, use_parallel_residual=a.parallel_residual, hidden_act=a.act,
                        max_position_embeddings=max(2048, a.prompt_len + a.decode_steps), layer_norm_eps=1e-5,
                        attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg).to(torch.float32).eval()
    model.save_pretrained(out_dir)
    # The Rust loader wants a tokenizer.json beside the weights; its vocab does not matter here
    # (the ids are synthetic).
    shutil.copy(TOKENIZER, out_dir / "tokenizer.json")
    return model


def prompt_ids(a):
    return [(i * 7919 + 13) % a.vocab for i in range(a.prompt_len)]


def run_ours(a, model_dir):
    if not a.trainer.exists():
        sys.exit(f"{a.trainer} not found: build it first (cargo build --release -p trainer), "
                 "pass --trainer PATH, or use --hf-only")
    cmd = [str(a.trainer), "bench-forward", "--model", str(model_dir), "--prompt-len", str(a.prompt_len),
           "--decode-steps", str(a.decode_steps), "--reps", str(a.reps), "--device", "cpu"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    print("running:", f"RAYON_NUM_THREADS={a.threads}", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"trainer bench-forward failed ({p.returncode}):\n{p.stderr}{p.stdout}")
    lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if not lines:
        sys.exit(f"no JSON line in trainer output:\n{p.stdout}\n{p.stderr}")
    res = json.loads(lines[-1])
    assert res.get("impl") == "law-polyglot" and res.get("prompt_len") == a.prompt_len, res
    return {"impl": res["impl"], "prefill_tokens_per_s": float(res["prefill_tokens_per_s"]),
            "decode_ms_per_token": float(res["decode_ms_per_token"])}


def run_hf(a, model):
    """Mirror of `trainer bench-forward`: rep 0 is a warm-up, then the median of `reps` reps."""
    torch.set_num_threads(a.threads)
    prompt = torch.tensor([prompt_ids(a)], dtype=torch.int64)
    steps = [torch.tensor([[(s * 31) % a.vocab]], dtype=torch.int64) for s in range(a.decode_steps)]
    # transformers >= 5.2x renamed the `past_key_values` argument/output field to `cache` (the old
    # name still works but warns); use whichever this version declares.
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    get_cache = lambda out: out.cache if kw == "cache" else out.past_key_values
    prefill, decode = [], []
    with torch.inference_mode():
        for rep in range(a.reps + 1):
            t0 = time.perf_counter()
            # logits_to_keep=1: last position only, like our forward_last (and like HF generate's prefill)
            out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
            past = get_cache(out)  # the DynamicCache the model created
            t_prefill = time.perf_counter() - t0
            t1 = time.perf_counter()
            for ids in steps:
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{kw: past})
                past = get_cache(out)
            t_decode = (time.perf_counter() - t1) / a.decode_steps
            assert isinstance(past, DynamicCache) and past.get_seq_length() == a.prompt_len + a.decode_steps
            if rep > 0:
                prefill.append(t_prefill)
                decode.append(t_decode)
    # upper median, as the Rust side does (v[len/2] of the sorted list)
    med = lambda v: sorted(v)[len(v) // 2]
    return {"impl": f"hf-transformers {transformers.__version__} (torch {torch.__version__}, "
                    f"attn={model.config._attn_implementation})",
            "prefill_tokens_per_s": a.prompt_len / med(prefill), "decode_ms_per_token": med(decode) * 1e3,
            "prefill_spread_ms": [round(min(prefill) * 1e3, 2), round(max(prefill) * 1e3, 2)],
            "decode_spread_ms": [round(min(decode) * 1e3, 3), round(max(decode) * 1e3, 3)]}


def cpu_model_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def git_rev():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "-"


def main():
    a = parse_args()
    hf_logging.disable_progress_bar()
    shape = (f"h{a.hidden} L{a.layers} H{a.heads} I{a.intermediate} V{a.vocab} rot{a.rotary_pct} "
             f"{'par' if a.parallel_residual else 'seq'} {a.act}")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")  # > ~0.5 here: numbers are suspect
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        model_dir = Path(tmp)
        model = build_model(a, model_dir)
        ours = None if a.hf_only else run_ours(a, model_dir)
        hf = run_hf(a, model)

    proc = platform.processor() or "-"
    print()
    print(f"machine: processor={proc!r} cpu={cpu_model_name()!r} cpu_count={os.cpu_count()} "
          f"python={platform.python_version()} torch={torch.__version__} transformers={transformers.__version__} "
          f"threads={a.threads} loadavg(1m, before)={load0:.2f}")
    print(f"shape: {shape}; prompt_len={a.prompt_len} decode_steps={a.decode_steps} reps={a.reps} "
          f"(+1 warm-up, median), f32, batch 1")
    print()
    rows = [r for r in (ours, hf) if r]
    w = max(len(r["impl"]) for r in rows)
    print(f"{'impl':<{w}}  {'prefill tok/s':>14}  {'decode ms/token':>16}")
    for r in rows:
        print(f"{r['impl']:<{w}}  {r['prefill_tokens_per_s']:>14.1f}  {r['decode_ms_per_token']:>16.3f}")
    print(f"HF spread over reps: prefill {hf['prefill_spread_ms']} ms, decode {hf['decode_spread_ms']} ms/token")
    if ours:
        pre_ratio = ours["prefill_tokens_per_s"] / hf["prefill_tokens_per_s"]
        dec_ratio = hf["decode_ms_per_token"] / ours["decode_ms_per_token"]
        print(f"prefill ours/HF (tok/s):  {pre_ratio:.2f}x  (>1: we are faster)")
        print(f"decode  HF/ours (ms/tok): {dec_ratio:.2f}x  (>1: we are faster)")
        cells = [f"{ours['prefill_tokens_per_s']:.0f}", f"{hf['prefill_tokens_per_s']:.0f}", f"{pre_ratio:.2f}",
                 f"{ours['decode_ms_per_token']:.2f}", f"{hf['decode_ms_per_token']:.2f}", f"{dec_ratio:.2f}"]
    else:
        print("(--hf-only: no ratios)")
        cells = ["-", f"{hf['prefill_tokens_per_s']:.0f}", "-", "-", f"{hf['decode_ms_per_token']:.2f}", "-"]

    machine = cpu_model_name() or proc
    print()
    print("BENCHMARKS.md row:")
    print("| date | commit | machine | cpus | threads | torch | shape | P/S | ours prefill tok/s | HF prefill tok/s "
          "| ours/HF | ours decode ms/tok | HF decode ms/tok | HF/ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {time.strftime('%Y-%m-%d')} | {git_rev()} | {machine} | {os.cpu_count()} | {a.threads} | "
          f"{torch.__version__} | {shape} | {a.prompt_len}/{a.decode_steps} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
