//! The Law-Polyglot model crate: GPT-NeoX (Polyglot-ko) exactly as HF transformers computes it,
//! generic over burn backends, with HF checkpoint and tokenizer loaders and a generation loop
//! that runs natively and in the browser.

pub mod activation;
pub mod attention;
pub mod attention_blocks;
mod autodiff_ops;
pub mod backend;
pub mod base_weight;
pub mod bnb4;
pub mod cache;
pub mod config;
#[cfg(feature = "cublas")]
pub mod cublas;
pub mod dropout_seed;
pub mod error;
pub mod example;
#[cfg(any(test, feature = "cublas"))]
mod gemm_plan;
pub mod generate;
pub mod init;
#[cfg(feature = "cubecl")]
pub mod kernels;
pub mod layer;
pub mod linear;
pub mod load;
pub mod lora;
pub mod loss;
pub mod manifest;
pub mod mlp;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod model_dir;
pub mod nf4;
pub mod norm;
pub mod package;
pub mod precision;
pub mod prompt;
pub mod quant;
pub mod rope;
pub mod sampling;
pub mod stream;
#[cfg(any(test, feature = "cublas"))]
mod stream_lookup;
pub mod timeline;
pub mod tokenizer;
pub mod weights;

pub use backend::{ModelBackend, TrainBackend};

/// burn's backend RNG is global: what seeds it and draws takes turns (unit tests, and the
/// seeded dropout masks of `dropout_seed`).
pub(crate) fn global_rng() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}
pub use config::GptNeoxConfig;
pub use error::{ConfigError, LoadError, TokenizerError};
pub use model::GptNeoxForCausalLM;
pub use tokenizer::Tokenizer;
pub use weights::Checkpoint;
#[cfg(not(target_arch = "wasm32"))]
pub mod peft;
#[cfg(not(target_arch = "wasm32"))]
pub mod save;
