//! The page's side of the worker protocol: spawn the worker, send [`Request`]s, and turn
//! [`Event`]s into signal updates.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;
use web_sys::{ErrorEvent, MessageEvent, Worker};

use crate::protocol::{Event, Request};

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// The loader trunk writes for `bin/worker` (`data-loader-shim`).
const WORKER_URL: &str = "./worker_loader.js";

/// Start the worker; `on_event` gets every event, `on_crash` a message if the worker dies.
pub fn spawn(on_event: impl Fn(Event) + 'static, on_crash: impl Fn(String) + 'static) {
    let worker = match Worker::new(WORKER_URL) {
        Ok(w) => w,
        Err(e) => return on_crash(format!("{e:?}")),
    };
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        match e.data().as_string().map(|s| Event::from_json(&s)) {
            Some(Ok(ev)) => on_event(ev),
            Some(Err(msg)) => web_sys::console::error_1(&msg.into()),
            None => web_sys::console::error_1(&"worker sent a non-string message".into()),
        }
    });
    let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |e: ErrorEvent| {
        on_crash(e.message());
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_message.forget();
    on_error.forget();
    WORKER.with(|w| *w.borrow_mut() = Some(worker));
}

pub fn send(req: &Request) {
    WORKER.with(|w| {
        if let Some(w) = &*w.borrow() {
            let _ = w.post_message(&JsValue::from_str(&req.to_json()));
        }
    });
}
