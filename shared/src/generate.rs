//! The generation loop shared by `trainer generate` and the browser: prefill the prompt, then
//! one token at a time through the KV cache. Each step reads back only the last position's
//! logits, asynchronously (`into_data_async`), as WebGPU requires.

use crate::ModelBackend;
use std::ops::ControlFlow;

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::model::GptNeoxForCausalLM;
use crate::sampling::{Rng, SamplingConfig, sample};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    pub seed: u64,
    /// Generation stops after producing one of these (the EOS id from the tokenizer).
    pub stop_ids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("empty prompt: at least one token is needed")]
    EmptyPrompt,
    #[error("reading logits back from the device failed: {0}")]
    Readback(String),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    Eos,
    MaxTokens,
    Aborted,
}

/// Generate after `prompt`; `on_token` sees every new id (the stop id included) and may abort.
/// It is async so a caller in the browser can yield to its event loop between tokens (to see an
/// abort message even on a CPU backend, whose reads finish at once). Returns the new ids and why
/// it stopped.
pub async fn generate<B: ModelBackend>(
    model: &GptNeoxForCausalLM<B>,
    prompt: &[u32],
    cfg: &GenerationConfig,
    device: &B::Device,
    mut on_token: impl AsyncFnMut(u32) -> ControlFlow<()>,
) -> Result<(Vec<u32>, StopReason), GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let mut cache = model.new_cache();
    let mut rng = Rng::new(cfg.seed);
    let mut out = Vec::new();
    let mut input: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    while out.len() < cfg.max_new_tokens {
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(input.clone(), [1, input.len()]),
            device,
        );
        let logits = model.forward_last(ids, Some(&mut cache));
        let data = logits
            .into_data_async()
            .await
            .map_err(|e| GenerateError::Readback(format!("{e:?}")))?;
        let logits = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| GenerateError::Readback(format!("{e:?}")))?;
        let next = sample(&logits, &cfg.sampling, &mut rng) as u32;
        out.push(next);
        if on_token(next).await.is_break() {
            return Ok((out, StopReason::Aborted));
        }
        if cfg.stop_ids.contains(&next) {
            return Ok((out, StopReason::Eos));
        }
        input = vec![next as i64];
    }
    Ok((out, StopReason::MaxTokens))
}
