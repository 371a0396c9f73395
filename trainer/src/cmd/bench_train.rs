//! `trainer bench-train`: LoRA r8 (query_key_value) training-step timings of a random GPT-NeoX
//! shape, one JSON line, for `bench/train_step_cpu.py` (which runs HF + PEFT beside it).

use std::time::Instant;

use anyhow::Result;
use burn::backend::Autodiff;
use clap::Args;
use shared::example::Example;
use shared::lora::{LoraConfig, TargetModules};
use shared::loss::causal_lm_nll_sum;
use shared::{GptNeoxConfig, GptNeoxForCausalLM};

use crate::device::DeviceArg;
use crate::train::batch::collate;
use crate::train::optim::{AdamW, AdamWConfig, GradSum};
use crate::with_backend;

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 1024)]
    pub inter: usize,
    #[arg(long, default_value_t = 1024)]
    pub vocab: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

pub fn run(args: BenchTrainArgs) -> Result<()> {
    let config = GptNeoxConfig::from_hf_json(
        &serde_json::json!({
            "vocab_size": args.vocab, "hidden_size": args.hidden, "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads, "intermediate_size": args.inter, "rotary_pct": 0.5,
            "use_parallel_residual": true, "max_position_embeddings": args.seq.max(128),
        })
        .to_string(),
    )?;
    with_backend!(args.device.clone(), |B, device| {
        type AB = Autodiff<B>;
        let mut model = GptNeoxForCausalLM::<AB>::init(&config, 0.02, 0, &device);
        let lora = LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: TargetModules::List(vec!["query_key_value".into()]),
            use_rslora: false,
        };
        model.attach_lora(&lora, 0, &device);
        let examples: Vec<Example> = (0..args.batch)
            .map(|b| {
                Example::lm(
                    (0..args.seq)
                        .map(|i| ((b * 7919 + i * 31) % args.vocab) as u32)
                        .collect(),
                )
            })
            .collect();
        let refs: Vec<&Example> = examples.iter().collect();
        let mut opt = AdamW::<B>::new(AdamWConfig::default());
        let mut t0 = Instant::now();
        for step in 0..args.steps + 3 {
            if step == 3 {
                t0 = Instant::now();
            }
            let batch = collate::<AB>(&refs, 0, &device);
            let (sum, n) = causal_lm_nll_sum(model.forward(batch.ids, None), &batch.labels);
            let loss = sum / n as f64;
            let g = loss.backward();
            let mut grads = GradSum::<B>::default();
            grads.add(&model, &g);
            let scale = 1.0_f64.min(1.0 / (grads.norm() + 1e-6));
            model = opt.step(model, &grads, 1e-3, scale);
        }
        let dt = t0.elapsed().as_secs_f64() / args.steps as f64;
        println!(
            "{}",
            serde_json::json!({
                "impl": "law-polyglot",
                "ms_per_step": dt * 1e3,
                "tokens_per_s": (args.batch * args.seq) as f64 / dt,
            })
        );
        Ok(())
    })
}
