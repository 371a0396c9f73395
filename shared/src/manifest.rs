//! `manifest.json` of a web model package (`trainer export-web`): what the browser must download,
//! how big each file is and its sha256, the model config, generation defaults, the quantization
//! and the WebGPU limits the model needs. Every bad or missing field is a named error.

use serde::{Deserialize, Serialize};

use crate::config::GptNeoxConfig;
use crate::quant::QuantScheme;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT: &str = "law-polyglot-web/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Folder name under `models/`, also used in share links: `[a-z0-9._-]`, at most 64.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The model's HF `config.json`.
    pub config: serde_json::Value,
    pub generation: GenerationDefaults,
    pub quantization: Quantization,
    pub files: Vec<FileEntry>,
    pub total_bytes: u64,
    pub webgpu: WebGpuLimits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationDefaults {
    /// Prompt template name (`seed`, `alpaca`, `kullm`, `koalpaca`).
    pub template: String,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    pub scheme: QuantScheme,
    /// Values per scale (q4/q8).
    pub block_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    Weights,
    Tokenizer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub role: FileRole,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// The smallest limits (bytes) a WebGPU adapter must offer to run the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebGpuLimits {
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{source_name}: invalid JSON at `{path}`: {message}")]
    Json {
        source_name: String,
        path: String,
        message: String,
    },
    #[error("{source_name}: field `{field}`: {reason}")]
    Field {
        source_name: String,
        field: String,
        reason: String,
    },
}

fn safe_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `id` is a valid model id (also the rule for ids read from share links).
pub fn valid_model_id(id: &str) -> bool {
    safe_name(id, 64) && id.bytes().all(|b| !b.is_ascii_uppercase())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Manifest {
    /// Parse and validate `manifest.json`; `source_name` (a path or URL) is named in errors.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<Self, ManifestError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let m: Manifest =
            serde_path_to_error::deserialize(de).map_err(|e| ManifestError::Json {
                source_name: source_name.into(),
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        m.validate()
            .map_err(|(field, reason)| ManifestError::Field {
                source_name: source_name.into(),
                field,
                reason,
            })?;
        Ok(m)
    }

    /// The model config, validated.
    pub fn model_config(&self) -> Result<GptNeoxConfig, crate::ConfigError> {
        GptNeoxConfig::from_hf_json(&self.config.to_string())
    }

    pub fn tokenizer(&self) -> &FileEntry {
        self.files
            .iter()
            .find(|f| f.role == FileRole::Tokenizer)
            .expect("validated: one tokenizer")
    }

    pub fn weights(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.iter().filter(|f| f.role == FileRole::Weights)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: String| Err((field.to_string(), reason));
        if self.format != FORMAT {
            return bad(
                "format",
                format!("`{}` is not supported (expected `{FORMAT}`)", self.format),
            );
        }
        if !valid_model_id(&self.id) {
            return bad("id", format!("`{}` must be 1-64 of [a-z0-9._-]", self.id));
        }
        if let Err(e) = self.model_config() {
            return bad("config", e.to_string());
        }
        let g = &self.generation;
        if g.template.parse::<crate::prompt::Template>().is_err() {
            return bad(
                "generation.template",
                format!("unknown template `{}`", g.template),
            );
        }
        if !g.temperature.is_finite() || g.temperature < 0.0 {
            return bad("generation.temperature", "must be finite and ≥ 0".into());
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            return bad("generation.top_p", "must lie in (0, 1]".into());
        }
        if g.max_new_tokens == 0 {
            return bad("generation.max_new_tokens", "must be at least 1".into());
        }
        let q = &self.quantization;
        if q.scheme != QuantScheme::F32 && !crate::quant::fits(q.block_size, q.scheme, q.block_size)
        {
            return bad(
                "quantization.block_size",
                format!("{} does not suit {}", q.block_size, q.scheme.name()),
            );
        }
        for (i, f) in self.files.iter().enumerate() {
            if !safe_name(&f.name, 128) {
                return bad(
                    &format!("files[{i}].name"),
                    format!("`{}` is not a plain file name", f.name),
                );
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b"0123456789abcdef".contains(&b)) {
                return bad(
                    &format!("files[{i}].sha256"),
                    "must be 64 lowercase hex digits".into(),
                );
            }
        }
        let tokenizers = self
            .files
            .iter()
            .filter(|f| f.role == FileRole::Tokenizer)
            .count();
        if tokenizers != 1 {
            return bad(
                "files",
                format!("needs exactly one tokenizer file, found {tokenizers}"),
            );
        }
        if self.weights().next().is_none() {
            return bad("files", "lists no weights file".into());
        }
        let sum: u64 = self.files.iter().map(|f| f.size).sum();
        if sum != self.total_bytes {
            return bad(
                "total_bytes",
                format!("{} but the files add up to {sum}", self.total_bytes),
            );
        }
        Ok(())
    }
}

/// A downloaded file that does not match its manifest entry.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("{name}: {actual} bytes, the manifest says {expected}")]
    Size {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{name}: sha256 {actual} does not match the manifest's {expected}")]
    Hash {
        name: String,
        expected: String,
        actual: String,
    },
}

impl FileEntry {
    /// Check `bytes` against this entry's size and sha256.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), IntegrityError> {
        if bytes.len() as u64 != self.size {
            return Err(IntegrityError::Size {
                name: self.name.clone(),
                expected: self.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = sha256_hex(bytes);
        if actual != self.sha256 {
            return Err(IntegrityError::Hash {
                name: self.name.clone(),
                expected: self.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}
