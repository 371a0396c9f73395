//! The model on one of two burn backends: WebGPU (burn-wgpu) when the browser offers an adapter
//! with the limits the manifest asks for, otherwise the CPU (burn-flex in wasm). Both run the
//! same `shared` model and generation loop as `trainer generate`.

use std::cell::Cell;
use std::ops::ControlFlow;

use js_sys::{Promise, Reflect};
use shared::ModelBackend;
use shared::generate::{GenerationConfig, generate};
use shared::manifest::Manifest;
use shared::package::Package;
use shared::prompt::Template;
use shared::sampling::SamplingConfig;
use shared::tokenizer::StreamDecoder;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::fetch::{self, Failure};
use super::{now_ms, post, scope};
use crate::protocol::{Backend, ErrorKind, Event, ModelInfo, Phase};
use crate::settings::Settings;

type Gpu = burn::backend::wgpu::Wgpu<f32, i32>;
type Cpu = burn::backend::Flex;

pub struct Loaded<B: ModelBackend> {
    package: Package<B>,
    device: B::Device,
}

pub enum Engine {
    Gpu(Box<Loaded<Gpu>>),
    Cpu(Box<Loaded<Cpu>>),
}

/// Why there is no usable WebGPU adapter, if there is none.
async fn webgpu_unavailable(m: &Manifest) -> Option<String> {
    let nav = scope().navigator();
    let gpu = Reflect::get(&nav, &"gpu".into()).ok()?;
    if gpu.is_undefined() || gpu.is_null() {
        return Some("이 브라우저는 WebGPU를 지원하지 않아 CPU(WebAssembly)로 실행합니다.".into());
    }
    let request = Reflect::get(&gpu, &"requestAdapter".into()).ok()?;
    let promise = request
        .unchecked_ref::<js_sys::Function>()
        .call0(&gpu)
        .ok()?;
    let adapter = JsFuture::from(promise.unchecked_into::<Promise>())
        .await
        .ok()?;
    if adapter.is_null() || adapter.is_undefined() {
        return Some("WebGPU 어댑터를 찾지 못해 CPU(WebAssembly)로 실행합니다.".into());
    }
    let limits = Reflect::get(&adapter, &"limits".into()).ok()?;
    let limit = |k: &str| Reflect::get(&limits, &k.into()).ok()?.as_f64();
    let binding = limit("maxStorageBufferBindingSize").unwrap_or(0.0);
    if binding < m.webgpu.max_storage_buffer_binding_size as f64 {
        return Some(format!(
            "WebGPU의 저장 버퍼 한도({binding} 바이트)가 모델에 필요한 {} 바이트보다 작아 CPU로 실행합니다.",
            m.webgpu.max_storage_buffer_binding_size
        ));
    }
    None
}

/// Give the worker's event loop a turn (so an abort message can arrive between tokens).
async fn yield_now() {
    let promise = Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
    });
    let _ = JsFuture::from(promise).await;
}

impl Engine {
    pub async fn load(base_url: &str) -> Result<(Self, ModelInfo), Failure> {
        let t0 = now_ms();
        let manifest = fetch::manifest(base_url).await?;
        let (files, downloaded_bytes) = fetch::files(base_url, &manifest).await?;
        post(&Event::Progress {
            phase: Phase::Init,
            file: String::new(),
            loaded: manifest.total_bytes,
            total: manifest.total_bytes,
        });
        let notice = webgpu_unavailable(&manifest).await;
        let model_err = |e: shared::LoadError| (ErrorKind::Model, e.to_string());
        let (engine, backend) = if notice.is_none() {
            let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
            burn::backend::wgpu::init_setup_async::<burn::backend::wgpu::graphics::WebGpu>(
                &device,
                Default::default(),
            )
            .await;
            let package =
                Package::from_files(manifest.clone(), files, &device).map_err(model_err)?;
            (
                Engine::Gpu(Box::new(Loaded { package, device })),
                Backend::WebGpu,
            )
        } else {
            let device = Default::default();
            let package =
                Package::from_files(manifest.clone(), files, &device).map_err(model_err)?;
            (
                Engine::Cpu(Box::new(Loaded { package, device })),
                Backend::Cpu,
            )
        };
        let info = ModelInfo {
            id: manifest.id.clone(),
            name: manifest.name.clone(),
            backend,
            notice,
            defaults: Settings::from_manifest(&manifest.generation),
            total_bytes: manifest.total_bytes,
            downloaded_bytes,
            load_ms: now_ms() - t0,
        };
        Ok((engine, info))
    }

    pub async fn generate(
        &self,
        id: u64,
        question: &str,
        settings: &Settings,
        abort: &Cell<Option<u64>>,
    ) -> Result<(), String> {
        match self {
            Engine::Gpu(l) => run(l, id, question, settings, abort, false).await,
            Engine::Cpu(l) => run(l, id, question, settings, abort, true).await,
        }
    }
}

async fn run<B: ModelBackend>(
    l: &Loaded<B>,
    id: u64,
    question: &str,
    settings: &Settings,
    abort: &Cell<Option<u64>>,
    yield_each_token: bool,
) -> Result<(), String> {
    let t0 = now_ms();
    let m = &l.package.manifest;
    let template: Template = m.generation.template.parse()?;
    let tok = &l.package.tokenizer;
    let prompt = tok
        .encode(&template.prompt(question, ""))
        .map_err(|e| e.to_string())?;
    let cfg = GenerationConfig {
        max_new_tokens: settings.max_new_tokens,
        sampling: SamplingConfig {
            temperature: settings.temperature,
            top_p: settings.top_p,
            top_k: m.generation.top_k,
        },
        seed: settings.seed,
        stop_ids: vec![tok.eos_id()],
    };
    let eos = tok.eos_id();
    let mut stream = StreamDecoder::default();
    let mut first: Option<f64> = None;
    let mut count = 0usize;
    let mut failure = None;
    let (_, reason) = generate(&l.package.model, &prompt, &cfg, &l.device, async |token| {
        first.get_or_insert_with(now_ms);
        count += 1;
        let text = if token == eos {
            String::new()
        } else {
            match stream.push(tok, token) {
                Ok(piece) => piece.unwrap_or_default(),
                Err(e) => {
                    failure = Some(e.to_string());
                    return ControlFlow::Break(());
                }
            }
        };
        post(&Event::Token { id, token, text });
        if yield_each_token {
            yield_now().await;
        }
        if abort.get() == Some(id) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Some(e) = failure {
        return Err(e);
    }
    let end = now_ms();
    let first = first.unwrap_or(end);
    post(&Event::Done {
        id,
        reason,
        tokens: count,
        ttft_ms: first - t0,
        decode_tokens_per_s: if count > 1 && end > first {
            (count - 1) as f64 * 1000.0 / (end - first)
        } else {
            0.0
        },
    });
    Ok(())
}
