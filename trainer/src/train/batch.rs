//! Batches: a seeded shuffle per epoch, right padding with the pad id and labels of -100
//! (Stanford Alpaca's collator).

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use shared::example::Example;
use shared::loss::IGNORE_INDEX;
use shared::sampling::Rng;

/// The order of examples in `epoch`: Fisher-Yates with a generator seeded from (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

pub struct Batch<B: Backend> {
    pub ids: Tensor<B, 2, Int>,
    pub labels: Vec<Vec<i64>>,
    /// Scored positions (after the shift).
    pub scored: usize,
    /// Real (unpadded) tokens.
    pub tokens: usize,
}

pub fn collate<B: Backend>(examples: &[&Example], pad_id: u32, device: &B::Device) -> Batch<B> {
    let t = examples
        .iter()
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let mut ids = Vec::with_capacity(examples.len() * t);
    let mut labels = Vec::with_capacity(examples.len());
    for e in examples {
        ids.extend(e.ids.iter().map(|&i| i as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, t - e.ids.len()));
        let mut l = e.labels.clone();
        l.resize(t, IGNORE_INDEX);
        labels.push(l);
    }
    Batch {
        ids: Tensor::from_data(TensorData::new(ids, [examples.len(), t]), device),
        scored: examples.iter().map(|e| e.scored()).sum(),
        tokens: examples.iter().map(|e| e.ids.len()).sum(),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_permutations_and_seeded() {
        let a = epoch_order(50, 7, 0);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 7, 0));
        assert_ne!(a, epoch_order(50, 7, 1));
    }

    #[test]
    fn padding_is_masked() {
        let e1 = Example {
            ids: vec![5, 6, 7],
            labels: vec![-100, 6, 7],
        };
        let e2 = Example {
            ids: vec![8],
            labels: vec![8],
        };
        let b = collate::<burn::backend::Flex>(&[&e1, &e2], 1, &Default::default());
        assert_eq!(b.labels[1], vec![8, -100, -100]);
        assert_eq!(
            b.ids.into_data().into_vec::<i32>().unwrap(),
            vec![5, 6, 7, 8, 1, 1]
        );
        assert_eq!(b.scored, 2);
    }
}
