//! Strided f32 matrix products for the trainer's layer op (`train::layer`): operands are
//! views into slices with any row and column strides, so a backward product such as
//! `dW = dYᵀ X` reads `dY` where it lies instead of transposing it first. Every extent is
//! checked before the one `unsafe` call into `gemm`, so the callers stay safe code.

use rayon::prelude::*;

use super::kernels::strided_blocks;

/// A matrix inside a slice: element `(r, c)` at `data[r * rs + c * cs]`. A transpose is the
/// same slice with the strides swapped ([`Strided::t`]), so the trainer's backward products
/// (`dW = dYᵀ X`) read their operands where they lie.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Strided<'a> {
    /// Row-major, rows `rs` apart.
    pub fn rows(data: &'a [f32], rs: usize) -> Strided<'a> {
        Strided { data, rs, cs: 1 }
    }

    /// The transpose.
    pub fn t(self) -> Strided<'a> {
        Strided {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether an `r x c` matrix lies inside the slice.
    fn covers(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// `dst (m x n, row stride dst_rs) (+)= a (m x k) · b (k x n)` on strided views, every
/// extent checked (a caller's bug panics; nothing is read or written outside the slices).
/// `k` is summed in blocks of `kernels::K_BLOCK` as `kernels::matmul` does; `threads > 1`
/// splits the columns over rayon in fixed chunks, so the result does not depend on scheduling.
#[allow(clippy::too_many_arguments)]
pub fn product(
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: Strided,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    threads: usize,
) {
    assert!(
        a.covers(m, k) && b.covers(k, n),
        "product: an operand is short"
    );
    assert!(dst_rs >= n && (m == 0 || dst.len() >= (m - 1) * dst_rs + n));
    if m == 0 || n == 0 {
        return;
    }
    let chunk = n.div_ceil(threads.max(1) * 2).next_multiple_of(16);
    let one = |j0: usize, w: usize, d: usize| {
        // SAFETY: `covers` checked that a's m x k and b's k x n lie inside their slices; this
        // call reads columns j0..j0+w of b and writes those columns of dst's m rows, which
        // lie in the region starting at `d` that this call alone writes (chunks are
        // disjoint columns), and `dst` is a `&mut` distinct from both operands.
        unsafe {
            strided_blocks(
                m,
                w,
                k,
                (d as *mut f32).add(j0),
                dst_rs,
                accumulate,
                (a.data.as_ptr(), a.rs, a.cs),
                (b.data.as_ptr().add(j0 * b.cs), b.rs, b.cs),
            )
        }
    };
    let d = dst.as_mut_ptr() as usize;
    if threads <= 1 || chunk >= n {
        return one(0, n, d);
    }
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .for_each(|c| one(c * chunk, chunk.min(n - c * chunk), d));
}
