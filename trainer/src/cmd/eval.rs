//! `trainer eval`: mean next-token cross-entropy and perplexity of a model on a JSONL file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use shared::prompt::Template;

use crate::data::read_jsonl;
use crate::device::DeviceArg;
use crate::eval::{EvalSummary, evaluate};
use crate::with_backend;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// HF model folder (config.json, weights, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter folder to apply on top (ours or Python PEFT's).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// JSONL: `{"input_ids": [...]}`, `{"text": ...}` or Alpaca `{"instruction", "input", "output"}`.
    #[arg(long)]
    pub data: PathBuf,
    /// Prompt template for Alpaca records.
    #[arg(long, default_value = "seed")]
    pub template: Template,
    /// Lines longer than this many tokens are truncated.
    #[arg(long, default_value_t = 2048)]
    pub max_len: usize,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    #[command(flatten)]
    pub quant: crate::cmd::quant_args::QuantArgs,
}

pub fn summarize(args: &EvalArgs) -> Result<EvalSummary> {
    let records = read_jsonl(&args.data)?;
    with_backend!(args.device.clone(), |B, device| {
        let m = crate::cmd::load_model_as::<B>(
            &args.model,
            args.adapter.as_deref(),
            args.quant.format(),
            &device,
        )?;
        evaluate(
            &m.model,
            &m.tokenizer,
            m.config.vocab_size,
            &records,
            args.template,
            args.max_len,
            &device,
        )
        .with_context(|| format!("evaluating {}", args.data.display()))
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    let s = summarize(&args)?;
    println!(
        "lines {}  tokens {}  mean_loss {:.6}  perplexity {:.4}{}",
        s.lines,
        s.tokens,
        s.mean_loss,
        s.perplexity,
        if s.truncated > 0 {
            format!("  ({} lines truncated)", s.truncated)
        } else {
            String::new()
        }
    );
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(())
}
