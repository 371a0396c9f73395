//! Two kernels that let another CUDA stream's work sit inside a CubeCL stream without a host
//! wait (`cublas.rs`: `cublas-flags`, and the default where CubeCL's own stream is not found;
//! `wait_for` also checks a stream found): `signal` stores a sequence number in
//! a flag once everything queued before it is done; `wait_for` holds the stream (one unit
//! spinning on an atomic load) until another flag reaches a number. The other stream waits for
//! the first flag (`cuStreamWaitValue32`) and sets the second when its work is done.
//!
//! The flags are an `Array`, not a `Tensor`: a CubeCL tensor argument's shape and strides go
//! to the GPU as a small upload before each launch (CUDA's `create_with_data`), an array's
//! length in the launch's parameters.

use super::*;

#[cube(launch)]
fn signal_kernel(flags: &mut Array<Atomic<u32>>, slot: u32, value: u32) {
    if ABSOLUTE_POS == 0 {
        flags[slot as usize].store(value);
    }
}

#[cube(launch)]
fn wait_kernel(flags: &Array<Atomic<u32>>, slot: u32, value: u32) {
    if ABSOLUTE_POS == 0 {
        loop {
            if flags[slot as usize].load() >= value {
                break;
            }
        }
    }
}

fn one<R: CubeRuntime>(
    flags: &CubeTensor<R>,
    launch: impl FnOnce(&ComputeClient<R>, CubeCount, CubeDim, ArrayArg<R>),
) {
    launch(
        &flags.client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(1),
        flags.clone().into_array_arg(),
    );
}

/// Queues `flags[slot] = value` (a `u32` tensor) on the flags' stream.
pub fn signal<R: CubeRuntime>(flags: &CubeTensor<R>, slot: u32, value: u32) {
    one(flags, |client, count, dim, arg| {
        signal_kernel::launch::<R>(client, count, dim, arg, slot, value)
    });
}

/// Queues a wait, on the flags' stream, until `flags[slot] ≥ value`.
pub fn wait_for<R: CubeRuntime>(flags: &CubeTensor<R>, slot: u32, value: u32) {
    one(flags, |client, count, dim, arg| {
        wait_kernel::launch::<R>(client, count, dim, arg, slot, value)
    });
}
