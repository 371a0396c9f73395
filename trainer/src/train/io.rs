//! How a run's trainable weights go into and come back out of a checkpoint folder: PEFT adapter
//! files for LoRA runs, an HF model folder for full training.

use shared::TrainBackend;
use std::path::{Path, PathBuf};

use anyhow::Result;
use shared::lora::LoraConfig;
use shared::save::save_hf_folder;
use shared::{GptNeoxConfig, GptNeoxForCausalLM};

use super::WeightIo;

/// LoRA runs: `adapter_config.json` + `adapter_model.safetensors`.
pub struct LoraIo {
    pub cfg: LoraConfig,
    pub base_name: String,
}

impl<AB: TrainBackend> WeightIo<AB> for LoraIo {
    fn save(&self, model: &GptNeoxForCausalLM<AB>, dir: &Path) -> Result<()> {
        Ok(shared::peft::save_adapter(
            model,
            &self.cfg,
            &self.base_name,
            dir,
        )?)
    }
    fn load(
        &self,
        mut model: GptNeoxForCausalLM<AB>,
        dir: &Path,
    ) -> Result<GptNeoxForCausalLM<AB>> {
        let device = model.gpt_neox.embed_in.weight.device();
        shared::peft::load_adapter(&mut model, dir, &device)?;
        Ok(model)
    }
}

/// Full training: an HF model folder with the tokenizer copied in.
pub struct FullIo {
    pub config: GptNeoxConfig,
    pub tokenizer: PathBuf,
    pub f16: bool,
}

impl<AB: TrainBackend> WeightIo<AB> for FullIo {
    fn save(&self, model: &GptNeoxForCausalLM<AB>, dir: &Path) -> Result<()> {
        Ok(save_hf_folder(
            model,
            &self.config,
            dir,
            usize::MAX,
            &[self.tokenizer.as_path()],
            self.f16,
        )?)
    }
    fn load(&self, model: GptNeoxForCausalLM<AB>, dir: &Path) -> Result<GptNeoxForCausalLM<AB>> {
        let device = model.gpt_neox.embed_in.weight.device();
        let ckpt = shared::Checkpoint::open_dir(dir)?;
        Ok(GptNeoxForCausalLM::load(&self.config, &ckpt, &device)?)
    }
}
