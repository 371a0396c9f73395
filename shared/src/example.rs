//! Training/eval examples: token ids with HF labels (-100 = not scored).

use crate::error::TokenizerError;
use crate::loss::IGNORE_INDEX;
use crate::prompt::Template;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl Example {
    /// Plain causal LM: every token is a label.
    pub fn lm(ids: Vec<u32>) -> Self {
        let labels = ids.iter().map(|&i| i as i64).collect();
        Self { ids, labels }
    }

    /// Stanford Alpaca SFT: `prompt` and `prompt + output + <|endoftext|>` tokenized separately,
    /// each truncated to `max_len`; the first `len(prompt ids)` labels are masked. Returns the
    /// example and whether it was truncated.
    pub fn alpaca(
        tok: &Tokenizer,
        template: Template,
        instruction: &str,
        input: &str,
        output: &str,
        max_len: usize,
    ) -> Result<(Self, bool), TokenizerError> {
        let prompt = template.prompt(instruction, input);
        let mut source = tok.encode(&prompt)?;
        let mut ids = tok.encode(&format!("{prompt}{output}{}", tok.eos_token()))?;
        let truncated = ids.len() > max_len;
        source.truncate(max_len);
        ids.truncate(max_len);
        let mut labels: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let n = source.len().min(labels.len());
        labels[..n].fill(IGNORE_INDEX);
        Ok((Self { ids, labels }, truncated))
    }

    /// Number of positions the shifted loss scores.
    pub fn scored(&self) -> usize {
        self.labels
            .iter()
            .skip(1)
            .filter(|&&l| l != IGNORE_INDEX)
            .count()
    }
}
