//! Every GPU kernel against the CPU backend on random inputs of awkward shapes: batch 1, odd
//! spatial sizes, channel counts that are not multiples of the tile sizes, stride 2, padding 0
//! and 1, 1x1 and 7x7 kernels. Outputs start as NaN (test hook), so a NaN left over is an
//! element no thread wrote. Runs on lavapipe unless RESNET_WGPU_ADAPTER names another adapter.

mod gpu_common;
mod harness;

use gpu_common::{assert_close, assert_close_tol, both, cpu, down, values, worst_error};
use resnet_core::backend::{
    Activation, Backend, BatchStats, ChannelLayout, ConvGeometry, LogitsLayout, MatmulGeometry, PoolGeometry,
    RowLayout, RunningStatsUpdate, ScaleRule, ScalerGate, SgdStep, ShortcutGeometry, StatsSource, Storage,
};
use resnet_core::precision::Precision;
use resnet_core::Device;

fn upload_download_and_zeros_round_trip(dev: Device) {
    let g = dev.backend();
    for len in [1usize, 3, 256, 257, 100_003] {
        let v = values(len, len as u32);
        assert_eq!(down(&g.upload(&v).unwrap()), v);
        assert_eq!(down(&g.zeros(len).unwrap()), vec![0.0; len]);
    }
    assert!(down(&g.upload(&[]).unwrap()).is_empty());
    // Several at once (one staging buffer, one wait), an empty one among them.
    let parts: Vec<Vec<f32>> = [1usize, 0, 257, 3].iter().map(|&n| values(n, n as u32 + 7)).collect();
    let stored: Vec<_> = parts.iter().map(|p| g.upload(p).unwrap()).collect();
    assert_eq!(g.download_many(&stored.iter().collect::<Vec<_>>()).unwrap(), parts);
}

fn elementwise_ops_match_the_cpu(dev: Device) {
    let g = dev.backend();
    for len in [1usize, 255, 1000, 70_001] {
        let (a, b) = (values(len, 1), values(len, 2));
        let (ga, ca) = both(g, &a);
        let (gb, cb) = both(g, &b);
        let c = cpu();
        assert_close(
            "add",
            &down(&g.add(&ga, &gb).unwrap()),
            &down(&c.add(&ca, &cb).unwrap()),
        );
        assert_close(
            "scale",
            &down(&g.scale(&ga, -0.37).unwrap()),
            &down(&c.scale(&ca, -0.37).unwrap()),
        );
        for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
            let what = format!("{act:?}");
            assert_close(
                &what,
                &down(&g.activation(&ga, act).unwrap()),
                &down(&c.activation(&ca, act).unwrap()),
            );
            assert_close(
                &format!("add+{what}"),
                &down(&g.add_activation(&ga, &gb, act).unwrap()),
                &down(&c.add_activation(&ca, &cb, act).unwrap()),
            );
            let (gy, cy) = (g.activation(&ga, act).unwrap(), c.activation(&ca, act).unwrap());
            assert_close(
                &format!("{what} backward"),
                &down(&g.activation_backward(&gy, &gb, act).unwrap()),
                &down(&c.activation_backward(&cy, &cb, act).unwrap()),
            );
        }
    }
    // Saturating inputs: tanh and sigmoid must not turn into NaN.
    let big = [-1000.0f32, -90.0, -20.0, 0.0, 20.0, 90.0, 1000.0];
    let (gb, cb) = both(g, &big);
    for act in [Activation::Tanh, Activation::Sigmoid] {
        assert_close(
            "saturated",
            &down(&g.activation(&gb, act).unwrap()),
            &down(&cpu().activation(&cb, act).unwrap()),
        );
    }
}

fn a_dispatch_larger_than_one_grid_dimension_covers_every_element(dev: Device) {
    let g = dev.backend();
    // More than 65535 workgroups of 256: the 2-D grid path.
    let len = 65_536 * 256 + 3;
    let a = vec![1.5f32; len];
    let ga = g.upload(&a).unwrap();
    let y = down(&g.scale(&ga, 2.0).unwrap());
    assert!(
        y.iter().all(|&v| v == 3.0),
        "an element of a large dispatch was not written"
    );
}

/// (n, c_in, h, w, c_out, k, stride, padding)
type ConvShape = (usize, usize, usize, usize, usize, usize, usize, usize);
const CONV_SHAPES: &[ConvShape] = &[
    (1, 3, 7, 5, 4, 3, 1, 1),
    (3, 2, 9, 9, 5, 3, 2, 1),
    (2, 4, 6, 6, 3, 1, 1, 0),
    (2, 4, 7, 7, 3, 1, 2, 0),
    (1, 2, 11, 10, 2, 7, 2, 3),
    (5, 1, 5, 5, 2, 3, 1, 0),
    (2, 3, 4, 4, 2, 5, 3, 2),
    (2, 37, 9, 9, 70, 3, 1, 1),
    (1, 130, 5, 5, 129, 3, 2, 1),
    (3, 67, 6, 5, 131, 1, 1, 0),
    (2, 33, 8, 8, 17, 1, 2, 0),
    (8, 16, 16, 16, 16, 3, 1, 1),
    (1, 3, 19, 17, 9, 7, 2, 3),
    (1, 40, 4, 4, 300, 1, 2, 0),
];

fn convolution_forward_matches_the_cpu(dev: Device) {
    let g = dev.backend();
    for (i, &(n, c, h, w, o, k, s, p)) in CONV_SHAPES.iter().enumerate() {
        let geo = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
        let (gx, cx) = both(g, &values(n * c * h * w, 10 + i as u32));
        let (gw, cw) = both(g, &values(o * c * k * k, 20 + i as u32));
        let (gb, cb) = both(g, &values(o, 30 + i as u32));
        let what = format!("conv2d {geo:?}");
        assert_close(
            &what,
            &down(&g.conv2d(&gx, &gw, None, &geo).unwrap()),
            &down(&cpu().conv2d(&cx, &cw, None, &geo).unwrap()),
        );
        assert_close(
            &format!("{what} + bias"),
            &down(&g.conv2d(&gx, &gw, Some(&gb), &geo).unwrap()),
            &down(&cpu().conv2d(&cx, &cw, Some(&cb), &geo).unwrap()),
        );
    }
}

/// Strided data gradients run phase by phase (strides 2 and 3, phases without any tap, long
/// reductions whose phases share split-K partials: 130 -> 129 channels on a 5x5 image, and
/// 40 -> 300 through a 1x1/2 on a 4x4 one, where three phases write zeros in every partial).
fn convolution_gradients_match_the_cpu(dev: Device) {
    let g = dev.backend();
    for &(n, c, h, w, o, k, s, p) in CONV_SHAPES {
        let geo = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
        assert_eq!(
            resnet_core::backend::wgpu::data_gradient_by_phase(&geo),
            s > 1,
            "{geo:?}"
        );
    }
    for (i, &(n, c, h, w, o, k, s, p)) in CONV_SHAPES.iter().enumerate() {
        let geo = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
        let (gx, cx) = both(g, &values(n * c * h * w, 40 + i as u32));
        let (gw, cw) = both(g, &values(o * c * k * k, 50 + i as u32));
        let (ggy, cgy) = both(g, &values(n * o * geo.oh * geo.ow, 60 + i as u32));
        let what = format!("{geo:?}");
        assert_close(
            &format!("conv2d_backward_data {what}"),
            &down(&g.conv2d_backward_data(&ggy, &gw, &geo).unwrap()),
            &down(&cpu().conv2d_backward_data(&cgy, &cw, &geo).unwrap()),
        );
        assert_close(
            &format!("conv2d_backward_weight {what}"),
            &down(&g.conv2d_backward_weight(&gx, &ggy, &geo).unwrap()),
            &down(&cpu().conv2d_backward_weight(&cx, &cgy, &geo).unwrap()),
        );
        assert_close(
            &format!("sum_nhw {what}"),
            &down(&g.sum_nhw(&ggy, &geo.out_layout()).unwrap()),
            &down(&cpu().sum_nhw(&cgy, &geo.out_layout()).unwrap()),
        );
    }
}

/// The inference convolution: bias, residual and activation in the GEMM's store, or after the
/// split-K sum for a long reduction over few tiles (the last shape).
fn fused_convolution_matches_the_cpu(dev: Device) {
    let g = dev.backend();
    let split: &[ConvShape] = &[(1, 512, 4, 4, 512, 3, 1, 1)];
    let acts = [
        None,
        Some(Activation::Relu),
        Some(Activation::Tanh),
        Some(Activation::Sigmoid),
    ];
    for (i, &(n, c, h, w, o, k, s, p)) in CONV_SHAPES.iter().chain(split).enumerate() {
        let geo = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
        let (gx, cx) = both(g, &values(n * c * h * w, 110 + i as u32));
        let (gw, cw) = both(g, &values(o * c * k * k, 120 + i as u32));
        let (gb, cb) = both(g, &values(o, 130 + i as u32));
        let (gr, cr) = both(g, &values(n * o * geo.oh * geo.ow, 140 + i as u32));
        for (j, act) in acts.into_iter().enumerate() {
            let bias = (i + j) % 2 == 0;
            let residual = j % 3 != 2;
            let what = format!("conv2d_fused {geo:?} act {act:?} bias {bias} residual {residual}");
            let fused = g
                .conv2d_fused(&gx, &gw, bias.then_some(&gb), residual.then_some(&gr), act, &geo)
                .unwrap();
            assert_close(
                &what,
                &down(&fused),
                &down(
                    &cpu()
                        .conv2d_fused(&cx, &cw, bias.then_some(&cb), residual.then_some(&cr), act, &geo)
                        .unwrap(),
                ),
            );
            // The same values as the convolution followed by the separate kernels, to the bit.
            let y = g.conv2d(&gx, &gw, bias.then_some(&gb), &geo).unwrap();
            let separate = g.unfused_epilogue(y, residual.then_some(&gr), act).unwrap();
            assert_eq!(down(&fused), down(&separate), "{what}: fused against separate kernels");
        }
    }
    // A residual of the wrong length is an error, not a stray read.
    let geo = ConvGeometry::new(&[1, 2, 4, 4], &[3, 2, 3, 3], 1, 1).unwrap();
    let (x, wt, short) = (
        g.upload(&values(32, 1)).unwrap(),
        g.upload(&values(54, 2)).unwrap(),
        g.upload(&[0.0; 5]).unwrap(),
    );
    assert!(g.conv2d_fused(&x, &wt, None, Some(&short), None, &geo).is_err());
}

/// Values as the mixed GEMMs see them: rounded to f16 (nearest, ties to even) and back.
fn to_half(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Checks a mixed-precision result three ways: within the f16 tolerance (2e-2) of the
/// fp32 result; within fp32 tolerance of fp32 arithmetic on the f16-rounded operands (so f16
/// rounding of the operands is the only difference: the sums are f32); and measurably off the
/// fp32 result (so the f16 path really ran).
fn check_mixed(what: &str, mixed: &[f32], on_rounded: &[f32], fp32: &[f32]) {
    assert_close_tol(&format!("{what}: mixed vs fp32"), mixed, fp32, 2e-2);
    assert_close_tol(
        &format!("{what}: mixed vs fp32 on f16-rounded operands"),
        mixed,
        on_rounded,
        1e-4,
    );
    let (_, off) = worst_error(what, mixed, fp32);
    assert!(
        off > 1e-5,
        "{what}: mixed equals fp32 to {off:.1e}: were the operands rounded at all?"
    );
}

/// Where the adapter offers 16x16x16 f16 cooperative matrices, precision 'mixed' runs its GEMMs on
/// them: each result is checked against the f16 tiled loop's (the same f16 operands, f32 sums in
/// another order). Elsewhere (lavapipe has none) the adapter report must say the tiled loop runs.
fn cooperative_matrix_gemms_match_the_tiled_f16_loop(dev: Device) {
    use resnet_core::backend::wgpu::{report, tensor_cores, use_tensor_cores};
    let g = dev.backend();
    let _ = g.zeros(1).unwrap(); // the context is open
    let selected = report().selected.unwrap_or_default();
    let adapter = report()
        .adapters
        .into_iter()
        .find(|a| selected.starts_with(&a.name))
        .expect("the adapter in use is in the report");
    if tensor_cores() != Some(true) {
        assert!(adapter.tensor_core_subgroup.is_none(), "{adapter:?}");
        assert!(
            adapter.mixed_precision().contains("tiled GEMM"),
            "{}",
            adapter.mixed_precision()
        );
        eprintln!(
            "{}: no cooperative matrices, so precision 'mixed' runs the tiled f16 loop",
            adapter.name
        );
        return;
    }
    eprintln!("{}: {}", adapter.name, adapter.mixed_precision());
    let shapes: &[ConvShape] = &[
        (2, 37, 9, 9, 70, 3, 1, 1),
        (1, 130, 5, 5, 129, 3, 2, 1),
        (4, 64, 14, 14, 128, 3, 2, 1),
        (8, 256, 14, 14, 64, 1, 1, 0),
    ];
    for (i, &(n, c, h, w, o, k, s, p)) in shapes.iter().enumerate() {
        let geo = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p)
            .unwrap()
            .with_precision(Precision::Mixed);
        let x = g.upload(&values(n * c * h * w, 110 + i as u32)).unwrap();
        let wt = g.upload(&values(o * c * k * k, 120 + i as u32)).unwrap();
        let gy = g.upload(&values(n * o * geo.oh * geo.ow, 130 + i as u32)).unwrap();
        let run = |on: bool| {
            use_tensor_cores(on);
            let out = [
                down(&g.conv2d(&x, &wt, None, &geo).unwrap()),
                down(&g.conv2d_backward_data(&gy, &wt, &geo).unwrap()),
                down(&g.conv2d_backward_weight(&x, &gy, &geo).unwrap()),
            ];
            use_tensor_cores(true);
            out
        };
        let (coop, tiled) = (run(true), run(false));
        for (what, (a, b)) in ["conv2d", "conv2d_backward_data", "conv2d_backward_weight"]
            .iter()
            .zip(coop.iter().zip(&tiled))
        {
            assert_close_tol(&format!("{what} {geo:?}: tensor cores vs tiled f16"), a, b, 1e-3);
        }
    }
}

fn mixed_precision_gemms_round_only_their_operands(dev: Device) {
    // CI's lavapipe offers SHADER_F16 (wgpu 30): this test must run, not pass by skipping.
    resnet_core::backend::check_mixed_precision(dev).expect("this adapter cannot run precision 'mixed'");
    let g = dev.backend();
    // The awkward shapes, plus a long reduction (split-K partials) and ResNet-sized channels.
    let extra: &[ConvShape] = &[(16, 5, 20, 20, 6, 3, 1, 1), (2, 64, 14, 14, 128, 3, 2, 1)];
    for (i, &(n, c, h, w, o, k, s, p)) in CONV_SHAPES.iter().chain(extra).enumerate() {
        let geo = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
        let mixed = geo.with_precision(Precision::Mixed);
        let (x, wt) = (
            values(n * c * h * w, 70 + i as u32),
            values(o * c * k * k, 80 + i as u32),
        );
        let (bias, gy) = (
            values(o, 90 + i as u32),
            values(n * o * geo.oh * geo.ow, 100 + i as u32),
        );
        let (hx, hw, hgy) = (to_half(&x), to_half(&wt), to_half(&gy));
        let up = |v: &[f32]| g.upload(v).unwrap();
        let on_cpu = |v: &[f32]| cpu().upload(v).unwrap();
        let what = format!("{geo:?}");
        check_mixed(
            &format!("conv2d + bias {what}"),
            &down(&g.conv2d(&up(&x), &up(&wt), Some(&up(&bias)), &mixed).unwrap()),
            &down(
                &cpu()
                    .conv2d(&on_cpu(&hx), &on_cpu(&hw), Some(&on_cpu(&bias)), &geo)
                    .unwrap(),
            ),
            &down(
                &cpu()
                    .conv2d(&on_cpu(&x), &on_cpu(&wt), Some(&on_cpu(&bias)), &geo)
                    .unwrap(),
            ),
        );
        check_mixed(
            &format!("conv2d_backward_data {what}"),
            &down(&g.conv2d_backward_data(&up(&gy), &up(&wt), &mixed).unwrap()),
            &down(&cpu().conv2d_backward_data(&on_cpu(&hgy), &on_cpu(&hw), &geo).unwrap()),
            &down(&cpu().conv2d_backward_data(&on_cpu(&gy), &on_cpu(&wt), &geo).unwrap()),
        );
        check_mixed(
            &format!("conv2d_backward_weight {what}"),
            &down(&g.conv2d_backward_weight(&up(&x), &up(&gy), &mixed).unwrap()),
            &down(&cpu().conv2d_backward_weight(&on_cpu(&hx), &on_cpu(&hgy), &geo).unwrap()),
            &down(&cpu().conv2d_backward_weight(&on_cpu(&x), &on_cpu(&gy), &geo).unwrap()),
        );
        // The CPU computes in fp32 only and says so.
        let refused = cpu()
            .conv2d(&on_cpu(&x), &on_cpu(&wt), None, &mixed)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("precision 'mixed'"), "{refused}");
    }
    for &(m, k, n) in &[(7usize, 13usize, 5usize), (33, 300, 129), (130, 17, 257)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (a, b) = (values(m * k, (m * 3 + k) as u32), values(k * n, (n * 5 + k) as u32));
            let geo = |precision| MatmulGeometry {
                m,
                k,
                n,
                transpose_a: ta,
                transpose_b: tb,
                precision,
            };
            let run = |be: &dyn Backend, a: &[f32], b: &[f32], p| {
                down(
                    &be.matmul(&be.upload(a).unwrap(), &be.upload(b).unwrap(), &geo(p))
                        .unwrap(),
                )
            };
            check_mixed(
                &format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"),
                &run(g, &a, &b, Precision::Mixed),
                &run(cpu(), &to_half(&a), &to_half(&b), Precision::Fp32),
                &run(cpu(), &a, &b, Precision::Fp32),
            );
        }
    }
}

fn weight_gradient_with_a_long_reduction_is_split_and_summed(dev: Device) {
    let g = dev.backend();
    // n*oh*ow = 6400: split-K partials, added in reduce.wgsl.
    let geo = ConvGeometry::new(&[16, 5, 20, 20], &[6, 5, 3, 3], 1, 1).unwrap();
    let (gx, cx) = both(g, &values(16 * 5 * 400, 7));
    let (ggy, cgy) = both(g, &values(16 * 6 * 400, 8));
    assert_close(
        "split-K weight gradient",
        &down(&g.conv2d_backward_weight(&gx, &ggy, &geo).unwrap()),
        &down(&cpu().conv2d_backward_weight(&cx, &cgy, &geo).unwrap()),
    );
}

fn matmul_bias_and_row_sums_match_the_cpu(dev: Device) {
    let g = dev.backend();
    for &(m, k, n) in &[
        (1usize, 1usize, 1usize),
        (7, 13, 5),
        (128, 64, 10),
        (33, 300, 129),
        (130, 17, 257),
    ] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (ga, ca) = both(g, &values(m * k, (m * 3 + k) as u32));
            let (gb, cb) = both(g, &values(k * n, (n * 5 + k) as u32));
            let geo = MatmulGeometry {
                m,
                k,
                n,
                transpose_a: ta,
                transpose_b: tb,
                precision: Precision::Fp32,
            };
            assert_close(
                &format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"),
                &down(&g.matmul(&ga, &gb, &geo).unwrap()),
                &down(&cpu().matmul(&ca, &cb, &geo).unwrap()),
            );
        }
        let (gx, cx) = both(g, &values(m * n, 3));
        let (gbias, cbias) = both(g, &values(n, 4));
        assert_close(
            "add_row_bias",
            &down(&g.add_row_bias(&gx, &gbias).unwrap()),
            &down(&cpu().add_row_bias(&cx, &cbias).unwrap()),
        );
        assert_close(
            "sum_rows",
            &down(&g.sum_rows(&gx, &RowLayout { rows: m, cols: n }).unwrap()),
            &down(&cpu().sum_rows(&cx, &RowLayout { rows: m, cols: n }).unwrap()),
        );
    }
}

fn stats_down(s: &BatchStats) -> [Vec<f32>; 3] {
    [down(&s.mean), down(&s.var), down(&s.invstd)]
}

fn batch_norm_matches_the_cpu(dev: Device) {
    let g = dev.backend();
    for &(n, c, hw) in &[
        (1usize, 3usize, 5usize),
        (2, 7, 9),
        (8, 16, 64),
        (3, 5, 1000),
        (1, 2, 5000),
    ] {
        let mut x = values(n * c * hw, (n + c + hw) as u32);
        // A channel with a large mean (20 standard deviations): the variance must not lose it.
        x.iter_mut()
            .enumerate()
            .filter(|(i, _)| (i / hw) % c == 0)
            .for_each(|(_, v)| *v += 12.0);
        let (gx, cx) = both(g, &x);
        let (ggamma, cgamma) = both(g, &values(c, 1).iter().map(|v| v + 1.5).collect::<Vec<_>>());
        let (gbeta, cbeta) = both(g, &values(c, 2));
        let (ggy, cgy) = both(g, &values(n * c * hw, 3));
        let what = format!("batch norm n={n} c={c} hw={hw}");
        let layout = ChannelLayout { n, c, hw };
        let (gy, gs) = g.batch_norm_train(&gx, &ggamma, &gbeta, &layout, 1e-5).unwrap();
        let (cy, cs) = cpu().batch_norm_train(&cx, &cgamma, &cbeta, &layout, 1e-5).unwrap();
        assert_close(&format!("{what} y"), &down(&gy), &down(&cy));
        for (name, (a, b)) in ["mean", "var", "invstd"]
            .iter()
            .zip(stats_down(&gs).iter().zip(stats_down(&cs).iter()))
        {
            assert_close(&format!("{what} {name}"), a, b);
        }
        for source in [StatsSource::Batch, StatsSource::Running] {
            let (gdx, gdg, gdb) = g.batch_norm_backward(&gx, &ggy, &ggamma, &gs, &layout, source).unwrap();
            let (cdx, cdg, cdb) = cpu()
                .batch_norm_backward(&cx, &cgy, &cgamma, &cs, &layout, source)
                .unwrap();
            let w = format!("{what} backward ({source:?} statistics)");
            assert_close(&format!("{w} dx"), &down(&gdx), &down(&cdx));
            assert_close(&format!("{w} dgamma"), &down(&gdg), &down(&cdg));
            assert_close(&format!("{w} dbeta"), &down(&gdb), &down(&cdb));
        }
        // Running statistics, copy-on-write: a storage shared before the update keeps its values.
        let (mut grm, mut crm) = both(g, &values(c, 5));
        let (mut grv, mut crv) = both(g, &values(c, 6).iter().map(|v| v.abs() + 0.5).collect::<Vec<_>>());
        let before = down(&grm);
        let shared = grm.clone();
        let update = RunningStatsUpdate {
            momentum: 0.1,
            count: n * hw,
        };
        g.update_running_stats(&mut grm, &mut grv, &gs, &update).unwrap();
        cpu().update_running_stats(&mut crm, &mut crv, &cs, &update).unwrap();
        assert_eq!(
            down(&shared),
            before,
            "{what}: a shared running mean was updated in place"
        );
        assert_close(&format!("{what} running mean"), &down(&grm), &down(&crm));
        assert_close(&format!("{what} running var"), &down(&grv), &down(&crv));
        // Eval mode: frozen statistics and apply.
        let gf = g.batch_norm_frozen_stats(&grm, &grv, 1e-5).unwrap();
        let cf = cpu().batch_norm_frozen_stats(&crm, &crv, 1e-5).unwrap();
        assert_close(&format!("{what} frozen invstd"), &down(&gf.invstd), &down(&cf.invstd));
        assert_close(
            &format!("{what} apply"),
            &down(&g.batch_norm_apply(&gx, &ggamma, &gbeta, &gf, &layout).unwrap()),
            &down(&cpu().batch_norm_apply(&cx, &cgamma, &cbeta, &cf, &layout).unwrap()),
        );
    }
}

/// Batch norm with its epilogue (residual, activation) in the same pass, and its backward from
/// the activation's output gradient, give the separate kernels' values to the bit, and the CPU's.
fn fused_batch_norm_is_the_separate_kernels_to_the_bit(dev: Device) {
    let g = dev.backend();
    for &(n, c, hw) in &[(1usize, 3usize, 5usize), (2, 7, 9), (3, 5, 1000)] {
        let len = n * c * hw;
        let layout = ChannelLayout { n, c, hw };
        let (gx, cx) = both(g, &values(len, (7 * n + c) as u32));
        let (ggamma, cgamma) = both(g, &values(c, 11).iter().map(|v| v + 1.5).collect::<Vec<_>>());
        let (gbeta, cbeta) = both(g, &values(c, 12));
        let (gr, cr) = both(g, &values(len, 13));
        let (ggy, cgy) = both(g, &values(len, 14));
        // The running statistics updated in the pass that finishes the batch's, as
        // `update_running_stats` after it would; a storage shared before keeps its values.
        let update = RunningStatsUpdate {
            momentum: 0.1,
            count: n * hw,
        };
        for epilogue in [
            None,
            Some((Some(&gr), Activation::Relu)),
            Some((None, Activation::Tanh)),
        ] {
            let what = format!("n={n} c={c} hw={hw} running update, epilogue {}", epilogue.is_some());
            let running = || {
                (
                    g.upload(&values(c, 15)).unwrap(),
                    g.upload(&values(c, 16).iter().map(|v| v.abs() + 0.5).collect::<Vec<_>>())
                        .unwrap(),
                )
            };
            let (mut rm, mut rv) = running();
            let (shared_m, shared_v) = (rm.clone(), rv.clone());
            let (before_m, before_v) = (down(&rm), down(&rv));
            let (y, st) = g
                .batch_norm_train_running(
                    &gx,
                    &ggamma,
                    &gbeta,
                    &layout,
                    1e-5,
                    epilogue,
                    (&mut rm, &mut rv),
                    &update,
                )
                .unwrap();
            let (mut sm, mut sv) = running();
            let (sy, sst) = match epilogue {
                Some((residual, act)) => g
                    .batch_norm_train_act(&gx, &ggamma, &gbeta, &layout, 1e-5, residual, act)
                    .unwrap(),
                None => g.batch_norm_train(&gx, &ggamma, &gbeta, &layout, 1e-5).unwrap(),
            };
            g.update_running_stats(&mut sm, &mut sv, &sst, &update).unwrap();
            assert_eq!(down(&y), down(&sy), "{what}: output");
            assert_eq!(stats_down(&st), stats_down(&sst), "{what}: statistics");
            assert_eq!(
                (down(&rm), down(&rv)),
                (down(&sm), down(&sv)),
                "{what}: running statistics"
            );
            assert_ne!(down(&rm), before_m, "{what}: the running mean moved");
            assert_eq!(
                (down(&shared_m), down(&shared_v)),
                (before_m, before_v),
                "{what}: copy on write"
            );
        }
        for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
            for with_residual in [false, true] {
                let what = format!("n={n} c={c} hw={hw} {act:?} residual {with_residual}");
                let (gres, cres) = (with_residual.then_some(&gr), with_residual.then_some(&cr));
                let (fused, fs) = g
                    .batch_norm_train_act(&gx, &ggamma, &gbeta, &layout, 1e-5, gres, act)
                    .unwrap();
                let (y, s) = g.batch_norm_train(&gx, &ggamma, &gbeta, &layout, 1e-5).unwrap();
                let separate = g.epilogue(y, gres, act).unwrap();
                assert_eq!(down(&fused), down(&separate), "{what}: fused training forward");
                assert_eq!(stats_down(&fs), stats_down(&s), "{what}: statistics");
                let (cy, cs) = cpu()
                    .batch_norm_train_act(&cx, &cgamma, &cbeta, &layout, 1e-5, cres, act)
                    .unwrap();
                assert_close(&format!("{what} forward against the CPU"), &down(&fused), &down(&cy));

                let frozen = g
                    .batch_norm_apply_act(&gx, &ggamma, &gbeta, &fs, &layout, gres, act)
                    .unwrap();
                let y = g.batch_norm_apply(&gx, &ggamma, &gbeta, &fs, &layout).unwrap();
                let separate_frozen = g.epilogue(y, gres, act).unwrap();
                assert_eq!(down(&frozen), down(&separate_frozen), "{what}: fused frozen forward");
                let cfrozen = cpu()
                    .batch_norm_apply_act(&cx, &cgamma, &cbeta, &cs, &layout, cres, act)
                    .unwrap();
                assert_close(
                    &format!("{what} frozen against the CPU"),
                    &down(&frozen),
                    &down(&cfrozen),
                );

                if with_residual {
                    continue; // the residual's gradient is the activation's: backward runs it separately
                }
                for source in [StatsSource::Batch, StatsSource::Running] {
                    let w = format!("{what} backward ({source:?} statistics)");
                    let fused_grads = g
                        .batch_norm_act_backward(&gx, &fused, &ggy, &ggamma, &fs, &layout, source, act)
                        .unwrap();
                    let through = g.activation_backward(&fused, &ggy, act).unwrap();
                    let separate_grads = g
                        .batch_norm_backward(&gx, &through, &ggamma, &fs, &layout, source)
                        .unwrap();
                    let cpu_grads = cpu()
                        .batch_norm_act_backward(&cx, &cy, &cgy, &cgamma, &cs, &layout, source, act)
                        .unwrap();
                    for (name, (f, (sep, c))) in ["dx", "dgamma", "dbeta"].iter().zip(
                        [&fused_grads.0, &fused_grads.1, &fused_grads.2].into_iter().zip(
                            [&separate_grads.0, &separate_grads.1, &separate_grads.2]
                                .into_iter()
                                .zip([&cpu_grads.0, &cpu_grads.1, &cpu_grads.2]),
                        ),
                    ) {
                        assert_eq!(down(f), down(sep), "{w}: fused {name}");
                        assert_close(&format!("{w} {name} against the CPU"), &down(f), &down(c));
                    }
                }
            }
        }
    }
}

/// Mixed precision's overflow check: zero while every value of every gradient is finite (even
/// where their sum overflows), not finite once one value is inf or NaN, wherever it sits.
fn overflow_check_finds_any_inf_or_nan(dev: Device) {
    let g = dev.backend();
    let lens = [1usize, 4097, 70_001];
    let clean: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| values(n, 40 + i as u32))
        .collect();
    let check = |tensors: &[Vec<f32>]| -> (f32, f32) {
        let (gs, cs): (Vec<Storage>, Vec<Storage>) = tensors.iter().map(|t| both(g, t)).unzip();
        let gv = down(&g.nonfinite_check(&gs).unwrap());
        let cv = down(&cpu().nonfinite_check(&cs).unwrap());
        assert_eq!((gv.len(), cv.len()), (1, 1));
        (gv[0], cv[0])
    };
    assert_eq!(check(&clean), (0.0, 0.0), "finite gradients");
    // Values whose sum overflows f32 are still finite values: the step is applied.
    let mut huge = clean.clone();
    huge[2].iter_mut().for_each(|v| *v = 3.0e38);
    assert_eq!(check(&huge), (0.0, 0.0), "finite values whose sum overflows");
    for (t, at, bad) in [
        (0usize, 0usize, f32::NAN),
        (1, 4096, f32::INFINITY),
        (1, 4000, f32::NAN), // the last slice of a workgroup's chunk
        (2, 70_000, f32::NEG_INFINITY),
        (2, 33_333, f32::NAN),
    ] {
        let mut tensors = clean.clone();
        tensors[t][at] = bad;
        let (gv, cv) = check(&tensors);
        assert!(
            !gv.is_finite() && !cv.is_finite(),
            "{bad} at {at} of tensor {t}: {gv} {cv}"
        );
    }
    // The check starts clean on every call (the previous one's flag does not leak).
    assert_eq!(check(&clean), (0.0, 0.0), "finite gradients after a flagged check");
}

fn pooling_matches_the_cpu(dev: Device) {
    let g = dev.backend();
    for &(n, c, h, w, k, s, p) in &[
        (1usize, 1usize, 5usize, 5usize, 3usize, 2usize, 1usize),
        (2, 3, 9, 7, 3, 2, 1),
        (2, 2, 8, 8, 2, 2, 0),
        (1, 4, 11, 13, 3, 1, 1),
        (3, 2, 6, 6, 3, 3, 0),
    ] {
        let geo = PoolGeometry::new(&[n, c, h, w], k, s, p).unwrap();
        let mut x = values(n * c * h * w, (h * w) as u32);
        x[1] = x[0]; // a tie: the first maximum takes the gradient
        let (gx, cx) = both(g, &x);
        let (ggy, cgy) = both(g, &values(n * c * geo.oh * geo.ow, 9));
        let what = format!("{geo:?}");
        assert_close(
            &format!("max_pool2d {what}"),
            &down(&g.max_pool2d(&gx, &geo).unwrap()),
            &down(&cpu().max_pool2d(&cx, &geo).unwrap()),
        );
        assert_close(
            &format!("max_pool2d_backward {what}"),
            &down(&g.max_pool2d_backward(&gx, &ggy, &geo).unwrap()),
            &down(&cpu().max_pool2d_backward(&cx, &cgy, &geo).unwrap()),
        );
        let layout = ChannelLayout { n, c, hw: h * w };
        let (gp, cp) = both(g, &values(n * c, 11));
        assert_close(
            "global_avg_pool",
            &down(&g.global_avg_pool(&gx, &layout).unwrap()),
            &down(&cpu().global_avg_pool(&cx, &layout).unwrap()),
        );
        assert_close(
            "global_avg_pool_backward",
            &down(&g.global_avg_pool_backward(&gp, &layout).unwrap()),
            &down(&cpu().global_avg_pool_backward(&cp, &layout).unwrap()),
        );
    }
}

fn loss_accuracy_and_sums_match_the_cpu(dev: Device) {
    let g = dev.backend();
    for &(n, classes) in &[(1usize, 1usize), (1, 10), (7, 3), (128, 10), (5, 1000)] {
        let logits: Vec<f32> = values(n * classes, classes as u32).iter().map(|v| v * 8.0).collect();
        let labels: Vec<f32> = (0..n).map(|i| ((i * 7 + 3) % classes) as f32).collect();
        let (gl, cl) = both(g, &logits);
        let (gy, cy) = both(g, &labels);
        let layout = LogitsLayout { n, classes };
        let (glosses, gprobs) = g.cross_entropy(&gl, &gy, &layout).unwrap();
        let (closses, cprobs) = cpu().cross_entropy(&cl, &cy, &layout).unwrap();
        let what = format!("n={n} classes={classes}");
        assert_close(
            &format!("cross_entropy losses {what}"),
            &down(&glosses),
            &down(&closses),
        );
        assert_close(&format!("cross_entropy probs {what}"), &down(&gprobs), &down(&cprobs));
        let (gup, cup) = both(g, &[0.75]);
        assert_close(
            &format!("cross_entropy_backward {what}"),
            &down(
                &g.cross_entropy_backward(&gprobs, &gy, &gup, &layout, 1.0 / n as f32)
                    .unwrap(),
            ),
            &down(
                &cpu()
                    .cross_entropy_backward(&cprobs, &cy, &cup, &layout, 1.0 / n as f32)
                    .unwrap(),
            ),
        );
        for k in [1, 5.min(classes)] {
            assert_eq!(
                down(&g.topk_correct(&gl, &gy, &layout, k).unwrap()),
                down(&cpu().topk_correct(&cl, &cy, &layout, k).unwrap()),
                "top-{k} {what}"
            );
        }
    }
    for len in [1usize, 4095, 4096, 4097, 300_000] {
        let (gx, cx) = both(g, &values(len, len as u32));
        assert_close(
            &format!("sum_all {len}"),
            &down(&g.sum_all(&gx).unwrap()),
            &down(&cpu().sum_all(&cx).unwrap()),
        );
    }
}

fn option_a_shortcut_matches_the_cpu(dev: Device) {
    let g = dev.backend();
    for &(n, c_in, h, w, c_out, s) in &[
        (1usize, 3usize, 5usize, 5usize, 3usize, 1usize),
        (2, 4, 7, 9, 8, 2),
        (3, 16, 8, 8, 32, 2),
        (1, 5, 6, 3, 9, 3),
    ] {
        let geo = ShortcutGeometry::new(&[n, c_in, h, w], c_out, s).unwrap();
        let (gx, cx) = both(g, &values(geo.in_len(), 1));
        let (ggy, cgy) = both(g, &values(geo.out_len(), 2));
        assert_close(
            &format!("shortcut_a {geo:?}"),
            &down(&g.shortcut_a(&gx, &geo).unwrap()),
            &down(&cpu().shortcut_a(&cx, &geo).unwrap()),
        );
        assert_close(
            &format!("shortcut_a_backward {geo:?}"),
            &down(&g.shortcut_a_backward(&ggy, &geo).unwrap()),
            &down(&cpu().shortcut_a_backward(&cgy, &geo).unwrap()),
        );
    }
}

fn sgd_update_matches_the_cpu(dev: Device) {
    let g = dev.backend();
    let len = 1001;
    // The middle case unscales its gradients as a mixed-precision step does.
    for (momentum, nesterov, weight_decay, grad_scale) in [
        (0.0f32, false, 0.0f32, 1.0f32),
        (0.9, false, 1e-4, 1.0 / 1024.0),
        (0.9, true, 5e-4, 1.0),
    ] {
        let (mut gp, mut cp) = both(g, &values(len, 1));
        let (mut gb, mut cb): (Storage, Storage) = (g.zeros(len).unwrap(), cpu().zeros(len).unwrap());
        for step in 0..3 {
            let (gg, cg) = both(g, &values(len, 10 + step));
            let s = SgdStep {
                lr: 0.1,
                momentum,
                weight_decay,
                nesterov,
                first_step: step == 0,
                grad_scale,
            };
            let saved = gp.clone();
            let saved_values = down(&saved);
            g.sgd_update(&mut gp, &gg, &mut gb, &s).unwrap();
            cpu().sgd_update(&mut cp, &cg, &mut cb, &s).unwrap();
            assert_eq!(
                down(&saved),
                saved_values,
                "a parameter saved before the update changed"
            );
            assert_close(
                &format!("sgd momentum={momentum} nesterov={nesterov} step {step}"),
                &down(&gp),
                &down(&cp),
            );
            assert_close("momentum buffer", &down(&gb), &down(&cb));
        }
    }
}

/// Mixed precision's device-side decision: the gated update and the scaler's update, on the GPU
/// as on the CPU, over a run of steps that overflow (inf, then NaN) and steps that apply at the
/// rate their count of applied steps picks; a growth interval of 2 makes the scale grow too.
fn loss_scaling_on_the_device_matches_the_cpu(dev: Device) {
    let g = dev.backend();
    let len = 777;
    let rule = ScaleRule {
        growth_interval: 2,
        min_scale: 1.0 / 65536.0,
        max_scale: 16_777_216.0,
    };
    let (mut gp, mut cp) = both(g, &values(len, 3));
    let (mut gb, mut cb): (Storage, Storage) = (g.zeros(len).unwrap(), cpu().zeros(len).unwrap());
    let (mut gscale, mut cscale) = both(g, &[1024.0]);
    let (mut gstate, mut cstate) = both(g, &[1.0 / 1024.0, 0.0, 0.0]);
    let rates: Vec<f32> = (0..8).map(|i| 0.01 * (i + 1) as f32).collect();
    let (grates, crates) = both(g, &rates);
    let s = SgdStep {
        lr: 0.0,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: true,
        first_step: false,
        grad_scale: 1.0,
    };
    let checks = [1.5f32, f32::INFINITY, 2.0, 3.0, f32::NAN, -4.0, 5.0];
    for (step, &check) in checks.iter().enumerate() {
        let (gg, cg) = both(g, &values(len, 20 + step as u32));
        let (gcheck, ccheck) = both(g, &[check]);
        let before = down(&gp);
        g.sgd_update_gated(
            &mut gp,
            &gg,
            &mut gb,
            &s,
            &ScalerGate {
                check: &gcheck,
                state: &gstate,
                lrs: &grates,
            },
        )
        .unwrap();
        cpu()
            .sgd_update_gated(
                &mut cp,
                &cg,
                &mut cb,
                &s,
                &ScalerGate {
                    check: &ccheck,
                    state: &cstate,
                    lrs: &crates,
                },
            )
            .unwrap();
        g.loss_scale_update(&mut gscale, &mut gstate, &gcheck, &rule).unwrap();
        cpu()
            .loss_scale_update(&mut cscale, &mut cstate, &ccheck, &rule)
            .unwrap();
        let what = format!("step {step} (check {check})");
        assert_eq!(
            down(&gp) == before,
            !check.is_finite(),
            "{what}: updated exactly when finite"
        );
        assert_close(&format!("{what}: parameters"), &down(&gp), &down(&cp));
        assert_close(&format!("{what}: momentum"), &down(&gb), &down(&cb));
        assert_eq!(down(&gscale), down(&cscale), "{what}: scale");
        assert_eq!(down(&gstate), down(&cstate), "{what}: [1 / scale, clean, applied]");
    }
    // 5 applied, 2 skipped; halved twice, doubled after each 2 clean steps in a row.
    assert_eq!(down(&gstate)[2], 5.0);
    assert_eq!(down(&gscale), vec![1024.0]);
}

fn device_parsing(dev: Device) {
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert!(Device::parse("tpu").is_err());
    assert_eq!(Device::parse("GPU").unwrap(), dev);
    assert!(resnet_core::backend::adapters_info().contains("device 'gpu' uses"));
}

fn main() {
    harness::run([
        harness::gpu(
            "upload_download_and_zeros_round_trip",
            upload_download_and_zeros_round_trip,
        ),
        harness::gpu("elementwise_ops_match_the_cpu", elementwise_ops_match_the_cpu),
        harness::gpu(
            "a_dispatch_larger_than_one_grid_dimension_covers_every_element",
            a_dispatch_larger_than_one_grid_dimension_covers_every_element,
        ),
        harness::gpu(
            "convolution_forward_matches_the_cpu",
            convolution_forward_matches_the_cpu,
        ),
        harness::gpu(
            "cooperative_matrix_gemms_match_the_tiled_f16_loop",
            cooperative_matrix_gemms_match_the_tiled_f16_loop,
        ),
        harness::gpu(
            "convolution_gradients_match_the_cpu",
            convolution_gradients_match_the_cpu,
        ),
        harness::gpu(
            "weight_gradient_with_a_long_reduction_is_split_and_summed",
            weight_gradient_with_a_long_reduction_is_split_and_summed,
        ),
        harness::gpu(
            "matmul_bias_and_row_sums_match_the_cpu",
            matmul_bias_and_row_sums_match_the_cpu,
        ),
        harness::gpu("fused_convolution_matches_the_cpu", fused_convolution_matches_the_cpu),
        harness::gpu(
            "mixed_precision_gemms_round_only_their_operands",
            mixed_precision_gemms_round_only_their_operands,
        ),
        harness::gpu("batch_norm_matches_the_cpu", batch_norm_matches_the_cpu),
        harness::gpu(
            "overflow_check_finds_any_inf_or_nan",
            overflow_check_finds_any_inf_or_nan,
        ),
        harness::gpu(
            "fused_batch_norm_is_the_separate_kernels_to_the_bit",
            fused_batch_norm_is_the_separate_kernels_to_the_bit,
        ),
        harness::gpu("pooling_matches_the_cpu", pooling_matches_the_cpu),
        harness::gpu(
            "loss_accuracy_and_sums_match_the_cpu",
            loss_accuracy_and_sums_match_the_cpu,
        ),
        harness::gpu("option_a_shortcut_matches_the_cpu", option_a_shortcut_matches_the_cpu),
        harness::gpu("sgd_update_matches_the_cpu", sgd_update_matches_the_cpu),
        harness::gpu(
            "loss_scaling_on_the_device_matches_the_cpu",
            loss_scaling_on_the_device_matches_the_cpu,
        ),
        harness::gpu("device_parsing", device_parsing),
    ])
}
