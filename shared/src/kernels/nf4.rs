//! An NF4 weight dequantized in one pass (`base_weight.rs` runs it as some 40 tensor ops, each
//! a launch and a pass over the weight: the planes of the packed codes, their concatenation,
//! the code-book lookup, the block scales, with double quantization the same again for the
//! scales, and the cast). One unit per packed word writes its eight weights, in f32 arithmetic,
//! as `Nf4Weight::dequantize_hf` computes them, in the dtype the matmul runs in.

use super::*;

/// The absmax of block `b`: `absmax[b]`, or with `double` the 8-bit code of block `b` (words
/// of 4 codes in planes of `m2` words, `pack_words`) looked up in `code2`, times `absmax2` of
/// its group of 256 blocks, plus `offset`.
#[cube]
fn block_absmax(
    b: usize,
    absmax: &Array<f32>,
    codes2: &Array<i32>,
    absmax2: &Array<f32>,
    code2: &Array<f32>,
    offset: f32,
    m2: usize,
    #[comptime] double: bool,
) -> f32 {
    if double {
        let shift = i32::cast_from(8 * (b / m2));
        let c = usize::cast_from((codes2[b % m2] >> shift) & 255);
        code2[c] * absmax2[b / 256] + offset
    } else {
        absmax[b]
    }
}

/// Unit `j` unpacks word `j` of the 4-bit codes (8 planes of `m` words: plane `k` holds code
/// `k·m + j`) into the weights `k·m + j` below `n`: `code[c]·absmax[i / blocksize]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn nf4_dequantize_kernel<O: Float>(
    words: &Array<i32>,
    code: &Array<f32>,
    absmax: &Array<f32>,
    codes2: &Array<i32>,
    absmax2: &Array<f32>,
    code2: &Array<f32>,
    out: &mut Array<O>,
    n: u32,
    blocksize: u32,
    offset: f32,
    m2: u32,
    #[comptime] double: bool,
    #[define(O)] _dtype: StorageType,
) {
    let j = ABSOLUTE_POS;
    let m = words.len();
    if j >= m {
        terminate!();
    }
    let word = words[j];
    let n = n as usize;
    #[unroll]
    for k in 0..8u32 {
        let i = k as usize * m + j;
        if i < n {
            let c = usize::cast_from((word >> i32::cast_from(4 * k)) & 15);
            let b = i / blocksize as usize;
            let a = block_absmax(
                b,
                absmax,
                codes2,
                absmax2,
                code2,
                offset,
                m2 as usize,
                double,
            );
            out[i] = O::cast_from(code[c] * a);
        }
    }
}

/// The parts of an NF4 weight the kernel reads: the packed 4-bit codes, the code book, and
/// the block absmax values (`Plain`) or their double quantization.
#[allow(clippy::large_enum_variant)]
pub enum Nf4Parts<R: CubeRuntime> {
    Plain {
        absmax: CubeTensor<R>,
    },
    Double {
        codes: CubeTensor<R>,
        absmax2: CubeTensor<R>,
        code2: CubeTensor<R>,
        offset: f32,
    },
}

/// The dequantized weight, `[rows, cols]` (HF's `[out, in]`), written in `out`, from packed
/// 4-bit `words` (i32), the f32 `code` book and the absmax `parts`.
pub fn nf4_dequantize<R: CubeRuntime>(
    words: CubeTensor<R>,
    code: CubeTensor<R>,
    parts: Nf4Parts<R>,
    [rows, cols]: [usize; 2],
    blocksize: usize,
    out: DType,
) -> CubeTensor<R> {
    let words = into_contiguous(words);
    let code = f32_contiguous(code);
    let w = empty_like(&words, Shape::new([rows, cols]), out);
    // a one-element placeholder for the arrays the other variant reads
    let unused = |dtype: DType| empty_like(&words, Shape::new([1]), dtype);
    let (absmax, codes2, absmax2, code2, offset, double) = match parts {
        Nf4Parts::Plain { absmax } => (
            f32_contiguous(absmax),
            unused(words.dtype),
            unused(DType::F32),
            unused(DType::F32),
            0.0,
            false,
        ),
        Nf4Parts::Double {
            codes,
            absmax2,
            code2,
            offset,
        } => (
            unused(DType::F32),
            into_contiguous(codes),
            f32_contiguous(absmax2),
            f32_contiguous(code2),
            offset,
            true,
        ),
    };
    let m2 = if double {
        codes2.meta.num_elements()
    } else {
        1
    };
    let (count, dim) = elemwise_launch(&words, 1);
    nf4_dequantize_kernel::launch::<R>(
        &words.client.clone(),
        count,
        dim,
        words.into_array_arg(),
        code.into_array_arg(),
        absmax.into_array_arg(),
        codes2.into_array_arg(),
        absmax2.into_array_arg(),
        code2.into_array_arg(),
        w.clone().into_array_arg(),
        (rows * cols) as u32,
        blocksize as u32,
        offset,
        m2 as u32,
        double,
        out.into(),
    );
    w
}
