//! The page (wasm32 only): a leptos CSR app. It reads a share link from the URL fragment, loads
//! the model in the worker (download once, then Cache Storage), and streams the answer as text.

mod client;
mod view;

use leptos::prelude::*;

use crate::protocol::{Event, ModelInfo, Phase, Request};
use crate::settings::{Settings, Shared, parse_fragment};

/// `data-state` of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Idle,
    Loading,
    Generating,
    Done,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Loading => "loading",
            Status::Generating => "generating",
            Status::Done => "done",
            Status::Error => "error",
        }
    }
}

/// Every signal of the page.
#[derive(Clone, Copy)]
pub struct AppState {
    pub question: RwSignal<String>,
    pub settings: RwSignal<Settings>,
    pub model_id: RwSignal<String>,
    pub status: RwSignal<Status>,
    pub answer: RwSignal<String>,
    pub tokens: RwSignal<Vec<u32>>,
    pub progress: RwSignal<(Phase, u64, u64)>,
    pub model: RwSignal<Option<ModelInfo>>,
    pub error: RwSignal<Option<String>>,
    pub notices: RwSignal<Vec<String>>,
    pub metrics: RwSignal<Option<(f64, f64, usize)>>,
    pub link: RwSignal<String>,
    /// A question waiting for the model to load.
    pub pending: RwSignal<bool>,
    pub gen_id: RwSignal<u64>,
    /// The link chose settings; otherwise the model's manifest defaults replace the page's.
    pub link_settings: bool,
}

impl AppState {
    fn new() -> Self {
        let hash = web_sys::window()
            .and_then(|w| w.location().hash().ok())
            .unwrap_or_default();
        let parsed = parse_fragment(&hash, &Shared::defaults());
        let s = Self {
            question: RwSignal::new(parsed.shared.question.clone()),
            settings: RwSignal::new(parsed.shared.settings.clone()),
            model_id: RwSignal::new(parsed.shared.model.clone()),
            status: RwSignal::new(Status::Loading),
            answer: RwSignal::new(String::new()),
            tokens: RwSignal::new(Vec::new()),
            progress: RwSignal::new((Phase::Manifest, 0, 0)),
            model: RwSignal::new(None),
            error: RwSignal::new(None),
            notices: RwSignal::new(parsed.notices),
            metrics: RwSignal::new(None),
            link: RwSignal::new(String::new()),
            pending: RwSignal::new(!parsed.shared.question.trim().is_empty()),
            gen_id: RwSignal::new(0),
            link_settings: parsed.has_settings,
        };
        if s.pending.get_untracked() {
            s.link.set(share_url(&parsed.shared));
        }
        s
    }

    pub fn shared(&self) -> Shared {
        Shared {
            question: self.question.get_untracked(),
            settings: self.settings.get_untracked(),
            model: self.model_id.get_untracked(),
        }
    }

    /// Ask the current question (after the model has loaded, if it has not yet).
    pub fn ask(&self) {
        if self.question.get_untracked().trim().is_empty() {
            return;
        }
        self.link.set(share_url(&self.shared()));
        if self.model.get_untracked().is_none() {
            self.pending.set(true);
            return;
        }
        let id = self.gen_id.get_untracked() + 1;
        self.gen_id.set(id);
        self.answer.set(String::new());
        self.tokens.set(Vec::new());
        self.metrics.set(None);
        self.error.set(None);
        self.status.set(Status::Generating);
        client::send(&Request::Generate {
            id,
            question: self.question.get_untracked(),
            settings: self.settings.get_untracked(),
        });
    }

    pub fn stop(&self) {
        client::send(&Request::Abort {
            id: self.gen_id.get_untracked(),
        });
    }

    fn on_event(&self, ev: Event) {
        let current = self.gen_id.get_untracked();
        match ev {
            Event::Booted => client::send(&Request::Load {
                base_url: format!("models/{}/", self.model_id.get_untracked()),
            }),
            Event::Progress {
                phase,
                loaded,
                total,
                ..
            } => self.progress.set((phase, loaded, total)),
            Event::Ready(info) => {
                let untouched = self.settings.get_untracked() == Shared::defaults().settings;
                if !self.link_settings && untouched {
                    self.settings.set(info.defaults.clone());
                }
                self.model.set(Some(info));
                self.status.set(Status::Idle);
                if self.pending.get_untracked() {
                    self.pending.set(false);
                    self.ask();
                }
            }
            Event::Token { id, token, text } if id == current => {
                self.tokens.update(|t| t.push(token));
                if !text.is_empty() {
                    self.answer.update(|a| a.push_str(&text));
                }
            }
            Event::Done {
                id,
                tokens,
                ttft_ms,
                decode_tokens_per_s,
                ..
            } if id == current => {
                self.metrics
                    .set(Some((ttft_ms, decode_tokens_per_s, tokens)));
                self.status.set(Status::Done);
            }
            Event::Error { id, kind, message } if id.is_none() || id == Some(current) => {
                self.error.set(Some(format!("{kind:?}: {message}")));
                self.status.set(Status::Error);
            }
            _ => {}
        }
    }
}

/// The page URL with `shared` in its fragment (also written to the address bar).
fn share_url(shared: &Shared) -> String {
    let frag = crate::settings::to_fragment(shared);
    let Some(w) = web_sys::window() else {
        return format!("#{frag}");
    };
    if let Ok(h) = w.history() {
        let _ =
            h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&format!("#{frag}")));
    }
    w.location().href().unwrap_or_else(|_| format!("#{frag}"))
}

pub fn start() {
    console_error_panic_hook::set_once();
    let state = AppState::new();
    client::spawn(
        move |ev| state.on_event(ev),
        move |msg| {
            state
                .error
                .set(Some(format!("모델 작업자가 중단되었습니다: {msg}")));
            state.status.set(Status::Error);
        },
    );
    leptos::mount::mount_to_body(move || view::page(state));
}
