#!/usr/bin/env bash
# Rebuilds the bundled models from the bundled data, on the CPU:
#   models/law-tiny-base  a tiny GPT-NeoX (Polyglot-ko's shape ratios) pretrained from scratch
#   models/law-tiny-demo  the base fine-tuned with LoRA on the constitution instructions, merged
#   public/models/law-tiny-demo  the demo model as a q4 web package for the browser app
# Usage: bash tools/build_models.sh [base|demo|web|all]   (TRAINER=path/to/trainer to reuse a build)
set -euo pipefail
cd "$(dirname "$0")/.."
T=${TRAINER:-}
if [ -z "$T" ]; then
  cargo build --release -p trainer
  T="${CARGO_TARGET_DIR:-target}/release/trainer"
fi
what=${1:-all}
CORPUS="data/korean-law/kolaw/constitution.txt data/korean-law/kobill"

if [ "$what" = base ] || [ "$what" = all ]; then
  # 1. Tokenizer: byte-level BPE shaped like Polyglot-ko's, on the corpus and instruction text.
  $T tokenizer --data $CORPUS data/instructions/train.jsonl --vocab-size 4096 --out models/law-tiny-base
  # 2. Pretrain from scratch (full training) on the legal corpus; weights stored as float16.
  $T pretrain --data $CORPUS --config models/law-tiny-base.config.json \
    --tokenizer models/law-tiny-base/tokenizer.json --full --max-len 256 --batch-size 8 --epochs 30 \
    --lr 1e-3 --warmup-ratio 0.05 --weight-decay 0.01 --eval-every 100 --save-every 100 --log-every 20 \
    --save-f16 --seed 1 --out runs/base
  cp runs/base/config.json runs/base/model.safetensors models/law-tiny-base/
  cp runs/base/metrics.jsonl runs/base/loss.svg runs/base/run_config.json docs/training-logs/law-tiny-base/
fi

if [ "$what" = demo ] || [ "$what" = all ]; then
  # 3. LoRA SFT on the constitution instructions (held-out phrasings only for eval).
  $T sft --model models/law-tiny-base --data data/instructions/train.jsonl \
    --eval-data data/instructions/heldout.jsonl --lora-r 64 --lora-alpha 128 --lora-dropout 0.05 \
    --target all-linear --lr 2e-3 --epochs 8 --batch-size 8 --warmup-ratio 0.03 --schedule cosine \
    --eval-every 250 --save-every 250 --log-every 25 --seed 7 --show-answers 3 --out runs/demo-sft
  # 4. Merge into an HF folder (float16), 5. score it on the held-out phrasings.
  $T merge --base models/law-tiny-base --adapter runs/demo-sft --out models/law-tiny-demo --save-f16
  cp runs/demo-sft/metrics.jsonl runs/demo-sft/loss.svg runs/demo-sft/run_config.json docs/training-logs/law-tiny-demo/
  $T eval-qa --model models/law-tiny-demo --json
fi

if [ "$what" = demo ] || [ "$what" = all ] || [ "$what" = web ]; then
  # 6. The web package the browser app loads (q4, with manifest and sha256s).
  $T export-web --model models/law-tiny-demo --out public/models/law-tiny-demo \
    --name "법률 데모 (5.3M, q4)" \
    --description "Constitution and bills Q&A demo: law-tiny-base + LoRA SFT, merged, q4"
  $T eval-qa --model public/models/law-tiny-demo --json
fi
