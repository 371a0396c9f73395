//! Token sampling on the host: greedy, temperature, top-k and top-p (HF semantics), driven by a
//! small seeded generator so a seed gives the same text on every platform.

use serde::{Deserialize, Serialize};

/// SplitMix64: tiny, portable, and the same sequence natively and in wasm.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
        }
    }
}

/// Index of the largest logit; the first one on ties (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

/// Pick the next token from `logits`.
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> usize {
    if cfg.temperature <= 0.0 {
        return argmax(logits);
    }
    // Candidates sorted by logit, best first (stable: lower id first on ties).
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if cfg.top_k > 0 {
        idx.truncate(cfg.top_k.min(idx.len()));
    }
    let t = cfg.temperature as f64;
    let max = logits[idx[0]] as f64;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / t).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if cfg.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= cfg.top_p as f64 {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
        idx.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.next_f64() * total;
    for (n, p) in probs.iter().enumerate() {
        if u < *p {
            return idx[n];
        }
        u -= p;
    }
    idx[probs.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn greedy_and_ties() {
        let cfg = SamplingConfig::default();
        assert_eq!(sample(&[0.1, 2.0, 2.0, -1.0], &cfg, &mut Rng::new(1)), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let cfg = SamplingConfig {
            temperature: 5.0,
            top_p: 1.0,
            top_k: 1,
        };
        let mut rng = Rng::new(7);
        for _ in 0..20 {
            assert_eq!(sample(&[0.0, 3.0, 1.0], &cfg, &mut rng), 1);
        }
    }

    #[test]
    fn top_p_drops_the_tail() {
        // softmax([ln 0.6, ln 0.3, ln 0.1]) = [0.6, 0.3, 0.1]; top_p 0.8 keeps the first two.
        let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_p: 0.8,
            top_k: 0,
        };
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[sample(&logits, &cfg, &mut rng)] += 1;
        }
        assert_eq!(counts[2], 0);
        // Renormalised 2:1.
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((1.7..2.3).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = SamplingConfig {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 20,
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..30)
                .map(|_| sample(&logits, &cfg, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
