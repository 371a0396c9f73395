//! Dropout masks drawn from per-thread seeds, so that data parallel replicas can run their
//! forward and backward passes on threads of their own and still draw the masks one thread
//! would.
//!
//! burn 0.21's RNG is process-wide (`Backend::seed` ignores the device): two threads that seed it
//! and then draw would each draw from whatever state the other left. So a training step sets a
//! seed for the layer it runs, in a thread-local ([`seed_layer`]), and each mask drawn in that
//! layer ([`seeded`]) reseeds the RNG and draws under one process-wide lock. The first mask of a
//! layer is drawn from the layer's seed itself, the `n`-th from a seed derived from it: with
//! LoRA on `query_key_value` alone (one mask a layer), the masks are those of reseeding once per
//! layer, as the trainer did before.

use std::cell::Cell;

use burn::tensor::backend::Backend;

thread_local! {
    /// This thread's layer seed and the masks drawn under it so far.
    static LAYER: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// The masks this thread draws next come from `seed`: the first from `seed` itself, each next
/// one from [`nth_seed`].
pub fn seed_layer(seed: u64) {
    LAYER.with(|l| l.set(Some((seed, 0))));
}

/// The masks this thread draws next come from the backend's RNG as it stands (no reseeding).
pub fn clear() {
    LAYER.with(|l| l.set(None));
}

/// The seed of mask `n` (from 0) drawn under a layer seeded `seed`.
fn nth_seed(seed: u64, n: u64) -> u64 {
    match n {
        0 => seed,
        n => seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93).rotate_left(17),
    }
}

/// `draw()` (a draw from the backend's RNG) after seeding the RNG with this thread's next seed,
/// both under a process-wide lock; without a layer seed ([`clear`]), `draw()` as it is.
pub(crate) fn seeded<B: Backend, T>(device: &B::Device, draw: impl FnOnce() -> T) -> T {
    let Some((seed, n)) = LAYER.with(Cell::get) else {
        return draw();
    };
    LAYER.with(|l| l.set(Some((seed, n + 1))));
    let _turn = crate::global_rng();
    B::seed(device, nth_seed(seed, n));
    draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tensor};

    fn mask(device: &burn::backend::flex::FlexDevice) -> Vec<f32> {
        seeded::<Flex, _>(device, || {
            Tensor::<Flex, 1>::random([64], Distribution::Bernoulli(0.5), device)
        })
        .into_data()
        .to_vec()
        .unwrap()
    }

    /// Each thread draws the masks of its own seeds, whatever the other threads draw meanwhile:
    /// the same masks as drawn alone, one after another.
    #[test]
    fn threads_draw_the_masks_of_their_own_seeds() {
        let device = Default::default();
        let alone: Vec<Vec<Vec<f32>>> = (0..4)
            .map(|t| {
                seed_layer(100 + t);
                (0..3).map(|_| mask(&device)).collect()
            })
            .collect();
        clear();
        let threaded: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    s.spawn(move || {
                        let device = Default::default();
                        let mut last = Vec::new();
                        for _ in 0..50 {
                            seed_layer(100 + t);
                            last = (0..3).map(|_| mask(&device)).collect();
                        }
                        last
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(alone, threaded);
        // the draws of a layer differ from each other, and the first is the layer seed's own
        assert_ne!(alone[0][0], alone[0][1]);
        let _turn = crate::global_rng();
        Flex::seed(&device, 100);
        let first: Vec<f32> =
            Tensor::<Flex, 1>::random([64], Distribution::Bernoulli(0.5), &device)
                .into_data()
                .to_vec()
                .unwrap();
        assert_eq!(first, alone[0][0]);
    }
}
