//! GPT-NeoX self-attention: fused `query_key_value` split per head as [q_h | k_h | v_h],
//! partial rotary, f32 softmax with a bottom-right aligned causal mask, optional KV cache; the
//! attention itself is `ModelBackend::qkv_attention` (no cache) or `causal_attention`.

use crate::ModelBackend;
use crate::linear::{Linear, add_bias};
use burn::module::Module;
use burn::tensor::{FloatDType, Tensor};

use crate::cache::KvCache;
use crate::rope::Rope;
use crate::timeline::mark;

#[derive(Module, Debug)]
pub struct Attention<B: ModelBackend> {
    /// HF `attention.query_key_value`: `[hidden, 3·hidden]` in burn layout.
    pub query_key_value: Linear<B>,
    /// HF `attention.dense`.
    pub dense: Linear<B>,
    pub num_heads: usize,
    pub head_dim: usize,
    /// `--dtype bf16` (`precision.rs`): the fused projection in bf16, multiply bf16 factors
    /// (softmax in f32), keep q, k and v for backward in bf16, and the heads' output in bf16
    /// until `dense` multiplies it.
    pub bf16: bool,
}

impl<B: ModelBackend> Attention<B> {
    /// `x: [batch, T, hidden]` → `[batch, T, hidden]`. With a cache, `x` holds the positions after
    /// the cached ones and the cache is extended.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let (y, bias) = self.forward_parts(x, rope, cache);
        add_bias(y, bias)
    }

    /// [`forward`](Self::forward) without `dense`'s bias: its product and the bias, for a
    /// residual sum to add (`ModelBackend::sum5_as`).
    pub fn forward_parts(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 1>>) {
        let [b, t, hidden] = x.dims();
        let (nh, hd) = (self.num_heads, self.head_dim);
        let stream = x.dtype().into();
        // With `bf16` and no cache the projection is bf16, as a bf16 model in PyTorch keeps
        // it: half the bytes for its bias, its LoRA sum, the split and their gradients (the
        // split computes in f32).
        let dtype = match cache {
            None if self.bf16 => FloatDType::BF16,
            _ => stream,
        };
        mark(&x, "qkv");
        // [b, t, nh, 3·hd] → [b, nh, t, 3·hd]: each head's rows are q, k, v in turn.
        let qkv = self
            .query_key_value
            .forward_as(x, dtype)
            .reshape([b, t, nh, 3 * hd])
            .swap_dims(1, 2);
        mark(&qkv, "attention");
        let out = match cache {
            None => B::qkv_attention(qkv, rope, self.bf16),
            Some((cache, layer)) => {
                let (q, k, v) = B::split_qkv_rope(qkv, rope);
                let (k, v) = cache.append(layer, k, v);
                B::causal_attention(q, k, v)
            }
        }; // [b, nh, t, hd], bf16 with `bf16` and no cache
        mark(&out, "dense");
        // the product back in the residual stream's dtype, written so by cuBLAS
        self.dense
            .forward_parts_to(out.swap_dims(1, 2).reshape([b, t, hidden]), stream)
    }
}
