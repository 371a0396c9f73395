//! A web model package (`manifest.json`, weight shards, `tokenizer.json`) loaded from bytes:
//! the browser's path after download and cache, and natively `trainer generate --model
//! public/models/ID`. Every file is checked against its manifest size and sha256 once, where it
//! is read.

use crate::ModelBackend;
use std::collections::HashMap;

use crate::manifest::Manifest;
use crate::{Checkpoint, GptNeoxConfig, GptNeoxForCausalLM, LoadError, Tokenizer};

pub struct Package<B: ModelBackend> {
    pub manifest: Manifest,
    pub config: GptNeoxConfig,
    pub model: GptNeoxForCausalLM<B>,
    pub tokenizer: Tokenizer,
}

impl<B: ModelBackend> Package<B> {
    /// Build the model from the manifest's files (name → bytes). The caller has checked each
    /// file against its entry ([`FileEntry::verify`](crate::manifest::FileEntry::verify)) as it
    /// read it: the browser does so while deciding whether a cached copy is still good, so the
    /// bytes are hashed once.
    pub fn from_files(
        manifest: Manifest,
        mut files: HashMap<String, Vec<u8>>,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        let mut take = |name: &str| {
            files.remove(name).ok_or_else(|| LoadError::MissingFile {
                name: name.into(),
                package: manifest.id.clone(),
            })
        };
        let config = manifest.model_config()?;
        let tok = &manifest.tokenizer().name;
        let tokenizer = Tokenizer::from_bytes(&take(tok)?, tok, config.eos_token_id)?;
        let parts = manifest
            .weights()
            .map(|f| take(&f.name).map(|b| (f.name.clone(), b)))
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
            .map(|f| {
                let bytes = read(&f.name)?;
                f.verify(&bytes)?;
                Ok((f.name.clone(), bytes))
            })
            .collect::<Result<HashMap<_, _>, LoadError>>()?;
        Self::from_files(manifest, files, device)
    }
}
