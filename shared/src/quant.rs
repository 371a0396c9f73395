//! Blockwise weight quantization for the web package, readable without `shader-f16`:
//! each row of an HF `[out, in]` weight is cut into blocks of `block` values, each block stored
//! as signed integers with one f32 scale (`absmax / qmax`), packed little-endian into u32 words.
//! - q4: 8 values per word, value `k` of a word in bits `4k..4k+4`, stored as `q + 8` (q in -7..=7).
//! - q8: 4 values per word, value `k` in bits `8k..8k+8`, two's complement (q in -127..=127).
//!
//! A weight `w` comes back as `q * scale`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantScheme {
    F32,
    Q8,
    Q4,
}

impl QuantScheme {
    pub fn bits(self) -> usize {
        match self {
            QuantScheme::F32 => 32,
            QuantScheme::Q8 => 8,
            QuantScheme::Q4 => 4,
        }
    }

    fn qmax(self) -> f32 {
        match self {
            QuantScheme::Q4 => 7.0,
            QuantScheme::Q8 => 127.0,
            QuantScheme::F32 => unreachable!("f32 is not quantized"),
        }
    }

    fn per_word(self) -> usize {
        32 / self.bits()
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantScheme::F32 => "f32",
            QuantScheme::Q8 => "q8",
            QuantScheme::Q4 => "q4",
        }
    }
}

impl std::str::FromStr for QuantScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "q8" => Ok(Self::Q8),
            "q4" => Ok(Self::Q4),
            other => Err(format!(
                "unknown quantization `{other}` (expected q4, q8 or f32)"
            )),
        }
    }
}

/// A quantized `[rows, cols]` matrix: `words` is `[rows, cols / per_word]`, `scales` is
/// `[rows, cols / block]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub words: Vec<u32>,
    pub scales: Vec<f32>,
}

/// Whether a `[rows, cols]` matrix can be quantized with `block` (rows split evenly).
pub fn fits(cols: usize, scheme: QuantScheme, block: usize) -> bool {
    scheme != QuantScheme::F32
        && block > 0
        && block.is_multiple_of(scheme.per_word())
        && cols.is_multiple_of(block)
}

/// Quantize row-major `data` of `cols` columns. Panics unless [`fits`].
pub fn quantize(data: &[f32], cols: usize, scheme: QuantScheme, block: usize) -> Quantized {
    assert!(fits(cols, scheme, block), "{cols} columns, block {block}");
    let (bits, per_word, qmax) = (scheme.bits(), scheme.per_word(), scheme.qmax());
    let mask = (1u32 << bits) - 1;
    let mut words = vec![0u32; data.len() / per_word];
    let mut scales = Vec::with_capacity(data.len() / block);
    for (b, chunk) in data.chunks_exact(block).enumerate() {
        let absmax = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = absmax / qmax;
        scales.push(scale);
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (k, &x) in chunk.iter().enumerate() {
            let q = (x * inv).round().clamp(-qmax, qmax) as i32;
            let stored = match scheme {
                QuantScheme::Q4 => (q + 8) as u32,
                _ => (q as u32) & mask,
            };
            let i = b * block + k;
            words[i / per_word] |= (stored & mask) << (bits * (i % per_word));
        }
    }
    Quantized { words, scales }
}

/// The f32 values of a quantized matrix (`len` values, row-major).
pub fn dequantize(q: &Quantized, len: usize, scheme: QuantScheme, block: usize) -> Vec<f32> {
    let (bits, per_word) = (scheme.bits(), scheme.per_word());
    let mask = (1u32 << bits) - 1;
    (0..len)
        .map(|i| {
            let stored = (q.words[i / per_word] >> (bits * (i % per_word))) & mask;
            let v = match scheme {
                QuantScheme::Q4 => stored as i32 - 8,
                _ => stored as u8 as i8 as i32,
            };
            v as f32 * q.scales[i / block]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_packs_as_documented() {
        // One block of 8: absmax 1.4 → scale 0.2; q = round(x / 0.2).
        let x = [0.0, 0.2, -0.2, 1.4, -1.4, 0.29, -0.31, 0.12];
        let q = quantize(&x, 8, QuantScheme::Q4, 8);
        assert!((q.scales[0] - 0.2).abs() < 1e-7);
        // stored = q + 8: 8, 9, 7, 15, 1, 9, 6, 9.
        let nibbles = [8u32, 9, 7, 15, 1, 9, 6, 9];
        let word = nibbles
            .iter()
            .enumerate()
            .fold(0u32, |w, (k, &n)| w | n << (4 * k));
        assert_eq!(q.words, vec![word]);
        let back = dequantize(&q, 8, QuantScheme::Q4, 8);
        let want = [0.0, 0.2, -0.2, 1.4, -1.4, 0.2, -0.4, 0.2];
        for (a, b) in back.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{back:?}");
        }
    }

    #[test]
    fn q8_is_twos_complement_bytes() {
        let x = [1.27, -1.27, 0.01, -0.02];
        let q = quantize(&x, 4, QuantScheme::Q8, 4);
        assert_eq!(q.words, vec![u32::from_le_bytes([127, 129, 1, 254])]);
        let back = dequantize(&q, 4, QuantScheme::Q8, 4);
        for (a, b) in back.iter().zip([1.27, -1.27, 0.01, -0.02]) {
            assert!((a - b).abs() < 1e-6, "{back:?}");
        }
    }

    #[test]
    fn error_is_bounded_by_half_a_step() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        for scheme in [QuantScheme::Q4, QuantScheme::Q8] {
            let q = quantize(&x, 64, scheme, 32);
            let back = dequantize(&q, x.len(), scheme, 32);
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                assert!((a - b).abs() <= q.scales[i / 32] / 2.0 + 1e-6);
            }
        }
        let zeros = quantize(&[0.0; 32], 32, QuantScheme::Q4, 32);
        assert_eq!(dequantize(&zeros, 32, QuantScheme::Q4, 32), vec![0.0; 32]);
    }
}
