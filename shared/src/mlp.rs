//! GPT-NeoX MLP: `dense_4h_to_h(act(dense_h_to_4h(x)))`.

use crate::ModelBackend;
use crate::linear::Linear;
use burn::module::Module;
use burn::tensor::Tensor;

use crate::activation::Activation;

#[derive(Module, Debug)]
pub struct Mlp<B: ModelBackend> {
    pub dense_h_to_4h: Linear<B>,
    pub dense_4h_to_h: Linear<B>,
    #[module(skip)]
    pub act: Activation,
    /// Keep the activation's input in bf16 for backward (`--dtype bf16`, `precision.rs`).
    pub bf16_stash: bool,
}

impl<B: ModelBackend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.dense_4h_to_h.forward(
            self.act
                .forward(self.dense_h_to_4h.forward(x), self.bf16_stash),
        )
    }
}
