//! The model worker (wasm32 only): receives [`Request`]s, loads the package through Cache
//! Storage, runs generation on WebGPU or the CPU, and posts [`Event`]s back to the page.

mod engine;
mod fetch;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::protocol::{ErrorKind, Event, Request};

pub(crate) fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

pub(crate) fn post(event: &Event) {
    // Posting a string never fails for a live worker; nothing useful to do if it does.
    let _ = scope().post_message(&JsValue::from_str(&event.to_json()));
}

pub(crate) fn post_error(id: Option<u64>, kind: ErrorKind, message: impl Into<String>) {
    post(&Event::Error {
        id,
        kind,
        message: message.into(),
    });
}

pub(crate) fn now_ms() -> f64 {
    scope().performance().map(|p| p.now()).unwrap_or(0.0)
}

#[derive(Default)]
struct State {
    engine: Rc<RefCell<Option<engine::Engine>>>,
    /// The generation to abort, if any.
    abort: Rc<Cell<Option<u64>>>,
    busy: Rc<Cell<bool>>,
}

fn handle(state: &State, req: Request) {
    match req {
        Request::Load { base_url } => {
            if state.busy.get() {
                return post_error(None, ErrorKind::State, "busy: wait for the current task");
            }
            state.busy.set(true);
            let (slot, busy) = (state.engine.clone(), state.busy.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match engine::Engine::load(&base_url).await {
                    Ok((engine, info)) => {
                        *slot.borrow_mut() = Some(engine);
                        post(&Event::Ready(info));
                    }
                    Err((kind, message)) => post_error(None, kind, message),
                }
                busy.set(false);
            });
        }
        Request::Generate {
            id,
            question,
            settings,
        } => {
            if state.busy.get() {
                return post_error(Some(id), ErrorKind::State, "busy: wait or stop first");
            }
            if state.engine.borrow().is_none() {
                return post_error(Some(id), ErrorKind::State, "no model loaded");
            }
            state.busy.set(true);
            state.abort.set(None);
            let (slot, busy, abort) = (
                state.engine.clone(),
                state.busy.clone(),
                state.abort.clone(),
            );
            wasm_bindgen_futures::spawn_local(async move {
                let engine = slot.borrow_mut().take().expect("checked above");
                let result = engine.generate(id, &question, &settings, &abort).await;
                *slot.borrow_mut() = Some(engine);
                if let Err(message) = result {
                    post_error(Some(id), ErrorKind::Generate, message);
                }
                busy.set(false);
            });
        }
        Request::Abort { id } => state.abort.set(Some(id)),
        Request::Reset => {
            if !state.busy.get() {
                *state.engine.borrow_mut() = None;
            }
        }
    }
}

/// The worker's entry point (called from `bin/worker.rs`).
pub fn start() {
    console_error_panic_hook::set_once();
    let state = State::default();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        match e.data().as_string().map(|s| Request::from_json(&s)) {
            Some(Ok(req)) => handle(&state, req),
            Some(Err(msg)) => post_error(None, ErrorKind::State, msg),
            None => post_error(None, ErrorKind::State, "messages must be JSON strings"),
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(&Event::Booted);
}
