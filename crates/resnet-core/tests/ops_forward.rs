//! Forward values of every op against naive f64 references on the host, batch-norm statistics and
//! their running averages (PyTorch's semantics), and the shape errors users see.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_core::backend::Activation;
use resnet_core::ops::{self, BatchNormArgs, BnMode};
use resnet_core::{fused, Device, Tensor};

const DEV: Device = Device::Cpu;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha8Rng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| r.random_range(lo..hi)).collect()
}

fn t(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape, DEV).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= atol + rtol * w.abs(),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Batch norm

struct Bn {
    x: Vec<f32>,
    shape: [usize; 4],
    gamma: Vec<f32>,
    beta: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
}

fn bn_data(seed: u64, shape: [usize; 4]) -> Bn {
    let mut r = rng(seed);
    let [n, c, h, w] = shape;
    // Each channel with its own offset and spread, far from N(0, 1).
    let offsets = uniform(&mut r, c, -3.0, 3.0);
    let spreads = uniform(&mut r, c, 0.2, 4.0);
    let mut x = vec![0.0; n * c * h * w];
    for (i, v) in x.iter_mut().enumerate() {
        let ch = (i / (h * w)) % c;
        *v = offsets[ch] + spreads[ch] * r.random_range(-1.0f32..1.0);
    }
    Bn {
        x,
        shape,
        gamma: uniform(&mut r, c, 0.5, 2.0),
        beta: uniform(&mut r, c, -1.0, 1.0),
        rm: uniform(&mut r, c, -1.0, 1.0),
        rv: uniform(&mut r, c, 0.5, 2.0),
    }
}

/// Per-channel (mean, biased variance, count) in f64.
fn channel_stats(x: &[f32], shape: [usize; 4]) -> Vec<(f64, f64, usize)> {
    let [n, c, h, w] = shape;
    let hw = h * w;
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| x[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter().map(|&v| v as f64))
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
            (m, var, vals.len())
        })
        .collect()
}

fn run_bn(d: &Bn, training: bool, momentum: f32, gamma_beta: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = d.shape[1];
    let (ones, zeros) = (vec![1.0; c], vec![0.0; c]);
    let gamma = t(if gamma_beta { &d.gamma } else { &ones }, &[c]);
    let beta = t(if gamma_beta { &d.beta } else { &zeros }, &[c]);
    let (rm, rv) = (t(&d.rm, &[c]), t(&d.rv, &[c]));
    let y = ops::batch_norm2d(
        &t(&d.x, &d.shape),
        &BatchNormArgs {
            gamma: &gamma,
            beta: &beta,
            running_mean: &rm,
            running_var: &rv,
            mode: if training { BnMode::Train } else { BnMode::Eval },
            sync: None,
            momentum,
            eps: 1e-5,
        },
    )
    .unwrap();
    (y.to_vec().unwrap(), rm.to_vec().unwrap(), rv.to_vec().unwrap())
}

#[test]
fn batch_norm_training_normalises_each_channel() {
    for (seed, shape) in [(1, [4, 3, 5, 7]), (2, [1, 5, 3, 3]), (3, [7, 2, 1, 1])] {
        let d = bn_data(seed, shape);
        let (y, _, _) = run_bn(&d, true, 0.1, false);
        for (ch, &(m, var, count)) in channel_stats(&y, shape).iter().enumerate() {
            assert!(m.abs() < 1e-5, "{shape:?} channel {ch}: mean {m}");
            // var / (var + eps) with eps = 1e-5.
            assert!(
                (var - 1.0).abs() < 2e-4,
                "{shape:?} channel {ch}: variance {var} over {count}"
            );
        }
        // With gamma and beta: exactly (x - mean) / sqrt(var + eps) * gamma + beta.
        let (y, _, _) = run_bn(&d, true, 0.1, true);
        let stats = channel_stats(&d.x, shape);
        let [_, c, h, w] = shape;
        let want: Vec<f64> =
            d.x.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = (i / (h * w)) % c;
                    let (m, var, _) = stats[ch];
                    (v as f64 - m) / (var + 1e-5).sqrt() * d.gamma[ch] as f64 + d.beta[ch] as f64
                })
                .collect();
        assert_close(&format!("batch_norm2d training {shape:?}"), &y, &want, 1e-5, 1e-5);
    }
}

#[test]
fn batch_norm_running_statistics_follow_pytorch() {
    for (seed, shape, momentum) in [
        (4, [3, 4, 5, 3], 0.1f32),
        (5, [1, 3, 2, 5], 0.1),
        (6, [2, 2, 3, 1], 0.3),
    ] {
        let d = bn_data(seed, shape);
        let (_, rm, rv) = run_bn(&d, true, momentum, true);
        let mo = momentum as f64;
        let stats = channel_stats(&d.x, shape);
        // running = (1 - momentum) * running + momentum * batch, with the unbiased variance.
        let want_rm: Vec<f64> = stats
            .iter()
            .zip(&d.rm)
            .map(|(s, &r)| (1.0 - mo) * r as f64 + mo * s.0)
            .collect();
        let want_rv: Vec<f64> = stats
            .iter()
            .zip(&d.rv)
            .map(|(s, &r)| (1.0 - mo) * r as f64 + mo * s.1 * s.2 as f64 / (s.2 - 1) as f64)
            .collect();
        assert_close(&format!("running_mean {shape:?}"), &rm, &want_rm, 1e-5, 1e-5);
        assert_close(&format!("running_var {shape:?}"), &rv, &want_rv, 1e-5, 1e-5);
        // The biased variance would be measurably different (guards against the wrong one).
        let biased: Vec<f64> = stats
            .iter()
            .zip(&d.rv)
            .map(|(s, &r)| (1.0 - mo) * r as f64 + mo * s.1)
            .collect();
        assert!(rv.iter().zip(&biased).any(|(&a, &b)| (a as f64 - b).abs() > 1e-3));
    }
}

#[test]
fn batch_norm_eval_uses_running_statistics() {
    let shape = [3, 4, 5, 2];
    let d = bn_data(7, shape);
    let (y, rm, rv) = run_bn(&d, false, 0.1, true);
    let want: Vec<f64> =
        d.x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / 10) % 4;
                (v as f64 - d.rm[ch] as f64) / (d.rv[ch] as f64 + 1e-5).sqrt() * d.gamma[ch] as f64 + d.beta[ch] as f64
            })
            .collect();
    assert_close("batch_norm2d eval", &y, &want, 1e-5, 1e-5);
    assert_eq!(rm, d.rm, "eval must not update running_mean");
    assert_eq!(rv, d.rv, "eval must not update running_var");
    // A single 1x1 sample works in eval mode but is rejected in training.
    let one = Bn {
        x: vec![0.5, -1.0, 2.0, 0.25],
        shape: [1, 4, 1, 1],
        ..bn_data(8, [1, 4, 1, 1])
    };
    assert_eq!(run_bn(&one, false, 0.1, true).0.len(), 4);
    let c = 4;
    let p = t(&[1.0; 4], &[c]);
    let err = ops::batch_norm2d(
        &t(&one.x, &one.shape),
        &BatchNormArgs {
            gamma: &p,
            beta: &p,
            running_mean: &p,
            running_var: &p,
            mode: BnMode::Train,
            sync: None,
            momentum: 0.1,
            eps: 1e-5,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("batch_norm2d") && err.contains("[1, 4, 1, 1]"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Convolution, pooling, dense, shortcut, activations

#[allow(clippy::too_many_arguments)]
fn conv_reference(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    b: Option<&[f32]>,
    s: usize,
    p: usize,
) -> Vec<f64> {
    let [n, ci, h, wd] = xs;
    let [co, _, kh, kw] = ws;
    let oh = (h + 2 * p - kh) / s + 1;
    let ow = (wd + 2 * p - kw) / s + 1;
    let mut y = vec![0.0f64; n * co * oh * ow];
    for i in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o] as f64);
                    for c in 0..ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                acc += x[((i * ci + c) * h + iy as usize) * wd + ix as usize] as f64
                                    * w[((o * ci + c) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    y[((i * co + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn conv2d_matches_the_definition() {
    let mut r = rng(10);
    // (x shape, weight shape, stride, padding, bias): pointwise, strided 1x1, stems, channel
    // counts that are not multiples of any vector width, batch 1, a batch larger than the cores.
    type Case = ([usize; 4], [usize; 4], usize, usize, bool);
    let cases: [Case; 10] = [
        ([3, 5, 7, 5], [3, 5, 1, 1], 1, 0, true),
        ([1, 17, 9, 11], [33, 17, 1, 1], 2, 0, false),
        ([2, 3, 13, 11], [16, 3, 3, 3], 1, 1, false),
        ([1, 19, 8, 7], [21, 19, 3, 3], 2, 1, true),
        ([5, 7, 6, 9], [9, 7, 3, 3], 1, 0, false),
        ([1, 3, 17, 15], [8, 3, 7, 7], 2, 3, false),
        ([2, 4, 7, 6], [5, 4, 5, 5], 3, 2, true),
        ([1, 1, 5, 4], [2, 1, 3, 3], 1, 3, true),
        ([3, 6, 8, 5], [4, 6, 3, 1], 1, 1, false),
        ([9, 2, 4, 4], [3, 2, 2, 2], 2, 0, true),
    ];
    for (xs, ws, s, p, bias) in cases {
        let x = uniform(&mut r, xs.iter().product(), -1.0, 1.0);
        let w = uniform(&mut r, ws.iter().product(), -1.0, 1.0);
        let b = uniform(&mut r, ws[0], -1.0, 1.0);
        let bt = t(&b, &[ws[0]]);
        let y = ops::conv2d(&t(&x, &xs), &t(&w, &ws), if bias { Some(&bt) } else { None }, s, p).unwrap();
        let oh = (xs[2] + 2 * p - ws[2]) / s + 1;
        let ow = (xs[3] + 2 * p - ws[3]) / s + 1;
        assert_eq!(y.shape(), [xs[0], ws[0], oh, ow]);
        let want = conv_reference(&x, xs, &w, ws, if bias { Some(&b) } else { None }, s, p);
        assert_close(
            &format!("conv2d x{xs:?} w{ws:?} s{s} p{p}"),
            &y.to_vec().unwrap(),
            &want,
            1e-4,
            1e-5,
        );
    }
}

fn max_pool_reference(x: &[f32], xs: [usize; 4], k: usize, s: usize, p: usize) -> Vec<f64> {
    let [n, c, h, w] = xs;
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut y = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f64::NEG_INFINITY;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            m = m.max(x[plane * h * w + iy as usize * w + ix as usize] as f64);
                        }
                    }
                }
                y.push(m);
            }
        }
    }
    y
}

#[test]
fn max_pool_matches_the_definition() {
    let mut r = rng(11);
    for (xs, k, s, p) in [
        ([2, 3, 7, 5], 3, 2, 1),
        ([1, 4, 6, 6], 2, 2, 0),
        ([3, 2, 9, 7], 3, 1, 1),
        ([1, 1, 5, 8], 3, 3, 0),
        ([2, 5, 4, 3], 2, 1, 1),
        ([1, 2, 112, 112], 3, 2, 1),
    ] {
        // All-negative values: a pool that treated padding as 0 would be caught.
        let x = uniform(&mut r, xs.iter().product(), -5.0, -0.1);
        let y = ops::max_pool2d(&t(&x, &xs), k, s, p).unwrap();
        let want = max_pool_reference(&x, xs, k, s, p);
        assert_eq!(y.numel(), want.len());
        assert_close(
            &format!("max_pool2d {xs:?} {k}/{s}/{p}"),
            &y.to_vec().unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn global_avg_pool_linear_and_activations_match_the_definition() {
    let mut r = rng(12);
    let xs = [3, 5, 7, 3];
    let x = uniform(&mut r, 315, -2.0, 2.0);
    let y = ops::global_avg_pool(&t(&x, &xs)).unwrap();
    assert_eq!(y.shape(), [3, 5]);
    let want: Vec<f64> = x
        .chunks(21)
        .map(|p| p.iter().map(|&v| v as f64).sum::<f64>() / 21.0)
        .collect();
    assert_close("global_avg_pool", &y.to_vec().unwrap(), &want, 1e-6, 1e-6);

    let (n, k, m) = (5, 13, 7);
    let a = uniform(&mut r, n * k, -1.0, 1.0);
    let w = uniform(&mut r, m * k, -1.0, 1.0);
    let b = uniform(&mut r, m, -1.0, 1.0);
    let y = ops::linear(&t(&a, &[n, k]), &t(&w, &[m, k]), Some(&t(&b, &[m]))).unwrap();
    assert_eq!(y.shape(), [n, m]);
    let want: Vec<f64> = (0..n * m)
        .map(|idx| {
            let (i, o) = (idx / m, idx % m);
            b[o] as f64 + (0..k).map(|j| a[i * k + j] as f64 * w[o * k + j] as f64).sum::<f64>()
        })
        .collect();
    assert_close("linear", &y.to_vec().unwrap(), &want, 1e-5, 1e-5);

    let v = uniform(&mut r, 50, -6.0, 6.0);
    let x = t(&v, &[5, 10]);
    for (act, f) in [
        (Activation::Relu, (|z: f64| z.max(0.0)) as fn(f64) -> f64),
        (Activation::Tanh, |z: f64| z.tanh()),
        (Activation::Sigmoid, |z: f64| 1.0 / (1.0 + (-z).exp())),
    ] {
        let y = ops::activation(&x, act).unwrap().to_vec().unwrap();
        let want: Vec<f64> = v.iter().map(|&z| f(z as f64)).collect();
        assert_close(&format!("{act:?}"), &y, &want, 1e-6, 1e-6);
    }
    let b2 = uniform(&mut r, 50, -6.0, 6.0);
    let y = fused::add_activation(&x, &t(&b2, &[5, 10]), Activation::Relu)
        .unwrap()
        .to_vec()
        .unwrap();
    let want: Vec<f64> = v
        .iter()
        .zip(&b2)
        .map(|(&p, &q)| (p as f64 + q as f64).max(0.0))
        .collect();
    assert_close("add_activation relu", &y, &want, 1e-6, 0.0);
    let y = ops::scale(&x, -0.75).unwrap().to_vec().unwrap();
    assert_close(
        "scale",
        &y,
        &v.iter().map(|&z| -0.75 * z as f64).collect::<Vec<_>>(),
        0.0,
        1e-6,
    );
}

#[test]
fn shortcut_a_subsamples_and_pads_channels() {
    let mut r = rng(13);
    for (xs, c_out, s) in [([2, 16, 7, 7], 32, 2), ([1, 3, 5, 4], 8, 1), ([3, 5, 6, 5], 6, 3)] {
        let [n, c, h, w] = xs;
        let x = uniform(&mut r, xs.iter().product(), -1.0, 1.0);
        let y = ops::shortcut_a(&t(&x, &xs), c_out, s).unwrap();
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        // x[:, :, ::s, ::s], then (c_out - c) / 2 zero channels before and the rest after.
        assert_eq!(y.shape(), [n, c_out, oh, ow]);
        let before = (c_out - c) / 2;
        let mut want = vec![0.0f64; n * c_out * oh * ow];
        for i in 0..n {
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        want[((i * c_out + ch + before) * oh + oy) * ow + ox] =
                            x[((i * c + ch) * h + oy * s) * w + ox * s] as f64;
                    }
                }
            }
        }
        assert_close(
            &format!("shortcut_a {xs:?} -> {c_out}"),
            &y.to_vec().unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

fn log_softmax_loss(logits: &[f32], labels: &[i32], classes: usize) -> f64 {
    let n = labels.len();
    logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, &l)| {
            let m = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            lse - row[l as usize] as f64
        })
        .sum::<f64>()
        / n as f64
}

#[test]
fn cross_entropy_is_the_mean_negative_log_softmax() {
    let mut r = rng(14);
    for (n, classes, scale) in [(5, 7, 3.0f32), (1, 10, 1.0), (4, 2, 5.0), (3, 1000, 2.0), (6, 3, 500.0)] {
        let logits = uniform(&mut r, n * classes, -scale, scale);
        let labels: Vec<i32> = (0..n).map(|_| r.random_range(0..classes as i32)).collect();
        let loss = ops::cross_entropy(
            &t(&logits, &[n, classes]),
            &ops::labels_tensor(&labels, classes, DEV).unwrap(),
        )
        .unwrap();
        assert_eq!(loss.shape(), [1]);
        let got = loss.scalar().unwrap();
        let want = log_softmax_loss(&logits, &labels, classes);
        assert!(got.is_finite(), "loss not finite for logits of scale {scale}");
        assert!(
            (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "n {n} classes {classes}: got {got}, want {want}"
        );
    }
    // Uniform logits: log(classes) exactly.
    let loss = ops::cross_entropy(
        &t(&[0.3; 12], &[3, 4]),
        &ops::labels_tensor(&[0, 3, 1], 4, DEV).unwrap(),
    )
    .unwrap();
    assert!((loss.scalar().unwrap() as f64 - 4f64.ln()).abs() < 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Errors

fn err_text(r: resnet_core::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error {err:?} should mention {p:?}");
    }
}

#[test]
fn shape_errors_name_the_op_and_the_shapes() {
    let x = t(&[0.5; 2 * 3 * 5 * 5], &[2, 3, 5, 5]);
    let w = t(&[0.5; 4 * 2 * 9], &[4, 2, 3, 3]);
    assert_mentions(
        &err_text(ops::conv2d(&x, &w, None, 1, 1)),
        &["conv2d", "[2, 3, 5, 5]", "[4, 2, 3, 3]"],
    );
    let w3 = t(&[0.5; 4 * 3 * 9], &[4, 3, 3, 3]);
    assert_mentions(
        &err_text(ops::conv2d(&x, &w3, Some(&t(&[0.0; 3], &[3])), 1, 1)),
        &["conv2d", "bias", "[3]"],
    );
    assert_mentions(
        &err_text(ops::conv2d(&t(&[0.5; 15], &[3, 5]), &w3, None, 1, 1)),
        &["conv2d", "[3, 5]"],
    );
    let big = t(&[0.5; 4 * 3 * 49], &[4, 3, 7, 7]);
    assert_mentions(&err_text(ops::conv2d(&x, &big, None, 1, 0)), &["conv2d", "7x7"]);
    assert_mentions(&err_text(ops::conv2d(&x, &w3, None, 0, 1)), &["conv2d", "stride"]);

    let a = t(&[0.5; 12], &[3, 4]);
    let lw = t(&[0.5; 10], &[2, 5]);
    assert_mentions(&err_text(ops::linear(&a, &lw, None)), &["linear", "[3, 4]", "[2, 5]"]);
    let lw4 = t(&[0.5; 8], &[2, 4]);
    assert_mentions(
        &err_text(ops::linear(&a, &lw4, Some(&t(&[0.0; 3], &[3])))),
        &["linear", "bias", "[3]"],
    );

    assert_mentions(
        &err_text(ops::add(&a, &t(&[0.5; 12], &[4, 3]))),
        &["add", "[3, 4]", "[4, 3]"],
    );
    assert_mentions(
        &err_text(fused::add_activation(&a, &t(&[0.5; 4], &[1, 4]), Activation::Relu)),
        &["add", "[3, 4]", "[1, 4]"],
    );

    let p3 = t(&[1.0; 3], &[3]);
    let p2 = t(&[1.0; 2], &[2]);
    let bn = |gamma: &Tensor, running_var: &Tensor| {
        err_text(ops::batch_norm2d(
            &x,
            &BatchNormArgs {
                gamma,
                beta: &p3,
                running_mean: &p3,
                running_var,
                mode: BnMode::Train,
                sync: None,
                momentum: 0.1,
                eps: 1e-5,
            },
        ))
    };
    assert_mentions(&bn(&p2, &p3), &["batch_norm2d", "weight", "[2]", "[2, 3, 5, 5]"]);
    assert_mentions(&bn(&p3, &p2), &["batch_norm2d", "running_var", "[2]"]);
    assert_mentions(&err_text(ops::global_avg_pool(&a)), &["global_avg_pool", "[3, 4]"]);
    assert_mentions(&err_text(ops::max_pool2d(&x, 3, 2, 2)), &["max_pool2d", "padding"]);
    assert_mentions(&err_text(ops::max_pool2d(&a, 2, 2, 0)), &["max_pool2d", "[3, 4]"]);
    assert_mentions(&err_text(ops::reshape(&a, &[5, 2])), &["reshape", "[3, 4]", "[5, 2]"]);
    assert_mentions(
        &err_text(ops::shortcut_a(&x, 2, 2)),
        &["shortcut_a", "[2, 3, 5, 5]", "2 channels"],
    );

    let logits = t(&[0.1; 12], &[3, 4]);
    assert_mentions(
        &err_text(ops::cross_entropy(
            &logits,
            &ops::labels_tensor(&[0, 1], 4, DEV).unwrap(),
        )),
        &["cross_entropy", "[2]", "[3, 4]"],
    );
    assert_mentions(
        &err_text(ops::labels_tensor(&[0, 4, 1], 4, DEV)),
        &["label 4", "index 1", "4 classes"],
    );
    assert_mentions(&err_text(ops::labels_tensor(&[-1], 4, DEV)), &["label -1", "index 0"]);
    assert_mentions(
        &err_text(Tensor::from_vec(&[1.0; 5], &[2, 3], DEV)),
        &["[2, 3]", "6", "5"],
    );
    assert_mentions(&err_text(Tensor::parameter(&[1.0; 7], &[2, 3], DEV)), &["[2, 3]", "7"]);
}
