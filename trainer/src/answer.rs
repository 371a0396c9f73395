//! Greedy answers to instruction prompts, and the exact-match / character-F1 scores used to
//! judge them on held-out questions.

use anyhow::Result;
use shared::ModelBackend;
use shared::generate::{GenerationConfig, generate};
use shared::prompt::Template;
use shared::sampling::SamplingConfig;
use shared::{GptNeoxForCausalLM, Tokenizer};

/// The greedy answer to `instruction` (+ `input`), decoded without the EOS.
pub fn answer<B: ModelBackend>(
    model: &GptNeoxForCausalLM<B>,
    tok: &Tokenizer,
    template: Template,
    instruction: &str,
    input: &str,
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<String> {
    let prompt = tok.encode(&template.prompt(instruction, input))?;
    let cfg = GenerationConfig {
        max_new_tokens,
        sampling: SamplingConfig::default(),
        seed: 0,
        stop_ids: vec![tok.eos_id()],
    };
    let (ids, _) = pollster::block_on(generate(model, &prompt, &cfg, device, async |_| {
        std::ops::ControlFlow::Continue(())
    }))?;
    let ids: Vec<u32> = ids.into_iter().filter(|&i| i != tok.eos_id()).collect();
    Ok(tok.decode(&ids)?.trim().to_string())
}

/// Character-level F1 (SQuAD's token F1 with characters as tokens, whitespace ignored).
pub fn char_f1(pred: &str, gold: &str) -> f64 {
    let p: Vec<char> = pred.chars().filter(|c| !c.is_whitespace()).collect();
    let g: Vec<char> = gold.chars().filter(|c| !c.is_whitespace()).collect();
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p.is_empty() && g.is_empty()));
    }
    let mut counts = std::collections::HashMap::new();
    for c in &g {
        *counts.entry(*c).or_insert(0i64) += 1;
    }
    let mut common = 0;
    for c in &p {
        if let Some(n) = counts.get_mut(c)
            && *n > 0
        {
            *n -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Exact match after trimming.
pub fn exact_match(pred: &str, gold: &str) -> bool {
    pred.trim() == gold.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_by_hand() {
        assert_eq!(char_f1("대한민국", "대한민국"), 1.0);
        // pred 4 chars, gold 2 chars, 2 common: P 0.5, R 1 → F1 2/3.
        assert!((char_f1("대한민국", "민국") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(char_f1("가", "나"), 0.0);
        assert_eq!(char_f1("a b", "ab"), 1.0);
        assert!(exact_match(" 국민 ", "국민"));
    }
}
