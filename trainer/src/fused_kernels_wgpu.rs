//! shared's fused CubeCL kernels (`shared::kernels`: GELU and LayerNorm, forward and backward)
//! on burn-wgpu, whose CubeCL kernels lavapipe runs on a CPU as CUDA runs them on a GPU,
//! against the formulas computed with burn's ops on the CPU (Flex, `ModelBackend`'s defaults).

use burn::backend::{Flex, Wgpu};
use burn::tensor::{Distribution, FloatDType, Tensor, Tolerance, backend::Backend};
use shared::ModelBackend;

type G = Wgpu<f32, i32>;

/// The same random tensor on the CPU and on wgpu.
fn pair<const D: usize>(
    shape: [usize; D],
    seed: u64,
    scale: f32,
) -> (Tensor<Flex, D>, Tensor<G, D>) {
    Flex::seed(&Default::default(), seed);
    let cpu = Tensor::<Flex, D>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
        * scale;
    let gpu = Tensor::from_data(cpu.to_data(), &Default::default());
    (cpu, gpu)
}

fn close<const D: usize>(got: Tensor<G, D>, want: Tensor<Flex, D>) {
    got.into_data()
        .assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
}

/// Scalar loads (77 elements a row) and vector loads (4 at a time).
#[test]
fn gelu_forward_and_backward_match_the_formulas() {
    for shape in [[3, 5, 77], [2, 3, 96]] {
        let (x, xg) = pair(shape, 1, 3.0);
        let (g, gg) = pair(shape, 2, 1.0);
        close(
            G::gelu_erf(xg.clone(), false),
            Flex::gelu_erf(x.clone(), false),
        );
        close(G::gelu_erf_backward(xg, gg), Flex::gelu_erf_backward(x, g));
    }
}

/// The three-term sum: a bias broadcast over the rows (rows of 6: vectors of 2; of 8: of 4),
/// three full terms (rows of 5: scalars), a non-contiguous term.
#[test]
fn sum3_matches_the_sums() {
    for (shape, bias) in [([2, 3, 6], true), ([2, 3, 8], true), ([2, 3, 5], false)] {
        let (a, ag) = pair(shape, 21, 1.0);
        let (c, cg) = pair([shape[1], shape[0], shape[2]], 23, 1.0);
        let (c, cg) = (c.swap_dims(0, 1), cg.swap_dims(0, 1));
        let (b, bg) = if bias {
            pair([1, 1, shape[2]], 22, 1.0)
        } else {
            pair(shape, 22, 1.0)
        };
        close(
            G::sum3_as(ag.clone(), bg, cg.clone(), FloatDType::F32),
            Flex::sum3_as(a.clone(), b, c.clone(), FloatDType::F32),
        );
        // two terms, the second in half precision (f16 standing in for bf16: the LayerNorms'
        // gradient added to the residual stream's, `ModelBackend::stash_bf16`)
        let (ch, chg) = (c.cast(FloatDType::F16), cg.cast(FloatDType::F16));
        close(
            G::sum2_as(ag, chg, FloatDType::F32),
            Flex::sum2_as(a, ch, FloatDType::F32),
        );
    }
}

/// The residual's five-term sum (two biases; rows of 8: vectors of 4, of 6: of 2) and GELU of
/// a product plus its bias, forward and backward.
#[test]
fn sum5_and_gelu_bias_match_the_formulas() {
    for n in [8, 6] {
        let [a, b, c] = [31, 32, 33].map(|s| pair([2, 3, n], s, 1.0));
        let [p, q] = [34, 35].map(|s| pair([1, 1, n], s, 1.0));
        close(
            G::sum5_as([a.1, p.1, b.1, q.1, c.1], FloatDType::F32),
            Flex::sum5_as([a.0, p.0, b.0, q.0, c.0], FloatDType::F32),
        );
        let (x, xg) = pair([2, 3, n], 36, 3.0);
        let (bias, biasg) = pair([n], 37, 1.0);
        let (g, gg) = pair([2, 3, n], 38, 1.0);
        close(
            G::gelu_erf_bias(xg.clone(), biasg.clone(), false),
            Flex::gelu_erf_bias(x.clone(), bias.clone(), false),
        );
        close(
            G::gelu_erf_bias_backward(xg, biasg, gg),
            Flex::gelu_erf_bias_backward(x, bias, g),
        );
    }
}

/// Runs `check` on both paths of the row kernels: reductions over a cube through shared
/// memory (lavapipe's, WebGPU's), then through plane operations with rows stacked in a cube
/// (CUDA's; CubeCL does not advertise planes for lavapipe, which runs them).
fn on_both_row_paths(check: impl Fn()) {
    for planes in [false, true] {
        shared::kernels::force_row_planes(planes);
        check();
    }
    shared::kernels::force_row_planes(false);
}

/// Row lengths below and above the 32 units of a row's cube (a row strided over by each unit),
/// scalar and vector loads, a non-contiguous input, and more rows than a cube-count dimension
/// holds (65,535 on wgpu), on both paths.
#[test]
fn layernorm_forward_and_backward_match_the_formulas() {
    on_both_row_paths(layernorm_checks);
}

fn layernorm_checks() {
    for (shape, swap) in [
        ([2, 3, 24], false),
        ([2, 3, 32], false),
        ([2, 3, 256], false),
        ([3, 4, 300], true),
        ([1, 70_000, 5], false),
    ] {
        let (x, xg) = pair(shape, 3, 2.0);
        let (x, xg) = if swap {
            (x.swap_dims(0, 1), xg.swap_dims(0, 1))
        } else {
            (x + 0.5, xg + 0.5)
        };
        let n = shape[2];
        let (gamma, gammag) = pair([n], 4, 1.0);
        let (beta, betag) = pair([n], 5, 1.0);
        let (g, gg) = pair(x.dims(), 6, 1.0);
        close(
            G::layernorm(
                xg.clone(),
                gammag.clone(),
                betag,
                1e-5,
                false,
                FloatDType::F32,
            ),
            Flex::layernorm(x.clone(), gamma.clone(), beta, 1e-5, false, FloatDType::F32),
        );
        // burn 0.21's own `sum_dim` over 65,535 or more rows is wrong on wgpu (it returns
        // 65,532 for as many ones), so gamma's and beta's gradients, summed by it, are
        // checked on the smaller shapes only
        let rows = x.dims()[0] * x.dims()[1];
        for affine in [false, rows < 65_535] {
            let (dx, dgb) =
                G::layernorm_backward(xg.clone(), gammag.clone(), gg.clone(), 1e-5, affine);
            let (rdx, rdgb) =
                Flex::layernorm_backward(x.clone(), gamma.clone(), g.clone(), 1e-5, affine);
            close(dx, rdx);
            assert_eq!(dgb.is_some(), affine);
            if let (Some((dgamma, dbeta)), Some((rdgamma, rdbeta))) = (dgb, rdgb) {
                close(dgamma, rdgamma);
                close(dbeta, rdbeta);
            }
        }
    }
}

/// LayerNorm writing another dtype than gamma's, and its backward reading a gradient in it (a
/// bf16 model's LayerNorm on CUDA): lavapipe has no bf16, so f16 stands in for it, with the
/// tolerance of f16's rounding.
#[test]
fn layernorm_in_another_dtype_than_gammas() {
    let half = FloatDType::F16;
    let (x, xg) = pair([2, 3, 64], 3, 2.0);
    let (gamma, gammag) = pair([64], 4, 1.0);
    let (beta, betag) = pair([64], 5, 1.0);
    let (g, gg) = pair([2, 3, 64], 6, 1.0);
    let near = |got: Tensor<G, 3>, want: Tensor<Flex, 3>| {
        assert_eq!(got.dtype(), half.into());
        got.cast(FloatDType::F32)
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(2e-3, 2e-3));
    };
    let f32 = FloatDType::F32;
    near(
        G::layernorm(xg.clone(), gammag.clone(), betag, 1e-5, false, half),
        Flex::layernorm(x.clone(), gamma.clone(), beta, 1e-5, false, f32),
    );
    let (dx, dgb) = G::layernorm_backward(xg, gammag, gg.cast(half), 1e-5, true);
    let (rdx, rdgb) = Flex::layernorm_backward(x, gamma, g, 1e-5, true);
    near(dx, rdx);
    let ((dgamma, dbeta), (rdgamma, rdbeta)) = (dgb.unwrap(), rdgb.unwrap());
    // gamma's and beta's gradients in gamma's dtype
    assert_eq!(dgamma.dtype(), f32.into());
    assert_eq!(dbeta.dtype(), f32.into());
    for (a, b) in [(dgamma, rdgamma), (dbeta, rdbeta)] {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(2e-3, 2e-3));
    }
}

/// The causal softmax (a square mask, a KV cache's offset mask, one query, rows longer than a
/// cube's 32 units, scalar and vector loads with the mask ending inside a vector, more rows
/// than a cube-count dimension holds), its backward pass from the scores, and attention
/// through it against burn-flex's own attention, on both paths.
#[test]
fn causal_softmax_and_attention_match_the_formulas() {
    on_both_row_paths(softmax_checks);
}

fn softmax_checks() {
    for shape in [
        [2, 3, 5, 5],
        [1, 2, 3, 7],
        [1, 2, 300, 300],
        [2, 2, 5, 12],
        [1000, 70, 1, 4],
    ] {
        let (s, sg) = pair(shape, 7, 3.0);
        let (dp, dpg) = pair(shape, 8, 1.0);
        let p = Flex::causal_softmax(s.clone(), 0.3);
        close(G::causal_softmax(sg.clone(), 0.3), p.clone());
        // the backward pass from the scores: the probabilities and the scores' gradient (in
        // f32 here: lavapipe has no bf16)
        let (pg, dsg) = G::causal_softmax_backward(sg.clone(), dpg.clone(), 0.3, FloatDType::F32);
        close(pg, p.clone());
        close(dsg, Flex::softmax_backward(p.clone(), dp.clone(), 0.3));
        // from a half-precision dp (f16 standing in for bf16, as `--dtype bf16`'s product
        // writes it), the scores in f32: the formula on the rounded dp
        let half = dpg.cast(FloatDType::F16);
        let (_, dsg) = G::causal_softmax_backward(sg.clone(), half, 0.3, FloatDType::F32);
        let rounded = dp.cast(FloatDType::F16).cast(FloatDType::F32);
        close(dsg, Flex::softmax_backward(p, rounded, 0.3));
    }
    let (q, qg) = pair([2, 3, 4, 8], 9, 1.0);
    let (k, kg) = pair([2, 3, 6, 8], 10, 1.0);
    let (v, vg) = pair([2, 3, 6, 8], 11, 1.0);
    close(
        G::causal_attention(qg, kg, vg),
        Flex::causal_attention(q, k, v),
    );
}

/// Attention through the autodiff node in query blocks on wgpu (3 blocks of 2, 2 and 3
/// queries: the softmax kernels' offset masks, views of q, k, v and the output's gradient, the
/// key and value gradients added into rows) against the whole sequence on the CPU: the output
/// and the gradient of the fused projection.
#[test]
fn attention_in_blocks_matches_the_cpu() {
    use burn::backend::Autodiff;
    use shared::attention_blocks::with_blocks;
    use shared::rope::Rope;
    type AF = Autodiff<Flex>;
    type AG = Autodiff<G>;
    let (x, xg) = pair([2, 3, 7, 24], 41, 1.0);
    let (w, wg) = pair([2, 3, 7, 8], 42, 1.0);
    let x = Tensor::<AF, 4>::from_inner(x).require_grad();
    let rope = Rope::<AF>::new(4, 8, 10000.0, 0, 7, &Default::default());
    let y = AF::qkv_attention(x.clone(), &rope, false);
    let g = x.grad(&(y.clone() * Tensor::from_inner(w)).sum().backward());
    let (yg, gg) = with_blocks(3, 1, || {
        let x = Tensor::<AG, 4>::from_inner(xg).require_grad();
        let rope = Rope::<AG>::new(4, 8, 10000.0, 0, 7, &Default::default());
        let y = AG::qkv_attention(x.clone(), &rope, false);
        let g = x.grad(&(y.clone() * Tensor::from_inner(wg)).sum().backward());
        (y.inner(), g.unwrap())
    });
    close(yg, y.inner());
    close(gg, g.unwrap());
}

/// The loss (rows of weight 0 included, targets at both ends of the vocabulary, in the first
/// and the last lanes of a vector load) and its gradient, on both paths.
/// The strided copies (`kernels/copy.rs`): a transposed view made dense (vectors of 4 along
/// rows of 8; scalars along rows of 6, whose strides 4 does not divide), the transposed views
/// of two blocks concatenated (attention's merge of its query blocks), and rank 2. Compared
/// with the same ops on the CPU, and laid out densely (`into_data` reads a view through its
/// strides either way, so the layout is checked on the primitive).
#[test]
fn strided_copies_match_the_cpu() {
    for d in [8, 6] {
        let (x, xg) = pair([2, 3, 5, d], 61, 1.0);
        let (x, xg) = (x.swap_dims(1, 2), xg.swap_dims(1, 2));
        let dense = G::contiguous(xg.clone());
        assert!(laid_out_dense(&dense));
        close(dense, x.clone());
        let (y, yg) = pair([2, 3, 4, d], 62, 1.0);
        let (y, yg) = (y.swap_dims(1, 2), yg.swap_dims(1, 2));
        let cat = G::concat(vec![xg, yg], 1);
        assert!(laid_out_dense(&cat));
        close(cat, Tensor::cat(vec![x, y], 1));
    }
    let (a, ag) = pair([6, 4], 63, 1.0);
    let (b, bg) = pair([6, 8], 64, 1.0);
    close(G::concat(vec![ag, bg], 1), Tensor::cat(vec![a, b], 1));
}

/// Whether `t`'s storage is dense in its own order (burn-fusion's handles do not say: true).
fn laid_out_dense<const D: usize>(t: &Tensor<G, D>) -> bool {
    #[cfg(not(feature = "fusion"))]
    return t.clone().into_primitive().tensor().is_contiguous();
    #[cfg(feature = "fusion")]
    return {
        let _ = t;
        true
    };
}

#[test]
fn weighted_nll_and_its_gradient_match_the_formulas() {
    on_both_row_paths(loss_checks);
}

fn loss_checks() {
    use burn::tensor::{Int, TensorData};
    let (logits, logitsg) = pair([2, 3, 1000], 12, 4.0);
    let targets = TensorData::new(vec![0i64, 999, 5, 17, 0, 998], [2, 3, 1]);
    let weights = TensorData::new(vec![1.0f32, 0.5, 0.0, 1.0, 2.0, 0.0], [2, 3, 1]);
    let (cpu, gpu) = (Default::default(), Default::default());
    let t = Tensor::<Flex, 3, Int>::from_data(targets.clone(), &cpu);
    let tg = Tensor::<G, 3, Int>::from_data(targets, &gpu);
    let w = Tensor::<Flex, 3>::from_data(weights.clone(), &cpu);
    let wg = Tensor::<G, 3>::from_data(weights, &gpu);
    close(
        G::weighted_nll(logitsg.clone(), tg.clone(), wg.clone()),
        Flex::weighted_nll(logits.clone(), t.clone(), w.clone()),
    );
    let g = Tensor::<Flex, 1>::from_floats([0.7], &cpu);
    let gg = Tensor::<G, 1>::from_floats([0.7], &gpu);
    let want = Flex::weighted_nll_backward(logits, t, w, g);
    close(
        G::weighted_nll_backward(logitsg.clone(), tg.clone(), wg.clone(), gg.clone()),
        want.clone(),
    );
    // written in another dtype (bf16 for a bf16 head on CUDA; lavapipe has f16), from the
    // same f32 computation: f32's gradient rounded once
    let half = G::weighted_nll_backward_as(logitsg, tg, wg, gg, FloatDType::F16);
    assert_eq!(half.dtype(), FloatDType::F16.into());
    half.cast(FloatDType::F32)
        .into_data()
        .assert_approx_eq::<f32>(
            &want.cast(FloatDType::F16).cast(FloatDType::F32).into_data(),
            Tolerance::rel_abs(1e-3, 1e-6),
        );
}

/// The split of the fused projection with the rotary embedding (partial, as GPT-NeoX's; none;
/// the whole head), read through the strides of the `[b, T, h, 3·d]` → `[b, h, T, 3·d]` view
/// the model makes (or a view that is not dense, copied first), vectors of 2 and 4, and its
/// adjoint.
#[test]
fn split_qkv_rope_and_its_adjoint_match_the_formulas() {
    use shared::rope::Rope;
    // vectors of 2 (a rotary half of 2), 4; a view that is not dense (copied first)
    for (ndims, sliced) in [(4, false), (0, false), (8, false), (8, true)] {
        let (qkv, qkvg) = if sliced {
            let (a, b) = pair([2, 7, 3, 24], 13, 1.0);
            (a.slice([0..2, 1..6]), b.slice([0..2, 1..6]))
        } else {
            pair([2, 5, 3, 24], 13, 1.0)
        };
        let (qkv, qkvg) = (qkv.swap_dims(1, 2), qkvg.swap_dims(1, 2));
        let rope = Rope::<Flex>::new(ndims, 8, 10000.0, 2, 5, &Default::default());
        let ropeg = Rope::<G>::new(ndims, 8, 10000.0, 2, 5, &Default::default());
        let (q, k, v) = Flex::split_qkv_rope(qkv, &rope);
        let (qg, kg, vg) = G::split_qkv_rope(qkvg, &ropeg);
        close(qg, q);
        close(kg, k);
        close(vg, v);
        let (dq, dqg) = pair([2, 3, 5, 8], 14, 1.0);
        let (dk, dkg) = pair([2, 3, 5, 8], 15, 1.0);
        let (dv, dvg) = pair([2, 3, 5, 8], 16, 1.0);
        if ndims == 8 && !sliced {
            // from half-precision gradients (f16 standing in for bf16, which lavapipe lacks,
            // as `--dtype bf16`'s products write them), written in half precision: the
            // rotary transpose in f32 from the rounded inputs, rounded once at the end
            let half = |t: &Tensor<G, 4>| t.clone().cast(FloatDType::F16);
            let round = |t: &Tensor<Flex, 4>| t.clone().cast(FloatDType::F16).cast(FloatDType::F32);
            let got = G::split_qkv_rope_backward(
                half(&dqg),
                half(&dkg),
                half(&dvg),
                &ropeg,
                FloatDType::F16,
            );
            assert_eq!(got.dtype(), FloatDType::F16.into());
            let want = Flex::split_qkv_rope_backward(
                round(&dq),
                round(&dk),
                round(&dv),
                &rope,
                FloatDType::F32,
            );
            got.cast(FloatDType::F32)
                .into_data()
                .assert_approx_eq::<f32>(&round(&want).into_data(), Tolerance::rel_abs(1e-3, 1e-4));
        }
        let d = Flex::split_qkv_rope_backward(dq, dk, dv, &rope, FloatDType::F32);
        let dg = G::split_qkv_rope_backward(dqg, dkg, dvg, &ropeg, FloatDType::F32);
        // and the layout it is written in reshapes as the projection's gradient
        let flat = |t: Tensor<Flex, 4>| t.swap_dims(1, 2).reshape([2, 5, 72]);
        close(
            dg.clone().swap_dims(1, 2).reshape([2, 5, 72]),
            flat(d.clone()),
        );
        close(dg, d);
    }
}

/// The stream-ordering kernels of cuBLAS products on a stream of their own
/// (`LAW_POLYGLOT_MATMUL=cublas-flags`, and the default where CubeCL's stream is not found):
/// `signal` stores a number in a flag, `wait_for` returns once a flag has reached a number (here
/// set by an earlier `signal` on the same stream, as a waited-on flag would be by cuBLAS's
/// stream).
#[test]
fn flag_kernels_store_and_wait() {
    use burn::tensor::{DType, Int, TensorData};
    // the CubeCL backend itself (`G` is burn-fusion's wrapper in a `fusion` build)
    type C = burn_cubecl::CubeBackend<burn_cubecl::cubecl::wgpu::WgpuRuntime, f32, i32, u32>;
    let device = Default::default();
    let flags =
        Tensor::<C, 1, Int>::from_data(TensorData::new(vec![0u32, 0], [2]), (&device, DType::U32));
    let t = flags.into_primitive();
    shared::kernels::signal(&t, 1, 5);
    shared::kernels::wait_for(&t, 1, 5);
    shared::kernels::wait_for(&t, 1, 3);
    shared::kernels::signal(&t, 0, 7);
    let got = Tensor::<C, 1, Int>::from_primitive(t).into_data();
    assert_eq!(got.to_vec::<u32>().unwrap(), vec![7, 5]);
}

/// NF4 dequantization in one kernel, with plain and with double-quantized block scales, for
/// weight counts that are no whole number of blocks (and blocks no whole number of nested
/// groups), against the tensor ops that compute it on the CPU.
#[test]
fn nf4_dequantization_matches_the_tensor_ops() {
    use shared::base_weight::Nf4Weight;
    use shared::nf4::{BLOCKSIZE, Nf4};
    // the CubeCL backend itself (`G` is burn-fusion's wrapper in a `fusion` build)
    type C = burn_cubecl::CubeBackend<burn_cubecl::cubecl::wgpu::WgpuRuntime, f32, i32, u32>;
    for (d_in, d_out, double) in [(40, 33, false), (40, 33, true), (64, 300, true)] {
        let hf: Vec<f32> = (0..d_in * d_out)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1 + i % 13) as f32)
            .collect();
        let q = Nf4::quantize(&hf, BLOCKSIZE, double);
        let cpu = Nf4Weight::<Flex>::from_host(&q, d_in, d_out, &Default::default());
        let gpu = Nf4Weight::<C>::from_host(&q, d_in, d_out, &Default::default());
        let got = C::nf4_weight(&gpu);
        assert_eq!(got.dims(), [d_out, d_in]);
        got.into_data().assert_approx_eq::<f32>(
            &cpu.compute_weight().into_data(),
            Tolerance::rel_abs(1e-6, 1e-7),
        );
    }
}

/// The demo model's forward, stage by stage, on wgpu against the CPU (`trainer check-device`,
/// whose CPU side matches HF transformers' golden values), on both row paths: a kernel that
/// reads or writes the wrong elements moves a stage by far more than rounding does.
#[test]
fn demo_forward_on_wgpu_matches_the_cpu() {
    on_both_row_paths(|| {
        let model = crate::paths::bundled(crate::paths::DEMO_MODEL);
        let diffs =
            crate::cmd::check_device::differences::<G>(&model, 37, &Default::default()).unwrap();
        // the embedding, 11 stages in each of 4 layers, the final LayerNorm and the logits
        assert_eq!(diffs.len(), 1 + 11 * 4 + 2);
        for (stage, e) in diffs {
            assert!(e < 1e-5, "{stage}: {e:e}");
        }
    });
}
