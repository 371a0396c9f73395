//! `tokenizer.json` through the `tokenizers` crate (pure Rust, native and wasm). The EOS id is
//! resolved from the tokenizer's `<|endoftext|>`, the model config's id only as a fallback.

use crate::error::TokenizerError;

pub const EOS_TOKEN: &str = "<|endoftext|>";
pub const PAD_TOKEN: &str = "<|pad|>";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos_id: u32,
    pad_id: u32,
}

impl Tokenizer {
    /// Parse `tokenizer.json` bytes; `source` names the file in errors.
    pub fn from_bytes(
        bytes: &[u8],
        source: &str,
        config_eos: Option<u32>,
    ) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| TokenizerError::Load {
            path: source.into(),
            reason: e.to_string(),
        })?;
        let eos_id =
            inner
                .token_to_id(EOS_TOKEN)
                .or(config_eos)
                .ok_or_else(|| TokenizerError::NoEos {
                    path: source.into(),
                })?;
        let pad_id = inner.token_to_id(PAD_TOKEN).unwrap_or(eos_id);
        Ok(Self {
            inner,
            eos_id,
            pad_id,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(
        path: &std::path::Path,
        config_eos: Option<u32>,
    ) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::Load {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string(), config_eos)
    }

    /// Token ids of `text`, as HF's `tokenizer(text)["input_ids"]`. Special-token strings such as
    /// `<|endoftext|>` inside the text become their single id.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Text of `ids`, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn eos_token(&self) -> &'static str {
        EOS_TOKEN
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Turns a growing list of ids into text pieces for streaming: holds back an incomplete UTF-8
/// sequence (decoded as U+FFFD) until the token that completes it arrives.
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl StreamDecoder {
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }
}
