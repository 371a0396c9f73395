//! GPT-NeoX for causal LM, field names mirroring HF's tensor names
//! (`gpt_neox.embed_in`, `gpt_neox.layers.{i}.…`, `gpt_neox.final_layer_norm`, `embed_out`).

use crate::ModelBackend;
use burn::module::Module;
use burn::nn::Embedding;

use crate::norm::LayerNorm;

use crate::linear::Linear;
use burn::tensor::{Int, Tensor};

use crate::cache::KvCache;
use crate::layer::Layer;
use crate::rope::Rope;

#[derive(Module, Debug)]
pub struct GptNeoxModel<B: ModelBackend> {
    pub embed_in: Embedding<B>,
    pub layers: Vec<Layer<B>>,
    pub final_layer_norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct GptNeoxForCausalLM<B: ModelBackend> {
    pub gpt_neox: GptNeoxModel<B>,
    /// Untied LM head without bias.
    pub embed_out: Linear<B>,
    pub rotary_ndims: usize,
    pub rotary_base: f64,
}

impl<B: ModelBackend> GptNeoxForCausalLM<B> {
    /// Hidden states after the final LayerNorm: `[batch, T, hidden]`. With a cache the ids are
    /// the positions after the cached ones.
    pub fn forward_hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let t = input_ids.dims()[1];
        let start = cache.as_ref().map_or(0, |c| c.len());
        let rope = self.rope(start, t, &input_ids.device());
        let mut h = self.gpt_neox.embed_in.forward(input_ids);
        for (i, layer) in self.gpt_neox.layers.iter().enumerate() {
            h = layer.forward(h, &rope, cache.as_deref_mut().map(|c| (c, i)));
        }
        self.gpt_neox.final_layer_norm.forward(h)
    }

    /// The rotary tables of positions `start..start + len`.
    pub fn rope(&self, start: usize, len: usize, device: &B::Device) -> Rope<B> {
        let head_dim = self
            .gpt_neox
            .layers
            .first()
            .map_or(self.rotary_ndims, |l| l.attention.head_dim);
        Rope::new(
            self.rotary_ndims,
            head_dim,
            self.rotary_base,
            start,
            len,
            device,
        )
    }

    /// Logits from the last layer's output: the final LayerNorm, then `embed_out`.
    pub fn head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        crate::timeline::mark(&h, "head");
        self.embed_out
            .forward(self.gpt_neox.final_layer_norm.forward(h))
    }

    /// Logits `[batch, T, vocab]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        self.embed_out
            .forward(self.forward_hidden(input_ids, cache))
    }

    /// Logits of the last position only: `[batch, vocab]` (what generation needs).
    pub fn forward_last(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 2> {
        let h = self.forward_hidden(input_ids, cache);
        let [b, t, _] = h.dims();
        let vocab = self.embed_out.d_output();
        self.embed_out
            .forward(h.narrow(1, t - 1, 1))
            .reshape([b, vocab])
    }

    pub fn num_layers(&self) -> usize {
        self.gpt_neox.layers.len()
    }

    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.num_layers())
    }
}
