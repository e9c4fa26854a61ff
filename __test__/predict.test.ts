// `resnet-wgpu predict`: JPEG decoding, resizing and normalisation, and the command's output.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encode } from 'jpeg-js';
import { describe, expect, it } from 'vitest';

import { Model, resnet } from '../ts/index.js';
import { FASHION_MNIST_CLASSES, classifyImages, preprocess } from '../ts/predict.js';
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
});

describe('resnet-wgpu predict', () => {
  const checkpoint = join(dir, 'fmnist.safetensors');
  const image = join(dir, 'shirt.jpg');

  it('prints the top classes of each image', async () => {
    const model = Model.create(resnet.cifar({ depth: 8, inChannels: 1, numClasses: 10 }), { seed: 2, device: 'cpu' });
    model.normalization = { mean: [0.286], std: [0.353] };
    await model.save(checkpoint, { dataset: 'fashion-mnist' });
    model.dispose();
    writeFileSync(image, encode({ data: rgba(40, 30), width: 40, height: 30 }, 90).data);

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

  it('names a file it cannot decode', () => {
    const bad = join(dir, 'not-a.jpg');
    writeFileSync(bad, 'hello');
    const cli = spawnSync(process.execPath, [CLI, 'predict', '--checkpoint', checkpoint, '--device', 'cpu', bad], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(cli.status).toBe(1);
    expect(cli.stderr).toContain(`${bad}: cannot decode the image`);
  });
});
