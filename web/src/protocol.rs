//! The one message protocol between the page and the model worker, sent as JSON strings
//! through `postMessage`. Page → worker: [`Request`]; worker → page: [`Event`].

use serde::{Deserialize, Serialize};
use shared::generate::StopReason;

use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Download (or take from Cache Storage), verify and load the package at `base_url`
    /// (the folder holding `manifest.json`).
    Load { base_url: String },
    /// Answer `question` (wrapped in the model's prompt template).
    Generate {
        id: u64,
        question: String,
        settings: Settings,
    },
    /// Stop generation `id` after the current token.
    Abort { id: u64 },
    /// Drop the loaded model.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// burn-wgpu on the browser's WebGPU.
    WebGpu,
    /// burn-flex compiled to wasm (no WebGPU adapter).
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Manifest,
    Download,
    Cache,
    Init,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    pub name: String,
    pub backend: Backend,
    /// Said plainly to the user (e.g. "no WebGPU: running on the CPU").
    pub notice: Option<String>,
    pub defaults: Settings,
    pub total_bytes: u64,
    /// Bytes that came over the network this time (0 when all were cached).
    pub downloaded_bytes: u64,
    pub load_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The manifest is missing, not JSON, or a field is bad.
    Manifest,
    /// A network failure or HTTP error status.
    Network,
    /// A file does not match its manifest size or sha256 even after a fresh download.
    Integrity,
    /// The weights or tokenizer do not load.
    Model,
    /// Tokenizing or generating failed.
    Generate,
    /// A request the worker cannot serve now (e.g. generate before load).
    State,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker's wasm is running and listening.
    Booted,
    Progress {
        phase: Phase,
        file: String,
        loaded: u64,
        total: u64,
    },
    Ready(ModelInfo),
    Token {
        id: u64,
        token: u32,
        /// Text this token completes (may be empty inside a multi-byte character).
        text: String,
    },
    Done {
        id: u64,
        reason: StopReason,
        tokens: usize,
        /// From the generate request to the first token.
        ttft_ms: f64,
        /// Tokens after the first, per second.
        decode_tokens_per_s: f64,
    },
    Error {
        id: Option<u64>,
        kind: ErrorKind,
        message: String,
    },
}

impl Request {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serialisable")
    }
    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad request message: {e}"))
    }
}

impl Event {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serialisable")
    }
    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad event message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_stable_json_form() {
        let r = Request::Abort { id: 3 };
        assert_eq!(r.to_json(), r#"{"type":"abort","id":3}"#);
        assert_eq!(Request::from_json(&r.to_json()).unwrap(), r);
        let e = Event::Token {
            id: 1,
            token: 42,
            text: "법".into(),
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"token","id":1,"token":42,"text":"법"}"#
        );
        assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
        assert!(Request::from_json(r#"{"type":"explode"}"#).is_err());
    }
}
