//! A linear layer with HF's tensor names whose frozen base weight may carry a LoRA adapter
//! (PEFT's `LoraLayer`): `y = x·W + b + dropout(x)·A·B·scaling`.
//!
//! The base weight is the seam for quantized bases: an NF4 weight (QLoRA, `base_weight.rs`)
//! changes how `base_forward` gets `W`, nothing else.

use crate::ModelBackend;
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::{FloatDType, Tensor, backend::Backend};

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
    /// `precision.rs`) multiplies in that dtype; the result comes back in `x`'s dtype, and the
    /// bias is added in that dtype. An NF4 base is dequantized first.
    pub fn base_forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = match &self.weight {
            BaseWeight::Nf4(q) => B::nf4_matmul(x, q),
            BaseWeight::Dense(w) => B::base_matmul(x, w.val()),
        };
        match bias {
            Some(b) => {
                let dtype = y.dtype();
                y + b.cast(dtype).unsqueeze()
            }
            None => y,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype().into();
        self.forward_as(x, dtype)
    }

    /// [`forward`](Self::forward) with the result in `dtype`: the base multiplies `x` cast to
    /// `dtype` (a bf16 projection from an f32 input casts it once, as its bf16 product would
    /// anyway), while the adapter takes `x` as it is, in its own dtype.
    pub fn forward_as<const D: usize>(&self, x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
        match &self.lora {
            None => self.base_forward(x.cast(dtype)),
            Some(l) => {
                let a = l.lora_a.val();
                // in the adapter's dtype (f32 weights over a bf16 input, as PEFT casts it), as
                // one `[positions, in]` matrix: A's and B's gradients are then one product each
                // (no per-sequence products summed afterwards)
                let dims = x.dims();
                let xl: Tensor<B, 2> = x.clone().cast(a.dtype()).reshape([-1, dims[D - 1] as i32]);
                let xa = B::gemm(l.dropout.forward(xl), a, false);
                // the scaling applied to B (`[r, out]`), not to the `[.., out]` product: one
                // pass over the activations fewer, forward and backward
                let b = match l.scaling {
                    1.0 => l.lora_b.val(),
                    s => l.lora_b.val() * s,
                };
                let mut out = dims;
                out[D - 1] = b.dims()[1];
                let delta = B::gemm(xa, b, false).reshape(out);
                self.base_forward(x.cast(dtype)) + delta.cast(dtype)
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
