//! NF4 quantization as bitsandbytes does it (`quantize_4bit(quant_type="nf4")`, QLoRA), on the
//! host, bit for bit with bnb's generic (pure torch) kernels (spec §3.1–3.4; golden test:
//! `tests/tests/qlora.rs`). Codes are the nearest code-book values. bnb's CUDA kernel agrees but
//! for exact ties; its native CPU kernel searches the 8-bit code book approximately and, rarely,
//! takes the second-nearest code for an absmax value (1 of 300 in the golden data).
//!
//! A weight in HF layout `[out, in]` is flattened row-major and cut into blocks of `blocksize`
//! values (the last block may be partial). Each value becomes the 4-bit code of the nearest
//! [`NF4`] value after scaling by its block's absmax. With double quantization the absmax values
//! themselves are stored as 8-bit codes of [`dynamic_map`] in blocks of 256, after subtracting
//! their mean (`offset`).
//!
//! On the device, codes are packed into 32-bit words in planes ([`pack_words`]); bnb's byte
//! layout (two codes per byte, the first in the high nibble) is [`Nf4::bnb_bytes`].

/// The NF4 code book, index = 4-bit code (bnb's table; spec §3.1 gives the f32 bit patterns).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// QLoRA's block size for the weights.
pub const BLOCKSIZE: usize = 64;
/// Block size of the second quantization of the absmax values.
pub const NESTED_BLOCKSIZE: usize = 256;

/// `torch.linspace(start, end, steps, dtype=float32)` as torch's CPU kernel computes it: the
/// first half from `start`, the second half from `end`, each with one fused multiply-add
/// (checked bit for bit against torch 2.15).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// bnb's `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: 256 sorted values,
/// the code book of the absmax values under double quantization.
pub fn dynamic_map() -> [f32; 256] {
    let mut data = Vec::with_capacity(256);
    let scales = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    for (i, scale) in scales.into_iter().enumerate() {
        let b = linspace_f32(0.1, 1.0, (1 << i) + 1);
        let scale = scale as f32;
        for sign in [1.0f32, -1.0] {
            data.extend(b.windows(2).map(|w| sign * scale * ((w[0] + w[1]) / 2.0)));
        }
    }
    data.extend([0.0, 1.0]);
    data.sort_by(f32::total_cmp);
    data.try_into().expect("256 values")
}

/// The midpoints of consecutive values of a sorted code book, in f32.
fn midpoints(code: &[f32]) -> Vec<f32> {
    code.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect()
}

/// `torch.bucketize(x, bounds)`: the number of bounds strictly below `x` (a tie goes to the lower
/// code).
fn bucket(x: f32, bounds: &[f32]) -> u8 {
    bounds.partition_point(|&t| t < x) as u8
}

/// Blockwise absmax quantization to the nearest value of a sorted `code` book, as bnb's generic
/// kernels do (`quantize_4bit` and `quantize_blockwise` of its default backend): full blocks are
/// scaled by the reciprocal of their absmax (clamped at 1e-38), a final partial block is divided
/// by its (clamped) absmax; ties go to the lower code.
fn quantize_blockwise(x: &[f32], code: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let bounds = midpoints(code);
    let mut codes = Vec::with_capacity(x.len());
    let mut absmax = Vec::with_capacity(x.len().div_ceil(blocksize));
    for block in x.chunks(blocksize) {
        let am = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (full, clamped) = (block.len() == blocksize, am.max(1e-38));
        absmax.push(if full { am } else { clamped });
        let inv = 1.0 / clamped;
        codes.extend(block.iter().map(|&v| {
            let scaled = if full { v * inv } else { v / clamped };
            bucket(scaled.clamp(-1.0, 1.0), &bounds)
        }));
    }
    (codes, absmax)
}

/// [`quantize_blockwise`] on every core, over chunks of whole blocks (the same result).
#[cfg(not(target_arch = "wasm32"))]
fn quantize_blockwise_par(x: &[f32], code: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = x.len().div_ceil(blocksize).div_ceil(threads).max(1) * blocksize;
    if threads == 1 || x.len() < (1 << 20) {
        return quantize_blockwise(x, code, blocksize);
    }
    let parts: Vec<(Vec<u8>, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = x
            .chunks(per)
            .map(|c| s.spawn(move || quantize_blockwise(c, code, blocksize)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a quantization thread panicked"))
            .collect()
    });
    let mut out = (Vec::with_capacity(x.len()), Vec::new());
    for (codes, absmax) in parts {
        out.0.extend(codes);
        out.1.extend(absmax);
    }
    out
}

/// No threads in the browser (this crate runs there too).
#[cfg(target_arch = "wasm32")]
fn quantize_blockwise_par(x: &[f32], code: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    quantize_blockwise(x, code, blocksize)
}

/// The per-block scales of an NF4 weight.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// One f32 per block.
    Plain(Vec<f32>),
    /// Double quantization: `absmax[j] = code2[codes[j]] · absmax2[j / 256] + offset`, with
    /// `code2` the [`dynamic_map`] (or the map a bnb checkpoint stored).
    Double {
        codes: Vec<u8>,
        absmax2: Vec<f32>,
        offset: f32,
        code2: Vec<f32>,
    },
}

impl Absmax {
    /// The f32 absmax of every block (what bnb's dequantization computes first).
    pub fn values(&self) -> Vec<f32> {
        match self {
            Absmax::Plain(v) => v.clone(),
            Absmax::Double {
                codes,
                absmax2,
                offset,
                code2,
            } => codes
                .iter()
                .enumerate()
                .map(|(j, &c)| code2[c as usize] * absmax2[j / NESTED_BLOCKSIZE] + offset)
                .collect(),
        }
    }
}

/// An NF4-quantized weight on the host: one code per value (`n` of them), the block scales,
/// the code book ([`NF4`], or the one a bnb checkpoint stored).
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4 {
    pub codes: Vec<u8>,
    pub absmax: Absmax,
    pub blocksize: usize,
    pub code: Vec<f32>,
}

impl Nf4 {
    /// Quantize `x` (an HF `[out, in]` weight, row-major) like bnb's `quantize_4bit(x,
    /// blocksize, compress_statistics=double, quant_type="nf4")`.
    pub fn quantize(x: &[f32], blocksize: usize, double: bool) -> Self {
        let (codes, absmax) = quantize_blockwise_par(x, &NF4, blocksize);
        let absmax = if double {
            // the correctly rounded mean; bnb takes torch's f32 mean, which can differ in the
            // last bit (every absmax then moves by that much)
            let offset =
                (absmax.iter().map(|&v| f64::from(v)).sum::<f64>() / absmax.len() as f64) as f32;
            let centered: Vec<f32> = absmax.iter().map(|v| v - offset).collect();
            let code2 = dynamic_map().to_vec();
            let (codes, absmax2) = quantize_blockwise(&centered, &code2, NESTED_BLOCKSIZE);
            Absmax::Double {
                codes,
                absmax2,
                offset,
                code2,
            }
        } else {
            Absmax::Plain(absmax)
        };
        Self {
            codes,
            absmax,
            blocksize,
            code: NF4.to_vec(),
        }
    }

    /// The host reference of the device dequantization: `code[c] · absmax[block]`, in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let absmax = self.absmax.values();
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| self.code[c as usize] * absmax[i / self.blocksize])
            .collect()
    }

    /// bnb's storage: two codes per byte, the first in the high nibble; an odd count is padded
    /// with the value 0 (code 7), as bnb pads before quantizing.
    pub fn bnb_bytes(&self) -> Vec<u8> {
        self.codes
            .chunks(2)
            .map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(7))
            .collect()
    }
}

/// Pack `bits`-wide codes into 32-bit words in planes: with `m = codes.len() / (32 / bits)`,
/// word `j` holds codes `j, j + m, j + 2m, …` in its lowest bits first. Unpacking plane `k` is
/// then one shift and one mask over contiguous words, and the planes concatenate in order.
/// Stored as `i32` (the bit pattern), the int type every backend has. `codes.len()` must be a
/// multiple of `32 / bits`.
pub fn pack_words(codes: &[u8], bits: usize) -> Vec<i32> {
    let per = 32 / bits;
    assert_eq!(codes.len() % per, 0, "whole words of codes");
    let m = codes.len() / per;
    (0..m)
        .map(|j| (0..per).fold(0u32, |w, k| w | (u32::from(codes[k * m + j]) << (bits * k))) as i32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_book_bit_patterns() {
        // spec §3.1, f32 hex of codes 1, 6, 8 and 13
        assert_eq!(NF4[1].to_bits(), 0xbf3239b1);
        assert_eq!(NF4[6].to_bits(), 0xbdba7871);
        assert_eq!(NF4[8].to_bits(), 0x3da2faff);
        assert_eq!(NF4[13].to_bits(), 0x3f1007ab);
        // the f32 midpoints of spec §3.2
        let m = midpoints(&NF4);
        assert_eq!(m[0], -0.848_096_4);
        assert_eq!(m[12], 0.501_663_45);
        assert_eq!(m[14], 0.861_478_45);
    }

    #[test]
    fn worked_example_of_the_spec() {
        // block [1.0, -1.0, 0.5, 0.0, …] with absmax 1 → codes 15, 0, 12, 7 → bytes 0xF0, 0xC7
        let mut x = vec![0.0f32; 64];
        x[..4].copy_from_slice(&[1.0, -1.0, 0.5, 0.0]);
        let q = Nf4::quantize(&x, 64, false);
        assert_eq!(&q.bnb_bytes()[..2], &[0xF0, 0xC7]);
        assert_eq!(q.absmax, Absmax::Plain(vec![1.0]));
    }

    #[test]
    fn threads_change_nothing() {
        // 2^20 + 100 values: the parallel path, with a partial last block
        let x: Vec<f32> = (0..(1usize << 20) + 100)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
            .collect();
        assert_eq!(
            quantize_blockwise_par(&x, &NF4, 64),
            quantize_blockwise(&x, &NF4, 64)
        );
    }

    #[test]
    fn dynamic_map_shape() {
        let m = dynamic_map();
        assert_eq!(m[0], -0.992_968_75);
        assert_eq!(m[127], 0.0);
        assert_eq!(m[254], 0.992_968_75);
        assert_eq!(m[255], 1.0);
        assert!(m.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn words_hold_codes_in_planes() {
        let codes: Vec<u8> = (0..16).map(|i| i as u8).collect();
        // two words: planes k = 0..8 hold codes 2k (word 0) and 2k + 1 (word 1)
        assert_eq!(
            pack_words(&codes, 4),
            vec![0xECA8_6420u32 as i32, 0xFDB9_7531u32 as i32]
        );
        assert_eq!(pack_words(&[1, 255, 3, 4], 8), vec![0x0403_FF01]);
    }
}
