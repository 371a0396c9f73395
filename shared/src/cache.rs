//! The key/value cache, kept outside the module tree: the generation loop owns it and passes it
//! to the forward pass, so records stay state-free and a chat can be reset.

use burn::tensor::{Tensor, backend::Backend};

/// Keys and values of one layer, stored after rotary: `[batch, heads, len, head_dim]`.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    pub k: Tensor<B, 4>,
    pub v: Tensor<B, 4>,
}

/// One [`LayerCache`] per layer, empty until the first forward.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerCache<B>>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Append new keys/values of `layer` and return the full cached keys/values.
    pub fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let slot = &mut self.layers[layer];
        let next = match slot.take() {
            None => LayerCache { k, v },
            Some(prev) => LayerCache {
                k: Tensor::cat(vec![prev.k, k], 2),
                v: Tensor::cat(vec![prev.v, v], 2),
            },
        };
        let out = (next.k.clone(), next.v.clone());
        *slot = Some(next);
        out
    }
}
