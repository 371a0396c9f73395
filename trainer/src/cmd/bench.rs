//! `trainer bench-forward`: forward-pass timings of a model folder, one JSON line, for the
//! benchmark scripts under `bench/` (which run the HF peer in the same script).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use clap::Args;
use shared::model_dir::ModelDir;

use crate::device::DeviceArg;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model folder; or give `--config` (an HF config.json) for random weights drawn on the device.
    #[arg(long, required_unless_present = "config")]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Prompt length of the prefill.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Single-token decode steps timed after the prefill.
    #[arg(long, default_value_t = 32)]
    pub decode_steps: usize,
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

fn ids<B: Backend>(vals: Vec<i64>, device: &B::Device) -> Tensor<B, 2, Int> {
    let n = vals.len();
    Tensor::from_data(TensorData::new(vals, [1, n]), device)
}

pub fn run(args: BenchArgs) -> Result<()> {
    with_backend!(args.device.clone(), |B, device| {
        let (config, model) = match (&args.model, &args.config) {
            (Some(dir), _) => {
                let m = ModelDir::<B>::load(dir, &device)
                    .with_context(|| format!("loading {}", dir.display()))?;
                (m.config, m.model)
            }
            (None, Some(cfg)) => {
                let c = shared::GptNeoxConfig::from_hf_file(cfg)?;
                let model = shared::GptNeoxForCausalLM::<B>::init_on_device(&c, 0.02, &device);
                (c, model)
            }
            (None, None) => anyhow::bail!("give --model DIR or --config FILE"),
        };
        let v = config.vocab_size as i64;
        let prompt: Vec<i64> = (0..args.prompt_len as i64)
            .map(|i| (i * 7919 + 13) % v)
            .collect();
        let (mut prefill, mut decode) = (Vec::new(), Vec::new());
        for rep in 0..=args.reps {
            let mut cache = model.new_cache();
            let t0 = Instant::now();
            let logits = model.forward_last(ids::<B>(prompt.clone(), &device), Some(&mut cache));
            let _ = logits.into_data();
            let t_prefill = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            for s in 0..args.decode_steps {
                let logits = model.forward_last(
                    ids::<B>(vec![(s as i64 * 31) % v], &device),
                    Some(&mut cache),
                );
                let _ = logits.into_data();
            }
            let t_decode = t1.elapsed().as_secs_f64() / args.decode_steps.max(1) as f64;
            if rep > 0 {
                // rep 0 is the warm-up.
                prefill.push(t_prefill);
                decode.push(t_decode);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let p = median(&mut prefill);
        let d = median(&mut decode);
        println!(
            "{}",
            serde_json::json!({
                "impl": "law-polyglot",
                "prompt_len": args.prompt_len,
                "prefill_tokens_per_s": args.prompt_len as f64 / p,
                "decode_ms_per_token": d * 1e3,
            })
        );
        Ok(())
    })
}
