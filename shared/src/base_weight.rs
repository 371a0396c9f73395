//! The frozen base weight of a linear layer: a dense tensor, or an NF4-quantized one (QLoRA)
//! that is dequantized for each matmul, as bitsandbytes' `MatMul4Bit` does (spec §3.5).
//!
//! The NF4 weight is stored as packed 4-bit codes (8 per 32-bit word, about 4.1 bits per value
//! with double quantization). Dequantizing runs on the device with tensor ops that autodiff does
//! not record (nothing in it needs a gradient), so the backward pass reaches the input and the
//! LoRA weights only; CubeCL backends (CUDA, wgpu) run it as one kernel instead
//! (`ModelBackend::nf4_weight`, `kernels/nf4.rs`). Under autodiff the matmul is one graph node that keeps the codes and
//! dequantizes again in backward (`ModelBackend::nf4_matmul`), so no dequantized weight outlives
//! its matmul.

use burn::module::{Module, Param, ParamId};
use burn::tensor::{DType, ElementConversion, Int, Tensor, TensorData, backend::Backend};

use crate::nf4::{Absmax, NESTED_BLOCKSIZE, Nf4, pack_words};

/// How the frozen base weights of the linear layers are held (`--quant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseFormat {
    /// Dense, in the checkpoint's precision converted to f32 (or bf16 with `cast_base`).
    #[default]
    Dense,
    /// NF4 with blocks of 64, double-quantized or not (QLoRA).
    Nf4 { double: bool },
}

// One per linear layer, so the size difference does not matter (and burn's Module derive has no
// Box).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BaseWeight<B: Backend> {
    /// `[in, out]` (burn layout).
    Dense(Param<Tensor<B, 2>>),
    Nf4(Nf4Weight<B>),
}

/// Double-quantized absmax values on the device.
#[derive(Module, Debug)]
pub struct NestedAbsmax<B: Backend> {
    /// 8-bit codes, 4 per word (`pack_words`).
    pub codes: Param<Tensor<B, 1, Int>>,
    /// f32, one per 256 blocks.
    pub absmax2: Param<Tensor<B, 1>>,
    /// bnb's `create_dynamic_map`, 256 values.
    pub code2: Param<Tensor<B, 1>>,
    pub offset: f64,
}

#[derive(Module, Debug)]
pub struct Nf4Weight<B: Backend> {
    /// 4-bit codes of the HF `[out, in]` weight, row-major, padded to whole blocks, 8 per word
    /// (`pack_words`).
    pub codes: Param<Tensor<B, 1, Int>>,
    /// f32 absmax per block, when not double-quantized.
    pub absmax: Option<Param<Tensor<B, 1>>>,
    pub nested: Option<NestedAbsmax<B>>,
    /// The NF4 code book.
    pub code: Param<Tensor<B, 1>>,
    pub blocksize: usize,
    pub d_input: usize,
    pub d_output: usize,
    /// Multiply in bf16 (bnb's `bnb_4bit_compute_dtype=bfloat16`) instead of f32.
    pub bf16: bool,
}

fn ints<B: Backend>(words: Vec<i32>, device: &B::Device) -> Param<Tensor<B, 1, Int>> {
    let n = words.len();
    Param::initialized(
        ParamId::new(),
        Tensor::from_data(TensorData::new(words, [n]), (device, DType::I32)),
    )
}

fn floats<B: Backend>(v: Vec<f32>, device: &B::Device) -> Param<Tensor<B, 1>> {
    let n = v.len();
    Param::from_tensor(Tensor::from_data(TensorData::new(v, [n]), device))
}

/// The first `len` codes of `bits` bits from words packed by [`pack_words`]: per plane one
/// shift and one mask over the contiguous words, the planes concatenated.
fn unpack<B: Backend>(words: Tensor<B, 1, Int>, bits: usize, len: usize) -> Tensor<B, 1, Int> {
    let mask = ((1i64 << bits) - 1).elem::<B::IntElem>();
    let planes = (0..32 / bits)
        .map(|k| {
            let plane = if k == 0 {
                words.clone()
            } else {
                words
                    .clone()
                    .bitwise_right_shift_scalar(((bits * k) as i64).elem::<B::IntElem>())
            };
            plane.bitwise_and_scalar(mask)
        })
        .collect();
    prefix(Tensor::cat(planes, 0), len)
}

/// The first `len` values (no view at all when that is every value: a narrowed view would be
/// copied by the next reshape on some backends).
fn prefix<B: Backend, K: burn::tensor::BasicOps<B>>(
    t: Tensor<B, 1, K>,
    len: usize,
) -> Tensor<B, 1, K> {
    if t.dims()[0] == len {
        t
    } else {
        t.narrow(0, 0, len)
    }
}

/// `values[j] · scale[j / block]` for `len` values, `values` padded to whole blocks.
fn scale_blocks<B: Backend>(
    values: Tensor<B, 1>,
    scale: Tensor<B, 1>,
    block: usize,
    len: usize,
) -> Tensor<B, 1> {
    let nb = scale.dims()[0];
    prefix(
        (values.reshape([nb, block]) * scale.reshape([nb, 1])).reshape([nb * block]),
        len,
    )
}

impl<B: Backend> Nf4Weight<B> {
    /// Quantize an HF `[out, in]` weight (row-major) onto `device`.
    pub fn quantize(
        hf: &[f32],
        d_input: usize,
        d_output: usize,
        double: bool,
        device: &B::Device,
    ) -> Self {
        let q = Nf4::quantize(hf, crate::nf4::BLOCKSIZE, double);
        Self::from_host(&q, d_input, d_output, device)
    }

    pub fn from_host(q: &Nf4, d_input: usize, d_output: usize, device: &B::Device) -> Self {
        assert_eq!(q.codes.len(), d_input * d_output, "one code per weight");
        let (absmax, nested) = match &q.absmax {
            Absmax::Plain(v) => (Some(floats(v.clone(), device)), None),
            Absmax::Double {
                codes,
                absmax2,
                offset,
                code2,
            } => {
                // pad with code 127 (the value 0) to whole nested blocks
                let mut padded = codes.clone();
                padded.resize(absmax2.len() * NESTED_BLOCKSIZE, 127);
                let nested = NestedAbsmax {
                    codes: ints(pack_words(&padded, 8), device),
                    absmax2: floats(absmax2.clone(), device),
                    code2: floats(code2.clone(), device),
                    offset: f64::from(*offset),
                };
                (None, Some(nested))
            }
        };
        // pad with code 7 (the value 0) to whole blocks
        let blocks = q.codes.len().div_ceil(q.blocksize);
        let mut codes = q.codes.clone();
        codes.resize(blocks * q.blocksize, 7);
        Self {
            codes: ints(pack_words(&codes, 4), device),
            absmax,
            nested,
            code: floats(q.code.clone(), device),
            blocksize: q.blocksize,
            d_input,
            d_output,
            bf16: false,
        }
    }

    fn blocks(&self) -> usize {
        (self.d_input * self.d_output).div_ceil(self.blocksize)
    }

    /// The f32 absmax of every block.
    fn absmax_values(&self) -> Tensor<B, 1> {
        match (&self.absmax, &self.nested) {
            (Some(a), _) => a.val(),
            (None, Some(n)) => {
                let padded = n.absmax2.dims()[0] * NESTED_BLOCKSIZE;
                let codes = unpack(n.codes.val(), 8, padded);
                let values = n.code2.val().select(0, codes);
                scale_blocks(values, n.absmax2.val(), NESTED_BLOCKSIZE, self.blocks()) + n.offset
            }
            (None, None) => unreachable!("an NF4 weight has absmax values"),
        }
    }

    /// The dequantized weight in HF layout `[out, in]`, f32 (bnb computes this in f32 too).
    pub fn dequantize_hf(&self) -> Tensor<B, 2> {
        let n = self.d_input * self.d_output;
        let padded = self.blocks() * self.blocksize;
        let codes = unpack(self.codes.val(), 4, padded);
        let values = self.code.val().select(0, codes);
        scale_blocks(values, self.absmax_values(), self.blocksize, n)
            .reshape([self.d_output, self.d_input])
    }

    /// The dequantized weight `[out, in]` in the dtype its matmul runs in.
    pub fn compute_weight(&self) -> Tensor<B, 2> {
        let w = self.dequantize_hf();
        if self.bf16 {
            w.cast(burn::tensor::FloatDType::BF16)
        } else {
            w
        }
    }

    /// Number of weights it stands for.
    pub fn num_weights(&self) -> usize {
        self.d_input * self.d_output
    }
}

impl<B: Backend> BaseWeight<B> {
    /// `[in, out]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            BaseWeight::Dense(w) => w.dims(),
            BaseWeight::Nf4(q) => [q.d_input, q.d_output],
        }
    }

    /// The weight as a dense `[in, out]` tensor, in the dtype its matmul runs in.
    pub fn dense(&self) -> Tensor<B, 2> {
        match self {
            BaseWeight::Dense(w) => w.val(),
            BaseWeight::Nf4(q) => q.compute_weight().transpose(),
        }
    }

    pub fn is_quantized(&self) -> bool {
        !matches!(self, BaseWeight::Dense(_))
    }

    /// The dtype its matmul multiplies in.
    pub fn compute_dtype(&self) -> burn::tensor::FloatDType {
        match self {
            BaseWeight::Dense(w) => w.val().dtype().into(),
            BaseWeight::Nf4(q) if q.bf16 => burn::tensor::FloatDType::BF16,
            BaseWeight::Nf4(_) => burn::tensor::FloatDType::F32,
        }
    }
}

impl<B: crate::ModelBackend> crate::GptNeoxForCausalLM<B> {
    /// The parameter count as PEFT prints it: a quantized weight counts as the weights it stands
    /// for, its scales and code books as nothing.
    pub fn num_model_params(&self) -> usize {
        let mut n = self.num_params();
        for (_, lin) in self.linears() {
            if let BaseWeight::Nf4(q) = &lin.weight {
                n = n - q.num_params() + q.num_weights();
            }
        }
        n
    }
}
