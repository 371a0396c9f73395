//! A web model package (`manifest.json`, weight shards, `tokenizer.json`) loaded from bytes:
//! the browser's path after download and cache, and natively `trainer generate --model
//! public/models/ID`. Every file is checked against its manifest size and sha256 first.

use std::collections::HashMap;

use burn::tensor::backend::Backend;

use crate::manifest::Manifest;
use crate::{Checkpoint, GptNeoxConfig, GptNeoxForCausalLM, LoadError, Tokenizer};

pub struct Package<B: Backend> {
    pub manifest: Manifest,
    pub config: GptNeoxConfig,
    pub model: GptNeoxForCausalLM<B>,
    pub tokenizer: Tokenizer,
}

impl<B: Backend> Package<B> {
    /// Build the model from the manifest's files (name → bytes), verifying each.
    pub fn from_files(
        manifest: Manifest,
        mut files: HashMap<String, Vec<u8>>,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        let mut take = |name: &str| {
            let entry = manifest
                .files
                .iter()
                .find(|f| f.name == name)
                .expect("listed");
            let bytes = files.remove(name).ok_or_else(|| LoadError::MissingFile {
                name: name.into(),
                package: manifest.id.clone(),
            })?;
            entry.verify(&bytes)?;
            Ok::<_, LoadError>(bytes)
        };
        let config = manifest.model_config()?;
        let tok = manifest.tokenizer().name.clone();
        let tokenizer = Tokenizer::from_bytes(&take(&tok)?, &tok, config.eos_token_id)?;
        let parts = manifest
            .weights()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|n| take(&n).map(|b| (n, b)))
            .collect::<Result<Vec<_>, _>>()?;
        let ckpt = Checkpoint::from_safetensors_bytes(parts)?;
        let model = GptNeoxForCausalLM::load(&config, &ckpt, device)?;
        Ok(Self {
            manifest,
            config,
            model,
            tokenizer,
        })
    }

    /// Read a package folder from disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &std::path::Path, device: &B::Device) -> Result<Self, LoadError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| LoadError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let path = dir.join(crate::manifest::MANIFEST_FILE);
        let manifest = Manifest::parse(
            &read(crate::manifest::MANIFEST_FILE)?,
            &path.display().to_string(),
        )?;
        let files = manifest
            .files
            .iter()
            .map(|f| read(&f.name).map(|b| (f.name.clone(), b)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        Self::from_files(manifest, files, device)
    }
}
