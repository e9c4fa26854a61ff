//! The paper's training augmentation (He et al. 2015, sec. 4.2, after Lee et al.): pad each side
//! by 4 pixels, take a random crop of the original size, mirror horizontally with p = 0.5.
//!
//! Works on raw `u8` images, before normalisation, as torchvision does: the padding is black
//! (pixel 0), which after normalisation becomes `-mean/std`, not 0. Staying in u8 keeps the
//! scratch buffers small and lets normalisation be a table lookup afterwards.
//!
//! Randomness is drawn with our own bounded sampler on top of `RngCore::next_u64`, so results
//! depend only on the ChaCha stream, not on `rand`'s distribution code, which may change between
//! versions.

use rand::RngCore;

/// One sampled augmentation: the crop window's top-left corner in the padded image
/// (`0..=2*pad` each) and whether to mirror the crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    pub pad: usize,
    pub dy: usize,
    pub dx: usize,
    pub flip: bool,
}

impl CropFlip {
    /// The no-op transform.
    pub fn identity() -> Self {
        CropFlip {
            pad: 0,
            dy: 0,
            dx: 0,
            flip: false,
        }
    }

    /// Draws dy, dx uniformly from `0..=2*pad`, then the flip coin (only if `flip` is enabled),
    /// always in this order so a given rng state maps to one transform.
    pub fn sample<R: RngCore + ?Sized>(pad: usize, flip: bool, rng: &mut R) -> Self {
        let span = 2 * pad as u64 + 1;
        let dy = uniform_below(rng, span) as usize;
        let dx = uniform_below(rng, span) as usize;
        let flip = flip && rng.next_u64() >> 63 == 1;
        CropFlip { pad, dy, dx, flip }
    }
}

/// Applies `t` to one `c x h x w` channel-major image. `dst` has the same size as `src`.
/// Pixels that fall in the padding are 0.
pub fn apply(src: &[u8], dst: &mut [u8], c: usize, h: usize, w: usize, t: CropFlip) {
    apply_with(src, dst, c, h, w, t, 0u8);
}

/// [`apply`] for any pixel type (the loader uses f32 for per-pixel-mean-subtracted images, whose
/// padding is 0 *after* the subtraction); `zero` fills the padding.
pub fn apply_with<T: Copy>(src: &[T], dst: &mut [T], c: usize, h: usize, w: usize, t: CropFlip, zero: T) {
    assert_eq!(src.len(), c * h * w, "augment::apply: src size");
    assert_eq!(dst.len(), c * h * w, "augment::apply: dst size");
    if h * w == 0 {
        return;
    }
    // Output (y, x) reads padded (y + dy, x + dx) (x mirrored first when flipping), i.e. source
    // (y + dy - pad, x + dx - pad); shifts are signed.
    let oy = t.dy as isize - t.pad as isize;
    let ox = t.dx as isize - t.pad as isize;
    // Output columns whose source column lies inside the image (before mirroring).
    let x_lo = (-ox).clamp(0, w as isize) as usize;
    let x_hi = (w as isize - ox).clamp(0, w as isize) as usize;
    for (src_plane, dst_plane) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(h * w)) {
        for (y, dst_row) in dst_plane.chunks_exact_mut(w).enumerate() {
            let sy = y as isize + oy;
            if sy < 0 || sy >= h as isize || x_lo >= x_hi {
                dst_row.fill(zero);
                continue;
            }
            let src_row = &src_plane[sy as usize * w..(sy as usize + 1) * w];
            let sx_lo = (x_lo as isize + ox) as usize;
            let valid = &src_row[sx_lo..sx_lo + (x_hi - x_lo)];
            if t.flip {
                // Cropped row is [0; x_lo] ++ valid ++ [0; w - x_hi]; write it mirrored.
                dst_row[..w - x_hi].fill(zero);
                for (d, s) in dst_row[w - x_hi..w - x_lo].iter_mut().zip(valid.iter().rev()) {
                    *d = *s;
                }
                dst_row[w - x_lo..].fill(zero);
            } else {
                dst_row[..x_lo].fill(zero);
                dst_row[x_lo..x_hi].copy_from_slice(valid);
                dst_row[x_hi..].fill(zero);
            }
        }
    }
}

/// Convenience: sample a transform from `rng` and return the augmented copy of `src`.
pub fn augment<R: RngCore + ?Sized>(
    src: &[u8],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    flip: bool,
    rng: &mut R,
) -> Vec<u8> {
    let mut dst = vec![0u8; src.len()];
    apply(src, &mut dst, c, h, w, CropFlip::sample(pad, flip, rng));
    dst
}

/// Unbiased integer in `0..n` (n > 0) by Lemire's multiply-and-reject.
pub(crate) fn uniform_below<R: RngCore + ?Sized>(rng: &mut R, n: u64) -> u64 {
    debug_assert!(n > 0);
    let mut m = rng.next_u64() as u128 * n as u128;
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = rng.next_u64() as u128 * n as u128;
        }
    }
    (m >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn random_image(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
        // Avoid 0 so padding is distinguishable from content.
        v.iter_mut().for_each(|p| *p = (*p).max(1));
        v
    }

    /// Straightforward pad-then-crop-then-mirror, the definition `apply` must match.
    fn reference(src: &[u8], c: usize, h: usize, w: usize, t: CropFlip) -> Vec<u8> {
        let (ph, pw) = (h + 2 * t.pad, w + 2 * t.pad);
        let mut padded = vec![0u8; c * ph * pw];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    padded[(ch * ph + y + t.pad) * pw + x + t.pad] = src[(ch * h + y) * w + x];
                }
            }
        }
        let mut out = vec![0u8; c * h * w];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let cx = if t.flip { w - 1 - x } else { x };
                    out[(ch * h + y) * w + x] = padded[(ch * ph + y + t.dy) * pw + cx + t.dx];
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference_for_every_offset() {
        let (c, h, w) = (3, 6, 5);
        let src = random_image(c * h * w, 1);
        let mut dst = vec![0u8; src.len()];
        for pad in [0, 1, 4, 7] {
            for dy in 0..=2 * pad {
                for dx in 0..=2 * pad {
                    for flip in [false, true] {
                        let t = CropFlip { pad, dy, dx, flip };
                        apply(&src, &mut dst, c, h, w, t);
                        assert_eq!(dst, reference(&src, c, h, w, t), "{t:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn centre_crop_flip_is_mirror_and_shape_is_kept() {
        let (c, h, w) = (3, 32, 32);
        let src = random_image(c * h * w, 2);
        let mut dst = vec![0u8; src.len()];
        let t = CropFlip {
            pad: 4,
            dy: 4,
            dx: 4,
            flip: true,
        };
        apply(&src, &mut dst, c, h, w, t);
        for row in 0..c * h {
            let mut mirrored = src[row * w..(row + 1) * w].to_vec();
            mirrored.reverse();
            assert_eq!(dst[row * w..(row + 1) * w], mirrored[..]);
        }
        apply(&src, &mut dst, c, h, w, CropFlip { flip: false, ..t });
        assert_eq!(dst, src);
        let out = augment(&src, c, h, w, 4, true, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(out.len(), c * h * w);
    }

    #[test]
    fn sampling_covers_range_and_is_deterministic() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut seen = [[false; 9]; 2];
        let mut flips = 0;
        for _ in 0..2000 {
            let t = CropFlip::sample(4, true, &mut rng);
            assert!(t.dy <= 8 && t.dx <= 8);
            seen[0][t.dy] = true;
            seen[1][t.dx] = true;
            flips += t.flip as usize;
        }
        assert!(seen.iter().flatten().all(|&s| s));
        assert!((850..1150).contains(&flips), "{flips}");
        let a = CropFlip::sample(4, true, &mut ChaCha8Rng::seed_from_u64(9));
        let b = CropFlip::sample(4, true, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
        assert!(!CropFlip::sample(4, false, &mut rng).flip);
    }

    #[test]
    fn uniform_below_is_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[uniform_below(&mut rng, 3) as usize] += 1;
        }
        assert!(counts.iter().all(|&k| (900..1100).contains(&k)), "{counts:?}");
        assert_eq!(uniform_below(&mut rng, 1), 0);
    }
}
