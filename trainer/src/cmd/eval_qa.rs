//! `trainer eval-qa`: greedy answers to Alpaca questions scored by exact match and character F1
//! (how BENCHMARKS.md reports the demo model on the held-out phrasings).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use shared::prompt::Template;

use crate::answer::{answer, char_f1, exact_match};
use crate::device::DeviceArg;
use crate::paths::{DEMO_MODEL, HELDOUT_DATA, bundled};
use crate::sft_data::read_files;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct EvalQaArgs {
    /// Model folder. Default: the bundled demo model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Alpaca JSONL. Default: the bundled held-out phrasings.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "seed")]
    pub template: Template,
    /// Score only the first N records.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

#[derive(Debug, Serialize)]
pub struct QaSummary {
    pub records: usize,
    pub exact_match: f64,
    pub char_f1: f64,
}

pub fn run(args: EvalQaArgs) -> Result<()> {
    let model = args.model.clone().unwrap_or_else(|| bundled(DEMO_MODEL));
    let data = args.data.clone().unwrap_or_else(|| bundled(HELDOUT_DATA));
    let mut records = read_files(&[data], false)?;
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    with_backend!(args.device.clone(), |B, device| {
        let m = crate::cmd::load_model::<B>(&model, args.adapter.as_deref(), &device)?;
        let (mut em, mut f1) = (0usize, 0.0);
        for (i, r) in records.iter().enumerate() {
            let a = answer(
                &m.model,
                &m.tokenizer,
                args.template,
                &r.instruction,
                &r.input,
                args.max_new_tokens,
                &device,
            )?;
            em += usize::from(exact_match(&a, &r.output));
            f1 += char_f1(&a, &r.output);
            if i < 3 {
                println!("Q: {}\nA: {a}\n", r.instruction);
            }
        }
        let n = records.len().max(1) as f64;
        let s = QaSummary {
            records: records.len(),
            exact_match: em as f64 / n,
            char_f1: f1 / n,
        };
        println!(
            "records {}  exact match {:.3}  char-F1 {:.3}",
            s.records, s.exact_match, s.char_f1
        );
        if args.json {
            println!("{}", serde_json::to_string(&s)?);
        }
        Ok(())
    })
}
