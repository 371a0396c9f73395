//! LoRA and optimizer flags shared by `trainer sft` and `trainer pretrain`.

use clap::Args;
use shared::lora::{LoraConfig, TargetModules};

use crate::train::TrainSpec;
use crate::train::schedule::Schedule;

#[derive(Debug, Clone, Args)]
pub struct LoraArgs {
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    pub lora_dropout: f64,
    /// Modules to adapt: query_key_value, dense, dense_h_to_4h, dense_4h_to_h, or all-linear.
    #[arg(long = "target", default_values_t = vec!["query_key_value".to_string()], value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Scale by alpha/√r (rsLoRA) instead of alpha/r.
    #[arg(long)]
    pub rslora: bool,
}

impl LoraArgs {
    pub fn config(&self) -> anyhow::Result<LoraConfig> {
        const KNOWN: [&str; 5] = [
            "query_key_value",
            "dense",
            "dense_h_to_4h",
            "dense_4h_to_h",
            "all-linear",
        ];
        if let Some(bad) = self.targets.iter().find(|t| !KNOWN.contains(&t.as_str())) {
            anyhow::bail!("--target {bad:?}: use one of {}", KNOWN.join(", "));
        }
        if self.lora_r == 0 {
            anyhow::bail!("--lora-r must be positive");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            anyhow::bail!("--lora-dropout must lie in [0, 1)");
        }
        Ok(LoraConfig {
            r: self.lora_r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules: TargetModules::from_cli(&self.targets),
            use_rslora: self.rslora,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct OptimArgs {
    /// Peak learning rate (default 3e-4; 1e-3 for `trainer sft` on its embedded default).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    #[arg(long, value_enum, default_value_t = Schedule::Cosine)]
    pub schedule: Schedule,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Clip the global gradient L2 norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Passes over the data (default 3; 1 for `trainer sft` on its embedded default).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Evaluate every N steps (0 = only before and after).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Save a checkpoint every N steps (0 = never).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
    /// Plain log line every N steps when stdout is not a terminal.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Per-layer activation checkpointing: keep only each layer's input in the forward pass
    /// and recompute the layer in backward (one extra forward; activation memory of one layer).
    #[arg(long)]
    pub grad_checkpointing: bool,
}

impl OptimArgs {
    /// The run's spec; the defaults apply to `--epochs` and `--lr` when not given.
    pub fn spec(&self, default_epochs: usize, default_lr: f64) -> TrainSpec {
        TrainSpec {
            lr: self.lr.unwrap_or(default_lr),
            weight_decay: self.weight_decay,
            warmup_ratio: self.warmup_ratio,
            schedule: self.schedule,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            max_grad_norm: self.max_grad_norm,
            epochs: self.epochs.unwrap_or(default_epochs),
            max_steps: self.max_steps,
            seed: self.seed,
            eval_every: self.eval_every,
            save_every: self.save_every,
            keep: self.keep,
            log_every: self.log_every,
            grad_checkpointing: self.grad_checkpointing,
        }
    }
}
