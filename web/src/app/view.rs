//! The page's markup: question box, examples, settings, streaming answer, share link.
//! Model output is only ever inserted as text nodes, never as HTML.

use leptos::prelude::*;

use super::{AppState, Status};
use crate::protocol::{Backend, Phase};
use crate::settings::{MAX_NEW_TOKENS, MAX_TEMPERATURE};

const EXAMPLES: [&str; 3] = [
    "헌법 제10조의 내용은 무엇인가요?",
    "대한민국헌법 제1조의 내용은 무엇인가요?",
    "헌법 제12조에는 무엇이 적혀 있나요?",
];

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn progress_view(s: AppState) -> impl IntoView {
    move || {
        (s.model.get().is_none() && s.status.get() != Status::Error).then(|| {
            let (phase, loaded, total) = s.progress.get();
            let label = match phase {
                Phase::Manifest => "모델 정보를 가져오는 중…".to_string(),
                Phase::Download => format!("모델 내려받는 중: {} / {}", mb(loaded), mb(total)),
                Phase::Cache => format!("저장된 모델을 읽는 중: {} / {}", mb(loaded), mb(total)),
                Phase::Init => "모델을 준비하는 중…".to_string(),
            };
            view! {
                <div class="progress" data-testid="progress">
                    <progress max=total.max(1) value=loaded></progress>
                    <span>{label}</span>
                </div>
            }
        })
    }
}

fn number_input(
    label: &'static str,
    step: &'static str,
    min: f64,
    max: f64,
    get: impl Fn() -> String + Send + Sync + 'static,
    set: impl Fn(f64) + 'static,
) -> impl IntoView {
    view! {
        <label class="setting">
            <span>{label}</span>
            <input
                type="number"
                step=step
                min=min
                max=max
                prop:value=get
                on:change=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<f64>()
                        && v.is_finite()
                    {
                        set(v.clamp(min, max));
                    }
                }
            />
        </label>
    }
}

fn settings_view(s: AppState) -> impl IntoView {
    let st = s.settings;
    view! {
        <details class="settings">
            <summary>"설정"</summary>
            {number_input("온도 (0 = 탐욕적)", "0.1", 0.0, MAX_TEMPERATURE as f64,
                move || st.get().temperature.to_string(),
                move |v| st.update(|x| x.temperature = v as f32))}
            {number_input("top-p", "0.05", 0.05, 1.0,
                move || st.get().top_p.to_string(),
                move |v| st.update(|x| x.top_p = v as f32))}
            {number_input("최대 토큰 수", "1", 1.0, MAX_NEW_TOKENS as f64,
                move || st.get().max_new_tokens.to_string(),
                move |v| st.update(|x| x.max_new_tokens = v as usize))}
            {number_input("시드", "1", 0.0, 9.0e15,
                move || st.get().seed.to_string(),
                move |v| st.update(|x| x.seed = v as u64))}
        </details>
    }
}

fn answer_view(s: AppState) -> impl IntoView {
    let tokens = move || {
        s.tokens
            .get()
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let backend = move || match s.model.get().map(|m| m.backend) {
        Some(Backend::WebGpu) => "webgpu",
        Some(Backend::Cpu) => "cpu",
        None => "",
    };
    let metrics = move || {
        s.metrics
            .get()
            .map(|(ttft, tps, n)| format!("토큰 {n}개 · 첫 토큰 {ttft:.0} ms · {tps:.1} 토큰/초"))
    };
    view! {
        <section class="answer-box">
            <div
                class="answer"
                data-testid="answer"
                data-state=move || s.status.get().as_str()
                data-tokens=tokens
                data-backend=backend
                data-ttft-ms=move || s.metrics.get().map(|m| m.0.to_string()).unwrap_or_default()
                data-decode-tps=move || s.metrics.get().map(|m| m.1.to_string()).unwrap_or_default()
            >
                {move || s.answer.get()}
            </div>
            <p class="metrics">{metrics}</p>
            {move || s.error.get().map(|e| view! { <p class="error" data-testid="error">{e}</p> })}
        </section>
    }
}

pub fn page(s: AppState) -> impl IntoView {
    let busy = move || matches!(s.status.get(), Status::Generating);
    let model_line = move || match s.model.get() {
        Some(m) => format!(
            "모델: {} ({}, {})",
            m.name,
            mb(m.total_bytes),
            match m.backend {
                Backend::WebGpu => "WebGPU",
                Backend::Cpu => "CPU",
            }
        ),
        None => format!("모델: {}", s.model_id.get()),
    };
    view! {
        <main class="app">
            <header>
                <h1>"법률 질의응답 · Law-Polyglot"</h1>
                <p class="disclaimer" role="note">
                    "이 답변은 작은 시범 모델이 만든 것으로 법률 자문이 아닙니다. 중요한 일은 반드시 변호사 등 전문가와 상의하세요. 질문은 이 기기 밖으로 전송되지 않습니다."
                </p>
                <p class="model">{model_line}</p>
                {move || s.model.get().and_then(|m| m.notice).map(|n| view! { <p class="notice" data-testid="backend-notice">{n}</p> })}
                {move || s.notices.get().into_iter().map(|n| view! { <p class="notice">{n}</p> }).collect_view()}
            </header>
            {progress_view(s)}
            <textarea
                data-testid="question"
                rows="3"
                placeholder="예: 헌법 제10조의 내용은 무엇인가요?"
                prop:value=move || s.question.get()
                on:input=move |ev| s.question.set(event_target_value(&ev))
            ></textarea>
            <div class="examples">
                {EXAMPLES.iter().map(|q| view! {
                    <button class="example" on:click=move |_| s.question.set(q.to_string())>{*q}</button>
                }).collect_view()}
            </div>
            <div class="actions">
                <button data-testid="ask" on:click=move |_| s.ask() disabled=busy>"질문하기"</button>
                <button data-testid="stop" on:click=move |_| s.stop() disabled=move || !busy()>"멈추기"</button>
                <button data-testid="copy-link" on:click=move |_| copy_link(s)>"링크 복사"</button>
            </div>
            {settings_view(s)}
            {answer_view(s)}
            {move || (!s.link.get().is_empty()).then(|| view! {
                <input class="link" data-testid="share-link" readonly prop:value=move || s.link.get() />
            })}
        </main>
    }
}

fn copy_link(s: AppState) {
    let url = super::share_url(&s.shared());
    s.link.set(url.clone());
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(&url);
    }
}
