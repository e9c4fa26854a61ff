//! Seeded initialisation as the paper: He (Kaiming normal, fan_out) for convolutions; PyTorch's
//! default uniform for the classifier.

use crate::error::Result;
use crate::memory::try_collect;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    pub fn new(seed: u64) -> Self {
        Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// N(0, 2 / fan_out), fan_out = c_out * kh * kw. Fails (out of memory) rather than abort.
    pub fn kaiming_normal_fan_out(&mut self, c_out: usize, c_in: usize, kh: usize, kw: usize) -> Result<Vec<f32>> {
        let std = (2.0 / (c_out * kh * kw) as f64).sqrt();
        let rng = &mut self.rng;
        try_collect(
            (0..c_out * c_in * kh * kw).map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                (std * z) as f32
            }),
            "initial weights",
        )
    }

    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for `nn.Linear`.
    pub fn uniform_fan_in(&mut self, len: usize, fan_in: usize) -> Result<Vec<f32>> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let rng = &mut self.rng;
        try_collect((0..len).map(|_| rng.random_range(-bound..bound)), "initial weights")
    }
}
