// The Model API as users call it: train steps, predictions, determinism, evaluation, checkpoints.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { Dataset, DataLoader, Model, Tensor, resnet } from '../ts/index.js';
import { learnableDataset, randomImages, randomLabels, tempDir, tinySpec } from './helpers.js';

const SHAPE = [16, 1, 12, 12] as const;
const images = randomImages(16 * 144, 1);
const labels = randomLabels(16, 10, 2);
const dir = tempDir();
const models: Model[] = [];
const track = (m: Model): Model => (models.push(m), m);
afterAll(() => models.forEach((m) => m.dispose()));

describe('trainStep', () => {
  it('returns finite scalars and counts steps', async () => {
    const model = track(Model.create(tinySpec(), { seed: 3 }));
    model.setOptimizer({ lr: 0.05 });
    const s = await model.trainStep(images, labels, SHAPE);
    expect(Number.isFinite(s.loss)).toBe(true);
    expect(s.loss).toBeGreaterThan(0.5); // ~ln(10) at initialisation
    expect(s.batch).toBe(16);
    expect(s.acc).toBeGreaterThanOrEqual(0);
    expect(s.acc).toBeLessThanOrEqual(1);
    expect(s.lr).toBeCloseTo(0.05, 6);
    expect(s.step).toBe(1);
    expect(model.step).toBe(1);
  });

  it('drives the loss down on a fixed batch within 20 steps', async () => {
    const model = track(Model.create(tinySpec(), { seed: 4 }));
    model.setOptimizer({ lr: 0.05, momentum: 0.9, weightDecay: 0 });
    const losses: number[] = [];
    for (let i = 0; i < 20; i++) losses.push((await model.trainStep(images, labels, SHAPE)).loss);
    expect(losses.every(Number.isFinite)).toBe(true);
    const first = losses[0] as number;
    const last = Math.min(...losses.slice(-3));
    expect(last).toBeLessThan(first * 0.5);
  });

  it('infers square shapes from the image count and refuses ambiguous ones', async () => {
    const model = track(Model.create(tinySpec()));
    const s = await model.trainStep(images, labels); // 16 images of 1x12x12
    expect(s.batch).toBe(16);
    await expect(model.trainStep(images.subarray(0, 16 * 143), labels)).rejects.toThrow(/cannot infer the image shape.*pass shape/);
  });

  it('keeps the event loop free while Rust works', async () => {
    const model = track(Model.create(resnet.cifar({ depth: 14, inChannels: 1 })));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    await model.trainStep(randomImages(32 * 28 * 28, 5), randomLabels(32, 10, 6), [32, 1, 28, 28]);
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(2);
  });
});

describe('predict', () => {
  it('returns [N, numClasses] finite logits, independent of the batch it is in', async () => {
    const model = track(Model.create(tinySpec({ numClasses: 7 }), { seed: 5 }));
    const logits = await model.predict(images, SHAPE);
    expect(logits).toBeInstanceOf(Float32Array);
    expect(logits.length).toBe(16 * 7);
    expect(logits.every(Number.isFinite)).toBe(true);
    expect(new Set(logits).size).toBeGreaterThan(16); // not constant
    // Eval mode: image 3 alone gives the same logits as inside the batch.
    const one = await model.predict(images.slice(3 * 144, 4 * 144), [1, 1, 12, 12]);
    for (let k = 0; k < 7; k++) expect(one[k]).toBeCloseTo(logits[3 * 7 + k] as number, 4);
    const byCount = await model.predict(images, { n: 16 });
    expect(byCount).toEqual(logits);
  });
});

describe('determinism', () => {
  it('the same seed gives identical losses over 3 steps; another seed differs', async () => {
    const run = async (seed: number): Promise<number[]> => {
      const model = track(Model.create(tinySpec(), { seed }));
      model.setOptimizer({ lr: 0.1 });
      const out: number[] = [];
      for (let i = 0; i < 3; i++) out.push((await model.trainStep(images, labels, SHAPE)).loss);
      return out;
    };
    const a = await run(11);
    const b = await run(11);
    const c = await run(12);
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
  });
});

describe('evaluate', () => {
  it('gives top-1/top-5 that agree with argmax over predict', async () => {
    const model = track(Model.create(tinySpec({ numClasses: 10 }), { seed: 6 }));
    const n = 40;
    const r = randomLabels(n * 144, 256, 9);
    const pixels = Uint8Array.from(r);
    const ys = Uint8Array.from(randomLabels(n, 10, 10));
    const ds = Dataset.fromArrays({ images: pixels, labels: ys, channels: 1, height: 12, width: 12, numClasses: 10 });
    const result = await model.evaluate(ds, { batchSize: 16 });
    expect(result.count).toBe(n);
    expect(result.top1).toBeLessThanOrEqual(result.top5);
    expect(Number.isFinite(result.loss) && result.loss > 0).toBe(true);

    // Recompute from logits with the same (dataset) normalisation.
    const loader = new DataLoader(ds, { batchSize: n, shuffle: false });
    let top1 = 0;
    let top5 = 0;
    for await (const b of loader.epoch(0)) {
      const logits = await model.predict(b.images, b.shape);
      for (let i = 0; i < n; i++) {
        const row = Array.from(logits.subarray(i * 10, i * 10 + 10));
        const y = b.labels[i] as number;
        const rank = row.filter((v) => v > (row[y] as number)).length;
        if (rank === 0) top1++;
        if (rank < 5) top5++;
      }
    }
    expect(result.top1).toBeCloseTo(top1 / n, 6);
    expect(result.top5).toBeCloseTo(top5 / n, 6);
  });

  it('learns a learnable dataset', async () => {
    const model = track(Model.create(tinySpec({ numClasses: 4 }), { seed: 7 }));
    const ds = learnableDataset(256, 1);
    model.setOptimizer({ lr: 0.05 });
    const before = await model.evaluate(ds);
    for (let epoch = 0; epoch < 3; epoch++) {
      for await (const b of new DataLoader(ds, { batchSize: 32, seed: 1 }).epoch(epoch)) {
        await model.trainStep(b.images, b.labels, b.shape);
      }
    }
    const after = await model.evaluate(ds);
    expect(after.loss).toBeLessThan(before.loss);
    expect(after.top1).toBeGreaterThan(0.6);
  });
});

describe('checkpoints', () => {
  it('save then load gives identical predictions, spec, step and normalisation', async () => {
    const model = track(Model.create(tinySpec({ numClasses: 5 }), { seed: 8 }));
    model.setOptimizer({ lr: 0.1 });
    const y = randomLabels(16, 5, 3);
    for (let i = 0; i < 3; i++) await model.trainStep(images, y, SHAPE);
    model.normalization = { mean: [0.25], std: [0.5] };
    const path = join(dir, 'tiny.safetensors');
    await model.save(path, { note: 'round trip' });

    const loaded = track(await Model.load(path));
    expect(loaded.spec).toEqual(model.spec);
    expect(loaded.step).toBe(3);
    expect(loaded.normalization).toEqual({ mean: [0.25], std: [0.5] });
    expect(loaded.checkpointMetadata['note']).toBe('round trip');
    expect(await loaded.predict(images, SHAPE)).toEqual(await model.predict(images, SHAPE));

    // loadWeights into a fresh model of the same architecture.
    const fresh = track(Model.create(tinySpec({ numClasses: 5 }), { seed: 99 }));
    expect(await fresh.predict(images, SHAPE)).not.toEqual(await model.predict(images, SHAPE));
    const meta = await fresh.loadWeights(path);
    expect(meta['note']).toBe('round trip');
    expect(await fresh.predict(images, SHAPE)).toEqual(await model.predict(images, SHAPE));

    // Training resumes identically (optimizer state is in the checkpoint).
    const a = await model.trainStep(images, y, SHAPE);
    const b = await loaded.trainStep(images, y, SHAPE);
    expect(b.loss).toBe(a.loss);
    expect(b.step).toBe(4);
  });

  it('exposes torchvision parameter names', () => {
    const model = track(Model.create(resnet.imagenet({ depth: 18 })));
    const names = model.parameterNames();
    for (const n of ['conv1.weight', 'bn1.weight', 'layer1.0.conv1.weight', 'layer2.0.downsample.0.weight', 'fc.weight', 'fc.bias']) {
      expect(names).toContain(n);
    }
    expect(model.parameter('fc.weight').shape).toEqual([1000, 512]);
  });
});

describe('dispose', () => {
  it('frees the model; later calls throw', async () => {
    const model = Model.create(tinySpec());
    expect(model.disposed).toBe(false);
    model.dispose();
    expect(model.disposed).toBe(true);
    expect(() => model.numParameters).toThrow(/model has been disposed/);
    await expect(model.predict(images, SHAPE)).rejects.toThrow(/model has been disposed/);
    model.dispose(); // idempotent
  });
});

describe('probes: layerResponses, gradientNorms, stageOutputs', () => {
  const shape = [4, 1, 12, 12] as const;
  const x = randomImages(4 * 144, 31);
  const y = randomLabels(4, 10, 32);
  /** conv1, then two 3x3 convolutions a block, three stages of three blocks. */
  const twenty = ['conv1', ...[1, 2, 3].flatMap((i) => [0, 1, 2].flatMap((j) => [1, 2].map((k) => `layer${i}.${j}.conv${k}`)))];

  for (const plain of [false, true]) {
    it(`${plain ? 'Plain' : 'ResNet'}-20: one entry per convolution, in layer order`, async () => {
      const model = track(Model.create(resnet.cifar({ depth: 20, inChannels: 1, plain }), { seed: 1, device: 'cpu' }));
      await model.trainStep(x, y, shape); // running statistics that differ from the batch's
      const before = await model.predict(x, shape);
      const step = model.step;
      const evalMode = await model.layerResponses(x, shape);
      const train = await model.layerResponses(x, shape, { training: true });
      for (const r of [evalMode, train]) {
        expect(r.map((l) => l.name)).toEqual(twenty);
        expect(r.every((l) => l.kernel === 3 && l.std > 0 && Number.isFinite(l.mean))).toBe(true);
      }
      expect(train.some((l, i) => Math.abs(l.std - (evalMode[i]?.std ?? 0)) > 1e-3 * l.std)).toBe(true);
      const norms = await model.gradientNorms(x, y, shape);
      expect(norms.map((g) => g.name)).toEqual([...twenty, 'fc']);
      expect(norms.at(-1)).toMatchObject({ name: 'fc', kernel: 0, numel: 640 });
      expect(norms[1]).toMatchObject({ kernel: 3, numel: 16 * 16 * 9 });
      expect(norms.every((g) => g.norm > 0 && Number.isFinite(g.norm))).toBe(true);
      // Nothing in the model changed.
      expect(await model.predict(x, shape)).toEqual(before);
      expect(model.step).toBe(step);
      expect(model.parameter('fc.weight').grad).toBeNull();
    });
  }

  it('option B adds the 1x1 projections after their block; pre-activation reports the same layers', async () => {
    const b = track(Model.create(tinySpec({ shortcut: 'B' }), { device: 'cpu' }));
    const r = await b.layerResponses(x, shape);
    expect(r.map((l) => `${l.name}/${l.kernel}`)).toEqual([
      'conv1/3',
      'layer1.0.conv1/3',
      'layer1.0.conv2/3',
      'layer2.0.conv1/3',
      'layer2.0.conv2/3',
      'layer2.0.downsample.0/1',
      'layer3.0.conv1/3',
      'layer3.0.conv2/3',
      'layer3.0.downsample.0/1',
    ]);
    const pre = track(Model.create(tinySpec({ shortcut: 'B', preActivation: true }), { device: 'cpu' }));
    expect((await pre.layerResponses(x, shape, { training: true })).map((l) => l.name)).toEqual(r.map((l) => l.name));
    expect((await pre.gradientNorms(x, y, shape)).length).toBe(r.length + 1);
  });

  it('a net without batch norm: a gradient norm per convolution and fc, responses of the convolutions', async () => {
    const spec = resnet.cifar({ depth: 20, plain: true, batchNorm: false, inChannels: 1 });
    const model = track(Model.create(spec, { seed: 5, device: 'cpu' }));
    const norms = await model.gradientNorms(x, y, shape);
    const convs = model.parameterNames().filter((n) => n.endsWith('.weight') && n !== 'fc.weight');
    expect(convs.length).toBe(19);
    expect(norms.map((g) => g.name)).toEqual([...convs.map((n) => n.replace(/\.weight$/, '')), 'fc']);
    expect(norms.every((g) => Number.isFinite(g.norm) && g.norm > 0)).toBe(true);
    expect(norms.at(-1)).toMatchObject({ name: 'fc', kernel: 0, numel: 640 });
    // No batch statistics: the responses are the same in training and eval mode.
    const r = await model.layerResponses(x, shape, { training: true });
    expect(r.map((l) => l.name)).toEqual(norms.slice(0, -1).map((g) => g.name));
    expect(await model.layerResponses(x, shape)).toEqual(r);
    // Saved and loaded: the spec (batchNorm: false) and the predictions come back.
    const path = join(dir, 'plain20-nobn.safetensors');
    await model.save(path);
    const loaded = track(await Model.load(path, { device: 'cpu' }));
    expect(loaded.spec.batchNorm).toBe(false);
    expect(loaded.spec).toEqual(model.spec);
    expect(await loaded.predict(x, shape)).toEqual(await model.predict(x, shape));
  });

  it('bad input is a thrown Error naming the problem', async () => {
    const model = track(Model.create(tinySpec(), { device: 'cpu' }));
    await expect(model.gradientNorms(x, Int32Array.of(0, 1, 10, 2), shape)).rejects.toThrow(/label 10.*10 classes/);
    await expect(model.gradientNorms(x, Int32Array.of(0, 1), shape)).rejects.toThrow(/2 labels/);
    await expect(model.layerResponses(x, [4, 3, 12, 12])).rejects.toThrow(/1 channel/);
    await expect(model.layerResponses(x.subarray(1), shape)).rejects.toThrow(/575/);
  });

  it('stageOutputs gives one feature map a stage (C2..C5 of an ImageNet net)', () => {
    const model = track(Model.create(resnet.imagenet({ depth: 18, inChannels: 1, numClasses: 3 }), { device: 'cpu' }));
    const maps = model.stageOutputs(Tensor.fromArray(randomImages(2 * 64 * 64, 33), [2, 1, 64, 64]));
    expect(maps.map((t) => t.shape)).toEqual([
      [2, 64, 16, 16],
      [2, 128, 8, 8],
      [2, 256, 4, 4],
      [2, 512, 2, 2],
    ]);
    const cifar = track(Model.create(tinySpec(), { device: 'cpu' }));
    expect(cifar.stageOutputs(Tensor.fromArray(x, [...shape])).map((t) => t.shape[1])).toEqual([16, 32, 64]);
  });

  it('a pre-activation net trains, saves and loads', async () => {
    const model = track(Model.create(tinySpec({ numClasses: 5, preActivation: true }), { seed: 8, device: 'cpu' }));
    const labels5 = randomLabels(16, 5, 3);
    for (let i = 0; i < 3; i++) await model.trainStep(images, labels5, SHAPE);
    const path = join(dir, 'pre.safetensors');
    await model.save(path);
    const loaded = track(await Model.load(path, { device: 'cpu' }));
    expect(loaded.name).toBe('PreResNet-8');
    expect(loaded.spec).toEqual(model.spec);
    expect(await loaded.predict(images, SHAPE)).toEqual(await model.predict(images, SHAPE));
    const plain = track(Model.create(tinySpec({ numClasses: 5 }), { device: 'cpu' }));
    await expect(plain.loadWeights(path)).rejects.toThrow(/different architecture.*PreResNet-8/);
  });
});
