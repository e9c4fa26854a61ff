// Bad input becomes an Error whose message names the problem, and the process carries on.
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';

import { DataLoader, Dataset, Model, SGD, Tensor, datasets, fit, ops, resnet, schedules } from '../ts/index.js';
import { native } from '../ts/native.js';
import { FASHION_MNIST_DIR, hasHardwareGpu, learnableDataset, randomImages, randomLabels, tempDir, tinySpec } from './helpers.js';

const SHAPE = [8, 1, 12, 12] as const;
const images = randomImages(8 * 144, 41);
const labels = randomLabels(8, 10, 42);
const model = Model.create(tinySpec(), { seed: 40 });
afterAll(() => model.dispose());

/** After each failure the same model must still train. */
async function stillWorks(): Promise<void> {
  const s = await model.trainStep(images, labels, SHAPE);
  expect(Number.isFinite(s.loss)).toBe(true);
}

describe('bad batches', () => {
  it('wrong image shape', async () => {
    await expect(model.trainStep(images, labels, [8, 3, 12, 12])).rejects.toThrow(/takes 1 channel\(s\), got images of shape \[8, 3, 12, 12\]/);
    await expect(model.trainStep(images, labels, [8, 1, 12, 13])).rejects.toThrow(/needs 1248 values, got 1152/);
    await expect(model.predict(images, [8, 1, 12] as unknown as [number, number, number, number])).rejects.toThrow(/\[N, C, H, W\]/);
    await stillWorks();
  });

  it('labels out of range or of the wrong count', async () => {
    const bad = labels.slice();
    bad[5] = 10;
    await expect(model.trainStep(images, bad, SHAPE)).rejects.toThrow(/labels out of range: label 10 at index 5.*10 classes/);
    bad[5] = -1;
    await expect(model.evaluateBatch(images, bad, SHAPE)).rejects.toThrow(/labels out of range: label -1/);
    await expect(model.trainStep(images, labels.subarray(0, 7), SHAPE)).rejects.toThrow(/7 labels for a batch of 8 images/);
    await stillWorks();
  });

  it('NaN or Inf in the input', async () => {
    const bad = images.slice();
    bad[100] = Number.NaN;
    await expect(model.trainStep(bad, labels, SHAPE)).rejects.toThrow(/non-finite value.*index 100/);
    bad[100] = Number.POSITIVE_INFINITY;
    await expect(model.predict(bad, SHAPE)).rejects.toThrow(/non-finite/);
    await stillWorks();
  });

  // Where there is a hardware GPU (or an adapter is named) 'gpu' opens one: nothing to refuse.
  it.runIf(process.env['RESNET_WGPU_ADAPTER'] === undefined && !hasHardwareGpu())(
    "device 'gpu' without a hardware GPU says so, not hang or crash",
    () => {
      expect(() => Model.create(tinySpec(), { device: 'gpu' })).toThrow(/no GPU adapter found/);
    },
  );

  it('bad specs, devices and optimizer settings', () => {
    expect(() => Model.create({ ...tinySpec(), numClasses: 0 })).toThrow(/numClasses/);
    expect(() => Model.create({ ...tinySpec(), stages: [] })).toThrow(/at least one stage/);
    expect(() => Model.create(tinySpec(), { seed: -1 })).toThrow(/seed/);
    expect(() => model.setOptimizer({ momentum: 1.5 })).toThrow(/momentum/);
    expect(() => model.setOptimizer({ schedule: { kind: 'cosine', minLr: 0 } })).toThrow(/total steps/);
    expect(() => model.parameter('nope.weight')).toThrow(/no parameter named 'nope.weight'/);
  });
});

describe('bad data', () => {
  const dir = tempDir();

  it('a missing data directory', async () => {
    await expect(datasets.fashionMnist({ dir: join(dir, 'missing'), split: 'train' })).rejects.toThrow(/Fashion-MNIST not found.*directory does not exist/);
    await expect(datasets.cifar10({ dir: join(dir, 'missing') })).rejects.toThrow(/missing/);
  });

  it('a truncated IDX file', async () => {
    // 10 images declared, 5 present; the labels file is fine.
    const header = Buffer.alloc(16);
    header.writeUInt32BE(0x00000803, 0);
    header.writeUInt32BE(10, 4);
    header.writeUInt32BE(4, 8);
    header.writeUInt32BE(4, 12);
    writeFileSync(join(dir, 'train-images-idx3-ubyte'), Buffer.concat([header, Buffer.alloc(5 * 16, 7)]));
    const labelHeader = Buffer.alloc(8);
    labelHeader.writeUInt32BE(0x00000801, 0);
    labelHeader.writeUInt32BE(10, 4);
    writeFileSync(join(dir, 'train-labels-idx1-ubyte'), Buffer.concat([labelHeader, Buffer.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])]));
    await expect(datasets.fashionMnist({ dir, split: 'train' })).rejects.toThrow(/train-images-idx3-ubyte: truncated IDX file: header declares 10x4x4 = 160 bytes/);
  });

  it('a truncated gzip file cut from the real data', async () => {
    const gz = readFileSync(join(FASHION_MNIST_DIR, 't10k-labels-idx1-ubyte.gz'));
    const cut = tempDir();
    writeFileSync(join(cut, 't10k-labels-idx1-ubyte.gz'), gz.subarray(0, Math.floor(gz.length / 2)));
    copyFileSync(join(FASHION_MNIST_DIR, 't10k-images-idx3-ubyte.gz'), join(cut, 't10k-images-idx3-ubyte.gz'));
    expect(gunzipSync(gz).length).toBe(10_008); // sanity: the real file is fine
    await expect(datasets.fashionMnist({ dir: cut, split: 'test' })).rejects.toThrow(/t10k-labels-idx1-ubyte\.gz: .*(truncated|gzip)/);
  });

  it('inconsistent arrays and bad loader settings', async () => {
    expect(() =>
      Dataset.fromArrays({ images: new Uint8Array(10), labels: [0, 1], channels: 1, height: 2, width: 2, numClasses: 10 }),
    ).toThrow(/10 pixel bytes is not 2 labels x 1x2x2/);
    expect(() =>
      Dataset.fromArrays({ images: new Uint8Array(8), labels: [0, 12], channels: 1, height: 2, width: 2, numClasses: 10 }),
    ).toThrow(/label 12 at index 1/);
    const ds = Dataset.fromArrays({ images: new Uint8Array(8).fill(9), labels: [0, 1], channels: 1, height: 2, width: 2, numClasses: 2 });
    expect(() => ds.subset([0, 2])).toThrow(/index 2 at position 1 is out of range \(the dataset has 2 samples\)/);
    // A constant dataset has std 0: normalising by it would divide by zero.
    await expect(new DataLoader(ds).epoch(0).next()).rejects.toThrow(/std/);
    expect(() => new DataLoader(ds, { batchSize: 0 })).toThrow(/batchSize/);
  });
});

describe('bad checkpoints', () => {
  const dir = tempDir();

  it('a checkpoint of another architecture', async () => {
    const other = Model.create(resnet.cifar({ depth: 14, inChannels: 1 }));
    const path = join(dir, 'resnet14.safetensors');
    await other.save(path);
    other.dispose();
    await expect(model.loadWeights(path)).rejects.toThrow(/different architecture: checkpoint ResNet-14.*this model is ResNet-8/);
    await stillWorks();
  });

  it('missing, truncated and foreign files', async () => {
    await expect(Model.load(join(dir, 'nope.safetensors'))).rejects.toThrow(/nope\.safetensors: file not found/);
    const path = join(dir, 'tiny.safetensors');
    await model.save(path);
    const bytes = readFileSync(path);
    const truncated = join(dir, 'truncated.safetensors');
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 100));
    await expect(Model.load(truncated)).rejects.toThrow(/truncated\.safetensors.*(truncated|does not match)/);
    const text = join(dir, 'text.safetensors');
    writeFileSync(text, 'hello');
    await expect(Model.load(text)).rejects.toThrow(/not a safetensors file/);
    await expect(model.save(join(dir, 'no', 'such', 'dir', 'x.safetensors'))).rejects.toThrow(/directory .*does not exist/);
    await stillWorks();
  });
});

/** A value of the wrong type, as plain JavaScript callers pass them. */
const untyped = (v: unknown): never => v as never;

// Issue #14: every value crossing into Rust is checked first; the Error names the call, the
// parameter, the value and what is allowed (napi would truncate 4.5, wrap -4 to 4294967292, or
// say "Get TypedArray info failed").
describe('bad numbers, labels and types at the API', () => {
  const four = images.subarray(0, 4 * 144);

  it('non-integer labels are refused, not truncated', async () => {
    await expect(model.trainStep(four, [0, 1, 2, 1.5], [4, 1, 12, 12])).rejects.toThrow(
      'trainStep: labels must be integer class indices, got 1.5 at index 3',
    );
    await expect(model.trainStep(four, untyped(new Float32Array([0, 1, 2, 1.5])), [4, 1, 12, 12])).rejects.toThrow(/trainStep: labels .*got 1\.5 at index 3/);
    await expect(model.evaluateBatch(four, [0.5, 1, 2, 3], [4, 1, 12, 12])).rejects.toThrow(/evaluateBatch: labels .*got 0\.5 at index 0/);
    await expect(model.gradientNorms(four, [0, 1, Number.NaN, 3], [4, 1, 12, 12])).rejects.toThrow(/gradientNorms: labels .*got NaN at index 2/);
    await expect(model.trainStep(four, untyped('0123'), [4, 1, 12, 12])).rejects.toThrow(/trainStep: labels must be an Int32Array, a Uint8Array or an array of integer class indices, got '0123'/);
    // Integer values in another typed array are fine; the class range is still checked in Rust.
    const step = model.step;
    await model.trainStep(four, untyped(new Float32Array([0, 1, 2, 3])), [4, 1, 12, 12]);
    expect(model.step).toBe(step + 1);
    await expect(model.trainStep(four, [0, 1, 2, 10], [4, 1, 12, 12])).rejects.toThrow(/labels out of range: label 10 at index 3/);
    await stillWorks();
  });

  it('fractional and negative sizes are refused, and -4 is reported as -4', async () => {
    await expect(model.trainStep(four, [0, 1, 2, 3], [4.5, 1, 12, 12])).rejects.toThrow(
      'trainStep: shape[0] (N, the batch size) must be a non-negative integer, got 4.5 (shape [4.5, 1, 12, 12])',
    );
    const negative = model.predict(four, [-4, 1, 12, 12]);
    await expect(negative).rejects.toThrow(/predict: shape\[0\] \(N, the batch size\) must be a non-negative integer, got -4/);
    await expect(negative).rejects.not.toThrow(/4294967292/);
    await expect(model.predict(four, { n: 4.5 })).rejects.toThrow(/predict: shape\.n must be a positive integer, got 4\.5/);
    await expect(model.evaluateBatch(four, [0, 1, 2, 3], [4, 1, 12.5, 12])).rejects.toThrow(/evaluateBatch: shape\[2\] \(H\)/);
    await expect(model.layerResponses(four, [4, 1, 12, -12])).rejects.toThrow(/layerResponses: shape\[3\] \(W\) .*got -12/);
    await expect(model.gradientNorms(four, [0, 1, 2, 3], [4, Number.NaN, 12, 12])).rejects.toThrow(/gradientNorms: shape\[1\] \(C\) .*got NaN/);
    expect(() => model.summary({ height: 27.5 })).toThrow(/summary: height must be a positive integer, got 27\.5/);
    await stillWorks();
  });

  it('the binding checks shapes itself (for callers of the raw addon)', async () => {
    const raw = new native.NativeModel(JSON.stringify(tinySpec()), 0, 'cpu');
    try {
      expect(() => raw.predict(four, [-4, 1, 12, 12])).toThrow(/predict: shape\[0\] \(N, the batch size\) must be a non-negative integer, got -4 \(shape \[-4, 1, 12, 12\]\)/);
      expect(() => raw.trainStep(four, [4.5, 1, 12, 12], new Int32Array(4))).toThrow(/trainStep: shape\[0\] .*got 4\.5/);
      expect(() => raw.summary(28, -1)).toThrow(/summary: width must be a non-negative integer, got -1/);
    } finally {
      raw.dispose();
    }
  });

  it('a plain Array or null where a Float32Array is expected', async () => {
    await expect(model.predict(untyped([1, 2, 3]), [4, 1, 12, 12])).rejects.toThrow('predict: images must be a Float32Array (NCHW values), got [1, 2, 3]');
    await expect(model.trainStep(untyped(null), [0, 1, 2, 3], [4, 1, 12, 12])).rejects.toThrow('trainStep: images must be a Float32Array (NCHW values), got null');
    await expect(model.evaluateBatch(untyped(new Float64Array(576)), [0, 1, 2, 3], [4, 1, 12, 12])).rejects.toThrow(/evaluateBatch: images must be a Float32Array .*got a Float64Array of length 576/);
    await expect(model.layerResponses(untyped(undefined), [4, 1, 12, 12])).rejects.toThrow(/layerResponses: images must be a Float32Array .*got undefined/);
    await expect(model.gradientNorms(untyped(Array.from(four)), [0, 1, 2, 3], [4, 1, 12, 12])).rejects.toThrow(/gradientNorms: images must be a Float32Array .*got an Array of length 576/);
    await expect(model.predict(four, untyped(null))).rejects.toThrow(/predict: shape must be \[N, C, H, W\] or \{ n \}, got null/);
    await stillWorks();
  });

  it('Tensor APIs', () => {
    expect(() => Tensor.fromArray(untyped(null), [2])).toThrow('Tensor.fromArray: data must be a Float32Array or an array of numbers, got null');
    expect(() => Tensor.fromArray([1, untyped('2')], [2])).toThrow(/Tensor.fromArray: data must hold numbers, got '2' at index 1/);
    expect(() => Tensor.fromArray([1, 2], [-2])).toThrow(/Tensor.fromArray: shape\[0\] must be a non-negative integer, got -2/);
    expect(() => Tensor.fromArray([1, 2], [2.5])).toThrow(/shape\[0\] must be a non-negative integer, got 2\.5/);
    const x = Tensor.fromArray(new Float32Array(16), [1, 1, 4, 4]);
    const w = Tensor.fromArray(new Float32Array(9), [1, 1, 3, 3]);
    expect(() => ops.reshape(x, [4, 4.5])).toThrow(/reshape: shape\[1\] must be a non-negative integer, got 4\.5/);
    expect(() => ops.conv2d(x, w, { stride: 1.5 })).toThrow('conv2d: stride must be a non-negative integer, got 1.5');
    expect(() => ops.conv2d(x, w, { padding: -1 })).toThrow('conv2d: padding must be a non-negative integer, got -1');
    expect(() => ops.maxPool2d(x, { kernel: -2 })).toThrow(/maxPool2d: kernel must be a non-negative integer, got -2/);
    const logits = Tensor.fromArray(new Float32Array(6), [2, 3]);
    expect(() => ops.crossEntropy(logits, [0, 1.5])).toThrow('crossEntropy: labels must be integer class indices, got 1.5 at index 1');
    expect(ops.crossEntropy(logits, [0, 2]).item()).toBeCloseTo(Math.log(3), 5);
  });

  it('datasets from arrays: labels, sizes and indices', () => {
    const px = new Uint8Array(8);
    const make = (o: Record<string, unknown>): Dataset =>
      Dataset.fromArrays({ images: px, labels: [0, 1], channels: 1, height: 2, width: 2, numClasses: 2, ...o } as never);
    expect(() => make({ labels: [0, 1.5] })).toThrow('Dataset.fromArrays: labels must be integer class indices, got 1.5 at index 1');
    expect(() => make({ labels: [0, 256] })).toThrow(/Dataset.fromArrays: labels must be integers in \[0, 255\].*got 256 at index 1/);
    expect(() => make({ images: [1, 2, 3] })).toThrow(/Dataset.fromArrays: images must be a Uint8Array .*got \[1, 2, 3\]/);
    expect(() => make({ channels: 1.5 })).toThrow('Dataset.fromArrays: channels must be a non-negative integer, got 1.5');
    expect(() => make({ numClasses: -2 })).toThrow('Dataset.fromArrays: numClasses must be a non-negative integer, got -2');
    const ds = make({});
    expect(() => ds.subset([0.5])).toThrow(/Dataset.subset: indices must be integers in \[0, 2\), got 0\.5 at position 0/);
    expect(() => ds.subset([-1])).toThrow(/Dataset.subset: indices must be integers in \[0, 2\), got -1 at position 0/);
    expect(ds.subset([1, 0]).labels()).toEqual(new Uint8Array([1, 0]));
  });
});

describe('bad factory and optimizer options name the field, the value and the allowed values', () => {
  it('resnet.cifar and resnet.imagenet', () => {
    const cifar = (o: Record<string, unknown>): unknown => resnet.cifar({ depth: 20, ...o } as never);
    const imagenet = (o: Record<string, unknown>): unknown => resnet.imagenet({ depth: 18, ...o } as never);
    expect(() => cifar({ shortcut: 'D' })).toThrow("resnet.cifar: shortcut must be one of 'A', 'B', 'C', got 'D'");
    expect(() => cifar({ activation: 'gelu' })).toThrow("resnet.cifar: activation must be one of 'relu', 'tanh', 'sigmoid', got 'gelu'");
    expect(() => cifar({ inChannels: 1.5 })).toThrow('resnet.cifar: inChannels must be a positive integer, got 1.5');
    expect(() => cifar({ numClasses: Number.NaN })).toThrow('resnet.cifar: numClasses must be a positive integer, got NaN');
    expect(() => cifar({ plain: 'yes' })).toThrow("resnet.cifar: plain must be true or false, got 'yes'");
    expect(() => cifar({ preActivation: 1 })).toThrow('resnet.cifar: preActivation must be true or false, got 1');
    expect(() => cifar({ batchNorm: 'false' })).toThrow("resnet.cifar: batchNorm must be true or false, got 'false'");
    expect(() => cifar({ shortcuts: 'B' })).toThrow(/resnet.cifar: unknown option 'shortcuts' \(the options are depth, shortcut, /);
    expect(() => cifar({ bottleneckStride: '1x1' })).toThrow(/resnet.cifar: unknown option 'bottleneckStride'/);
    expect(() => cifar({ depth: '20' })).toThrow(/6n\+2.*got depth '20'/);
    expect(() => resnet.cifar(untyped(undefined))).toThrow(/resnet.cifar: options must be an object such as \{ depth: 20 \}, got undefined/);
    expect(() => imagenet({ shortcut: 'D' })).toThrow("resnet.imagenet: shortcut must be one of 'A', 'B', 'C', got 'D'");
    expect(() => imagenet({ bottleneckStride: '2x2' })).toThrow("resnet.imagenet: bottleneckStride must be one of '1x1', '3x3', got '2x2'");
    expect(() => imagenet({ activation: 'gelu' })).toThrow(/resnet.imagenet: activation must be one of/);
    expect(() => imagenet({ numClasses: 0 })).toThrow('resnet.imagenet: numClasses must be a positive integer, got 0');
    expect(() => imagenet({ depth: '50' })).toThrow(/18, 34, 50, 101 or 152, got depth '50'/);
    expect(() => imagenet({ width: 64 })).toThrow(/resnet.imagenet: unknown option 'width'/);
    // Good values still build; undefined means the default.
    expect(resnet.cifar({ depth: 20, shortcut: undefined }).shortcut).toBe('A');
  });

  it('a raw spec reaching Rust names the field, not a column', () => {
    const attempt = (spec: unknown): string => {
      try {
        Model.create(spec as never);
      } catch (e) {
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(attempt({ ...tinySpec(), shortcut: 'D' })).toBe("invalid ResNet spec: `shortcut` must be one of 'A', 'B', 'C', got 'D'");
    expect(attempt({ ...tinySpec(), activation: 'gelu' })).toBe("invalid ResNet spec: `activation` must be one of 'relu', 'tanh', 'sigmoid', got 'gelu'");
    const stage = { ...tinySpec().stages[0], block: 'wide' };
    expect(attempt({ ...tinySpec(), stages: [stage] })).toMatch(/`stages\[0\]\.block` must be one of 'basic', 'bottleneck', got 'wide'/);
    expect(attempt({ ...tinySpec(), numClasses: Number.NaN })).toMatch(/`numClasses` must be a non-negative integer, got null \(NaN and Infinity/);
    for (const m of [attempt({ ...tinySpec(), shortcut: 'D' }), attempt({ ...tinySpec(), plain: 1 })]) expect(m).not.toMatch(/column/);
  });

  it('optimizer options, in setOptimizer, fit and SGD', async () => {
    expect(() => model.setOptimizer({ lr: Number.NaN })).toThrow('optimizer: lr (the learning rate) must be a finite number >= 0, got NaN');
    expect(() => model.setOptimizer({ lr: -0.1 })).toThrow('optimizer: lr (the learning rate) must be a finite number >= 0, got -0.1');
    expect(() => model.setOptimizer({ momentum: 1.5 })).toThrow('optimizer: momentum must be in [0, 1), got 1.5');
    expect(() => model.setOptimizer({ weightDecay: Number.POSITIVE_INFINITY })).toThrow('optimizer: weightDecay must be a finite number >= 0, got Infinity');
    expect(() => model.setOptimizer({ nesterov: untyped('yes') })).toThrow("optimizer: nesterov must be true or false, got 'yes'");
    expect(() => model.setOptimizer({ nesterov: true, momentum: 0 })).toThrow(/nesterov: true needs momentum > 0/);
    expect(() => model.setOptimizer({ warmupSteps: 2.5 })).toThrow('optimizer: warmupSteps must be an integer >= 0, got 2.5');
    expect(() => model.setOptimizer({ schedule: untyped({ kind: 'step' }) })).toThrow("optimizer: schedule.kind must be one of 'constant', 'multistep', 'cosine', got 'step'");
    expect(() => model.setOptimizer({ schedule: { kind: 'multistep', milestones: [10, 1.5], gamma: 0.1 } })).toThrow(
      'optimizer: schedule.milestones[1] must be an integer >= 0, got 1.5',
    );
    expect(() => model.setOptimizer({ schedule: { kind: 'multistep', milestones: [10], gamma: 0 } })).toThrow(/schedule.gamma must be a finite number > 0, got 0/);
    expect(() => model.setOptimizer({ schedule: { kind: 'cosine', totalSteps: 10, minLr: -1 } })).toThrow(/schedule.minLr must be a finite number >= 0, got -1/);
    expect(() => schedules.cosine({ totalSteps: 0.5 })).toThrow(/schedule.totalSteps must be a positive integer, got 0.5/);
    expect(() => model.setOptimizer(untyped({ learningRate: 0.1 }))).toThrow(/optimizer: unknown option 'learningRate' \(the options are lr, /);
    const data = learnableDataset(16, 3);
    await expect(fit(model, data, { batchSize: 8, optimizer: { lr: Number.NaN } })).rejects.toThrow('optimizer: lr (the learning rate) must be a finite number >= 0, got NaN');
    const p = Tensor.fromArray([1, 2], [2], { requiresGrad: true });
    expect(() => new SGD([p], { lr: Number.NaN })).toThrow('optimizer: lr (the learning rate) must be a finite number >= 0, got NaN');
    // The raw config reaching Rust names the field too.
    const raw = new native.NativeModel(JSON.stringify(tinySpec()), 0, 'cpu');
    try {
      expect(() => raw.configureOptimizer('{"lr":null}')).toThrow(/invalid optimizer config: `lr` must be a finite number, got null/);
      expect(() => raw.configureOptimizer('{"lr":null}')).not.toThrow(/column/);
    } finally {
      raw.dispose();
    }
    model.setOptimizer({});
    await stillWorks();
  });
});
