//! LayerNorm over the last dimension with HF's `weight`/`bias` as `gamma`/`beta` (the field
//! names of `burn::nn::LayerNorm`, so parameter keys do not change), computed by
//! [`ModelBackend::layernorm`]: under autodiff one graph node that keeps only its input.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::ModelBackend;

#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// HF `weight`.
    pub gamma: Param<Tensor<B, 1>>,
    /// HF `bias`.
    pub beta: Option<Param<Tensor<B, 1>>>,
    pub epsilon: f64,
    /// Keep the input for backward in bf16 (`--dtype bf16`, `precision.rs`).
    pub bf16_stash: bool,
}

impl<B: Backend> LayerNorm<B> {
    /// The identity: weight 1, bias 0.
    pub fn new(d: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([d], device)),
            beta: Some(Param::from_tensor(Tensor::zeros([d], device))),
            epsilon,
            bf16_stash: false,
        }
    }
}

impl<B: ModelBackend> LayerNorm<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gamma = self.gamma.val();
        let beta = match &self.beta {
            Some(b) => b.val(),
            None => gamma.zeros_like(),
        };
        B::layernorm(x, gamma, beta, self.epsilon, self.bf16_stash)
    }
}
