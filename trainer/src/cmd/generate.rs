//! `trainer generate`: stream a completion to stdout.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use shared::generate::{GenerationConfig, generate};
use shared::prompt::Template;
use shared::sampling::SamplingConfig;
use shared::tokenizer::StreamDecoder;

use crate::device::DeviceArg;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// HF model folder (config.json, weights, tokenizer.json). Default: the bundled demo model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A PEFT LoRA adapter folder to apply on top (ours or Python PEFT's).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The question (wrapped in `--template`) or, with `--raw`, the exact prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Feed the prompt verbatim instead of as an instruction.
    #[arg(long)]
    pub raw: bool,
    #[arg(long, default_value = "seed")]
    pub template: Template,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Print the time to the first token and the decode speed to stderr.
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub quant: crate::cmd::quant_args::QuantArgs,
}

impl GenerateArgs {
    pub fn prompt_text(&self) -> String {
        if self.raw {
            self.prompt.clone()
        } else {
            self.template.prompt(&self.prompt, "")
        }
    }
}

/// Generate and stream to `out`; returns the generated text.
pub fn generate_to(args: &GenerateArgs, out: &mut dyn Write) -> Result<String> {
    if !(0.0..=1.0).contains(&args.top_p) || args.top_p == 0.0 {
        bail!("--top-p must lie in (0, 1]");
    }
    if !args.temperature.is_finite() || args.temperature < 0.0 {
        bail!("--temperature must be a finite number ≥ 0");
    }
    with_backend!(args.device.clone(), |B, device| {
        let model = args
            .model
            .clone()
            .unwrap_or_else(|| crate::paths::bundled(crate::paths::DEMO_MODEL));
        let m = crate::cmd::load_model_as::<B>(
            &model,
            args.adapter.as_deref(),
            args.quant.format(),
            &device,
        )?;
        let t0 = std::time::Instant::now();
        let mut first: Option<std::time::Duration> = None;
        let prompt = m.tokenizer.encode(&args.prompt_text())?;
        let cfg = GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            sampling: SamplingConfig {
                temperature: args.temperature,
                top_p: args.top_p,
                top_k: args.top_k,
            },
            seed: args.seed,
            stop_ids: vec![m.tokenizer.eos_id()],
        };
        let eos = m.tokenizer.eos_id();
        let mut stream = StreamDecoder::default();
        let mut text = String::new();
        let mut io_err = None;
        let result = pollster::block_on(generate(&m.model, &prompt, &cfg, &device, async |id| {
            first.get_or_insert_with(|| t0.elapsed());
            if id == eos {
                return ControlFlow::Continue(());
            }
            match stream.push(&m.tokenizer, id) {
                Ok(Some(piece)) => {
                    text.push_str(&piece);
                    if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                        io_err = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    io_err = Some(std::io::Error::other(e.to_string()));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }));
        if let Some(e) = io_err {
            return Err(e.into());
        }
        let (ids, _) = result?;
        writeln!(out)?;
        if args.stats {
            let total = t0.elapsed().as_secs_f64();
            let ttft = first.map_or(total, |d| d.as_secs_f64());
            let tps = if ids.len() > 1 && total > ttft {
                (ids.len() - 1) as f64 / (total - ttft)
            } else {
                0.0
            };
            eprintln!(
                "stats: prompt {} tokens, {} new tokens, time to first token {:.1} ms, decode {tps:.1} tokens/s",
                prompt.len(),
                ids.len(),
                ttft * 1000.0
            );
        }
        Ok(text)
    })
}

pub fn run(args: GenerateArgs) -> Result<()> {
    generate_to(&args, &mut std::io::stdout().lock()).map(|_| ())
}
