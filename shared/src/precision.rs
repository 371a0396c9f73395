//! Mixed precision for training (`--dtype bf16`): the frozen base weights of every linear layer
//! (`embed_out` included) are stored in bf16 and their matmuls run in bf16, and so do attention's
//! matmuls (`q·kᵀ` and `P·v`, and the four of its backward pass). The activations a bf16 model
//! in PyTorch keeps in bf16 are bf16 here too, with their gradients: a parallel layer's LayerNorm
//! outputs (computed in f32 from a bf16 copy of the residual stream), the fused qkv projection (its
//! bias and LoRA sum; `Attention::bf16`), q, k and v, the heads' output, the MLP's
//! `[.., 4·hidden]` interior (its bias, GELU, the second product's input; `Mlp::bf16`) and both
//! branches' products. A LoRA adapter multiplies its bf16 input as it is, by its f32 factors
//! rounded to bf16, and writes its term in bf16 (`linear.rs`). The residual stream and its sum,
//! attention's scores and softmax, the loss, the LoRA weights and the optimizer state stay f32;
//! LayerNorm, GELU and the rotary split compute in f32 from bf16. What attention, GELU and
//! LayerNorm keep for backward is kept in bf16 (`bf16_stash`), as a bf16 model in PyTorch keeps
//! its activations; the logits the loss keeps stay f32, as HF's loss upcasts them.
//! A linear layer's base casts its input to the weight's dtype and writes the product in the
//! input's dtype ([`Linear::forward`](crate::linear::Linear::forward)), or in the dtype asked
//! for ([`Linear::forward_as`](crate::linear::Linear::forward_as),
//! [`Linear::forward_to`](crate::linear::Linear::forward_to)).

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
            // the biases of the projections whose products are bf16 (`Attention::bf16`,
            // `Mlp::bf16`): added as they are, with no cast per step
            for lin in [
                &mut layer.attention.query_key_value,
                &mut layer.mlp.dense_h_to_4h,
            ] {
                if let Some(b) = &mut lin.bias {
                    *b = b.clone().map(|b| b.cast(dtype));
                }
            }
            layer.input_layernorm.bf16_stash = bf16;
            layer.post_attention_layernorm.bf16_stash = bf16;
            layer.attention.bf16 = bf16;
            layer.mlp.bf16 = bf16;
        }
        self.gpt_neox.final_layer_norm.bf16_stash = bf16;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraConfig, TargetModules};
    use crate::loss::causal_lm_nll_sum;
    use crate::sampling::Rng;
    use crate::{GptNeoxConfig, GptNeoxForCausalLM};
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;
    use burn::tensor::{Int, Tensor, TensorData};

    type AD = Autodiff<Flex>;

    fn noise<const D: usize>(rng: &mut Rng, shape: [usize; D], scale: f64) -> Tensor<AD, D> {
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| ((rng.next_f64() - 0.5) * 2.0 * scale) as f32)
            .collect();
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }

    /// The gradients of every LoRA factor (on all four projections, B and the biases drawn
    /// non-zero so that every path carries a signal) for one batch, with the base in `dtype`.
    fn lora_gradients(dtype: FloatDType) -> Vec<Vec<f32>> {
        let device = Default::default();
        let config = GptNeoxConfig::from_hf_json(
            r#"{"vocab_size": 97, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 256, "rotary_pct": 0.5,
                "use_parallel_residual": true, "max_position_embeddings": 64}"#,
        )
        .unwrap();
        let mut model = GptNeoxForCausalLM::<AD>::init(&config, 0.05, 7, &device);
        let mut rng = Rng::new(11);
        for (_, lin) in model.linears_mut() {
            let n = lin.d_output();
            lin.bias = Some(Param::from_tensor(noise(&mut rng, [n], 0.05)));
        }
        let mut model = model.cast_base(dtype);
        let targets = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"];
        let lora = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: TargetModules::List(targets.map(String::from).to_vec()),
            use_rslora: false,
        };
        model.attach_lora(&lora, 3, &device);
        for (_, lin) in model.linears_mut() {
            if let Some(l) = &mut lin.lora {
                let dims = l.lora_b.val().dims();
                l.lora_b = Param::from_tensor(noise(&mut rng, dims, 0.05)).set_require_grad(true);
            }
        }
        let (b, t) = (2, 24);
        let ids: Vec<i64> = (0..b * t).map(|i| (i * 31 % 97) as i64).collect();
        let labels: Vec<Vec<i64>> = ids.chunks(t).map(<[i64]>::to_vec).collect();
        let input = Tensor::<AD, 2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
        let (loss, _) = causal_lm_nll_sum(model.forward(input, None), &labels);
        let grads = loss.backward();
        let mut out = Vec::new();
        for (name, lin) in model.linears() {
            let l = lin
                .lora
                .as_ref()
                .unwrap_or_else(|| panic!("{name} has no adapter"));
            for p in [&l.lora_a, &l.lora_b] {
                let g = p
                    .grad(&grads)
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                out.push(g.into_data().convert::<f32>().to_vec().unwrap());
            }
        }
        out
    }

    /// `--dtype bf16` (bf16 projections and MLP interior, LayerNorms reading a bf16 copy)
    /// gives the LoRA gradients of the f32 model within bf16's precision, on every factor of
    /// every adapted projection: a wrong or missing path (a gradient in the wrong dtype, a lost
    /// bias or scaling) shows as an error of the gradient's own size.
    #[test]
    fn bf16_lora_gradients_follow_f32s() {
        let exact = lora_gradients(FloatDType::F32);
        let bf16 = lora_gradients(FloatDType::BF16);
        assert_eq!(exact.len(), 16, "2 layers × 4 projections × (A, B)");
        let mut worst = 0f32;
        for (i, (e, b)) in exact.iter().zip(&bf16).enumerate() {
            let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            let err = e
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt();
            assert!(norm > 1e-4, "factor {i}: gradient {norm} carries no signal");
            worst = worst.max(err / norm);
            assert!(
                err < 2e-2 * norm,
                "factor {i}: |bf16 − f32| = {err} against |f32| = {norm}"
            );
        }
        eprintln!(
            "worst factor: |bf16 − f32| / |f32| = {:.2} %",
            100.0 * worst
        );
    }
}
