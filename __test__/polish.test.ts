// Issue #14, first-hour polish: what a user sees of the device choice, the learning rate, the
// summary's input size, which IDX file was read, and the order of concurrent calls.
import { spawnSync } from 'node:child_process';
import { utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';

import { Model, SGD, Tensor, datasets, fit, resnet, schedules } from '../ts/index.js';
import { ROOT, learnableDataset, randomImages, randomLabels, tempDir, tinySpec } from './helpers.js';

/** Runs an ES module snippet in a fresh Node process against the built package (dist/). */
function node(source: string, env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', source], { cwd: ROOT, encoding: 'utf8', env, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const INDEX = JSON.stringify(join(ROOT, 'dist', 'index.js'));

describe("device 'auto'", () => {
  it('says in one calm line which device it took, once', () => {
    const env = { ...process.env };
    delete env['RESNET_WGPU_ADAPTER']; // as a user's machine: no software adapter named
    const r = node(
      `import { Model, resnet } from ${INDEX};
       for (let i = 0; i < 3; i++) Model.create(resnet.cifar({ depth: 8, inChannels: 1 }), { device: 'auto' }).dispose();
       console.log('done');`,
      env,
    );
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('done');
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(1);
    const line = lines[0] as string;
    expect(line).toMatch(/^resnet-wgpu: device 'auto' uses the (CPU: .+|GPU: .+)$/);
    expect(line).not.toMatch(/error/i);
    expect(line).not.toMatch(/use device 'cpu' or 'auto'/);
  });
});

describe('reported learning rate', () => {
  const model = Model.create(tinySpec(), { seed: 5, device: 'cpu' });
  afterAll(() => model.dispose());
  const x = randomImages(4 * 144, 6);
  const y = randomLabels(4, 10, 7);

  it('is the rate set, not its float32 widened', async () => {
    model.setOptimizer({ lr: 0.1 });
    const s = await model.trainStep(x, y, [4, 1, 12, 12]);
    expect(s.lr).toBe(0.1);
    model.setOptimizer({ lr: 0.3, warmupSteps: 0 });
    expect((await model.trainStep(x, y, [4, 1, 12, 12])).lr).toBe(0.3);
    const p = Tensor.fromArray([1, 2], [2], { requiresGrad: true });
    expect(new SGD([p], { lr: 0.1 }).lr).toBe(0.1);
  });

  it('follows the paper schedule exactly: 0.1, then 0.01, then 0.001', async () => {
    const m = Model.create(tinySpec(), { seed: 1, device: 'cpu' });
    const rates: number[] = [];
    const epochRates: number[] = [];
    await fit(m, learnableDataset(64, 2), {
      batchSize: 8, // 8 steps: /10 after step 4 and after step 6
      optimizer: { lr: 0.1 },
      schedule: schedules.paper(),
      callbacks: {
        onBatchEnd: (_step, logs) => void rates.push(logs.lr),
        onEpochEnd: (_epoch, logs) => void epochRates.push(logs.lr),
      },
    });
    m.dispose();
    expect(rates).toEqual([0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]);
    expect(epochRates).toEqual([0.001]);
  });
});

describe('summary input size', () => {
  it('a fresh model uses the documented default for its family and says so', () => {
    const grey = Model.create(resnet.cifar({ depth: 8, inChannels: 1 }), { device: 'cpu' });
    const rgb = Model.create(resnet.cifar({ depth: 8 }), { device: 'cpu' });
    try {
      const g = grey.summary();
      expect(grey.inputSize).toBeUndefined();
      expect(g.inputShape).toEqual([1, 1, 28, 28]);
      expect(g.inputSource).toBe('default');
      expect(g.toString().split('\n')[0]).toBe('ResNet-8, input [1, 1, 28, 28] (the default size for this net; pass { height, width } for others)');
      expect(rgb.summary().inputShape).toEqual([1, 3, 32, 32]);
      const o = rgb.summary({ height: 40 });
      expect([o.inputShape, o.inputSource]).toEqual([[1, 3, 40, 40], 'options']);
    } finally {
      grey.dispose();
      rgb.dispose();
    }
  });

  it('a model trained on data summarises at the data size, also after save and load', async () => {
    const model = Model.create(resnet.cifar({ depth: 8, inChannels: 1, numClasses: 4 }), { device: 'cpu' });
    await fit(model, learnableDataset(16, 4, 20), { batchSize: 8 }); // 20x20 images
    expect(model.inputSize).toEqual([20, 20]);
    const s = model.summary();
    expect([s.inputShape, s.inputSource]).toEqual([[1, 1, 20, 20], 'data']);
    expect(s.toString().split('\n')[0]).toBe('ResNet-8, input [1, 1, 20, 20]');
    // The last stage's output is 5x5 for 20x20 input (strides 1, 2, 2).
    expect(s.rows.find((r) => r.name === 'layer3.0')?.outputShape).toEqual([1, 64, 5, 5]);
    const path = join(tempDir(), 'sized.safetensors');
    await model.save(path);
    model.dispose();
    const loaded = await Model.load(path, { device: 'cpu' });
    expect(loaded.checkpointMetadata['imageSize']).toBe('20');
    expect(loaded.summary().inputShape).toEqual([1, 1, 20, 20]);
    loaded.dispose();
  });
});

describe('IDX files present both gzip-compressed and raw', () => {
  function idx(magic: number, dims: number[], data: Uint8Array): Buffer {
    const head = Buffer.alloc(4 + 4 * dims.length);
    head.writeUInt32BE(magic, 0);
    dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
    return Buffer.concat([head, Buffer.from(data)]);
  }
  /** Writes a t10k split of `n` 4x4 images, gzip'd or raw, with modification time `time` (seconds). */
  function writeSplit(dir: string, n: number, gz: boolean, time: number): void {
    const files: [string, Buffer][] = [
      ['t10k-images-idx3-ubyte', idx(0x803, [n, 4, 4], new Uint8Array(n * 16).fill(n))],
      ['t10k-labels-idx1-ubyte', idx(0x801, [n], new Uint8Array(n).map((_, i) => i % 10))],
    ];
    for (const [name, bytes] of files) {
      const path = join(dir, gz ? `${name}.gz` : name);
      writeFileSync(path, gz ? gzipSync(bytes) : bytes);
      utimesSync(path, time, time);
    }
  }

  it('reads the newer one, names the files read, and warns once per file', async () => {
    const dir = tempDir();
    writeSplit(dir, 5, true, 1_000_000);
    const gzOnly = await datasets.fashionMnist({ dir, split: 'test' });
    expect(gzOnly.files).toEqual([join(dir, 't10k-images-idx3-ubyte.gz'), join(dir, 't10k-labels-idx1-ubyte.gz')]);
    expect(gzOnly.length).toBe(5);

    writeSplit(dir, 3, false, 2_000_000); // the raw files, just written
    const newer = await datasets.fashionMnist({ dir, split: 'test' });
    expect(newer.length).toBe(3);
    expect(newer.files).toEqual([join(dir, 't10k-images-idx3-ubyte'), join(dir, 't10k-labels-idx1-ubyte')]);
    expect(newer.take(2).files).toEqual(newer.files);

    // The warning goes to stderr, once per file per process.
    const r = node(
      `import { datasets } from ${INDEX};
       for (let i = 0; i < 2; i++) console.log(JSON.stringify((await datasets.fashionMnist({ dir: ${JSON.stringify(dir)}, split: 'test' })).files));`,
    );
    expect(r.status).toBe(0);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('both exist'));
    expect(warnings).toEqual([
      `resnet-wgpu: ${join(dir, 't10k-images-idx3-ubyte')} and t10k-images-idx3-ubyte.gz both exist; reading t10k-images-idx3-ubyte (the more recently modified; remove the other to silence this)`,
      `resnet-wgpu: ${join(dir, 't10k-labels-idx1-ubyte')} and t10k-labels-idx1-ubyte.gz both exist; reading t10k-labels-idx1-ubyte (the more recently modified; remove the other to silence this)`,
    ]);
    expect(r.stdout.trim().split('\n')).toHaveLength(2);

    // Equal times (as after `gunzip -k`): the .gz, as before.
    writeSplit(dir, 3, false, 1_000_000);
    expect((await datasets.fashionMnist({ dir, split: 'test' })).length).toBe(5);
  });
});

describe('concurrent calls on one model run in call order', () => {
  const SHAPE = [4, 1, 12, 12] as const;
  const batches = Array.from({ length: 8 }, (_, k) => ({ x: randomImages(4 * 144, 100 + k), y: randomLabels(4, 10, 200 + k) }));

  async function parameters(model: Model): Promise<Float32Array[]> {
    return model.parameterNames().map((name) => model.parameter(name).toArray());
  }

  async function inOrder(): Promise<{ params: Float32Array[]; logits: Float32Array }> {
    const model = Model.create(tinySpec(), { seed: 9, device: 'cpu' });
    for (const b of batches) await model.trainStep(b.x, b.y, SHAPE);
    const logits = await model.predict(batches[0]!.x, SHAPE);
    const params = await parameters(model);
    model.dispose();
    return { params, logits };
  }

  it('eight trainSteps issued without awaiting: steps 1..8 in call order, the same weights as awaited steps', async () => {
    const expected = await inOrder();
    const model = Model.create(tinySpec(), { seed: 9, device: 'cpu' });
    // One buffer reused for every batch: each call must take the values it had at the call.
    const buffer = new Float32Array(4 * 144);
    const labels = new Int32Array(4);
    const pending = batches.map((b) => {
      buffer.set(b.x);
      labels.set(b.y);
      return model.trainStep(buffer, labels, SHAPE);
    });
    const logits = model.predict(batches[0]!.x, SHAPE); // queued after the eight steps
    const results = await Promise.all(pending);
    expect(results.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(await logits).toEqual(expected.logits);
    expect(await parameters(model)).toEqual(expected.params);
    model.dispose();
  });

  it('a failing call in the queue rejects alone; the calls after it still run in order', async () => {
    const model = Model.create(tinySpec(), { seed: 9, device: 'cpu' });
    const badLabels = Int32Array.from([0, 1, 2, 99]);
    const calls = [
      model.trainStep(batches[0]!.x, batches[0]!.y, SHAPE),
      model.trainStep(batches[1]!.x, badLabels, SHAPE),
      model.trainStep(batches[1]!.x, batches[1]!.y, SHAPE),
    ];
    const settled = await Promise.allSettled(calls);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(settled.map((s) => (s.status === 'fulfilled' ? s.value.step : -1))).toEqual([1, -1, 2]);
    model.dispose();
  });
});
