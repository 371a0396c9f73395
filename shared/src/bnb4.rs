//! Linear weights that transformers + bitsandbytes saved in 4-bit (`load_in_4bit`, then
//! `save_pretrained`), for a module prefix `P` (spec §3.4):
//! - `P.weight`: u8, two codes per byte, the first in the high nibble;
//! - `P.weight.absmax`: f32 per block, or with double quantization u8 codes, then
//!   `P.weight.nested_absmax` (f32 per 256 blocks) and `P.weight.nested_quant_map` (256 f32);
//! - `P.weight.quant_map`: the 16-value code book;
//! - `P.weight.quant_state.bitsandbytes__nf4`: u8 bytes of a JSON object with `quant_type`,
//!   `blocksize`, `shape` and, when nested, `nested_blocksize` and `nested_offset`.
//!
//! Read into an [`Nf4`] with the stored code books, as bnb's own loader does.

use safetensors::Dtype;
use serde::Deserialize;

use crate::error::LoadError;
use crate::nf4::{Absmax, NESTED_BLOCKSIZE, Nf4};
use crate::weights::Checkpoint;

const STATE: &str = "weight.quant_state.bitsandbytes__nf4";

#[derive(Deserialize)]
struct QuantState {
    quant_type: String,
    blocksize: usize,
    shape: Vec<usize>,
    nested_blocksize: Option<usize>,
    nested_offset: Option<f32>,
}

/// Whether `prefix` is a bnb 4-bit Linear in `ckpt` (NF4 or another 4-bit type).
pub fn is_4bit(ckpt: &Checkpoint, prefix: &str) -> bool {
    ckpt.contains(&format!("{prefix}.{STATE}"))
        || ckpt.contains(&format!("{prefix}.weight.quant_state.bitsandbytes__fp4"))
}

/// The NF4 weight `prefix` of HF shape `[d_out, d_in]`.
pub fn read(ckpt: &Checkpoint, prefix: &str, d_out: usize, d_in: usize) -> Result<Nf4, LoadError> {
    let state_name = format!("{prefix}.{STATE}");
    if !ckpt.contains(&state_name) {
        let file = ckpt.origin().to_string();
        return Err(LoadError::Unsupported {
            file,
            what: format!("`{prefix}.weight` is bitsandbytes fp4; only nf4 is supported"),
        });
    }
    let raw = |suffix: &str, dtype: Dtype, len: Option<usize>| {
        let name = format!("{prefix}.weight{suffix}");
        let t = ckpt.raw(&name)?;
        let n: usize = t.shape.iter().product();
        if t.dtype != dtype || len.is_some_and(|l| l != n) {
            return Err(LoadError::Corrupt {
                file: t.file,
                reason: format!(
                    "tensor `{name}` is {:?} {:?}, expected {dtype:?} of {} values",
                    t.dtype,
                    t.shape,
                    len.map_or("any number of".to_string(), |l| l.to_string())
                ),
            });
        }
        Ok(t.bytes)
    };
    let f32s = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let state_bytes = raw(".quant_state.bitsandbytes__nf4", Dtype::U8, None)?;
    let bad = |reason: String| LoadError::Corrupt {
        file: ckpt.origin().to_string(),
        reason: format!("tensor `{state_name}`: {reason}"),
    };
    let state: QuantState = serde_json::from_slice(&state_bytes)
        .map_err(|e| bad(format!("not the JSON bnb writes: {e}")))?;
    if state.quant_type != "nf4" || state.shape != [d_out, d_in] || state.blocksize == 0 {
        return Err(bad(format!(
            "{} of shape {:?} in blocks of {}, expected nf4 of shape [{d_out}, {d_in}]",
            state.quant_type, state.shape, state.blocksize
        )));
    }
    let n = d_out * d_in;
    let blocks = n.div_ceil(state.blocksize);
    let packed = raw("", Dtype::U8, Some(n.div_ceil(2)))?;
    let codes: Vec<u8> = packed
        .iter()
        .flat_map(|b| [b >> 4, b & 0xF])
        .take(n)
        .collect();
    let code = f32s(raw(".quant_map", Dtype::F32, Some(16))?);
    let absmax = match (state.nested_blocksize, state.nested_offset) {
        (None, _) => Absmax::Plain(f32s(raw(".absmax", Dtype::F32, Some(blocks))?)),
        (Some(NESTED_BLOCKSIZE), Some(offset)) => Absmax::Double {
            codes: raw(".absmax", Dtype::U8, Some(blocks))?,
            absmax2: f32s(raw(
                ".nested_absmax",
                Dtype::F32,
                Some(blocks.div_ceil(NESTED_BLOCKSIZE)),
            )?),
            offset,
            code2: f32s(raw(".nested_quant_map", Dtype::F32, Some(256))?),
        },
        (nested, offset) => {
            return Err(bad(format!(
                "nested blocks of {nested:?} with offset {offset:?}: only blocks of {NESTED_BLOCKSIZE} are supported"
            )));
        }
    };
    Ok(Nf4 {
        codes,
        absmax,
        blocksize: state.blocksize,
        code,
    })
}
