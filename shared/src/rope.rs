//! Partial rotary position embedding, GPT-NeoX ("rotate_half") style: rotary on the first
//! `rotary_ndims` dims of each head, the rest passed through. burn's `RotaryEncoding` rotates
//! adjacent pairs (GPT-J style) and cannot be used here.

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// cos and sin tables for a range of positions, shaped `[1, 1, T, rotary_ndims]` to broadcast
/// over `[batch, heads, T, head_dim]`.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    ndims: usize,
}

/// `inv_freq[i] = 1 / base^(2i / ndims)` as HF computes it (in f32).
pub fn inv_freq(ndims: usize, base: f64) -> Vec<f32> {
    (0..ndims / 2)
        .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / ndims as f32))
        .collect()
}

/// Row-major `[len, ndims]` cos and sin tables for positions `start .. start + len`; each row is
/// `cat(freqs, freqs)`, the same angle for dim j and j + ndims/2.
pub fn tables(ndims: usize, base: f64, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let inv = inv_freq(ndims, base);
    let mut cos = Vec::with_capacity(len * ndims);
    let mut sin = Vec::with_capacity(len * ndims);
    for p in start..start + len {
        for _ in 0..2 {
            for f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `start .. start + len`.
    pub fn new(ndims: usize, base: f64, start: usize, len: usize, device: &B::Device) -> Self {
        let (cos, sin) = tables(ndims, base, start, len);
        let shape = [1, 1, len, ndims];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            ndims,
        }
    }

    /// Apply to `x: [batch, heads, T, head_dim]`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let head_dim = x.dims()[3];
        let rd = self.ndims;
        if rd == 0 {
            return x;
        }
        let rot = x.clone().narrow(3, 0, rd);
        let half = rd / 2;
        let x1 = rot.clone().narrow(3, 0, half);
        let x2 = rot.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let out = rot * self.cos.clone() + rotated * self.sin.clone();
        if rd == head_dim {
            out
        } else {
            Tensor::cat(vec![out, x.narrow(3, rd, head_dim - rd)], 3)
        }
    }
}
