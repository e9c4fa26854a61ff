// fit(): callbacks, schedules, validation, cancellation; the DataLoader it drives.
import { describe, expect, it } from 'vitest';

import { DataLoader, Model, Trainer, fit, paperMilestones, resolveSchedule, schedules, type Batch, type BatchLogs, type EpochLogs } from '../ts/index.js';
import { learnableDataset, tinySpec } from './helpers.js';

const train = learnableDataset(192, 51);
const valid = learnableDataset(64, 52);

describe('fit', () => {
  it('calls back per batch and per epoch, follows the paper schedule and validates', async () => {
    const model = Model.create(tinySpec({ numClasses: 4 }), { seed: 50 });
    const batches: Array<[number, BatchLogs]> = [];
    const epochs: Array<[number, EpochLogs]> = [];
    let begin: { totalSteps: number; batchesPerEpoch: number } | undefined;
    const history = await fit(model, train, {
      epochs: 2,
      batchSize: 32,
      optimizer: { lr: 0.05 },
      schedule: schedules.paper(),
      validationData: valid,
      callbacks: {
        onTrainBegin: (info) => {
          begin = info;
        },
        onBatchEnd: (step, logs) => {
          batches.push([step, logs]);
        },
        onEpochEnd: async (epoch, logs) => {
          await new Promise((r) => setTimeout(r, 1)); // async callbacks are awaited
          epochs.push([epoch, logs]);
        },
      },
    });
    expect(begin).toMatchObject({ totalSteps: 12, batchesPerEpoch: 6 });
    expect(batches.map(([s]) => s)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for (const [, logs] of batches) {
      expect(Number.isFinite(logs.loss)).toBe(true);
      expect(logs.acc).toBeGreaterThanOrEqual(0);
      expect(logs.imgPerSec).toBeGreaterThan(0);
      expect(logs.size).toBe(32);
    }
    // /10 at 50% and 75% of 12 steps: steps 1-6 at 0.05, 7-9 at 0.005, 10-12 at 0.0005.
    const lrs = batches.map(([, l]) => l.lr);
    expect(lrs[5]).toBeCloseTo(0.05, 6);
    expect(lrs[6]).toBeCloseTo(0.005, 6);
    expect(lrs[9]).toBeCloseTo(0.0005, 7);
    expect(epochs.map(([e]) => e)).toEqual([0, 1]);
    expect(epochs[1]?.[1].valAcc).toBeGreaterThan(0.5);
    expect(epochs[1]?.[1].valLoss).toBeLessThan(epochs[0]?.[1].loss as number);
    expect(history).toMatchObject({ epoch: [0, 1], aborted: false, steps: 12 });
    expect(history.history.loss).toHaveLength(2);
    expect(history.history.valAcc).toHaveLength(2);
    expect(model.normalization).toEqual(train.meanStd());
    expect(model.step).toBe(12);
    model.dispose();
  });

  it('stops between batches when the AbortSignal fires and returns a history marked aborted', async () => {
    const model = Model.create(tinySpec({ numClasses: 4 }), { seed: 53 });
    const controller = new AbortController();
    let ended = false;
    const history = await fit(model, train, {
      epochs: 3,
      batchSize: 32,
      signal: controller.signal,
      callbacks: {
        onBatchEnd: (step) => {
          if (step === 4) controller.abort();
        },
        onTrainEnd: () => {
          ended = true;
        },
      },
    });
    expect(history.aborted).toBe(true);
    expect(history.steps).toBe(4);
    expect(history.epoch).toEqual([]);
    expect(model.step).toBe(4);
    expect(ended).toBe(true);
    // The model is still usable after an abort.
    expect((await model.evaluate(valid)).count).toBe(64);
    model.dispose();
  });

  it('reportEvery reads the figures in groups: every step still reported, in order, with the same values', async () => {
    const run = async (reportEvery: number, abortAt?: number) => {
      const model = Model.create(tinySpec({ numClasses: 4 }), { seed: 55 });
      const controller = new AbortController();
      const logs: Array<{ step: number; at: number; logs: BatchLogs }> = [];
      const epochs: EpochLogs[] = [];
      const history = await fit(model, train, {
        epochs: 2,
        batchSize: 40, // 5 batches an epoch, the last of 32: groups of 3 do not divide it
        reportEvery,
        signal: controller.signal,
        callbacks: {
          onBatchEnd: (step, l) => {
            logs.push({ step, at: model.step, logs: l });
            if (step === abortAt) controller.abort();
          },
          onEpochEnd: (_, l) => {
            epochs.push(l);
          },
        },
      });
      const weights = await model.predict(new Float32Array(2 * 144).map((_, i) => Math.cos(i)), [2, 1, 12, 12]);
      model.dispose();
      return { logs, epochs, history, weights };
    };
    const each = await run(1);
    const grouped = await run(3);
    const fields = (r: typeof each) => r.logs.map(({ step, logs: l }) => [step, l.epoch, l.batch, l.size, l.loss, l.acc, l.lr]);
    expect(fields(grouped)).toEqual(fields(each));
    expect(grouped.logs).toHaveLength(10);
    expect(grouped.history.history).toEqual(each.history.history);
    expect(grouped.epochs.map((e) => [e.loss, e.acc, e.step])).toEqual(each.epochs.map((e) => [e.loss, e.acc, e.step]));
    expect(grouped.weights).toEqual(each.weights);
    // Read each step: the model is at the step reported. In groups of 3 (restarting each epoch):
    // steps 1-3 arrive once step 3 is taken, 4-5 at the epoch's end, and so on.
    expect(each.logs.map((l) => l.at)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(grouped.logs.map((l) => l.at)).toEqual([3, 3, 3, 5, 5, 8, 8, 8, 10, 10]);
    // An abort inside a group still reports the steps already taken.
    const aborted = await run(3, 1);
    expect(aborted.history).toMatchObject({ aborted: true, steps: 3 });
    expect(aborted.logs.map((l) => l.step)).toEqual([1, 2, 3]);
    const model = Model.create(tinySpec({ numClasses: 4 }), { seed: 55 });
    for (const bad of [0, -2, 1.5, Number.NaN]) {
      await expect(fit(model, train, { reportEvery: bad })).rejects.toThrow(`reportEvery must be a positive integer, got ${bad}`);
    }
    expect(model.step).toBe(0);
    model.dispose();
  });

  it('queueTrainStep + takeStepResults give what trainStep gives', async () => {
    const x = new Float32Array(3 * 144).map((_, i) => Math.sin(i * 0.7));
    const y = new Int32Array([2, 0, 3]);
    const stepped = Model.create(tinySpec({ numClasses: 4 }), { seed: 56 });
    const queued = Model.create(tinySpec({ numClasses: 4 }), { seed: 56 });
    const expected = [await stepped.trainStep(x, y, [3, 1, 12, 12]), await stepped.trainStep(x, y, [3, 1, 12, 12])];
    await queued.queueTrainStep(x, y, [3, 1, 12, 12]);
    await queued.queueTrainStep(x, y, [3, 1, 12, 12]);
    expect(queued.step).toBe(2);
    expect(await queued.takeStepResults()).toEqual(expected);
    expect(await queued.takeStepResults()).toEqual([]);
    await expect(queued.queueTrainStep(x, new Int32Array([2, 0, 4]), [3, 1, 12, 12])).rejects.toThrow(/label 4/);
    stepped.dispose();
    queued.dispose();
  });

  it('is deterministic for a seed, and Trainer reuses options', async () => {
    const run = async (): Promise<number[]> => {
      const model = Model.create(tinySpec({ numClasses: 4 }), { seed: 54 });
      const h = await new Trainer(model, { batchSize: 48, augment: true, seed: 3 }).fit(train);
      model.dispose();
      return h.history.loss;
    };
    expect(await run()).toEqual(await run());
  });
});

describe('schedules', () => {
  it('resolves fractions and whole-run cosine against the run length', () => {
    expect(paperMilestones(64_000)).toEqual([32_000, 48_000]);
    expect(resolveSchedule(schedules.paper(), 100)).toEqual({ kind: 'multistep', milestones: [50, 75], gamma: 0.1 });
    expect(resolveSchedule(schedules.paper(), 100, 40)).toEqual({ kind: 'multistep', milestones: [90, 115], gamma: 0.1 });
    expect(resolveSchedule(schedules.cosine({ minLr: 0.001 }), 10)).toEqual({ kind: 'cosine', totalSteps: 10, minLr: 0.001 });
    expect(() => schedules.multistep({ fractions: [1.5] })).toThrow(/\(0, 1\)/);
  });
});

describe('DataLoader', () => {
  it('covers the epoch once, reshuffles per epoch, normalises, and repeats for a seed', async () => {
    const loader = new DataLoader(train, { batchSize: 50, seed: 9 });
    expect(loader.length).toBe(4);
    const collect = async (l: DataLoader, epoch: number): Promise<{ labels: number[]; sizes: number[]; first: Float32Array | undefined }> => {
      const labels: number[] = [];
      const sizes: number[] = [];
      let first: Float32Array | undefined;
      for await (const b of l.epoch(epoch)) {
        if (sizes.length === 0) first = b.images;
        expect(b.images).toBeInstanceOf(Float32Array);
        expect(b.images.length).toBe(b.shape[0] * 144);
        expect(b.shape.slice(1)).toEqual([1, 12, 12]);
        labels.push(...b.labels);
        sizes.push(b.shape[0]);
      }
      return { labels, sizes, first };
    };
    const e0 = await collect(loader, 0);
    const e0again = await collect(new DataLoader(train, { batchSize: 50, seed: 9 }), 0);
    const e1 = await collect(loader, 1);
    expect(e0.sizes).toEqual([50, 50, 50, 42]);
    const counts = (ls: number[]): number[] => [0, 1, 2, 3].map((k) => ls.filter((l) => l === k).length);
    expect(counts(e0.labels)).toEqual(counts(Array.from(train.labels())));
    expect(e0again.labels).toEqual(e0.labels);
    expect(e0again.first).toEqual(e0.first);
    expect(e1.labels).not.toEqual(e0.labels);
    // Normalised by the dataset's statistics: the whole epoch has mean ~0 and std ~1.
    const all: number[] = [];
    for await (const b of new DataLoader(train, { batchSize: 192, shuffle: false }).epoch(0)) all.push(...b.images);
    const mean = all.reduce((a, v) => a + v, 0) / all.length;
    const std = Math.sqrt(all.reduce((a, v) => a + (v - mean) ** 2, 0) / all.length);
    expect(Math.abs(mean)).toBeLessThan(1e-3);
    expect(Math.abs(std - 1)).toBeLessThan(1e-3);
  });

  it('breaking out early stops cleanly', async () => {
    let seen = 0;
    for await (const b of new DataLoader(train, { batchSize: 16 }).epoch(0)) {
      seen += b.shape[0];
      if (seen >= 32) break;
    }
    expect(seen).toBe(32);
  });
});

async function firstBatch(loader: DataLoader): Promise<Batch> {
  for await (const batch of loader.epoch(0)) return batch;
  throw new Error('the loader gave no batch');
}

describe('loader batches reach the model without a copy through JS', () => {
  it('trainStep(batch) equals trainStep(images, labels, shape) on the same values', async () => {
    const data = learnableDataset(16, 71);
    const loader = new DataLoader(data, { batchSize: 8, shuffle: false });
    const direct = Model.create(tinySpec({ numClasses: 4 }), { seed: 72, device: 'cpu' });
    const copied = Model.create(tinySpec({ numClasses: 4 }), { seed: 72, device: 'cpu' });
    let batches = 0;
    for await (const batch of loader.epoch(0)) {
      const a = await direct.trainStep(batch); // the Rust batch as it is
      const b = await copied.trainStep(batch.images, batch.labels, batch.shape); // read into JS, copied back
      expect(a).toEqual(b);
      expect(batch.images.length).toBe(8 * 1 * 12 * 12);
      batches++;
    }
    expect(batches).toBe(2);
    const batch = await firstBatch(loader);
    expect(await direct.evaluateBatch(batch)).toEqual(await copied.evaluateBatch(batch.images, batch.labels, batch.shape));
  });

  it('takes the values JS changed once it has read them', async () => {
    const data = learnableDataset(8, 73);
    const model = Model.create(tinySpec({ numClasses: 4 }), { seed: 74, device: 'cpu' });
    const batch = await firstBatch(new DataLoader(data, { batchSize: 8, shuffle: false }));
    batch.images.fill(Number.NaN);
    await expect(model.evaluateBatch(batch)).rejects.toThrow(/non-finite|NaN/i);
  });
});

describe('Dataset.dispose', () => {
  it('frees the images now; a loader started before finishes, later use throws', async () => {
    const data = learnableDataset(8, 75);
    const batches = new DataLoader(data, { batchSize: 4, shuffle: false }).epoch(0);
    const first = await batches.next();
    expect(data.disposed).toBe(false);
    data.dispose();
    expect(data.disposed).toBe(true);
    expect(first.done).toBe(false);
    expect((await batches.next()).done).toBe(false); // the running loader keeps its share
    expect(() => data.length).toThrow(/Dataset has been disposed/);
    expect(() => new DataLoader(data)).toThrow(/Dataset has been disposed/);
  });
});
