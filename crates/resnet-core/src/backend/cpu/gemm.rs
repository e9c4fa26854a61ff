//! Safe face of the `gemm` crate (tuned, SIMD, multi-threaded): row-major destination, operands
//! as strided views so transposes cost nothing.

use gemm::Parallelism;
use std::fmt;

/// A strided read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatView<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatView<'a> {
    /// A row-major [rows, cols] matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatView {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major [cols, rows] matrix, as a [rows, cols] view.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatView {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows,
        }
    }

    pub fn t(self) -> Self {
        MatView {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// How the GEMM may use threads: `Threads` when it is the only work, `Single` when the caller
/// already runs many GEMMs in parallel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Single,
    All,
}

/// `dst[m, n] = a[m, k] . b[k, n]`, or `+=` when `accumulate`.
pub fn gemm(dst: &mut [f32], a: MatView, b: MatView, accumulate: bool, threads: Threads) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert!(
        dst.len() >= m * n && a.in_bounds() && b.in_bounds(),
        "gemm: view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let parallelism = match threads {
        Threads::Single => Parallelism::None,
        Threads::All => Parallelism::Rayon(0),
    };
    // SAFETY: every view was bounds-checked above against its slice, dst is exclusively borrowed
    // and does not alias the inputs (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The f32 microkernel family `gemm` runs on this CPU. gemm chooses it once per process, at run
/// time (its `gemm_def!` in gemm-common 0.19), so one binary serves every x86-64 machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 16-wide f32 FMA (pulp's `V4`); compiled in only through gemm's `x86-v4` feature.
    Avx512,
    /// 8-wide f32 FMA (pulp's `V3`).
    Avx2Fma,
    /// 4-wide f32 on ARM.
    Neon,
    /// WebAssembly's 128-bit SIMD.
    Simd128,
    /// gemm's portable kernel.
    Scalar,
}

impl Kernel {
    /// The kernel gemm takes, decided exactly as its dispatcher does: std's run-time detection of
    /// `avx512f` first, then of `fma`, else the scalar kernel; the same macro `feature_detected!`
    /// gemm-common uses, so the two cannot disagree. There is no switch to force a weaker kernel
    /// (gemm and pulp read no environment variable), so the fallbacks are named, not exercised here.
    pub fn detect() -> Kernel {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                Kernel::Avx512
            } else if std::arch::is_x86_feature_detected!("fma") {
                Kernel::Avx2Fma
            } else {
                Kernel::Scalar
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                Kernel::Neon
            } else {
                Kernel::Scalar
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            // gemm's own switch there, not a CPU feature.
            if gemm::get_wasm_simd128() {
                Kernel::Simd128
            } else {
                Kernel::Scalar
            }
        }
        #[cfg(not(any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "wasm32"
        )))]
        {
            Kernel::Scalar
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "AVX-512 (x86-v4)",
            Kernel::Avx2Fma => "AVX2+FMA (x86-v3)",
            Kernel::Neon => "NEON",
            Kernel::Simd128 => "WebAssembly SIMD128",
            Kernel::Scalar => "scalar fallback",
        }
    }
}

/// What the CPU backend computes with: for `resnet-wgpu info`.
#[derive(Clone, Debug)]
pub struct KernelReport {
    pub kernel: Kernel,
    /// The processor's brand string, or the architecture where the CPU does not name itself.
    pub cpu: String,
    /// rayon's global pool, which the CPU backend and gemm's `Parallelism::Rayon(0)` share.
    pub threads: usize,
    /// Whether stride-1 convolutions run the direct AVX-512 kernels (`conv/direct.rs`): on
    /// AVX-512 CPUs unless `RESNET_WGPU_CPU_CONV=im2col`.
    pub direct_convolutions: bool,
}

/// The kernel, CPU and thread count of this process. Reading the thread count starts rayon's
/// global pool, as the first CPU work would: call `set_cpu_threads` before this, not after.
pub fn kernel_report() -> KernelReport {
    KernelReport {
        kernel: Kernel::detect(),
        cpu: cpu_name().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        threads: rayon::current_num_threads(),
        direct_convolutions: super::conv::direct_kernels_active(),
    }
}

impl fmt::Display for KernelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU: {}, {} threads\n  f32 GEMM kernel: {} (chosen at run time)\n  convolutions: {}",
            self.cpu,
            self.threads,
            self.kernel.name(),
            if self.direct_convolutions {
                "direct AVX-512 kernels for stride-1 'same' ones and 3x3 weight gradients with up to 32 output channels, im2col + GEMM for the rest"
            } else {
                "im2col + GEMM"
            }
        )
    }
}

/// The brand string from CPUID leaves 0x8000_0002..=0x8000_0004 (no OS interface needed).
#[cfg(target_arch = "x86_64")]
fn cpu_name() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    #[allow(unused_unsafe)] // __cpuid became a safe fn in newer toolchains
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 0x8000_0000 says which extended leaves do.
    let regs = |leaf: u32| unsafe { __cpuid(leaf) };
    if regs(0x8000_0000).eax < 0x8000_0004 {
        return None;
    }
    let bytes: Vec<u8> = (0x8000_0002..=0x8000_0004u32)
        .flat_map(|leaf| {
            let r = regs(leaf);
            [r.eax, r.ebx, r.ecx, r.edx].into_iter().flat_map(u32::to_le_bytes)
        })
        .collect();
    let name = String::from_utf8_lossy(&bytes);
    let name = name.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!name.is_empty()).then(|| name.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_name() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 17 % 7) as f32) - 3.0).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![0.0; m * n];
        gemm(
            &mut c,
            MatView::new(&a, m, k),
            MatView::new(&b, k, n),
            false,
            Threads::All,
        );
        assert_eq!(c, want);
        // a^T stored as [k, m]
        let at: Vec<f32> = (0..k * m).map(|idx| a[(idx % m) * k + idx / m]).collect();
        let mut c2 = vec![1.0; m * n];
        gemm(
            &mut c2,
            MatView::transposed(&at, m, k),
            MatView::new(&b, k, n),
            true,
            Threads::Single,
        );
        let want_acc: Vec<f32> = want.iter().map(|v| v + 1.0).collect();
        assert_eq!(c2, want_acc);
    }

    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[test]
    fn report_names_the_kernel_this_cpu_supports() {
        let report = kernel_report();
        let want = if std::arch::is_x86_feature_detected!("avx512f") {
            Kernel::Avx512
        } else if std::arch::is_x86_feature_detected!("fma") {
            Kernel::Avx2Fma
        } else {
            Kernel::Scalar
        };
        assert_eq!(report.kernel, want);
        assert!(report.threads >= 1);
        assert!(!report.cpu.is_empty());
        let text = report.to_string();
        assert!(text.contains(&format!("f32 GEMM kernel: {}", want.name())), "{text}");
        assert!(text.contains(&format!("{} threads", report.threads)), "{text}");
        // This test binary does not set RESNET_WGPU_CPU_CONV, so AVX-512 means the direct kernels.
        assert_eq!(report.direct_convolutions, want == Kernel::Avx512);
        assert!(
            text.contains("convolutions: direct AVX-512") == (want == Kernel::Avx512),
            "{text}"
        );
    }

    /// Without gemm's `x86-v4` feature its AVX-512 kernels are not compiled in and an AVX-512 CPU
    /// runs the AVX2 ones, while `Kernel::detect` would still say AVX-512.
    #[test]
    fn the_avx512_kernels_are_compiled_in() {
        let manifest = include_str!("../../../Cargo.toml");
        let line = manifest
            .lines()
            .find(|l| l.starts_with("gemm "))
            .expect("a gemm dependency");
        assert!(line.contains("\"x86-v4\""), "{line}");
    }
}
