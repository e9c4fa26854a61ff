// Bad input becomes an Error whose message names the problem, and the process carries on.
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';

import { DataLoader, Dataset, Model, datasets, resnet } from '../ts/index.js';
import { FASHION_MNIST_DIR, hasHardwareGpu, randomImages, randomLabels, tempDir, tinySpec } from './helpers.js';

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

  it('bad specs, devices and optimizer settings', () => {
    expect(() => Model.create({ ...tinySpec(), numClasses: 0 })).toThrow(/numClasses/);
    expect(() => Model.create({ ...tinySpec(), stages: [] })).toThrow(/at least one stage/);
    // No hardware GPU here and no software adapter named: 'gpu' must say so, not hang or crash.
    if (process.env['RESNET_WGPU_ADAPTER'] === undefined && !hasHardwareGpu()) {
      expect(() => Model.create(tinySpec(), { device: 'gpu' })).toThrow(/no GPU adapter found/);
    }
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
