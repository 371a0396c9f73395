//! A linear layer with HF's tensor names whose frozen base weight may carry a LoRA adapter
//! (PEFT's `LoraLayer`): `y = x·W + b + dropout(x)·A·B·scaling`.
//!
//! The base weight is the seam for quantized bases: an NF4 weight (QLoRA, `base_weight.rs`)
//! changes how `base_forward` gets `W`, nothing else.

use crate::ModelBackend;
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::{Tensor, backend::Backend};

use crate::base_weight::BaseWeight;

/// A LoRA adapter in burn layout: `lora_a` is `[in, r]` (PEFT's `lora_A.weight` is `[r, in]`),
/// `lora_b` is `[r, out]` (PEFT's `lora_B.weight` is `[out, r]`).
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    pub lora_a: Param<Tensor<B, 2>>,
    pub lora_b: Param<Tensor<B, 2>>,
    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    pub scaling: f64,
    pub dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct Linear<B: ModelBackend> {
    /// `[in, out]`; HF stores `[out, in]`. Dense or NF4.
    pub weight: BaseWeight<B>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<Lora<B>>,
}

impl<B: ModelBackend> Linear<B> {
    pub fn d_input(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn d_output(&self) -> usize {
        self.weight.dims()[1]
    }

    /// `x·W + b` with the frozen base. A base stored in another dtype (bf16, see
    /// `precision.rs`) multiplies in that dtype; the result comes back in `x`'s dtype. An NF4
    /// base is dequantized first.
    pub fn base_forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = match &self.weight {
            BaseWeight::Nf4(q) => B::nf4_matmul(x, q),
            BaseWeight::Dense(w) => B::base_matmul(x, w.val()),
        };
        match bias {
            Some(b) => y + b.unsqueeze(),
            None => y,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.lora {
            None => self.base_forward(x),
            Some(l) => {
                let xa = B::gemm(
                    l.dropout.forward(x.clone()),
                    unsqueeze(l.lora_a.val()),
                    false,
                );
                let delta = B::gemm(xa, unsqueeze(l.lora_b.val()), false) * l.scaling;
                self.base_forward(x) + delta
            }
        }
    }

    /// Fold the adapter into the base weight: `W ← W + scaling·A·B`.
    pub fn merge(self) -> Self {
        match self.lora {
            None => self,
            Some(l) => {
                let w = self.weight.dense();
                let delta = (l.lora_a.val().matmul(l.lora_b.val()) * l.scaling).cast(w.dtype());
                Self {
                    weight: BaseWeight::Dense(Param::from_tensor(w + delta)),
                    bias: self.bias,
                    lora: None,
                }
            }
        }
    }
}

/// `[a, b]` → `[1, …, a, b]` for a batched matmul with a `D`-dimensional input.
fn unsqueeze<B: Backend, const D: usize>(t: Tensor<B, 2>) -> Tensor<B, D> {
    t.unsqueeze()
}
