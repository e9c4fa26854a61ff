// `resnet-wgpu predict`: JPEG and PNG decoding (Rust), resizing and normalisation, and the command's output.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { Model, resnet } from '../ts/index.js';
import { FASHION_MNIST_CLASSES, IMAGENET_NORMALIZATION, classifyImages, decodeImage, encodeImage, preprocess } from '../ts/predict.js';
import { ROOT, tempDir } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli.js');
const dir = tempDir('resnet-wgpu-predict-');

/** An RGBA image: red ramps along x, green along y, blue constant. */
function rgba(width: number, height: number): Uint8Array {
  const data = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      data.set([Math.round((255 * x) / (width - 1)), Math.round((255 * y) / (height - 1)), 60, 255], (y * width + x) * 4);
    }
  }
  return data;
}

describe('preprocess', () => {
  it('resizes bilinearly, keeps channel order and normalises', () => {
    const norm = { mean: [0.5, 0.25, 0], std: [0.5, 1, 2] };
    const x = preprocess(rgba(64, 64), 64, 64, 16, 3, norm);
    expect(x.length).toBe(3 * 16 * 16);
    // Channel 0 (red) ramps along x, channel 1 (green) along y, channel 2 is constant.
    expect(x[0]).toBeLessThan(x[15] as number);
    expect(x[256]).toBeLessThan(x[256 + 15 * 16] as number);
    expect(x[512]).toBeCloseTo((60 / 255 - 0) / 2, 6);
    // A uniform grey image: every value is (v/255 - mean) / std, in 1 channel (luma).
    const grey = new Uint8Array(10 * 7 * 4).fill(128);
    const g = preprocess(grey, 10, 7, 28, 1, { mean: [0.3], std: [0.4] });
    expect(g.length).toBe(28 * 28);
    for (const v of g) expect(v).toBeCloseTo((128 / 255 - 0.3) / 0.4, 4);
  });

  it('ImageNet evaluation transform: shorter side to 256, centre 224 crop, ImageNet statistics', () => {
    // 512x256: the shorter side is already 256 (scale 1, no interpolation), so the crop starts
    // at x = (512 - 224) / 2 = 144, y = (256 - 224) / 2 = 16, and pixel values are exact.
    const [w, h] = [512, 256];
    const img = new Uint8Array(w * h * 4);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) img.set([x % 256, y, 7, 255], (y * w + x) * 4);
    const x = preprocess(img, w, h, 224, 3, IMAGENET_NORMALIZATION, 256);
    const at = (c: number, oy: number, ox: number): number => x[(c * 224 + oy) * 224 + ox] as number;
    const [m, s] = [IMAGENET_NORMALIZATION.mean, IMAGENET_NORMALIZATION.std];
    expect(at(0, 0, 0)).toBeCloseTo((144 / 255 - (m[0] ?? 0)) / (s[0] ?? 1), 5);
    expect(at(1, 0, 0)).toBeCloseTo((16 / 255 - (m[1] ?? 0)) / (s[1] ?? 1), 5);
    expect(at(0, 223, 223)).toBeCloseTo(((144 + 223) % 256 / 255 - (m[0] ?? 0)) / (s[0] ?? 1), 5);
    expect(at(1, 223, 5)).toBeCloseTo(((16 + 223) / 255 - (m[1] ?? 0)) / (s[1] ?? 1), 5);
    expect(at(2, 100, 100)).toBeCloseTo((7 / 255 - (m[2] ?? 0)) / (s[2] ?? 1), 5);
  });
});

describe('resnet-wgpu predict', () => {
  const checkpoint = join(dir, 'fmnist.safetensors');
  const image = join(dir, 'shirt.jpg');

  it('prints the top classes of each image', async () => {
    const model = Model.create(resnet.cifar({ depth: 8, inChannels: 1, numClasses: 10 }), { seed: 2, device: 'cpu' });
    model.normalization = { mean: [0.286], std: [0.353] };
    await model.save(checkpoint, { dataset: 'fashion-mnist' });
    model.dispose();
    writeFileSync(image, encodeImage(rgba(40, 30), { width: 40, height: 30, channels: 4, jpegQuality: 90 }));

    const loaded = await Model.load(checkpoint, { device: 'cpu' });
    const [r] = await classifyImages(loaded, [image], { top: 10 });
    loaded.dispose();
    expect(r?.top.length).toBe(10);
    expect(r?.top.reduce((a, t) => a + t.probability, 0)).toBeCloseTo(1, 5);
    expect(FASHION_MNIST_CLASSES).toContain(r?.top[0]?.label);

    const cli = spawnSync(process.execPath, [CLI, 'predict', '--checkpoint', checkpoint, '--device', 'cpu', '--top', '2', image, image], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(cli.status, cli.stderr).toBe(0);
    const lines = cli.stdout.trim().split('\n');
    expect(lines.length).toBe(2);
    const best = r?.top[0];
    const pct = (100 * (best?.probability ?? 0)).toFixed(1);
    expect(lines[0]).toBe(
      `${image}: ${best?.label} (${best?.index}) ${pct}%, ${r?.top[1]?.label} (${r?.top[1]?.index}) ${(100 * (r?.top[1]?.probability ?? 0)).toFixed(1)}%`,
    );
  });

  it('reads PNG exactly (RGB, grey, RGBA) and classifies it as its pixels', async () => {
    const pixels = rgba(40, 30);
    const png = join(dir, 'shirt.png');
    writeFileSync(png, encodeImage(pixels, { width: 40, height: 30, channels: 4 }));
    const decoded = await decodeImage(encodeImage(pixels, { width: 40, height: 30, channels: 4 }));
    expect([decoded.width, decoded.height]).toEqual([40, 30]);
    expect(Buffer.from(decoded.data).equals(Buffer.from(pixels))).toBe(true);
    const rgb = pixels.filter((_, i) => i % 4 !== 3);
    expect(Buffer.from((await decodeImage(encodeImage(rgb, { width: 40, height: 30, channels: 3 }))).data).equals(Buffer.from(pixels))).toBe(true);
    const grey = (await decodeImage(encodeImage(Uint8Array.from([0, 50, 255, 7]), { width: 2, height: 2, channels: 1 }))).data;
    expect(Array.from(grey)).toEqual([0, 0, 0, 255, 50, 50, 50, 255, 255, 255, 255, 255, 7, 7, 7, 255]);

    const model = await Model.load(checkpoint, { device: 'cpu' });
    const [r] = await classifyImages(model, [png], { top: 10 });
    const logits = await model.predict(preprocess(pixels, 40, 30, 28, 1, model.normalization), [1, 1, 28, 28]);
    model.dispose();
    const best = logits.indexOf(Math.max(...logits));
    expect(r?.top[0]?.index).toBe(best);
    const sum = Array.from(logits, (v) => Math.exp(v - (logits[best] as number))).reduce((a, b) => a + b, 0);
    expect(r?.top[0]?.probability).toBeCloseTo(1 / sum, 6);
  });

  it('names a file it cannot decode', () => {
    const bad = join(dir, 'not-a.jpg');
    writeFileSync(bad, 'hello');
    const cli = spawnSync(process.execPath, [CLI, 'predict', '--checkpoint', checkpoint, '--device', 'cpu', bad], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(cli.status).toBe(1);
    expect(cli.stderr).toContain(`${bad}: cannot decode the image`);
  });
});
