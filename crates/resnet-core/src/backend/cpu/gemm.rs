//! Safe face of the `gemm` crate (tuned, SIMD, multi-threaded): row-major destination, operands
//! as strided views so transposes cost nothing.

use gemm::Parallelism;

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
}
