//! One file per subcommand, each with its clap `Args` and a `run`.

pub mod bench;
pub mod bench_matmul;
pub mod bench_train;
pub mod check_device;
pub mod eval;
pub mod eval_qa;
pub mod export_web;
pub mod generate;
pub mod lora_args;
pub mod matmul_host_check;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod matmul_probe;
pub mod merge;
pub mod pretrain;
pub mod quant_args;
pub mod sft;
pub mod tokenizer;

use shared::ModelBackend;
use std::path::Path;

use anyhow::{Context, Result};
use shared::base_weight::BaseFormat;
use shared::model_dir::ModelDir;

/// Load a model folder and, optionally, a PEFT adapter onto it.
pub fn load_model<B: ModelBackend>(
    model: &Path,
    adapter: Option<&Path>,
    device: &B::Device,
) -> Result<ModelDir<B>> {
    load_model_as(model, adapter, BaseFormat::Dense, device)
}

/// [`load_model`] with the base's linear weights held as `base` (`--quant`).
pub fn load_model_as<B: ModelBackend>(
    model: &Path,
    adapter: Option<&Path>,
    base: BaseFormat,
    device: &B::Device,
) -> Result<ModelDir<B>> {
    let mut m = ModelDir::<B>::load_as(model, device, base)
        .with_context(|| format!("loading model {}", model.display()))?;
    if let Some(a) = adapter {
        shared::peft::load_adapter(&mut m.model, a, device)
            .with_context(|| format!("loading adapter {} onto {}", a.display(), model.display()))?;
    }
    Ok(m)
}
