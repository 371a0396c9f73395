//! Mixed precision for training (`--dtype bf16`): the frozen base weights of every linear layer
//! (`embed_out` included) are stored in bf16 and their matmuls run in bf16, and so do attention's
//! matmuls (`q·kᵀ` and `P·v`, and the four of its backward pass), while activations, LayerNorm,
//! attention's scores and softmax, the loss, the LoRA weights and the optimizer state stay f32.
//! What attention, GELU and LayerNorm keep for backward is kept in bf16 (`bf16_stash`), as a
//! bf16 model in PyTorch keeps its activations; the logits the loss keeps stay f32, as HF's
//! loss upcasts them.
//! [`Linear::base_forward`](crate::linear::Linear::base_forward) casts its input to the weight's
//! dtype and the product back.

use crate::ModelBackend;
use burn::tensor::FloatDType;

use crate::base_weight::BaseWeight;
use crate::linear::Linear;
use crate::model::GptNeoxForCausalLM;

/// Cast in place, keeping the parameter id. An NF4 weight stays NF4 and is dequantized to `dtype`.
fn cast<B: ModelBackend>(lin: &mut Linear<B>, dtype: FloatDType) {
    match &mut lin.weight {
        BaseWeight::Dense(w) => *w = w.clone().map(|w| w.cast(dtype)),
        BaseWeight::Nf4(q) => q.bf16 = dtype == FloatDType::BF16,
    }
}

impl<B: ModelBackend> GptNeoxForCausalLM<B> {
    /// Store the base weights of all linear layers in `dtype` (call before attaching LoRA);
    /// with bf16, keep the activations for backward in bf16 too.
    pub fn cast_base(mut self, dtype: FloatDType) -> Self {
        for (_, lin) in self.linears_mut() {
            cast(lin, dtype);
        }
        cast(&mut self.embed_out, dtype);
        let bf16 = dtype == FloatDType::BF16;
        for layer in &mut self.gpt_neox.layers {
            layer.input_layernorm.bf16_stash = bf16;
            layer.post_attention_layernorm.bf16_stash = bf16;
            layer.attention.bf16 = bf16;
            layer.mlp.bf16 = bf16;
        }
        self.gpt_neox.final_layer_norm.bf16_stash = bf16;
        self
    }
}
