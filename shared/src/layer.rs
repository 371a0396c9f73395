//! One GPT-NeoX transformer layer, parallel or sequential residual.

use crate::ModelBackend;
use crate::norm::LayerNorm;
use burn::module::Module;
use burn::tensor::{FloatDType, Tensor};

use crate::attention::Attention;
use crate::cache::KvCache;
use crate::linear::add_bias;
use crate::mlp::Mlp;
use crate::rope::Rope;
use crate::timeline::mark;

#[derive(Module, Debug)]
pub struct Layer<B: ModelBackend> {
    pub input_layernorm: LayerNorm<B>,
    pub post_attention_layernorm: LayerNorm<B>,
    pub attention: Attention<B>,
    pub mlp: Mlp<B>,
    pub use_parallel_residual: bool,
}

impl<B: ModelBackend> Layer<B> {
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        // With bf16 (`precision.rs`) the LayerNorms read `h` rounded to bf16, as in a bf16
        // model's residual stream, and keep that copy for backward: one copy for both of a
        // parallel layer's (each would keep one of its own).
        mark(&h, "layernorm");
        let hn = if self.input_layernorm.bf16_stash {
            B::stash_bf16(h.clone())
        } else {
            h.clone()
        };
        if self.use_parallel_residual {
            // Both branches read the same input: h + attn(ln1(h)) + mlp(ln2(h)). With bf16 and
            // no cache the LayerNorms write bf16, for the bf16 products that read them, and
            // the branches write their products in bf16 (their inputs' dtype), as a bf16
            // model in PyTorch does; the residual sum adds them to `h` in f32.
            let bf16 = cache.is_none() && self.input_layernorm.bf16_stash;
            let norm = |ln: &LayerNorm<B>, x| match bf16 {
                true => ln.forward_as(x, FloatDType::BF16),
                false => ln.forward(x),
            };
            let x = norm(&self.input_layernorm, hn.clone());
            let (a, ba) = self.attention.forward_parts(x, rope, cache);
            mark(&hn, "layernorm");
            let (m, bm) = self
                .mlp
                .forward_parts(norm(&self.post_attention_layernorm, hn));
            mark(&m, "residual");
            let dtype = h.dtype().into();
            match (bm, ba) {
                // the branches' biases and the three terms in one pass on the CubeCL backends
                // (three passes otherwise): `(m + bm) + (a + ba) + h`
                (Some(bm), Some(ba)) => {
                    B::sum5_as([m, bm.unsqueeze(), a, ba.unsqueeze(), h], dtype)
                }
                (bm, ba) => B::sum3_as(add_bias(m, bm), add_bias(a, ba), h, dtype),
            }
        } else {
            let x = self.input_layernorm.forward(hn);
            let a = self.attention.forward(x, rope, cache);
            let h = h + a;
            let m = self
                .mlp
                .forward(self.post_attention_layernorm.forward(h.clone()));
            m + h
        }
    }
}
