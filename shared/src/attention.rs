//! GPT-NeoX self-attention: fused `query_key_value` split per head as [q_h | k_h | v_h],
//! partial rotary, f32 softmax with a bottom-right aligned causal mask, optional KV cache.

use crate::linear::Linear;
use burn::module::Module;
use burn::tensor::{Bool, Tensor, activation::softmax, backend::Backend};

use crate::cache::KvCache;
use crate::rope::Rope;

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// HF `attention.query_key_value`: `[hidden, 3·hidden]` in burn layout.
    pub query_key_value: Linear<B>,
    /// HF `attention.dense`.
    pub dense: Linear<B>,
    pub num_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// `x: [batch, T, hidden]` → `[batch, T, hidden]`. With a cache, `x` holds the positions after
    /// the cached ones and the cache is extended.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let (nh, hd) = (self.num_heads, self.head_dim);
        // [b, t, nh, 3·hd] → [b, nh, t, 3·hd]: each head's rows are q, k, v in turn.
        let qkv = self
            .query_key_value
            .forward(x)
            .reshape([b, t, nh, 3 * hd])
            .swap_dims(1, 2);
        let q = rope.apply(qkv.clone().narrow(3, 0, hd));
        let k = rope.apply(qkv.clone().narrow(3, hd, hd));
        let v = qkv.narrow(3, 2 * hd, hd);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let s = k.dims()[2];
        // [b, nh, t, s]
        let scores = q.matmul(k.transpose()) * (hd as f64).powf(-0.5);
        let scores = if t > 1 {
            // Query i sits at absolute position s - t + i and sees keys 0..=s - t + i.
            let mask = Tensor::<B, 2, Bool>::tril_mask([t, s], (s - t) as i64, &scores.device())
                .unsqueeze::<4>()
                .expand([b, nh, t, s]);
            scores.mask_fill(mask, f32::MIN)
        } else {
            scores
        };
        let out = softmax(scores, 3).matmul(v); // [b, nh, t, hd]
        self.dense
            .forward(out.swap_dims(1, 2).reshape([b, t, hidden]))
    }
}
