// Shared test fixtures: a seeded RNG, random datasets and a small network that trains fast.
import { mkdtempSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Dataset, Model, resnet, type ResNetSpec } from '../ts/index.js';
import { TEST_TMP_ENV } from './global-setup.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** Deterministic uniform [0, 1) numbers (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Normal-ish random values (sum of uniforms), never all zeros. */
export function randomImages(count: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: count }, () => r() + r() + r() - 1.5);
}

export function randomLabels(n: number, classes: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(r() * classes));
}

/** ResNet-8 (one basic block a stage) on 1-channel images: trains in milliseconds on 12x12 input. */
export function tinySpec(overrides: Partial<ResNetSpec> = {}): ResNetSpec {
  return { ...resnet.cifar({ depth: 8, inChannels: 1, numClasses: 10 }), ...overrides };
}

/**
 * A random u8 dataset whose class is visible in the pixels (class k brightens row band k), so
 * a network can learn it quickly.
 */
export function learnableDataset(n: number, seed: number, size = 12, classes = 4): Dataset {
  const r = rng(seed);
  const images = new Uint8Array(n * size * size);
  const labels = new Uint8Array(n);
  const band = Math.floor(size / classes);
  for (let i = 0; i < n; i++) {
    const label = Math.floor(r() * classes);
    labels[i] = label;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const lit = Math.floor(y / band) === label;
        images[i * size * size + y * size + x] = Math.floor((lit ? 140 : 0) + r() * 100);
      }
    }
  }
  return Dataset.fromArrays({ images, labels, channels: 1, height: size, width: size, numClasses: classes });
}

/** A fresh directory inside the run's scratch directory, which global-setup.ts removes at the end. */
export function tempDir(prefix = 'resnet-wgpu-test-'): string {
  const scratch = process.env[TEST_TMP_ENV];
  if (scratch === undefined) throw new Error(`${TEST_TMP_ENV} is unset: run the tests through vitest (global-setup.ts)`);
  return mkdtempSync(join(scratch, prefix));
}

/** Whether device 'auto' finds a hardware GPU on this machine (software adapters don't count). */
export function hasHardwareGpu(): boolean {
  const probe = Model.create(tinySpec(), { device: 'auto' });
  const onGpu = probe.device === 'gpu';
  probe.dispose();
  return onGpu;
}
