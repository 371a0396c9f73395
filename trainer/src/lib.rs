//! The `trainer` CLI's library: subcommands, data readers and the evaluation loop, so the
//! end-to-end tests can drive them without spawning processes.

pub mod answer;
pub mod cli;
pub mod cmd;
pub mod data;
pub mod device;
pub mod eval;
#[cfg(all(test, feature = "wgpu"))]
mod fused_kernels_wgpu;
pub mod paths;
pub mod sft_data;
pub mod train;
