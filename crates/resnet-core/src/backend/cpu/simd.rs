//! Loops compiled for the widest vectors the CPU offers, chosen at run time.
//!
//! The crate is built for baseline x86-64 (SSE2) so that a prebuilt binary runs everywhere; the
//! compiler then vectorises plain loops 4 floats wide. A function declared with `wide_fn!` is
//! compiled twice, as is and with AVX-512 enabled, and the second runs where the CPU has it, so
//! the same source loop becomes 16 floats wide there. Both are the same operations in the same
//! order (no reassociation, no fused multiply-add unless spelled out), so results do not depend
//! on the CPU. Closures passed in are inlined into each copy.

/// `wide_fn! { pub fn name(args) -> T { body } }`: `name` runs `body` compiled for AVX-512 where
/// this CPU has it (detected at run time), and for baseline x86-64 elsewhere.
macro_rules! wide_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        wide_fn! { $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has just been checked for the feature `avx512` is built for.
                    return unsafe { avx512($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(super) use wide_fn;

/// f64 partial sums per lane: enough independent chains to hide the adder's latency, and
/// summed in lane order at the end, so a reduction's result is fixed for a given input.
pub const LANES: usize = 16;

wide_fn! {
    /// (sum of x, sum of x^2) in f64, lane by lane.
    pub fn sum_and_squares(xs: &[f32]) -> (f64, f64) {
        let (mut s, mut q) = ([0f64; LANES], [0f64; LANES]);
        let (chunks, rest) = xs.as_chunks::<LANES>();
        for c in chunks {
            for l in 0..LANES {
                let v = c[l] as f64;
                s[l] += v;
                q[l] += v * v;
            }
        }
        for (l, &v) in rest.iter().enumerate() {
            let v = v as f64;
            s[l] += v;
            q[l] += v * v;
        }
        (s.iter().sum(), q.iter().sum())
    }
}

wide_fn! {
    /// (sum of g, sum of g * (x - centre)) in f64 with g = `dy(y, gy)`, lane by lane: batch
    /// norm's backward reductions, the activation's gradient taken as the values are read.
    pub fn grad_sums(gy: &[f32], y: &[f32], x: &[f32], centre: f32, dy: impl Fn(f32, f32) -> f32) -> (f64, f64) {
        let (mut s, mut p) = ([0f64; LANES], [0f64; LANES]);
        let (gc, gr) = gy.as_chunks::<LANES>();
        let (yc, yr) = y[..gy.len()].as_chunks::<LANES>();
        let (xc, xr) = x[..gy.len()].as_chunks::<LANES>();
        for ((g, y), x) in gc.iter().zip(yc).zip(xc) {
            for l in 0..LANES {
                let g = dy(y[l], g[l]);
                s[l] += g as f64;
                p[l] += g as f64 * (x[l] - centre) as f64;
            }
        }
        for (l, ((&g, &y), &x)) in gr.iter().zip(yr).zip(xr).enumerate() {
            let g = dy(y, g);
            s[l] += g as f64;
            p[l] += g as f64 * (x - centre) as f64;
        }
        (s.iter().sum(), p.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 97.0).collect()
    }

    /// The lane sums equal f64 sums in plain order up to f64 rounding, for lengths around the
    /// lane count.
    #[test]
    fn lane_sums_match_plain_sums() {
        for len in [0, 1, 15, 16, 17, 33, 1000] {
            let x = values(len);
            let (s, q) = sum_and_squares(&x);
            let s0: f64 = x.iter().map(|&v| v as f64).sum();
            let q0: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            assert!((s - s0).abs() <= 1e-12 * (1.0 + s0.abs()), "{len}: {s} vs {s0}");
            assert!((q - q0).abs() <= 1e-12 * (1.0 + q0.abs()), "{len}: {q} vs {q0}");

            let gy: Vec<f32> = x.iter().rev().copied().collect();
            let relu = |y: f32, g: f32| if y > 0.0 { g } else { 0.0 };
            let (gs, gp) = grad_sums(&gy, &x, &x, 0.25, relu);
            let gs0: f64 = gy.iter().zip(&x).map(|(&g, &y)| relu(y, g) as f64).sum();
            let gp0: f64 = gy
                .iter()
                .zip(&x)
                .map(|(&g, &y)| relu(y, g) as f64 * (y - 0.25) as f64)
                .sum();
            assert!((gs - gs0).abs() <= 1e-12 * (1.0 + gs0.abs()));
            assert!((gp - gp0).abs() <= 1e-12 * (1.0 + gp0.abs()));
        }
    }
}
