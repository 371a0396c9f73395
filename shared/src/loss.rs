//! Causal-LM cross-entropy as HF computes it: logits at position t score label t + 1, labels of
//! -100 are ignored, and the mean runs over all scored tokens of the batch.

use burn::tensor::{FloatDType, Int, Tensor, TensorData};

use crate::ModelBackend;

/// Label value that is not scored (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Summed negative log-likelihood over the scored positions of `labels: [batch, T]` (unshifted,
/// as HF's `labels=` argument) and the number of scored positions. The last position scores
/// nothing (weight 0), so the logits need no slicing.
pub fn causal_lm_nll_sum<B: ModelBackend>(
    logits: Tensor<B, 3>,
    labels: &[Vec<i64>],
) -> (Tensor<B, 1>, usize) {
    let dtype = logits.dtype().into();
    causal_lm_nll_sum_as(logits, labels, dtype)
}

/// [`causal_lm_nll_sum`] whose gradient with respect to the logits is written in `grad` (the
/// head's weight's dtype: a bf16 head multiplies the gradient rounded to bf16 anyway).
pub fn causal_lm_nll_sum_as<B: ModelBackend>(
    logits: Tensor<B, 3>,
    labels: &[Vec<i64>],
    grad: FloatDType,
) -> (Tensor<B, 1>, usize) {
    let [b, t, v] = logits.dims();
    assert_eq!(labels.len(), b, "one label row per batch row");
    debug_assert!(v > 0);
    let device = logits.device();
    let mut targets = Vec::with_capacity(b * t);
    let mut weights = Vec::with_capacity(b * t);
    for row in labels {
        assert_eq!(row.len(), t, "labels must be as long as the input");
        for &l in row[1..].iter().chain([&IGNORE_INDEX]) {
            let scored = l != IGNORE_INDEX;
            targets.push(if scored { l } else { 0 });
            weights.push(if scored { 1.0f32 } else { 0.0 });
        }
    }
    let count = weights.iter().filter(|w| **w > 0.0).count();
    let targets = Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [b, t, 1]), &device);
    let weights = Tensor::<B, 3>::from_data(TensorData::new(weights, [b, t, 1]), &device);
    crate::timeline::mark(&logits, "loss");
    (B::weighted_nll_as(logits, targets, weights, grad), count)
}
