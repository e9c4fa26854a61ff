//! Helpers shared by the test crates; not every crate that includes the module uses each.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` random images of `c` x `hw` x `hw` values in [-1.5, 1.5) and labels below `classes`.
pub fn batch(seed: u64, n: usize, c: usize, hw: usize, classes: usize) -> (Vec<f32>, [usize; 4], Vec<i32>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let images = (0..n * c * hw * hw).map(|_| r.random_range(-1.5f32..1.5)).collect();
    let labels = (0..n).map(|_| r.random_range(0..classes as i32)).collect();
    (images, [n, c, hw, hw], labels)
}

/// A small ImageNet-style bottleneck net: the 7x7/2 stem (8 wide), max pool, then one bottleneck
/// of width 4 and two of width 8 at stride 2, so both downsampling placements can be chosen.
pub fn small_bottleneck_net(
    shortcut: resnet_core::nn::ShortcutOption,
    stride: resnet_core::nn::BottleneckStride,
    classes: usize,
) -> resnet_core::nn::ResNetSpec {
    use resnet_core::nn::{BlockKind, ResNetSpec, StageSpec};
    let mut spec = ResNetSpec::imagenet(50, shortcut, 3, classes).unwrap();
    spec.stem_width = 8;
    spec.bottleneck_stride = stride;
    spec.stages = vec![
        StageSpec {
            block: BlockKind::Bottleneck,
            count: 1,
            width: 4,
            stride: 1,
        },
        StageSpec {
            block: BlockKind::Bottleneck,
            count: 2,
            width: 8,
            stride: 2,
        },
    ];
    spec
}
