// The phase profiler through the binding (`profileStart`/`profileTake`), as `npm run bench` uses
// it: every phase of a training step is there, with calls, and profiling changes no result.
import { describe, expect, it } from 'vitest';

import { profileOurs } from '../ts/bench-measure.js';
import { Model } from '../ts/index.js';
import { native } from '../ts/native.js';
import { randomImages, randomLabels, tinySpec } from './helpers.js';

const PHASES = [
  'conv forward',
  'conv data grad',
  'conv weight grad',
  'bn forward',
  'bn backward',
  'elementwise',
  'pooling',
  'loss',
  'linear',
  'optimizer',
  'alloc/copy',
];

describe('phase profile', () => {
  it('names every phase, and nothing is counted before any work', () => {
    native.profileStart();
    const p = native.profileTake();
    expect(p.phases.map((x) => x.phase)).toEqual(PHASES);
    expect(p.phases.every((x) => x.calls === 0 && x.seconds === 0)).toBe(true);
    expect(p.otherSeconds).toBeGreaterThanOrEqual(0);
  });

  it('a ResNet-8 training step (batch 2) has conv, batch norm and optimizer phases, with their calls', async () => {
    const p = await profileOurs({ net: 'cifar', depth: 8, channels: 1, size: 12, batch: 2 }, 1, 2);
    // Option B ResNet-8: the stem, 3 blocks of two convolutions and 2 projections.
    expect(p.calls?.['conv forward']).toBe(9);
    expect(p.calls?.['conv weight grad']).toBe(9);
    expect(p.calls?.['conv data grad']).toBeGreaterThan(0);
    for (const phase of PHASES) expect(p.phases[phase], phase).toBeGreaterThan(0);
    expect(p.wallSeconds).toBeGreaterThan(0);
    expect(p.otherSeconds).toBeGreaterThanOrEqual(0);
  });

  it('training with the profile on gives the same losses and weights, bit for bit', async () => {
    const images = randomImages(3 * 12 * 12, 4);
    const labels = randomLabels(3, 10, 5);
    const run = async (profiled: boolean): Promise<number[]> => {
      const m = Model.create(tinySpec(), { seed: 9, device: 'cpu' });
      m.setOptimizer({ lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
      if (profiled) native.profileStart();
      const losses: number[] = [];
      for (let i = 0; i < 2; i++) losses.push((await m.trainStep(images, labels, [3, 1, 12, 12])).loss);
      if (profiled) expect(native.profileTake().phases[0]?.calls).toBeGreaterThan(0);
      const bits = [...new Uint32Array(Float32Array.from(m.parameter('fc.weight').toArray()).buffer)];
      m.dispose();
      return [...losses, ...bits];
    };
    expect(await run(true)).toEqual(await run(false));
  });
});
