//! Law-Polyglot in the browser: a leptos page (`bin/app`) and a Web Worker (`bin/worker`) that
//! runs the shared GPT-NeoX model on WebGPU (burn-wgpu), or on the CPU (burn-flex) without it.
//! The message protocol and share links are plain Rust, tested natively; the page and the
//! worker exist only on wasm32.

pub mod protocol;
pub mod settings;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod worker;
