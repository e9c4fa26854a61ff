//! Analytic gradients (autograd `backward`) against central finite differences, for every op and
//! for a whole small ResNet, plus the accumulation semantics of `.grad`.
//!
//! The scalar checked is L = sum(y * R) for a fixed random R: built on the device as
//! `linear(reshape(y, [1, numel]), R[1, numel])` for backward, and summed in f64 on the host for
//! the finite differences (forwards under `no_grad`). `GC_DEBUG=1 cargo test --test gradcheck --
//! --nocapture` prints how close each check came to its tolerance.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_core::autograd::no_grad;
use resnet_core::backend::Activation;
use resnet_core::nn::{
    ActivationKind, BlockKind, BottleneckStride, Ctx, ResNet, ResNetSpec, ShortcutOption, StageSpec, Stem,
};
use resnet_core::ops::{self, BatchNormArgs, BnMode};
use resnet_core::{fused, Device, Tensor};

const DEV: Device = Device::Cpu;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn normal_ish(r: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    // Uniform in [-scale, scale]: never zero-filled, never constant.
    (0..len).map(|_| r.random_range(-scale..scale)).collect()
}

/// Values with |v| in [lo, hi], random sign: keeps ReLU inputs away from the kink.
fn away_from_zero(r: &mut ChaCha8Rng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let m = r.random_range(lo..hi);
            if r.random_bool(0.5) {
                m
            } else {
                -m
            }
        })
        .collect()
}

/// Distinct values at least `gap` apart, in random order (no ties for max pooling).
fn distinct(r: &mut ChaCha8Rng, len: usize, gap: f32) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = r.random_range(0..=i);
        idx.swap(i, j);
    }
    idx.iter().map(|&k| (k as f32 - len as f32 / 2.0) * gap).collect()
}

struct Input {
    name: &'static str,
    data: Vec<f32>,
    shape: Vec<usize>,
    grad: bool,
}

fn inp(name: &'static str, data: Vec<f32>, shape: &[usize]) -> Input {
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}");
    Input {
        name,
        data,
        shape: shape.to_vec(),
        grad: true,
    }
}

fn konst(name: &'static str, data: Vec<f32>, shape: &[usize]) -> Input {
    Input {
        grad: false,
        ..inp(name, data, shape)
    }
}

#[derive(Clone, Copy)]
struct Tol {
    eps: f32,
    atol: f64,
    rtol: f64,
}

/// Linear ops: finite differences are exact up to f32 rounding.
const LINEAR: Tol = Tol {
    eps: 1e-2,
    atol: 2e-4,
    rtol: 5e-4,
};
/// Smooth non-linear ops: O(eps^2) truncation error on top.
const SMOOTH: Tol = Tol {
    eps: 1e-2,
    atol: 2e-3,
    rtol: 5e-3,
};

fn weighted_sum(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Checks d(sum(f(inputs) * R))/d(input) for every input marked `grad`, at every element.
fn gradcheck(case: &str, inputs: &[Input], tol: Tol, f: impl Fn(&[Tensor]) -> resnet_core::Result<Tensor>) {
    // Analytic.
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|i| {
            if i.grad {
                Tensor::parameter(&i.data, &i.shape, DEV).unwrap()
            } else {
                Tensor::from_vec(&i.data, &i.shape, DEV).unwrap()
            }
        })
        .collect();
    let y = f(&tensors).unwrap_or_else(|e| panic!("{case}: forward failed: {e}"));
    assert!(y.requires_grad(), "{case}: output does not require grad");
    let n = y.numel();
    let r = normal_ish(&mut rng(0xC0FFEE ^ n as u64), n, 1.0);
    let rt = Tensor::from_vec(&r, &[1, n], DEV).unwrap();
    let loss = ops::linear(&ops::reshape(&y, &[1, n]).unwrap(), &rt, None).unwrap();
    assert_eq!(loss.shape(), [1, 1]);
    loss.backward()
        .unwrap_or_else(|e| panic!("{case}: backward failed: {e}"));
    // The loss the device computed agrees with the host's.
    let l_host = weighted_sum(&y.to_vec().unwrap(), &r);
    let l_dev = loss.scalar().unwrap() as f64;
    assert!(
        (l_host - l_dev).abs() <= 1e-4 * (1.0 + l_host.abs()),
        "{case}: loss {l_dev} vs host {l_host}"
    );

    let consts = |data: &[Vec<f32>]| -> Vec<Tensor> {
        inputs
            .iter()
            .zip(data)
            .map(|(i, d)| Tensor::from_vec(d, &i.shape, DEV).unwrap())
            .collect()
    };
    let eval = |data: &[Vec<f32>]| -> f64 {
        no_grad(|| {
            let y = f(&consts(data)).unwrap();
            weighted_sum(&y.to_vec().unwrap(), &r)
        })
    };
    let mut data: Vec<Vec<f32>> = inputs.iter().map(|i| i.data.clone()).collect();
    for (k, (input, t)) in inputs.iter().zip(&tensors).enumerate() {
        if !input.grad {
            assert!(t.grad().is_none(), "{case}: constant {} got a gradient", input.name);
            continue;
        }
        let g = t
            .grad()
            .unwrap_or_else(|| panic!("{case}: {} has no gradient", input.name));
        assert_eq!(
            g.shape(),
            input.shape.as_slice(),
            "{case}: gradient shape of {}",
            input.name
        );
        let analytic = g.to_vec().unwrap();
        assert!(
            analytic.iter().any(|&v| v.abs() > 1e-6),
            "{case}: gradient of {} is identically zero",
            input.name
        );
        let mut worst = (0.0f64, 0usize, 0.0f64, 0.0f64);
        for j in 0..input.data.len() {
            let orig = data[k][j];
            data[k][j] = orig + tol.eps;
            let plus = eval(&data);
            data[k][j] = orig - tol.eps;
            let minus = eval(&data);
            data[k][j] = orig;
            // The actual step after f32 rounding.
            let h = (orig + tol.eps) as f64 - (orig - tol.eps) as f64;
            let numeric = (plus - minus) / h;
            let a = analytic[j] as f64;
            let err = (a - numeric).abs();
            let allowed = tol.atol + tol.rtol * numeric.abs().max(1.0);
            if err / allowed > worst.0 {
                worst = (err / allowed, j, a, numeric);
            }
        }
        if std::env::var("GC_DEBUG").is_ok() {
            eprintln!("{case}: d/d{}: worst {:.3} of tolerance", input.name, worst.0);
        }
        assert!(
            worst.0 <= 1.0,
            "{case}: d/d{}[{}]: analytic {} vs numeric {} (error {:.2}x the tolerance)",
            input.name,
            worst.1,
            worst.2,
            worst.3,
            worst.0
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution

struct ConvCase {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    bias: bool,
}

fn conv_case(c: &ConvCase, seed: u64) {
    let mut r = rng(seed);
    let x = normal_ish(&mut r, c.n * c.c_in * c.h * c.w, 1.0);
    let w = normal_ish(&mut r, c.c_out * c.c_in * c.k * c.k, 0.5);
    let b = normal_ish(&mut r, c.c_out, 0.5);
    let mut inputs = vec![
        inp("x", x, &[c.n, c.c_in, c.h, c.w]),
        inp("w", w, &[c.c_out, c.c_in, c.k, c.k]),
    ];
    if c.bias {
        inputs.push(inp("bias", b, &[c.c_out]));
    }
    let name = format!(
        "conv2d x[{},{},{},{}] w[{},{},{k},{k}] stride {} pad {} bias {}",
        c.n,
        c.c_in,
        c.h,
        c.w,
        c.c_out,
        c.c_in,
        c.stride,
        c.padding,
        c.bias,
        k = c.k
    );
    let (s, p, has_bias) = (c.stride, c.padding, c.bias);
    gradcheck(&name, &inputs, LINEAR, |t| {
        ops::conv2d(&t[0], &t[1], if has_bias { Some(&t[2]) } else { None }, s, p)
    });
}

#[test]
fn conv2d_gradients() {
    let cases = [
        // kernel 1: pointwise fast path, and strided/padded 1x1 (projection shortcuts).
        ConvCase {
            n: 3,
            c_in: 5,
            h: 7,
            w: 5,
            c_out: 3,
            k: 1,
            stride: 1,
            padding: 0,
            bias: true,
        },
        ConvCase {
            n: 1,
            c_in: 3,
            h: 7,
            w: 5,
            c_out: 5,
            k: 1,
            stride: 2,
            padding: 0,
            bias: false,
        },
        ConvCase {
            n: 1,
            c_in: 3,
            h: 5,
            w: 7,
            c_out: 2,
            k: 1,
            stride: 3,
            padding: 1,
            bias: true,
        },
        // kernel 3
        ConvCase {
            n: 3,
            c_in: 3,
            h: 7,
            w: 5,
            c_out: 5,
            k: 3,
            stride: 1,
            padding: 1,
            bias: true,
        },
        ConvCase {
            n: 1,
            c_in: 1,
            h: 7,
            w: 5,
            c_out: 3,
            k: 3,
            stride: 2,
            padding: 1,
            bias: false,
        },
        ConvCase {
            n: 3,
            c_in: 5,
            h: 6,
            w: 7,
            c_out: 1,
            k: 3,
            stride: 3,
            padding: 0,
            bias: true,
        },
        ConvCase {
            n: 1,
            c_in: 3,
            h: 5,
            w: 4,
            c_out: 2,
            k: 3,
            stride: 1,
            padding: 2,
            bias: false,
        },
        // kernel 5
        ConvCase {
            n: 1,
            c_in: 3,
            h: 7,
            w: 5,
            c_out: 5,
            k: 5,
            stride: 1,
            padding: 2,
            bias: true,
        },
        ConvCase {
            n: 3,
            c_in: 1,
            h: 9,
            w: 6,
            c_out: 3,
            k: 5,
            stride: 2,
            padding: 3,
            bias: false,
        },
        ConvCase {
            n: 1,
            c_in: 5,
            h: 5,
            w: 5,
            c_out: 3,
            k: 5,
            stride: 1,
            padding: 0,
            bias: true,
        },
        // kernel 7: the ImageNet stem (7x7/2 pad 3) on a tiny odd image.
        ConvCase {
            n: 1,
            c_in: 3,
            h: 9,
            w: 7,
            c_out: 2,
            k: 7,
            stride: 2,
            padding: 3,
            bias: false,
        },
        ConvCase {
            n: 3,
            c_in: 1,
            h: 7,
            w: 8,
            c_out: 3,
            k: 7,
            stride: 3,
            padding: 2,
            bias: true,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        conv_case(c, 100 + i as u64);
    }
}

#[test]
fn conv2d_gradients_unusual_geometry() {
    // Stride 1 with padding >= kernel (no transposed-convolution shortcut for backward), and
    // rectangular kernels.
    conv_case(
        &ConvCase {
            n: 3,
            c_in: 2,
            h: 4,
            w: 5,
            c_out: 3,
            k: 3,
            stride: 1,
            padding: 3,
            bias: true,
        },
        200,
    );
    let mut r = rng(201);
    for (kh, kw, stride, padding) in [(1, 3, 1, 1), (5, 3, 2, 2), (3, 1, 1, 0)] {
        let (n, c_in, h, w, c_out) = (2, 3, 7, 6, 4);
        let x = normal_ish(&mut r, n * c_in * h * w, 1.0);
        let wt = normal_ish(&mut r, c_out * c_in * kh * kw, 0.5);
        let b = normal_ish(&mut r, c_out, 0.5);
        gradcheck(
            &format!("conv2d rectangular kernel {kh}x{kw} stride {stride} pad {padding}"),
            &[
                inp("x", x, &[n, c_in, h, w]),
                inp("w", wt, &[c_out, c_in, kh, kw]),
                inp("bias", b, &[c_out]),
            ],
            LINEAR,
            |t| ops::conv2d(&t[0], &t[1], Some(&t[2]), stride, padding),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Batch norm

fn bn_inputs(seed: u64, shape: [usize; 4]) -> Vec<Input> {
    let mut r = rng(seed);
    let c = shape[1];
    let x: Vec<f32> = normal_ish(&mut r, shape.iter().product(), 2.0)
        .iter()
        .map(|v| v + 0.7)
        .collect();
    let gamma: Vec<f32> = (0..c).map(|_| r.random_range(0.5..1.5)).collect();
    let beta = normal_ish(&mut r, c, 0.5);
    vec![inp("x", x, &shape), inp("gamma", gamma, &[c]), inp("beta", beta, &[c])]
}

#[test]
fn batch_norm_training_gradients() {
    for (seed, shape) in [(1, [3, 5, 4, 3]), (2, [1, 3, 5, 7]), (3, [4, 2, 1, 1])] {
        let inputs = bn_inputs(seed, shape);
        let c = shape[1];
        gradcheck(&format!("batch_norm2d training {shape:?}"), &inputs, SMOOTH, |t| {
            // Fresh running statistics per forward: they do not affect the training output.
            let rm = Tensor::from_vec(&vec![0.0; c], &[c], DEV)?;
            let rv = Tensor::from_vec(&vec![1.0; c], &[c], DEV)?;
            ops::batch_norm2d(
                &t[0],
                &BatchNormArgs {
                    gamma: &t[1],
                    beta: &t[2],
                    running_mean: &rm,
                    running_var: &rv,
                    mode: BnMode::Train,
                    sync: None,
                    momentum: 0.1,
                    eps: 1e-5,
                },
            )
        });
    }
}

#[test]
fn batch_norm_eval_gradients() {
    let shape = [2, 3, 5, 3];
    let inputs = bn_inputs(4, shape);
    let mut r = rng(5);
    let rm = Tensor::from_vec(&normal_ish(&mut r, 3, 1.0), &[3], DEV).unwrap();
    let rv_data: Vec<f32> = (0..3).map(|_| r.random_range(0.3..2.0)).collect();
    let rv = Tensor::from_vec(&rv_data, &[3], DEV).unwrap();
    gradcheck("batch_norm2d eval", &inputs, LINEAR, |t| {
        ops::batch_norm2d(
            &t[0],
            &BatchNormArgs {
                gamma: &t[1],
                beta: &t[2],
                running_mean: &rm,
                running_var: &rv,
                mode: BnMode::Eval,
                sync: None,
                momentum: 0.1,
                eps: 1e-5,
            },
        )
    });
    // Eval mode never touches the running statistics.
    assert_eq!(rv.to_vec().unwrap(), rv_data);
}

// ---------------------------------------------------------------------------------------------
// Elementwise

#[test]
fn activation_gradients() {
    let shape = [2, 3, 4, 5];
    let len = 120;
    let mut r = rng(10);
    let x_relu = away_from_zero(&mut r, len, 0.1, 2.0);
    gradcheck("relu", &[inp("x", x_relu.clone(), &shape)], LINEAR, |t| {
        ops::relu(&t[0])
    });
    gradcheck("activation relu", &[inp("x", x_relu, &shape)], LINEAR, |t| {
        ops::activation(&t[0], Activation::Relu)
    });
    let x = normal_ish(&mut r, len, 3.0);
    gradcheck("tanh", &[inp("x", x.clone(), &shape)], SMOOTH, |t| {
        ops::activation(&t[0], Activation::Tanh)
    });
    gradcheck("sigmoid", &[inp("x", x, &shape)], SMOOTH, |t| {
        ops::activation(&t[0], Activation::Sigmoid)
    });
}

#[test]
fn add_and_scale_gradients() {
    let mut r = rng(11);
    let shape = [3, 2, 5, 3];
    let a = normal_ish(&mut r, 90, 1.0);
    let b = normal_ish(&mut r, 90, 1.0);
    gradcheck(
        "add",
        &[inp("a", a.clone(), &shape), inp("b", b.clone(), &shape)],
        LINEAR,
        |t| ops::add(&t[0], &t[1]),
    );
    gradcheck(
        "add, b constant",
        &[inp("a", a.clone(), &shape), konst("b", b.clone(), &shape)],
        LINEAR,
        |t| ops::add(&t[0], &t[1]),
    );
    // The same tensor on both sides: gradients of the two uses must add up (2 R).
    gradcheck("add(x, x)", &[inp("x", a.clone(), &shape)], LINEAR, |t| {
        ops::add(&t[0], &t[0])
    });
    gradcheck("scale -1.7", &[inp("x", a.clone(), &shape)], LINEAR, |t| {
        ops::scale(&t[0], -1.7)
    });
    gradcheck("scale 0.3", &[inp("x", a[..7].to_vec(), &[7, 1])], LINEAR, |t| {
        ops::scale(&t[0], 0.3)
    });
}

#[test]
fn add_activation_gradients() {
    let mut r = rng(12);
    let shape = [1, 3, 5, 7];
    let len = 105;
    let b = normal_ish(&mut r, len, 1.5);
    // a + b kept away from zero for ReLU.
    let target = away_from_zero(&mut r, len, 0.1, 2.0);
    let a: Vec<f32> = target.iter().zip(&b).map(|(t, b)| t - b).collect();
    let ins = || vec![inp("a", a.clone(), &shape), inp("b", b.clone(), &shape)];
    gradcheck("add_activation relu", &ins(), LINEAR, |t| {
        fused::add_activation(&t[0], &t[1], Activation::Relu)
    });
    gradcheck("add_activation tanh", &ins(), SMOOTH, |t| {
        fused::add_activation(&t[0], &t[1], Activation::Tanh)
    });
    gradcheck("add_activation sigmoid", &ins(), SMOOTH, |t| {
        fused::add_activation(&t[0], &t[1], Activation::Sigmoid)
    });
}

// ---------------------------------------------------------------------------------------------
// Pooling, dense, shape ops, loss

#[test]
fn max_pool_gradients() {
    let mut r = rng(13);
    for (shape, k, s, p) in [
        ([2, 3, 7, 5], 3, 2, 1),
        ([1, 2, 6, 7], 2, 2, 0),
        ([3, 1, 5, 5], 3, 1, 1),
        ([1, 2, 7, 7], 3, 2, 0),
    ] {
        let len = shape.iter().product();
        // Gaps of 0.05 > 2 eps: perturbation never reorders a window.
        let x = distinct(&mut r, len, 0.05);
        gradcheck(
            &format!("max_pool2d {shape:?} {k}x{k}/{s} pad {p}"),
            &[inp("x", x, &shape)],
            LINEAR,
            |t| ops::max_pool2d(&t[0], k, s, p),
        );
    }
}

#[test]
fn global_avg_pool_gradients() {
    let mut r = rng(14);
    gradcheck(
        "global_avg_pool",
        &[inp("x", normal_ish(&mut r, 210, 1.0), &[2, 3, 5, 7])],
        LINEAR,
        |t| ops::global_avg_pool(&t[0]),
    );
    gradcheck(
        "global_avg_pool 1x1",
        &[inp("x", normal_ish(&mut r, 5, 1.0), &[1, 5, 1, 1])],
        LINEAR,
        |t| ops::global_avg_pool(&t[0]),
    );
}

#[test]
fn linear_gradients() {
    let mut r = rng(15);
    let (n, i, o) = (3, 7, 5);
    let x = normal_ish(&mut r, n * i, 1.0);
    let w = normal_ish(&mut r, o * i, 0.5);
    let b = normal_ish(&mut r, o, 0.5);
    gradcheck(
        "linear with bias",
        &[
            inp("x", x.clone(), &[n, i]),
            inp("w", w.clone(), &[o, i]),
            inp("bias", b.clone(), &[o]),
        ],
        LINEAR,
        |t| ops::linear(&t[0], &t[1], Some(&t[2])),
    );
    gradcheck(
        "linear without bias",
        &[inp("x", x.clone(), &[n, i]), inp("w", w.clone(), &[o, i])],
        LINEAR,
        |t| ops::linear(&t[0], &t[1], None),
    );
    gradcheck(
        "linear, batch 1",
        &[inp("x", x[..i].to_vec(), &[1, i]), inp("w", w.clone(), &[o, i])],
        LINEAR,
        |t| ops::linear(&t[0], &t[1], None),
    );
    gradcheck(
        "linear, x constant",
        &[konst("x", x, &[n, i]), inp("w", w, &[o, i]), inp("bias", b, &[o])],
        LINEAR,
        |t| ops::linear(&t[0], &t[1], Some(&t[2])),
    );
}

#[test]
fn reshape_and_flatten_gradients() {
    let mut r = rng(16);
    let x = normal_ish(&mut r, 2 * 3 * 5 * 7, 1.0);
    gradcheck("flatten", &[inp("x", x.clone(), &[2, 3, 5, 7])], LINEAR, |t| {
        ops::flatten(&t[0])
    });
    gradcheck("reshape", &[inp("x", x.clone(), &[2, 3, 5, 7])], LINEAR, |t| {
        ops::reshape(&t[0], &[15, 14])
    });
    // A reshape between two ops: its gradient must reach the first op with the right layout.
    let w = normal_ish(&mut r, 4 * 105, 0.2);
    gradcheck(
        "flatten then linear",
        &[inp("x", x, &[2, 3, 5, 7]), inp("w", w, &[4, 105])],
        LINEAR,
        |t| ops::linear(&ops::flatten(&ops::scale(&t[0], 2.0)?)?, &t[1], None),
    );
}

#[test]
fn cross_entropy_gradients() {
    let mut r = rng(17);
    for (n, classes) in [(5, 7), (1, 10), (3, 2)] {
        let logits = normal_ish(&mut r, n * classes, 3.0);
        let labels: Vec<i32> = (0..n).map(|_| r.random_range(0..classes as i32)).collect();
        let y = ops::labels_tensor(&labels, classes, DEV).unwrap();
        gradcheck(
            &format!("cross_entropy n {n} classes {classes}"),
            &[inp("logits", logits, &[n, classes])],
            SMOOTH,
            |t| ops::cross_entropy(&t[0], &y),
        );
        // Composed after a linear layer (gradient flows through the loss into w and x).
    }
    let (n, i, classes) = (4, 6, 3);
    let x = normal_ish(&mut r, n * i, 1.0);
    let w = normal_ish(&mut r, classes * i, 1.0);
    let y = ops::labels_tensor(&[2, 0, 1, 2], classes, DEV).unwrap();
    gradcheck(
        "linear -> cross_entropy",
        &[inp("x", x, &[n, i]), inp("w", w, &[classes, i])],
        SMOOTH,
        |t| ops::cross_entropy(&ops::linear(&t[0], &t[1], None)?, &y),
    );
}

#[test]
fn shortcut_a_gradients() {
    let mut r = rng(18);
    gradcheck(
        "shortcut_a 16->32 stride 2 on 7x7",
        &[inp("x", normal_ish(&mut r, 2 * 16 * 49, 1.0), &[2, 16, 7, 7])],
        LINEAR,
        |t| ops::shortcut_a(&t[0], 32, 2),
    );
    gradcheck(
        "shortcut_a 3->8 stride 1",
        &[inp("x", normal_ish(&mut r, 3 * 5 * 4, 1.0), &[1, 3, 5, 4])],
        LINEAR,
        |t| ops::shortcut_a(&t[0], 8, 1),
    );
    gradcheck(
        "shortcut_a 5->5 stride 3 on 7x5",
        &[inp("x", normal_ish(&mut r, 3 * 5 * 35, 1.0), &[3, 5, 7, 5])],
        LINEAR,
        |t| ops::shortcut_a(&t[0], 5, 3),
    );
}

#[test]
fn composite_block_gradients() {
    // conv -> bn (train) -> relu -> conv -> bn -> add_activation with a shortcut, as a basic
    // block computes it: gradients from two paths into x must add up.
    let mut r = rng(19);
    let shape = [2, 3, 5, 4];
    let x = normal_ish(&mut r, 120, 1.0);
    let w1 = normal_ish(&mut r, 4 * 3 * 9, 0.4);
    let w2 = normal_ish(&mut r, 8 * 4 * 9, 0.3);
    let inputs = [
        inp("x", x, &shape),
        inp("w1", w1, &[4, 3, 3, 3]),
        inp("w2", w2, &[8, 4, 3, 3]),
    ];
    let bn = |x: &Tensor, c: usize| -> resnet_core::Result<Tensor> {
        let (g, b) = (vec![1.0; c], vec![0.0; c]);
        let gamma = Tensor::from_vec(&g, &[c], DEV)?;
        let beta = Tensor::from_vec(&b, &[c], DEV)?;
        let (rm, rv) = (Tensor::from_vec(&b, &[c], DEV)?, Tensor::from_vec(&g, &[c], DEV)?);
        let args = BatchNormArgs {
            gamma: &gamma,
            beta: &beta,
            running_mean: &rm,
            running_var: &rv,
            mode: BnMode::Train,
            sync: None,
            momentum: 0.1,
            eps: 1e-5,
        };
        ops::batch_norm2d(x, &args)
    };
    // Smooth activation so finite differences are valid everywhere.
    gradcheck("basic block (tanh)", &inputs, SMOOTH, |t| {
        let y = ops::activation(&bn(&ops::conv2d(&t[0], &t[1], None, 2, 1)?, 4)?, Activation::Tanh)?;
        let y = bn(&ops::conv2d(&y, &t[2], None, 1, 1)?, 8)?;
        fused::add_activation(&y, &ops::shortcut_a(&t[0], 8, 2)?, Activation::Tanh)
    });
}

// ---------------------------------------------------------------------------------------------
// A whole ResNet

/// (parameter name, element, analytic, numeric) for a few elements of parameters in every part of
/// a CIFAR ResNet-8 in training mode (batch statistics), batch 4 of 6x6 two-channel images.
fn resnet_gradients(
    option: ShortcutOption,
    act: ActivationKind,
    seed: u64,
    eps: f32,
) -> Vec<(String, usize, f64, f64)> {
    let mut spec = ResNetSpec::cifar(8, option, false, 2, 3).unwrap();
    spec.activation = act;
    let mut names = vec![
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.weight",
        "layer2.0.conv1.weight",
        "layer2.0.conv2.weight",
        "layer2.0.bn1.bias",
        "layer3.0.conv2.weight",
        "layer3.0.bn2.bias",
        "fc.weight",
        "fc.bias",
    ];
    if option == ShortcutOption::B {
        names.extend(["layer2.0.downsample.0.weight", "layer3.0.downsample.1.weight"]);
    }
    net_gradients(&spec, &names, 6, seed, eps)
}

/// The same for any spec (2 input channels, 3 classes), images `hw` x `hw`, parameters `names`.
fn net_gradients(spec: &ResNetSpec, names: &[&str], hw: usize, seed: u64, eps: f32) -> Vec<(String, usize, f64, f64)> {
    let (option, act) = (spec.shortcut, spec.activation);
    let net = ResNet::new(spec, seed, DEV).unwrap();
    let mut r = rng(seed + 1);
    let x = Tensor::from_vec(&normal_ish(&mut r, 4 * 2 * hw * hw, 1.5), &[4, 2, hw, hw], DEV).unwrap();
    let y = ops::labels_tensor(&[0, 2, 1, 2], 3, DEV).unwrap();
    let loss_of = || ops::cross_entropy(&net.forward(&x, &Ctx::train())?, &y);

    loss_of().unwrap().backward().unwrap();
    let params = net.parameters();
    // Every parameter received a gradient of its own shape.
    for (name, p) in &params {
        let g = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
        assert_eq!(g.shape(), p.shape(), "{name}");
    }
    let mut results = Vec::new();
    for &name in names {
        let (_, p) = params
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        let analytic = p.grad().unwrap().to_vec().unwrap();
        let orig = p.to_vec().unwrap();
        // A few random elements, plus the one with the largest gradient.
        let mut picks: Vec<usize> = (0..3).map(|_| r.random_range(0..orig.len())).collect();
        picks.push(
            (0..orig.len())
                .max_by(|&a, &b| analytic[a].abs().total_cmp(&analytic[b].abs()))
                .unwrap(),
        );
        for j in picks {
            let eval_at = |v: f32| -> f64 {
                let mut d = orig.clone();
                d[j] = v;
                p.set_storage(DEV.backend().upload(&d).unwrap()).unwrap();
                let l = no_grad(|| loss_of().unwrap().scalar().unwrap()) as f64;
                p.set_storage(DEV.backend().upload(&orig).unwrap()).unwrap();
                l
            };
            let (hi, lo) = (orig[j] + eps, orig[j] - eps);
            let numeric = (eval_at(hi) - eval_at(lo)) / (hi as f64 - lo as f64);
            results.push((name.to_string(), j, analytic[j] as f64, numeric));
        }
    }
    if std::env::var("GC_DEBUG").is_ok() {
        for (name, j, a, n) in &results {
            eprintln!(
                "{} {option:?} {act:?} {name}[{j}] analytic {a:.6} numeric {n:.6}",
                spec.name()
            );
        }
    }
    let largest = results.iter().map(|r| r.3.abs()).fold(0.0, f64::max);
    assert!(largest > 0.05, "gradients are suspiciously small ({largest})");
    results
}

/// With a smooth activation the finite differences are accurate to ~1e-4 and every element is
/// checked tightly: this covers the composition of every rule through the network.
fn resnet_tanh(option: ShortcutOption, seed: u64) {
    for (name, j, a, n) in resnet_gradients(option, ActivationKind::Tanh, seed, 3e-3) {
        assert!(
            (a - n).abs() <= 3e-4 + 1e-2 * n.abs(),
            "{option:?} tanh: d loss / d {name}[{j}]: analytic {a} vs numeric {n}"
        );
    }
}

/// With ReLU, batch statistics couple every unit to every earlier parameter, and among the ~10^4
/// units some pre-activation always lies within a step of its kink, so a single finite
/// difference is only good to a few 1e-3. Element-wise checks are loose; the whole sampled
/// gradient vector must still agree closely.
fn resnet_relu(option: ShortcutOption, seed: u64) {
    let results = resnet_gradients(option, ActivationKind::Relu, seed, 5e-4);
    let (mut dot, mut aa, mut nn, mut diff) = (0.0, 0.0, 0.0, 0.0);
    for (name, j, a, n) in &results {
        assert!(
            (a - n).abs() <= 1e-2 + 0.05 * n.abs(),
            "{option:?} relu: d loss / d {name}[{j}]: analytic {a} vs numeric {n}"
        );
        dot += a * n;
        aa += a * a;
        nn += n * n;
        diff += (a - n) * (a - n);
    }
    let cosine = dot / (aa * nn).sqrt();
    let rel = (diff / nn).sqrt();
    if std::env::var("GC_DEBUG").is_ok() {
        eprintln!("{option:?} relu: cosine {cosine}, relative error {rel}");
    }
    assert!(
        cosine > 0.9995 && rel < 0.04,
        "{option:?} relu: cosine {cosine}, relative error {rel}"
    );
}

#[test]
fn resnet8_option_a_gradients_tanh() {
    resnet_tanh(ShortcutOption::A, 7);
}

#[test]
fn resnet8_option_b_gradients_tanh() {
    resnet_tanh(ShortcutOption::B, 8);
}

#[test]
fn resnet8_option_a_gradients_relu() {
    resnet_relu(ShortcutOption::A, 7);
}

#[test]
fn resnet8_option_b_gradients_relu() {
    resnet_relu(ShortcutOption::B, 8);
}

/// Tight element-wise checks (tanh) of a whole network.
fn check_tanh(spec: &ResNetSpec, names: &[&str], hw: usize, seed: u64) {
    let results = net_gradients(spec, names, hw, seed, 3e-3);
    assert_eq!(results.len(), 4 * names.len());
    for (name, j, a, n) in results {
        assert!(
            (a - n).abs() <= 3e-4 + 1e-2 * n.abs(),
            "{}: d loss / d {name}[{j}]: analytic {a} vs numeric {n}",
            spec.name()
        );
    }
}

/// PreResNet-8 (basic blocks, option B: projections of the pre-activated input, no BN in them;
/// option A: the zero-padded pre-activated input), bare stem, bn_final.
#[test]
fn pre_activation_resnet8_gradients_tanh() {
    for (option, seed) in [(ShortcutOption::B, 30), (ShortcutOption::A, 31)] {
        let mut spec = ResNetSpec::cifar(8, option, false, 2, 3)
            .unwrap()
            .with_pre_activation(true);
        spec.activation = ActivationKind::Tanh;
        let mut names = vec![
            "conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.conv1.weight",
            "layer1.0.bn2.bias",
            "layer1.0.conv2.weight",
            "layer2.0.bn1.weight",
            "layer2.0.conv1.weight",
            "layer2.0.conv2.weight",
            "layer3.0.bn2.weight",
            "layer3.0.conv2.weight",
            "bn_final.weight",
            "bn_final.bias",
            "fc.weight",
            "fc.bias",
        ];
        if option == ShortcutOption::B {
            names.extend(["layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight"]);
        }
        check_tanh(&spec, &names, 6, seed);
    }
}

/// A small pre-activation bottleneck net, option B: with a CIFAR stem (a bare convolution, every
/// block with bn1) and the stride in the first 1x1; with an ImageNet stem (conv-BN-act-max pool,
/// then a first block without bn1) and the stride in the 3x3. Through the max pool a finite
/// difference of the stem's weights can flip a window's maximum, so there the stem is left to
/// the op-level checks.
#[test]
fn pre_activation_bottleneck_gradients_tanh() {
    for (stem, stride, seed) in [
        (Stem::Cifar, BottleneckStride::Conv1x1, 32),
        (Stem::Imagenet, BottleneckStride::Conv3x3, 33),
    ] {
        let mut spec = ResNetSpec::imagenet(50, ShortcutOption::B, 2, 3)
            .unwrap()
            .with_pre_activation(true);
        spec.activation = ActivationKind::Tanh;
        spec.stem = stem;
        spec.bottleneck_stride = stride;
        spec.stem_width = 4;
        spec.stages = tiny_bottleneck_stages();
        let mut names = vec![
            "layer1.0.conv1.weight",
            "layer1.0.bn2.weight",
            "layer1.0.conv3.weight",
            "layer1.0.downsample.0.weight",
            "layer1.1.bn1.bias",
            "layer1.1.conv2.weight",
            "layer2.0.bn1.weight",
            "layer2.0.conv1.weight",
            "layer2.0.bn3.bias",
            "layer2.0.conv3.weight",
            "layer2.0.downsample.0.weight",
            "bn_final.weight",
            "fc.weight",
        ];
        let hw = match stem {
            Stem::Cifar => {
                names.extend(["conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias"]);
                6
            }
            Stem::Imagenet => 12,
        };
        check_tanh(&spec, &names, hw, seed);
    }
}

/// Networks without batch norm (the vanishing-gradient experiments): CIFAR ResNet-8 (option A:
/// zero-padded identity; option B: bare 1x1 projections), plain-8, and pre-activation ResNet-8
/// (act-conv, option B, final activation without `bn_final`). Every convolution's weight and the
/// classifier are checked (there is nothing else to check).
#[test]
fn batch_norm_free_resnet8_gradients_tanh() {
    for (option, plain, pre, seed) in [
        (ShortcutOption::A, false, false, 40),
        (ShortcutOption::B, false, false, 41),
        (ShortcutOption::A, true, false, 42),
        (ShortcutOption::B, false, true, 43),
    ] {
        let mut spec = ResNetSpec::cifar(8, option, plain, 2, 3)
            .unwrap()
            .with_pre_activation(pre)
            .with_batch_norm(false);
        spec.activation = ActivationKind::Tanh;
        let mut names = vec![
            "conv1.weight",
            "layer1.0.conv1.weight",
            "layer1.0.conv2.weight",
            "layer2.0.conv1.weight",
            "layer2.0.conv2.weight",
            "layer3.0.conv1.weight",
            "layer3.0.conv2.weight",
            "fc.weight",
            "fc.bias",
        ];
        if option == ShortcutOption::B {
            names.extend(["layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight"]);
        }
        let net = ResNet::new(&spec, seed, DEV).unwrap();
        assert_eq!(net.parameters().len(), names.len(), "{} without BN", spec.name());
        check_tanh(&spec, &names, 6, seed);
    }
}

/// Small bottleneck nets without batch norm, ImageNet stem (conv-act-max pool): option C
/// (projections on every block, no `downsample.1`) in the original ordering, option B in the
/// pre-activation one (the first block has no activation before `conv1`). As above, the stem is
/// left to the op-level checks (the max pool).
#[test]
fn batch_norm_free_bottleneck_gradients_tanh() {
    for (option, pre, seed) in [(ShortcutOption::C, false, 44), (ShortcutOption::B, true, 45)] {
        let mut spec = ResNetSpec::imagenet(50, option, 2, 3)
            .unwrap()
            .with_pre_activation(pre)
            .with_batch_norm(false);
        spec.activation = ActivationKind::Tanh;
        spec.stem_width = 4;
        spec.stages = tiny_bottleneck_stages();
        let mut names = vec![
            "layer1.0.conv1.weight",
            "layer1.0.conv3.weight",
            "layer1.0.downsample.0.weight",
            "layer1.1.conv2.weight",
            "layer2.0.conv1.weight",
            "layer2.0.conv2.weight",
            "layer2.0.conv3.weight",
            "layer2.0.downsample.0.weight",
            "fc.weight",
        ];
        if option == ShortcutOption::C {
            names.push("layer1.1.downsample.0.weight");
        }
        check_tanh(&spec, &names, 12, seed);
    }
}

// ---------------------------------------------------------------------------------------------
// Accumulation, zero_grad, no_grad, errors

fn weighted_loss(x: &Tensor, w: &Tensor) -> Tensor {
    let y = ops::conv2d(x, w, None, 1, 1).unwrap();
    let n = y.numel();
    let r = Tensor::from_vec(&normal_ish(&mut rng(3), n, 1.0), &[1, n], DEV).unwrap();
    ops::linear(&ops::reshape(&y, &[1, n]).unwrap(), &r, None).unwrap()
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let mut r = rng(20);
    let x = Tensor::parameter(&normal_ish(&mut r, 2 * 3 * 5 * 4, 1.0), &[2, 3, 5, 4], DEV).unwrap();
    let w = Tensor::parameter(&normal_ish(&mut r, 2 * 3 * 9, 1.0), &[2, 3, 3, 3], DEV).unwrap();
    assert!(x.grad().is_none() && w.grad().is_none());
    weighted_loss(&x, &w).backward().unwrap();
    let (gx1, gw1) = (x.grad().unwrap().to_vec().unwrap(), w.grad().unwrap().to_vec().unwrap());
    assert!(gw1.iter().any(|&v| v != 0.0));
    // A second backward over a fresh graph adds to .grad.
    weighted_loss(&x, &w).backward().unwrap();
    let (gx2, gw2) = (x.grad().unwrap().to_vec().unwrap(), w.grad().unwrap().to_vec().unwrap());
    for (a, b) in gx1.iter().zip(&gx2).chain(gw1.iter().zip(&gw2)) {
        assert!(
            (2.0 * a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "accumulated {b}, single {a}"
        );
    }
    // Backward twice through the same graph also accumulates (the graph is not consumed).
    let l = weighted_loss(&x, &w);
    x.zero_grad();
    w.zero_grad();
    assert!(
        x.grad().is_none() && w.grad().is_none(),
        "zero_grad must clear the gradient"
    );
    l.backward().unwrap();
    l.backward().unwrap();
    let gw3 = w.grad().unwrap().to_vec().unwrap();
    for (a, b) in gw1.iter().zip(&gw3) {
        assert!((2.0 * a - b).abs() <= 1e-5 * (1.0 + b.abs()));
    }
    w.zero_grad();
    weighted_loss(&x, &w).backward().unwrap();
    assert_eq!(
        w.grad().unwrap().to_vec().unwrap(),
        gw1,
        "after zero_grad one backward gives the single gradient"
    );
}

/// The training step's backward (`Graph::Free`) releases each op once its rule has run, so an
/// activation nobody else holds is freed during the pass; the gradients are the same bits as a
/// backward that keeps the graph, and a second pass through a freed graph is a clear error.
#[test]
fn a_freeing_backward_releases_activations_and_refuses_a_second_pass() {
    use resnet_core::autograd::{backward_with, Graph};
    use resnet_core::backend::Storage;
    use std::sync::Arc;
    let mut r = rng(23);
    let x = Tensor::from_vec(&normal_ish(&mut r, 2 * 3 * 6 * 5, 1.0), &[2, 3, 6, 5], DEV).unwrap();
    let w1 = Tensor::parameter(&normal_ish(&mut r, 4 * 3 * 9, 0.5), &[4, 3, 3, 3], DEV).unwrap();
    let w2 = Tensor::parameter(&normal_ish(&mut r, 4 * 4 * 9, 0.5), &[4, 4, 3, 3], DEV).unwrap();
    let mut grads = Vec::new();
    for graph in [Graph::Keep, Graph::Free] {
        w1.zero_grad();
        w2.zero_grad();
        let hidden = ops::relu(&ops::conv2d(&x, &w1, None, 1, 1).unwrap()).unwrap();
        let loss = weighted_loss(&hidden, &w2);
        let Storage::Cpu(buffer) = hidden.storage() else {
            unreachable!("a CPU tensor")
        };
        let watch = Arc::downgrade(&buffer);
        drop((buffer, hidden));
        assert!(
            watch.upgrade().is_some(),
            "the graph holds the activation before backward"
        );
        backward_with(&loss, graph, &mut |_| Ok(())).unwrap();
        grads.push([
            w1.grad().unwrap().to_vec().unwrap(),
            w2.grad().unwrap().to_vec().unwrap(),
        ]);
        match graph {
            Graph::Keep => {
                assert!(watch.upgrade().is_some(), "a kept graph still holds the activation");
                loss.backward().unwrap();
            }
            Graph::Free => {
                assert!(
                    watch.upgrade().is_none(),
                    "the activation outlived the backward that freed its graph"
                );
                let err = loss.backward().unwrap_err().to_string();
                assert!(
                    err.contains("second time") && err.contains("forward pass again"),
                    "{err}"
                );
            }
        }
    }
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (keep, free) in grads[0].iter().zip(&grads[1]) {
        assert!(keep.iter().any(|&g| g != 0.0));
        assert_eq!(bits(keep), bits(free));
    }
}

#[test]
fn no_grad_records_nothing() {
    let mut r = rng(21);
    let x = Tensor::parameter(&normal_ish(&mut r, 12, 1.0), &[3, 4], DEV).unwrap();
    let w = Tensor::parameter(&normal_ish(&mut r, 8, 1.0), &[2, 4], DEV).unwrap();
    let y = no_grad(|| ops::relu(&ops::linear(&x, &w, None).unwrap()).unwrap());
    assert!(!y.requires_grad());
    assert!(y.is_leaf());
    let err = no_grad(|| {
        ops::cross_entropy(
            &ops::linear(&x, &w, None).unwrap(),
            &ops::labels_tensor(&[0, 1, 1], 2, DEV).unwrap(),
        )
    })
    .unwrap()
    .backward()
    .unwrap_err();
    assert!(err.to_string().contains("does not require grad"), "{err}");
    assert!(x.grad().is_none() && w.grad().is_none());
    // Recording resumes after no_grad, even when the closure panics.
    let caught = std::panic::catch_unwind(|| no_grad(|| panic!("inside no_grad")));
    assert!(caught.is_err());
    let y = ops::linear(&x, &w, None).unwrap();
    assert!(y.requires_grad());
    // Constants alone record nothing either.
    let c = Tensor::from_vec(&[1.0, 2.0], &[1, 2], DEV).unwrap();
    assert!(!ops::scale(&c, 2.0).unwrap().requires_grad());
}

#[test]
fn backward_on_non_scalar_is_an_error() {
    let x = Tensor::parameter(&normal_ish(&mut rng(22), 15, 1.0), &[3, 5], DEV).unwrap();
    let y = ops::scale(&x, 2.0).unwrap();
    let err = y.backward().unwrap_err().to_string();
    assert!(err.contains("[3, 5]"), "error should name the shape: {err}");
    assert!(err.contains("scalar"), "{err}");
    assert!(x.grad().is_none());
}

fn fresh_bn_args<'a>(t: &'a [Tensor], rm: &'a Tensor, rv: &'a Tensor) -> BatchNormArgs<'a> {
    BatchNormArgs {
        gamma: &t[1],
        beta: &t[2],
        running_mean: rm,
        running_var: rv,
        mode: BnMode::Train,
        sync: None,
        momentum: 0.1,
        eps: 1e-5,
    }
}

#[test]
fn fused_batch_norm_activation_gradients() {
    let shape = [3, 4, 3, 5];
    for act in [Activation::Tanh, Activation::Sigmoid] {
        for with_residual in [false, true] {
            let mut inputs = bn_inputs(20, shape);
            if with_residual {
                let mut r = rng(21);
                inputs.push(inp("residual", normal_ish(&mut r, shape.iter().product(), 1.0), &shape));
            }
            gradcheck(
                &format!("batch_norm2d_act {act:?} residual={with_residual}"),
                &inputs,
                SMOOTH,
                |t| {
                    let rm = Tensor::from_vec(&[0.0; 4], &[4], DEV)?;
                    let rv = Tensor::from_vec(&[1.0; 4], &[4], DEV)?;
                    fused::batch_norm_act(&t[0], &fresh_bn_args(t, &rm, &rv), t.get(3), act, None)
                },
            );
        }
    }
}

/// The fused op must be exactly the composition it replaces, ReLU included (where finite
/// differences are unreliable at the kink): same output, same gradients, bit for bit; and what
/// its tap sees is the batch norm's output.
#[test]
fn fused_batch_norm_relu_equals_the_unfused_ops() {
    let shape = [2, 3, 4, 4];
    let mut r = rng(22);
    let data = normal_ish(&mut r, 96, 1.5);
    let res = normal_ish(&mut r, 96, 1.0);
    let gamma: Vec<f32> = (0..3).map(|_| r.random_range(0.5..1.5)).collect();
    let beta = normal_ish(&mut r, 3, 0.5);
    let run = |fused: bool| {
        let x = Tensor::parameter(&data, &shape, DEV).unwrap();
        let g = Tensor::parameter(&gamma, &[3], DEV).unwrap();
        let b = Tensor::parameter(&beta, &[3], DEV).unwrap();
        let s = Tensor::parameter(&res, &shape, DEV).unwrap();
        let rm = Tensor::from_vec(&[0.0; 3], &[3], DEV).unwrap();
        let rv = Tensor::from_vec(&[1.0; 3], &[3], DEV).unwrap();
        let t = [x.clone(), g.clone(), b.clone()];
        let args = fresh_bn_args(&t, &rm, &rv);
        let bn_output = std::cell::RefCell::new(Vec::new());
        let y = if fused {
            let tap = |r: &Tensor| *bn_output.borrow_mut() = r.to_vec().unwrap();
            fused::batch_norm_act(&x, &args, Some(&s), Activation::Relu, Some(&tap)).unwrap()
        } else {
            let r = ops::batch_norm2d(&x, &args).unwrap();
            *bn_output.borrow_mut() = r.to_vec().unwrap();
            fused::add_activation(&r, &s, Activation::Relu).unwrap()
        };
        let w = Tensor::from_vec(&res, &[1, 96], DEV).unwrap();
        ops::linear(&ops::reshape(&y, &[1, 96]).unwrap(), &w, None)
            .unwrap()
            .backward()
            .unwrap();
        let grads: Vec<Vec<f32>> = [&x, &g, &b, &s]
            .iter()
            .map(|t| t.grad().unwrap().to_vec().unwrap())
            .collect();
        let bn_output = bn_output.into_inner();
        assert_eq!(bn_output.len(), 96, "the tap saw the batch-norm output");
        (
            y.to_vec().unwrap(),
            grads,
            rm.to_vec().unwrap(),
            rv.to_vec().unwrap(),
            bn_output,
        )
    };
    assert_eq!(run(true), run(false));
}

/// Two bottleneck stages small enough for whole-net finite differences (one with a stride-2 projection).
fn tiny_bottleneck_stages() -> Vec<StageSpec> {
    vec![
        StageSpec {
            block: BlockKind::Bottleneck,
            count: 2,
            width: 2,
            stride: 1,
        },
        StageSpec {
            block: BlockKind::Bottleneck,
            count: 1,
            width: 3,
            stride: 2,
        },
    ]
}
