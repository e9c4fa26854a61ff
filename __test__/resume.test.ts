// Resuming a run: 2 epochs straight vs 1 epoch, save, load, and the 2nd epoch with initialEpoch
// give identical parameters and running statistics (CPU): shuffling, augmentation, the relative
// schedule, momentum buffers and the step count all carry over.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { Model, fit, schedules, type FitOptions } from '../ts/index.js';
import { learnableDataset, randomImages, tempDir, tinySpec } from './helpers.js';

const models: Model[] = [];
const track = (m: Model): Model => (models.push(m), m);
afterAll(() => models.forEach((m) => m.dispose()));

describe('resume', () => {
  const data = learnableDataset(48, 7, 12, 4);
  const spec = tinySpec({ numClasses: 4 });
  const options: FitOptions = {
    epochs: 2,
    batchSize: 16,
    optimizer: { lr: 0.05, momentum: 0.9, weightDecay: 1e-4 },
    schedule: schedules.paper(), // milestones at 50% and 75% of the 2 epochs
    augment: true,
    seed: 11,
  };

  it('1 epoch + save + load + 1 epoch equals 2 epochs straight', async () => {
    const straight = track(Model.create(spec, { seed: 5, device: 'cpu' }));
    const straightLrs: number[] = [];
    const h = await fit(straight, data, { ...options, callbacks: { onBatchEnd: (_s, l) => void straightLrs.push(l.lr) } });
    expect(h.epoch).toEqual([0, 1]);

    // The first leg is the same 2-epoch run, stopped after its first epoch.
    const first = track(Model.create(spec, { seed: 5, device: 'cpu' }));
    const stop = new AbortController();
    const leg1 = await fit(first, data, { ...options, signal: stop.signal, callbacks: { onEpochEnd: () => stop.abort() } });
    expect(leg1.epoch).toEqual([0]);
    expect(first.step).toBe(3);
    const path = join(tempDir(), 'resume.safetensors');
    await first.save(path);

    const resumed = track(await Model.load(path, { device: 'cpu' }));
    expect(resumed.step).toBe(3);
    const lrs: number[] = [];
    const leg2 = await fit(resumed, data, { ...options, initialEpoch: 1, callbacks: { onBatchEnd: (_s, l) => void lrs.push(l.lr) } });
    expect(leg2.epoch).toEqual([1]);
    expect(lrs).toEqual(straightLrs.slice(3)); // the schedule kept the run's milestones
    expect(new Set(straightLrs).size).toBe(3);
    expect(resumed.step).toBe(straight.step);

    for (const name of straight.parameterNames()) {
      expect(resumed.parameter(name).toArray(), name).toEqual(straight.parameter(name).toArray());
    }
    // Eval mode uses the running statistics: they agree too.
    const x = randomImages(4 * 144, 3);
    expect(await resumed.predict(x, [4, 1, 12, 12])).toEqual(await straight.predict(x, [4, 1, 12, 12]));
  });

  it('rejects an initialEpoch outside [0, epochs)', async () => {
    const m = track(Model.create(spec, { device: 'cpu' }));
    await expect(fit(m, data, { ...options, initialEpoch: 2 })).rejects.toThrow(/initialEpoch/);
  });
});
