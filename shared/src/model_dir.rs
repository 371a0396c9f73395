//! An HF model folder on disk: `config.json`, weights, `tokenizer.json`.

use crate::ModelBackend;
use std::path::{Path, PathBuf};

use crate::base_weight::BaseFormat;
use crate::{Checkpoint, GptNeoxConfig, GptNeoxForCausalLM, LoadError, Tokenizer, TokenizerError};

/// A loaded model folder.
pub struct ModelDir<B: ModelBackend> {
    pub dir: PathBuf,
    pub config: GptNeoxConfig,
    pub model: GptNeoxForCausalLM<B>,
    pub tokenizer: Tokenizer,
}

/// The tokenizer of a model folder, with the config's EOS as fallback.
pub fn load_tokenizer(dir: &Path, config: &GptNeoxConfig) -> Result<Tokenizer, LoadError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(TokenizerError::Load {
            path: path.display().to_string(),
            reason: "file not found (every model folder needs its tokenizer.json)".into(),
        }
        .into());
    }
    Ok(Tokenizer::from_file(&path, config.eos_token_id)?)
}

impl<B: ModelBackend> ModelDir<B> {
    /// Load an HF model folder, or a web package folder (one with `manifest.json`).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, LoadError> {
        Self::load_as(dir, device, BaseFormat::Dense)
    }

    /// [`Self::load`] with the base's linear weights held as `base` (HF folders only).
    pub fn load_as(dir: &Path, device: &B::Device, base: BaseFormat) -> Result<Self, LoadError> {
        if dir.join(crate::manifest::MANIFEST_FILE).is_file() {
            if base != BaseFormat::Dense {
                return Err(LoadError::Unsupported {
                    file: dir.display().to_string(),
                    what: "a quantized base (--quant) needs an HF model folder, not a web package"
                        .into(),
                });
            }
            let p = crate::package::Package::open_dir(dir, device)?;
            return Ok(Self {
                dir: dir.to_path_buf(),
                config: p.config,
                model: p.model,
                tokenizer: p.tokenizer,
            });
        }
        let config = GptNeoxConfig::from_hf_file(&dir.join("config.json"))?;
        let tokenizer = load_tokenizer(dir, &config)?;
        let ckpt = Checkpoint::open_dir(dir)?;
        let model = GptNeoxForCausalLM::load_as(&config, &ckpt, device, base)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            model,
            tokenizer,
        })
    }
}
