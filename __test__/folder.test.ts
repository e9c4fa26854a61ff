// Image-folder datasets (root/<class>/<image>.{png,jpg}, decoded and transformed in Rust) through
// fit, DataLoader and model.evaluate (centre, ten-crop and multi-scale views); corrupt files;
// per-pixel mean normalisation through save/load.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { DataLoader, datasets, encodeImage, evaluateViews, fit, IMAGENET_STATS, Model, resnet, type ImageFolder } from '../ts/index.js';
import { learnableDataset, rng, tempDir } from './helpers.js';

/** Writes `root/<class>/<name>` images: RGB PNGs of odd sizes, a JPEG, a grey and an RGBA PNG. */
function makeFolder(root: string, seed: number): string[] {
  const r = rng(seed);
  const files: string[] = [];
  const put = (cls: string, name: string, bytes: Uint8Array): void => {
    mkdirSync(join(root, cls), { recursive: true });
    writeFileSync(join(root, cls, name), bytes);
    files.push(join(root, cls, name));
  };
  const pixels = (n: number, bright: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(bright + r() * 100));
  for (const [k, cls] of ['bird', 'cat'].entries()) {
    for (let i = 0; i < 3; i++) {
      const [w, h] = [21 + i * 4, 27 - i];
      put(cls, `img${i}.png`, encodeImage(pixels(w * h * 3, k * 120), { width: w, height: h, channels: 3 }));
    }
    put(cls, 'photo.jpg', encodeImage(pixels(23 * 19 * 3, k * 120), { width: 23, height: 19, channels: 3, jpegQuality: 85 }));
  }
  put('cat', 'grey.png', encodeImage(pixels(20 * 25, 130), { width: 20, height: 25, channels: 1 }));
  put('bird', 'alpha.png', encodeImage(pixels(26 * 22 * 4, 10), { width: 26, height: 22, channels: 4 }));
  writeFileSync(join(root, 'cat', 'notes.txt'), 'ignored');
  return files;
}

const base = tempDir('resnet-wgpu-folder-');
const root = join(base, 'train');
makeFolder(root, 1);
const options = { size: 16, resize: 20, workers: 2 } as const;

function tinyRgbModel(): Model {
  return Model.create(resnet.cifar({ depth: 8, inChannels: 3, numClasses: 2 }), { seed: 3, device: 'cpu' });
}

function softmax(logits: Float32Array, row: number, k: number): number[] {
  const xs = Array.from(logits.subarray(row * k, (row + 1) * k));
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}

describe('datasets.imageFolder', () => {
  it('scans classes in sorted order and reads images of any kind as RGB', async () => {
    const folder = await datasets.imageFolder(root, options);
    expect(folder.classNames).toEqual(['bird', 'cat']);
    expect(folder.length).toBe(10);
    expect(Array.from(folder.labels())).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    expect(folder.paths()[0]).toBe(join(root, 'bird', 'alpha.png'));
    expect(folder.normalization).toEqual(IMAGENET_STATS);
    expect([folder.channels, folder.height, folder.width]).toEqual([3, 16, 16]);

    const loader = new DataLoader(folder, { batchSize: 4, shuffle: false });
    const batches = [];
    for await (const b of loader.epoch(0)) batches.push(b);
    expect(batches.map((b) => b.shape)).toEqual([
      [4, 3, 16, 16],
      [4, 3, 16, 16],
      [2, 3, 16, 16],
    ]);
    // The grey image has three equal channels.
    const grey = folder.paths().indexOf(join(root, 'cat', 'grey.png'));
    const b = batches[Math.floor(grey / 4)]!;
    const row = grey % 4;
    const plane = 256;
    const px = (c: number, i: number): number => b.images[row * 3 * plane + c * plane + i]! * IMAGENET_STATS.std[c]! + IMAGENET_STATS.mean[c]!;
    for (let i = 0; i < plane; i += 17) {
      expect(px(0, i)).toBeCloseTo(px(1, i), 5);
      expect(px(1, i)).toBeCloseTo(px(2, i), 5);
    }
  });

  it('throws naming the path for a missing root, no class folders, or an empty class', async () => {
    const missing = join(base, 'missing');
    await expect(datasets.imageFolder(missing)).rejects.toThrow(missing);
    const flat = join(base, 'flat');
    mkdirSync(flat);
    writeFileSync(join(flat, 'a.png'), encodeImage(new Uint8Array(3), { width: 1, height: 1, channels: 3 }));
    await expect(datasets.imageFolder(flat)).rejects.toThrow(/no class folders/);
    const empty = join(base, 'empty');
    mkdirSync(join(empty, 'good'), { recursive: true });
    mkdirSync(join(empty, 'nothing'), { recursive: true });
    writeFileSync(join(empty, 'good', 'a.png'), encodeImage(new Uint8Array(3), { width: 1, height: 1, channels: 3 }));
    writeFileSync(join(empty, 'nothing', 'readme.txt'), 'x');
    await expect(datasets.imageFolder(empty)).rejects.toThrow(join(empty, 'nothing'));
    await expect(datasets.imageFolder(root, { size: 32, resize: 16 })).rejects.toThrow(/resize/);
  });

  it('trains a step with fit and evaluates with centre, ten-crop and multi-scale views', async () => {
    const folder = await datasets.imageFolder(root, { ...options, train: 'scaleAugment', scaleRange: [16, 24] });
    const model = tinyRgbModel();
    const history = await fit(model, folder, { epochs: 1, batchSize: 10, optimizer: { lr: 0.05 } });
    expect(history.steps).toBe(1);
    expect(model.normalization).toEqual(IMAGENET_STATS);
    expect(Number.isFinite(history.history.loss[0])).toBe(true);

    const center = await model.evaluate(folder);
    expect(center.count).toBe(10);
    // evaluateViews with one view is ordinary evaluation (loss through the softmax).
    const viaViews = await evaluateViews(model, folder, { views: 'center' });
    expect(viaViews.views).toBe(1);
    expect(viaViews.loss).toBeCloseTo(center.loss, 4);
    expect(viaViews.top1).toBeCloseTo(center.top1, 10);

    // Ten crops: the average of the softmax of each image's ten views, checked by hand.
    const ten = await model.evaluate(folder, { views: 'tenCrop', batchSize: 3 });
    expect(ten.count).toBe(10);
    const loader = new DataLoader(folder, { batchSize: 10, shuffle: false, view: 'tenCrop', normalize: IMAGENET_STATS });
    let loss = 0;
    let top1 = 0;
    for await (const b of loader.epoch(0)) {
      expect(b.shape).toEqual([100, 3, 16, 16]);
      expect(Array.from(b.positions!.subarray(0, 12))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
      const logits = await model.predict(b.images, b.shape);
      for (let img = 0; img < 10; img++) {
        const avg = [0, 0];
        for (let v = 0; v < 10; v++) softmax(logits, img * 10 + v, 2).forEach((p, j) => (avg[j]! += p / 10));
        const label = b.labels[img * 10]!;
        loss -= Math.log(avg[label]!);
        if (avg[label]! >= avg[1 - label]!) top1++;
      }
    }
    expect(ten.loss).toBeCloseTo(loss / 10, 5);
    expect(ten.top1).toBeCloseTo(top1 / 10, 10);
    expect(ten.top5).toBe(1); // two classes

    const multi = await evaluateViews(model, folder, { views: { fullImage: [16, 24] } });
    expect(multi).toMatchObject({ count: 10, views: 2 });
    expect(new DataLoader(folder, { view: { fullImage: [16, 24] }, shuffle: false }).length).toBe(20);
    model.dispose();
  });

  it('training batches repeat for a seed and epoch', async () => {
    const folder = await datasets.imageFolder(root, options);
    const run = async (epoch: number): Promise<number[]> => {
      const out: number[] = [];
      for await (const b of new DataLoader(folder, { batchSize: 3, augment: true, seed: 5 }).epoch(epoch)) out.push(...b.images.subarray(0, 64));
      return out;
    };
    const a = await run(1);
    expect(await run(1)).toEqual(a);
    expect(await run(2)).not.toEqual(a);
  });

  it('a corrupt .jpg fails naming its path, or is skipped and reported', async () => {
    const dir = join(base, 'corrupt');
    makeFolder(dir, 2);
    const bad = join(dir, 'cat', 'broken.jpg');
    writeFileSync(bad, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 5]));
    const failing = await datasets.imageFolder(dir, options);
    expect(failing.length).toBe(11);
    const model = tinyRgbModel();
    await expect(model.evaluate(failing)).rejects.toThrow(bad);
    await expect(fit(model, failing, { epochs: 1, batchSize: 4 })).rejects.toThrow(bad);
    expect(failing.skipped).toEqual([]);

    const skipping: ImageFolder = failing.withOptions({ onCorrupt: 'skip' });
    const r = await model.evaluate(skipping);
    expect(r.count).toBe(10);
    const ten = await model.evaluate(skipping, { views: 'tenCrop' });
    expect(ten.count).toBe(10);
    const h = await fit(model, skipping, { epochs: 1, batchSize: 11 });
    expect(h.steps).toBe(1);
    expect(skipping.skipped.map((s) => s.path)).toEqual([bad]);
    expect(skipping.skipped[0]?.reason).toContain(bad);
    model.dispose();
  });
});

describe("normalize: 'perPixelMean'", () => {
  it('subtracts the training mean image and survives save/load', async () => {
    const train = learnableDataset(64, 7, 12, 4);
    const pm = train.pixelMean();
    expect(pm.shape).toEqual([1, 12, 12]);
    // Without augmentation the batch (the whole dataset) has a zero mean image.
    for await (const b of new DataLoader(train, { batchSize: 64, shuffle: false, normalize: 'perPixelMean' }).epoch(0)) {
      for (let p = 0; p < 144; p += 7) {
        let s = 0;
        for (let i = 0; i < 64; i++) s += b.images[i * 144 + p]!;
        expect(Math.abs(s / 64)).toBeLessThan(1e-5);
      }
    }

    const model = Model.create(resnet.cifar({ depth: 8, inChannels: 1, numClasses: 4 }), { seed: 1, device: 'cpu' });
    await fit(model, train, { epochs: 1, batchSize: 32, augment: true, normalize: 'perPixelMean' });
    expect(model.normalization?.pixelMean?.shape).toEqual([1, 12, 12]);
    expect(Array.from(model.normalization!.pixelMean!.data)).toEqual(Array.from(pm.data));
    const before = await model.evaluate(train);

    const file = join(base, 'ppm.safetensors');
    await model.save(file);
    model.dispose();
    const loaded = await Model.load(file, { device: 'cpu' });
    expect(loaded.normalization?.mean).toEqual([0]);
    expect(loaded.normalization?.std).toEqual([1]);
    expect(Array.from(loaded.normalization!.pixelMean!.data)).toEqual(Array.from(pm.data));
    expect(await loaded.evaluate(train)).toEqual(before);
    // A mean image of another shape is refused.
    expect(() => new DataLoader(learnableDataset(4, 1, 10, 4), { normalize: loaded.normalization! })).toThrow(/per-pixel mean has shape/);
    loaded.dispose();
  });
});
