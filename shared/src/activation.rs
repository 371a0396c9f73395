//! The activations HF's `ACT2FN` maps by name, as GPT-NeoX's `hidden_act` uses them.

use burn::tensor::{Tensor, activation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact erf GELU (`gelu`, `gelu_python`).
    Gelu,
    /// Tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    /// (`gelu_new`, `gelu_pytorch_tanh`, `gelu_accurate`).
    GeluNew,
    /// `0.5·x·(1 + tanh(x·0.7978845608·(1 + 0.044715·x²)))`.
    GeluFast,
    /// `x·sigmoid(1.702·x)`.
    QuickGelu,
    /// Exact GELU clipped to [-10, 10] (`gelu_10`).
    Gelu10,
    Relu,
    /// `relu(x)²`.
    Relu2,
    Relu6,
    /// `silu` and `swish`.
    Silu,
    Sigmoid,
    Tanh,
    /// `linear`: identity.
    Linear,
    /// `x·tanh(softplus(x))`.
    Mish,
    /// `leaky_relu`, slope 0.01.
    LeakyRelu,
    /// `x·relu6(x + 3)/6`.
    Hardswish,
    /// MEGA's `0.5·(1 + erf((x − 0.707107)/(0.282095·√2)))`.
    Laplace,
    /// `√softplus(x)`.
    SqrtSoftplus,
}

impl Activation {
    /// The activation for an HF `hidden_act` name, `None` when unsupported.
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" | "gelu_python" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_python_tanh" | "gelu_accurate" => {
                Self::GeluNew
            }
            "gelu_fast" => Self::GeluFast,
            "quick_gelu" => Self::QuickGelu,
            "gelu_10" => Self::Gelu10,
            "relu" => Self::Relu,
            "relu2" => Self::Relu2,
            "relu6" => Self::Relu6,
            "silu" | "swish" => Self::Silu,
            "sigmoid" => Self::Sigmoid,
            "tanh" => Self::Tanh,
            "linear" => Self::Linear,
            "mish" => Self::Mish,
            "leaky_relu" => Self::LeakyRelu,
            "hardswish" => Self::Hardswish,
            "laplace" => Self::Laplace,
            "sqrtsoftplus" => Self::SqrtSoftplus,
            _ => return None,
        })
    }

    /// A name HF maps back to this activation.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::GeluNew => "gelu_new",
            Self::GeluFast => "gelu_fast",
            Self::QuickGelu => "quick_gelu",
            Self::Gelu10 => "gelu_10",
            Self::Relu => "relu",
            Self::Relu2 => "relu2",
            Self::Relu6 => "relu6",
            Self::Silu => "silu",
            Self::Sigmoid => "sigmoid",
            Self::Tanh => "tanh",
            Self::Linear => "linear",
            Self::Mish => "mish",
            Self::LeakyRelu => "leaky_relu",
            Self::Hardswish => "hardswish",
            Self::Laplace => "laplace",
            Self::SqrtSoftplus => "sqrtsoftplus",
        }
    }

    /// `bf16_stash`: under autodiff, keep the input for backward in bf16 (exact GELU only).
    pub fn forward<B: crate::ModelBackend, const D: usize>(
        self,
        x: Tensor<B, D>,
        bf16_stash: bool,
    ) -> Tensor<B, D> {
        match self {
            // Not `activation::gelu`: its backward on burn's default is the tanh approximation's
            // derivative. Ours is the exact erf one (`ModelBackend::gelu_erf`).
            Self::Gelu => B::gelu_erf(x, bf16_stash),
            Self::GeluNew => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
                x * (inner.tanh() + 1.0) * 0.5
            }
            Self::GeluFast => {
                let inner = (x.clone() * x.clone() * 0.044715 + 1.0) * x.clone() * 0.797_884_560_8;
                x * (inner.tanh() + 1.0) * 0.5
            }
            Self::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Self::Gelu10 => Self::Gelu.forward(x, bf16_stash).clamp(-10.0, 10.0),
            Self::Relu => activation::relu(x),
            Self::Relu2 => activation::relu(x).powi_scalar(2),
            Self::Relu6 => x.clamp(0.0, 6.0),
            Self::Silu => activation::silu(x),
            Self::Sigmoid => activation::sigmoid(x),
            Self::Tanh => x.tanh(),
            Self::Linear => x,
            Self::Mish => activation::mish(x),
            Self::LeakyRelu => activation::leaky_relu(x, 0.01),
            Self::Hardswish => x.clone() * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Self::Laplace => {
                // HF's literal mu (not exactly 1/√2).
                #[allow(clippy::approx_constant)]
                let z = (x - 0.707107) / (0.282095 * std::f64::consts::SQRT_2);
                (z.erf() + 1.0) * 0.5
            }
            Self::SqrtSoftplus => activation::softplus(x, 1.0).sqrt(),
        }
    }
}
