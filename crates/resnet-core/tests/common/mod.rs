//! Helpers shared by the CPU test crates.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` random images of `c` x `hw` x `hw` values in [-1.5, 1.5) and labels below `classes`.
pub fn batch(seed: u64, n: usize, c: usize, hw: usize, classes: usize) -> (Vec<f32>, [usize; 4], Vec<i32>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let images = (0..n * c * hw * hw).map(|_| r.random_range(-1.5f32..1.5)).collect();
    let labels = (0..n).map(|_| r.random_range(0..classes as i32)).collect();
    (images, [n, c, hw, hw], labels)
}
