// Shared by the multi-process test scripts (run as `mpiexec -n 2 node <script> '<json>'`, or
// alone with plain `node` for the one-process reference): the run's settings, a seeded random
// dataset that every rank builds identically, and a small network.
import { Dataset, resnet } from '../../dist/index.js';

/** The settings the test passed as JSON in argv[2]. */
export const config = JSON.parse(process.argv[2] ?? '{}');

/** Deterministic uniform [0, 1) numbers (mulberry32, as helpers.ts). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` random 1x12x12 u8 images (never all zeros) with random labels below `classes`. */
export function randomDataset(n, seed, classes = 4) {
  const r = rng(seed);
  const images = Uint8Array.from({ length: n * 144 }, () => 1 + Math.floor(r() * 254));
  const labels = Uint8Array.from({ length: n }, () => Math.floor(r() * classes));
  return Dataset.fromArrays({ images, labels, channels: 1, height: 12, width: 12, numClasses: classes });
}

/** ResNet-8 (or `depth`) on 1-channel images. */
export function tinySpec(overrides = {}, depth = 8) {
  return { ...resnet.cifar({ depth, inChannels: 1, numClasses: 4 }), ...overrides };
}
