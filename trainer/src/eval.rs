//! Token-weighted evaluation loss (HF's definition: mean over every scored position of every line).

use anyhow::{Result, bail};
use serde::Serialize;
use shared::ModelBackend;
use shared::example::Example;
use shared::prompt::Template;
use shared::{GptNeoxForCausalLM, Tokenizer};

use crate::data::EvalRecord;
use crate::train::eval_loss;

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

pub fn evaluate<B: ModelBackend>(
    model: &GptNeoxForCausalLM<B>,
    tok: &Tokenizer,
    vocab_size: usize,
    records: &[(usize, EvalRecord)],
    template: Template,
    max_len: usize,
    device: &B::Device,
) -> Result<EvalSummary> {
    let (mut examples, mut truncated) = (Vec::with_capacity(records.len()), 0usize);
    for (line, rec) in records {
        let (ex, cut) = to_example(rec, tok, template, max_len)?;
        if let Some(bad) = ex.ids.iter().find(|&&i| i as usize >= vocab_size) {
            bail!("line {line}: token id {bad} is outside the model's vocabulary of {vocab_size}");
        }
        truncated += usize::from(cut);
        examples.push(ex);
    }
    let tokens: usize = examples.iter().map(Example::scored).sum();
    if tokens == 0 {
        bail!("no line has a token to score");
    }
    // One line per batch: no padding, so every line is scored exactly as on its own.
    let mean_loss = eval_loss(model, &examples, 1, tok.pad_id(), device);
    Ok(EvalSummary {
        mean_loss,
        perplexity: mean_loss.exp(),
        tokens,
        lines: records.len(),
        truncated,
    })
}
