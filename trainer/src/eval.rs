//! Token-weighted evaluation loss (HF's definition: mean over every scored position of every line).

use anyhow::{Result, bail};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, backend::Backend};
use serde::Serialize;
use shared::example::Example;
use shared::loss::causal_lm_nll_sum;
use shared::prompt::Template;
use shared::{GptNeoxForCausalLM, Tokenizer};

use crate::data::EvalRecord;

#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    pub mean_loss: f64,
    pub perplexity: f64,
    /// Scored positions over all lines.
    pub tokens: usize,
    pub lines: usize,
    /// Lines cut to `max_len` tokens.
    pub truncated: usize,
}

/// Turn a record into ids and labels.
pub fn to_example(
    rec: &EvalRecord,
    tok: &Tokenizer,
    template: Template,
    max_len: usize,
) -> Result<(Example, bool)> {
    Ok(match rec {
        EvalRecord::Ids(ids) => {
            let truncated = ids.len() > max_len;
            (
                Example::lm(ids[..ids.len().min(max_len)].to_vec()),
                truncated,
            )
        }
        EvalRecord::Text(text) => {
            let mut ids = tok.encode(text)?;
            let truncated = ids.len() > max_len;
            ids.truncate(max_len);
            (Example::lm(ids), truncated)
        }
        EvalRecord::Alpaca {
            instruction,
            input,
            output,
        } => Example::alpaca(tok, template, instruction, input, output, max_len)?,
    })
}

/// Summed NLL and scored count of one example (batch of one).
pub fn example_nll<B: Backend>(
    model: &GptNeoxForCausalLM<B>,
    ex: &Example,
    device: &B::Device,
) -> (f64, usize) {
    if ex.scored() == 0 {
        return (0.0, 0);
    }
    let ids: Vec<i64> = ex.ids.iter().map(|&i| i as i64).collect();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, ex.ids.len()]), device);
    let logits = model.forward(input, None);
    let (sum, n) = causal_lm_nll_sum(logits, std::slice::from_ref(&ex.labels));
    (sum.into_scalar().elem::<f64>(), n)
}

pub fn evaluate<B: Backend>(
    model: &GptNeoxForCausalLM<B>,
    tok: &Tokenizer,
    vocab_size: usize,
    records: &[(usize, EvalRecord)],
    template: Template,
    max_len: usize,
    device: &B::Device,
) -> Result<EvalSummary> {
    let (mut total, mut tokens, mut truncated) = (0.0f64, 0usize, 0usize);
    for (line, rec) in records {
        let (ex, cut) = to_example(rec, tok, template, max_len)?;
        if let Some(bad) = ex.ids.iter().find(|&&i| i as usize >= vocab_size) {
            bail!("line {line}: token id {bad} is outside the model's vocabulary of {vocab_size}");
        }
        truncated += usize::from(cut);
        let (sum, n) = example_nll(model, &ex, device);
        total += sum;
        tokens += n;
    }
    if tokens == 0 {
        bail!("no line has a token to score");
    }
    let mean_loss = total / tokens as f64;
    Ok(EvalSummary {
        mean_loss,
        perplexity: mean_loss.exp(),
        tokens,
        lines: records.len(),
        truncated,
    })
}
