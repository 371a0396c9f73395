//! GPT-NeoX MLP: `dense_4h_to_h(act(dense_h_to_4h(x)))`.

use crate::ModelBackend;
use crate::linear::{Linear, add_bias};
use burn::module::Module;
use burn::tensor::{FloatDType, Tensor};

use crate::activation::Activation;
use crate::timeline::mark;

#[derive(Module, Debug)]
pub struct Mlp<B: ModelBackend> {
    pub dense_h_to_4h: Linear<B>,
    pub dense_4h_to_h: Linear<B>,
    #[module(skip)]
    pub act: Activation,
    /// `--dtype bf16` (`precision.rs`): the `[.., 4·hidden]` activations in bf16, as a bf16
    /// model in PyTorch keeps them: `dense_h_to_4h`'s product, its bias, the activation (exact
    /// GELU computes in f32) and `dense_4h_to_h`'s input, whose product cuBLAS writes in the
    /// input's dtype. Half the bytes of the widest tensors of a layer, forward and backward,
    /// no cast before `dense_4h_to_h`, and the activation's input kept for backward as it is.
    pub bf16: bool,
}

impl<B: ModelBackend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (y, bias) = self.forward_parts(x);
        add_bias(y, bias)
    }

    /// [`forward`](Self::forward) without `dense_4h_to_h`'s bias: its product and the bias,
    /// for a residual sum to add (`ModelBackend::sum5_as`). `dense_h_to_4h`'s bias is added
    /// where the exact GELU reads the product (`ModelBackend::gelu_erf_bias`).
    pub fn forward_parts(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<Tensor<B, 1>>) {
        let dtype = x.dtype().into();
        let inner = if self.bf16 { FloatDType::BF16 } else { dtype };
        mark(&x, "fc1");
        let (h, bias) = self.dense_h_to_4h.forward_parts_as(x, inner);
        mark(&h, "gelu");
        let a = match (bias, self.act) {
            (Some(b), Activation::Gelu) => B::gelu_erf_bias(h, b, self.bf16),
            (bias, act) => act.forward(add_bias(h, bias), self.bf16),
        };
        mark(&a, "fc2");
        self.dense_4h_to_h.forward_parts_to(a, dtype)
    }
}
