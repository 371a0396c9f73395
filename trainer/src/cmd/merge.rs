//! `trainer merge`: fold a LoRA adapter into its base and write an HF model folder that
//! transformers loads (config, safetensors sharded above --max-shard-mb, tokenizer files).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use shared::save::save_hf_folder;

use crate::device::DeviceArg;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct MergeArgs {
    #[arg(long)]
    pub base: PathBuf,
    #[arg(long)]
    pub adapter: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Shard the weights above this many MB (transformers' default is 5000).
    #[arg(long, default_value_t = 5000)]
    pub max_shard_mb: usize,
    /// Store the merged weights in float16.
    #[arg(long)]
    pub save_f16: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

pub fn run(args: MergeArgs) -> Result<()> {
    with_backend!(args.device.clone(), |B, device| {
        let m = crate::cmd::load_model::<B>(&args.base, Some(&args.adapter), &device)?;
        let merged = m.model.merge_lora();
        let copies: Vec<PathBuf> = [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
        ]
        .iter()
        .map(|f| args.base.join(f))
        .filter(|p| p.is_file())
        .collect();
        let refs: Vec<&std::path::Path> = copies.iter().map(PathBuf::as_path).collect();
        save_hf_folder(
            &merged,
            &m.config,
            &args.out,
            args.max_shard_mb * 1_000_000,
            &refs,
            args.save_f16,
        )
        .with_context(|| format!("writing {}", args.out.display()))?;
        println!("merged model written to {}", args.out.display());
        Ok(())
    })
}
