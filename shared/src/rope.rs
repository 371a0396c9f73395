//! Partial rotary position embedding, GPT-NeoX ("rotate_half") style: rotary on the first
//! `rotary_ndims` dims of each head, the rest passed through. burn's `RotaryEncoding` rotates
//! adjacent pairs (GPT-J style) and cannot be used here.

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// cos and sin tables for a range of positions, shaped `[1, 1, T, head_dim]` to broadcast over
/// `[batch, heads, T, head_dim]`: the rotary tables on the first `ndims` dims, then cos 1 and
/// sin 0 on the pass-through dims, so one multiply-add covers the whole head.
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
    /// Tables for positions `start .. start + len` of heads of `head_dim` dims.
    pub fn new(
        ndims: usize,
        head_dim: usize,
        base: f64,
        start: usize,
        len: usize,
        device: &B::Device,
    ) -> Self {
        let (cos, sin) = tables(ndims, base, start, len);
        let pad = |rows: Vec<f32>, fill: f32| -> Vec<f32> {
            let mut out = Vec::with_capacity(len * head_dim);
            for row in rows.chunks(ndims.max(1)).take(len) {
                out.extend_from_slice(&row[..ndims]);
                out.resize(out.len() + head_dim - ndims, fill);
            }
            out.resize(len * head_dim, fill);
            out
        };
        let shape = [1, 1, len, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(pad(cos, 1.0), shape), device),
            sin: Tensor::from_data(TensorData::new(pad(sin, 0.0), shape), device),
            ndims,
        }
    }

    /// The cos and sin tables, `[1, 1, T, head_dim]`.
    pub fn tables(&self) -> (Tensor<B, 4>, Tensor<B, 4>) {
        (self.cos.clone(), self.sin.clone())
    }

    /// The rotary dims of each head (the first ones; the rest pass through).
    pub fn ndims(&self) -> usize {
        self.ndims
    }

    /// `rotate_half(x)`: `[-x2, x1]` on the rotary dims, zeros on the rest. Two slices of `x`,
    /// not four: each slice costs a zero-filled tensor and a copy in the backward pass.
    fn rotate_half(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, t, head_dim] = x.dims();
        let (rd, half) = (self.ndims, self.ndims / 2);
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let mut parts = vec![x2.neg(), x1];
        if rd < head_dim {
            parts.push(Tensor::zeros([b, h, t, head_dim - rd], &x.device()));
        }
        Tensor::cat(parts, 3)
    }

    /// Apply to `x: [batch, heads, T, head_dim]`: `x·cos + rotate_half(x)·sin` (on the
    /// pass-through dims sin is 0 and cos 1, so they pass through unchanged).
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.ndims == 0 {
            return x;
        }
        x.clone() * self.cos.clone() + self.rotate_half(x) * self.sin.clone()
    }

    /// The adjoint of [`apply`](Self::apply), for a backward pass: `d·cos + rotate_halfᵀ(d·sin)`,
    /// and `rotate_halfᵀ = −rotate_half`.
    pub fn apply_transpose(&self, d: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.ndims == 0 {
            return d;
        }
        d.clone() * self.cos.clone() - self.rotate_half(d * self.sin.clone())
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> Rope<B> {
    /// The same tables on the inner backend.
    pub fn inner(&self) -> Rope<B::InnerBackend> {
        Rope {
            cos: self.cos.clone().inner(),
            sin: self.sin.clone().inner(),
            ndims: self.ndims,
        }
    }
}
