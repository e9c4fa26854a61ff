// The paper's experiments end to end on a slice of Fashion-MNIST: files, curves, resumption.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { main as paperExample } from '../examples/paper-experiments.js';
import { encodeImage, experiments, recipes } from '../ts/index.js';
import { ROOT, rng, tempDir } from './helpers.js';

const small = { limitTrain: 256, limitTest: 128, trainEvalImages: 128, device: 'cpu' as const };
const recipe = recipes.cifarPaperShort({ epochs: 2, batchSize: 64 });

function checkPng(path: string): void {
  const png = readFileSync(path);
  expect([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join('')).toBe('PNG');
  expect(png.readUInt32BE(16)).toBeGreaterThan(400);
}

function checkSvg(path: string, xLabel: string, legend: string[]): void {
  const svg = readFileSync(path, 'utf8');
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg).toContain(`class="x-label"`);
  expect(svg).toContain(`>${xLabel}</text>`);
  for (const l of legend) expect(svg.slice(svg.indexOf('class="legend"'))).toContain(`>${l}</text>`);
}

function csvRows(path: string): Record<string, string>[] {
  const [header, ...lines] = readFileSync(path, 'utf8').trim().split('\n');
  const keys = (header as string).split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [keys[i] as string, v])));
}

describe('experiment degradation', () => {
  const out = tempDir();

  it('trains plain and residual nets of two depths and writes CSV, SVG and PNG', async () => {
    const r = await experiments.degradation({ out, depths: [8, 14], recipe, ...small });
    expect(r.runs.map((x) => x.name)).toEqual(['plain-8', 'plain-14', 'resnet-8-optA', 'resnet-14-optA']);
    const rows = csvRows(r.files.csv);
    expect(rows).toHaveLength(8);
    for (const row of rows) {
      for (const k of ['train_error', 'train_eval_error', 'test_error']) {
        expect(Number(row[k])).toBeGreaterThanOrEqual(0);
        expect(Number(row[k])).toBeLessThanOrEqual(100);
      }
    }
    // 256 images in batches of 64: 4 iterations an epoch.
    expect(rows.filter((x) => x['run'] === 'plain-8').map((x) => x['iteration'])).toEqual(['4', '8']);
    // Dense training curves: with 4 batches an epoch, a point after every step.
    const steps = csvRows(r.files.stepsCsv);
    expect(steps).toHaveLength(4 * 8);
    expect(steps.filter((x) => x['run'] === 'plain-8').map((x) => x['iteration'])).toEqual(['1', '2', '3', '4', '5', '6', '7', '8']);
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const firstEpoch = steps.filter((x) => x['run'] === 'plain-8' && x['epoch'] === '1').map((x) => Number(x['train_error']));
    // The stretches of epoch 1 average to the epoch's running training error (equal-sized batches).
    expect(mean(firstEpoch)).toBeCloseTo(Number(rows.find((x) => x['run'] === 'plain-8')?.['train_error']), 6);
    checkSvg(r.files.svg, 'iterations', ['plain-8 train', 'plain-8 test', 'ResNet-14 test']);
    checkPng(r.files.png);
    expect(r.report).toMatch(/deepest minus shallowest training error: plain -?\d+\.\d\d points, residual -?\d+\.\d\d points/);
    expect(Number.isFinite(r.plainGap)).toBe(true);
    // Gradient norms at initialisation and after each epoch, for every convolution and the classifier.
    const g = r.runs[0]?.gradients ?? [];
    expect(g.map((s) => s.epoch)).toEqual([0, 1, 2]);
    expect(g[0]?.layers).toHaveLength(8);
  });

  it('a finished experiment is read back, not retrained', async () => {
    const before = readFileSync(join(out, 'degradation.csv'), 'utf8');
    const started = performance.now();
    const r = await experiments.degradation({ out, depths: [8, 14], recipe, ...small });
    expect(performance.now() - started).toBeLessThan(20_000);
    expect(readFileSync(r.files.csv, 'utf8')).toBe(before);
  });

  it('an interrupted run resumes after its last epoch and ends where an uninterrupted one does', async () => {
    const dir = tempDir();
    const spec = { depths: [8, 14], recipe, ...small, only: ['resnet-8-optA'] };
    const abort = new AbortController();
    await experiments.degradation({
      ...spec,
      out: dir,
      signal: abort.signal,
      progress: { epoch: () => abort.abort() },
    });
    const partial = JSON.parse(readFileSync(join(dir, 'resnet-8-optA', 'run.json'), 'utf8')) as { curve: unknown[]; complete: boolean };
    expect(partial.curve).toHaveLength(1);
    expect(partial.complete).toBe(false);
    const resumed: number[] = [];
    const r = await experiments.degradation({ ...spec, out: dir, progress: { resumed: (_n, info) => void resumed.push(info.epoch) } });
    expect(resumed).toEqual([1]);
    const full = (await experiments.degradation({ out, depths: [8, 14], recipe, ...small })).runs.find((x) => x.name === 'resnet-8-optA');
    const mine = r.runs.find((x) => x.name === 'resnet-8-optA');
    const strip = (c: { seconds: number }[] | undefined) => c?.map(({ seconds: _s, ...rest }) => rest);
    expect(strip(mine?.curve)).toEqual(strip(full?.curve));
    expect(mine?.steps).toEqual(full?.steps);
    expect(mine?.steps).toHaveLength(8);
  });

  it("the recipe's validation images (the paper's 45k/5k split) are not trained on", async () => {
    const r = await experiments.degradation({
      out: tempDir(),
      depths: [8, 14],
      recipe: recipes.cifarPaperShort({ epochs: 1, batchSize: 50, validationImages: 56 }),
      ...small,
      only: ['plain-8'],
    });
    // 256 - 56 = 200 training images: 4 batches of 50 (6 without the split).
    expect(r.runs[0]?.curve[0]?.iteration).toBe(4);
  });

  it('--only names a run the experiment does not have: a clear error', async () => {
    await expect(experiments.degradation({ out: tempDir(), depths: [8, 14], recipe, ...small, only: ['resnet-8'] })).rejects.toThrow(
      /no run named resnet-8 in this experiment; its runs are plain-8, plain-14, resnet-8-optA, resnet-14-optA/,
    );
  });

  it('a folder holding a different run is refused with a clear error', async () => {
    await expect(
      experiments.degradation({ out, depths: [8, 14], recipe: recipes.cifarPaperShort({ epochs: 2, batchSize: 32 }), ...small }),
    ).rejects.toThrow(/holds a different run/);
  });

  it('responses: Figure 7 from the same runs, and gradient norms', async () => {
    const r = await experiments.responses({ out, depths: [8, 14], recipe, ...small, images: 100 });
    expect(r.profiles.map((p) => p.label)).toEqual(['plain-8', 'plain-14', 'ResNet-8', 'ResNet-14']);
    // Every 3x3 convolution: the stem and two per basic block.
    expect(r.profiles.map((p) => p.layers.length)).toEqual([7, 13, 7, 13]);
    for (const p of r.profiles) for (const l of p.layers) expect(l.std).toBeGreaterThan(0);
    checkSvg(r.files.svg, 'layer index', ['plain-8', 'ResNet-14']);
    checkPng(r.files.png);
    checkPng(r.files.gradientsPng);
    expect(csvRows(r.files.csv)).toHaveLength(40);
  });

  it('shortcuts: options A, B and C with parameter counts', async () => {
    const r = await experiments.shortcuts({ out, depth: 8, options: ['A', 'B', 'C'], recipe, ...small });
    expect(r.table.map((t) => t.option)).toEqual(['A', 'B', 'C']);
    const [a, b, c] = r.table.map((t) => t.parameters) as [number, number, number];
    expect(a).toBeLessThan(b);
    expect(b).toBeLessThan(c);
    expect(r.report).toMatch(/\| option B \| [\d,]+ \|/);
    checkPng(r.files.png);
  });
});

describe('experiments on an ImageNet-style folder', () => {
  it('degradation trains plain/residual ImageNet nets (18, 34) from train/ and val/ folders, with the ImageNet recipe', async () => {
    const root = tempDir();
    const r = rng(5);
    for (const split of ['train', 'val']) {
      for (const [k, cls] of ['n01', 'n02', 'n03'].entries()) {
        mkdirSync(join(root, split, cls), { recursive: true });
        for (let i = 0; i < (split === 'train' ? 4 : 2); i++) {
          const [w, h] = [40 + i, 44 - i];
          const px = Uint8Array.from({ length: w * h * 3 }, () => Math.floor(k * 60 + r() * 120));
          writeFileSync(join(root, split, cls, `${i}.png`), encodeImage(px, { width: w, height: h, channels: 3 }));
        }
      }
    }
    const out = tempDir();
    const res = await experiments.degradation({
      out,
      data: { kind: 'folder', root, options: { size: 32, resize: 36, train: 'scaleAugment', scaleRange: [36, 48], workers: 2 } },
      recipe: recipes.imagenetPaperShort({ epochs: 1, batchSize: 6 }),
      device: 'cpu',
      trainEvalImages: 6,
    });
    expect(res.runs.map((x) => x.name)).toEqual(['plain-18', 'plain-34', 'resnet-18-optA', 'resnet-34-optA']);
    expect(res.runs.every((x) => x.spec.stem === 'imagenet' && x.spec.numClasses === 3)).toBe(true);
    expect(csvRows(res.files.csv)).toHaveLength(4);
    checkPng(res.files.png);
    await expect(experiments.degradation({ out: tempDir(), data: { kind: 'folder', root: join(root, 'train') }, device: 'cpu' })).rejects.toThrow(
      /needs train\/ and val\/ \(or test\/\) sub-folders/,
    );
  });
});

describe('experiment gradients', () => {
  it('per-layer gradient norms at initialisation for sigmoid, tanh, ReLU plain nets and the ResNet, with and without BN', async () => {
    const out = tempDir();
    const r = await experiments.gradients({ out, depth: 20, batches: 1, batchSize: 32, device: 'cpu' });
    const nets = ['plain-20, sigmoid', 'plain-20, tanh', 'plain-20, relu', 'ResNet-20, relu'];
    expect(r.profiles.map((p) => p.label)).toEqual([...nets.map((n) => `${n}, BN`), ...nets.map((n) => `${n}, no BN`)]);
    expect(r.profiles.map((p) => p.name)).toContain('plain-20-sigmoid-nobn');
    for (const p of r.profiles) expect(p.layers).toHaveLength(19);
    checkSvg(r.files.svg, 'layer (convolutions in forward order)', ['plain-20, sigmoid', 'ResNet-20, relu']);
    checkPng(r.files.png);
    expect(csvRows(r.files.csv)).toHaveLength(8 * 19);
    // Without batch norm, sigmoid's gradient vanishes toward the input; the ResNet's does not shrink.
    const ratio = (label: string): number => r.profiles.find((p) => p.label === label)?.firstOverLast ?? NaN;
    expect(ratio('plain-20, sigmoid, no BN')).toBeLessThan(0.1);
    expect(ratio('ResNet-20, relu, no BN')).toBeGreaterThan(ratio('plain-20, sigmoid, no BN') * 10);
  });
});

describe('examples/paper-experiments.ts', () => {
  it('runs the degradation experiment and Figure 7 from TypeScript', async () => {
    const lines: string[] = [];
    const r = await paperExample({ out: tempDir(), limit: 256, depths: [8, 14], epochs: 1, device: 'cpu', log: (l) => lines.push(l) });
    expect(lines[0]).toMatch(/SHORTENED cifarPaper/);
    expect(lines.filter((l) => / epoch 1: training error/.test(l))).toHaveLength(4);
    expect(r.files.filter((f) => f.endsWith('.png'))).toHaveLength(3);
    for (const f of r.files) expect(existsSync(f)).toBe(true);
    expect(Number.isFinite(r.plainGap) && Number.isFinite(r.residualGap)).toBe(true);
  });
});

describe('CLI experiment', () => {
  it('experiment degradation prints the table and the files it wrote', () => {
    const out = tempDir();
    const args = ['experiment', 'degradation', '--depths', '8,14', '--epochs', '1', '--limit-train', '128', '--limit-test', '64', '--train-eval', '64', '--device', 'cpu', '--out', out];
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli.js'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/run 4\/4: resnet-14-optA/);
    expect(r.stdout).toMatch(/plain-8 epoch 1: train error \d+\.\d\d% \(eval \d+\.\d\d%\), test error \d+\.\d\d%/);
    expect(r.stdout).toMatch(/wrote png: .*degradation\.png/);
    expect(existsSync(join(out, 'degradation.svg'))).toBe(true);
    const bad = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'experiment', 'degradation', '--depths', '8,x'], { cwd: ROOT, encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/depths must be a comma-separated list of positive integers/);
  });
});
