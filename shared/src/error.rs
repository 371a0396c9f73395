//! Typed errors of the model crate. Every error names the file, tensor or field it is about.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config JSON at `{path}`: {message}")]
    Json { path: String, message: String },
    #[error("config field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("{path}: {inner}")]
    InFile {
        path: String,
        inner: Box<ConfigError>,
    },
}

impl ConfigError {
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        ConfigError::InFile {
            path: path.display().to_string(),
            inner: Box::new(self),
        }
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(
        "no weights in {dir}: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json"
    )]
    NoWeights { dir: String },
    #[error("{file}: not a valid checkpoint ({reason})")]
    Corrupt { file: String, reason: String },
    #[error("shard {shard} named by {index} is missing")]
    MissingShard { shard: String, index: String },
    #[error("tensor `{name}` is missing from {file}")]
    MissingTensor { name: String, file: String },
    #[error("tensor `{name}` in {file} has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        file: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Integrity(#[from] crate::manifest::IntegrityError),
    #[error("file `{name}` of model package `{package}` was not provided")]
    MissingFile { name: String, package: String },
    #[error("tensor `{name}` in {file} has unsupported dtype {dtype}")]
    Dtype {
        name: String,
        file: String,
        dtype: String,
    },
    #[error("{file}: {what}")]
    Unsupported { file: String, what: String },
}

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: String, reason: String },
    #[error(
        "tokenizer {path} has no `<|endoftext|>` token and the model config names no eos_token_id"
    )]
    NoEos { path: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
}
