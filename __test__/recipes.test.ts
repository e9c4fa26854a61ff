// Recipes (the paper's presets), the run-length and rate controls they need in fit, and the plots.
import { describe, expect, it } from 'vitest';

import { Dataset, Model, fit, recipeByName, recipeFitOptions, recipes, renderSvg, splitForRecipe, svgToPng, toCsv } from '../ts/index.js';
import { niceTicks } from '../ts/plot.js';
import { rng, tinySpec } from './helpers.js';

function tinyData(n: number, seed: number): Dataset {
  const r = rng(seed);
  const labels = Uint8Array.from({ length: n }, () => Math.floor(r() * 10));
  // Class-dependent brightness so a net can learn something in a few steps.
  const images = new Uint8Array(n * 12 * 12);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < 144; p++) images[i * 144 + p] = Math.min(255, Math.floor(r() * 80 + (labels[i] as number) * 17));
  }
  return Dataset.fromArrays({ images, labels, channels: 1, height: 12, width: 12, numClasses: 10 });
}

describe('recipes', () => {
  it("cifarPaper is the paper's section 4.2", () => {
    const r = recipes.cifarPaper();
    expect(r).toMatchObject({ batchSize: 128, iterations: 64000, validationImages: 5000, normalize: 'perPixelMean', shortened: false });
    expect(r.optimizer).toMatchObject({ lr: 0.1, momentum: 0.9, weightDecay: 1e-4, schedule: { kind: 'multistep', milestones: [32000, 48000], gamma: 0.1 } });
    expect(r.augment).toEqual({ padCrop: 4, flip: true });
    expect(r.warmStart).toBeUndefined();
    expect(recipes.cifarPaper({ depth: 110 }).warmStart).toMatchObject({ lr: 0.01, untilTrainErrorBelow: 0.8 });
    // Every field overridable, the optimizer field by field.
    const o = recipes.cifarPaper({ batchSize: 64, optimizer: { lr: 0.05 } });
    expect(o.batchSize).toBe(64);
    expect(o.optimizer).toMatchObject({ lr: 0.05, momentum: 0.9 });
  });

  it('the shortened variants say so and keep the structure', () => {
    const s = recipes.cifarPaperShort();
    expect(s.shortened).toBe(true);
    expect(s.description).toMatch(/SHORTENED/);
    expect(s.epochs).toBe(12);
    expect(s.iterations).toBeUndefined();
    expect(s.optimizer.schedule).toEqual({ kind: 'multistep', fractions: [0.5, 0.75], gamma: 0.1 });
    const i = recipes.imagenetPaperShort();
    expect(i.shortened).toBe(true);
    expect(i.plateau).toBeUndefined();
    const p = recipes.imagenetPaper();
    expect(p).toMatchObject({ batchSize: 256, plateau: { factor: 0.1 }, optimizer: { lr: 0.1, weightDecay: 1e-4, momentum: 0.9 } });
    expect(p.imageFolder?.train).toMatchObject({ size: 224, train: 'scaleAugment', scaleRange: [256, 480], flip: true });
    expect(p.imageFolder?.evaluation).toEqual(['center', 'tenCrop', { fullImage: [224, 256, 384, 480, 640] }]);
    expect(() => recipeByName('cifarpaper')).toThrow(/unknown recipe 'cifarpaper'/);
    expect(recipeFitOptions(recipes.cifarPaper({ depth: 110 }))).toMatchObject({ iterations: 64000, batchSize: 128, warmStart: { lr: 0.01 } });
  });

  it('splitForRecipe holds out a fixed random validation set, disjoint from training', () => {
    const data = tinyData(200, 1);
    const { train, validation } = splitForRecipe(data, recipes.cifarPaper({ validationImages: 30 }), 7);
    expect(train.length).toBe(170);
    expect(validation?.length).toBe(30);
    const again = splitForRecipe(data, recipes.cifarPaper({ validationImages: 30 }), 7);
    expect(Array.from(again.validation?.labels() ?? [])).toEqual(Array.from(validation?.labels() ?? []));
    expect(() => splitForRecipe(data, recipes.cifarPaper(), 0)).toThrow(/holds out 5000 validation images but the training set has 200/);
    expect(splitForRecipe(data, recipes.cifarPaperShort()).validation).toBeUndefined();
  });
});

describe('fit: run length and rate control', () => {
  it('iterations stops the run at that step, mid-epoch', async () => {
    const model = Model.create(tinySpec(), { seed: 1, device: 'cpu' });
    const h = await fit(model, tinyData(64, 2), { iterations: 5, batchSize: 16 });
    expect(h.steps).toBe(5);
    expect(model.step).toBe(5);
    expect(h.epoch).toEqual([0, 1]);
    model.dispose();
  });

  it('warmStart trains at the low rate until the running error is below the threshold', async () => {
    const model = Model.create(tinySpec(), { seed: 1, device: 'cpu' });
    const lrs: number[] = [];
    // A threshold of 100% is met as soon as the window is full: 3 steps at 0.01, then 0.1.
    await fit(model, tinyData(96, 3), {
      batchSize: 16,
      epochs: 1,
      warmStart: { lr: 0.01, untilTrainErrorBelow: 1, window: 3 },
      callbacks: { onBatchEnd: (_s, logs) => void lrs.push(logs.lr) },
    });
    expect(lrs.map((x) => Number(x.toPrecision(3)))).toEqual([0.01, 0.01, 0.01, 0.1, 0.1, 0.1]);
    // An unreachable threshold keeps the low rate until maxSteps.
    const m2 = Model.create(tinySpec(), { seed: 1, device: 'cpu' });
    const lrs2: number[] = [];
    await fit(m2, tinyData(96, 3), {
      batchSize: 16,
      warmStart: { lr: 0.01, untilTrainErrorBelow: 1e-9, maxSteps: 4 },
      callbacks: { onBatchEnd: (_s, logs) => void lrs2.push(logs.lr) },
    });
    expect(lrs2.map((x) => Number(x.toPrecision(3)))).toEqual([0.01, 0.01, 0.01, 0.01, 0.1, 0.1]);
    model.dispose();
    m2.dispose();
  });

  it('plateau divides the rate when the monitored error stops improving', async () => {
    const model = Model.create(tinySpec(), { seed: 1, device: 'cpu' });
    const lrs: number[] = [];
    // minDelta 1 (100 points): no epoch counts as an improvement after the first.
    await fit(model, tinyData(32, 4), {
      batchSize: 16,
      epochs: 4,
      plateau: { factor: 0.5, patience: 1, minDelta: 1 },
      callbacks: { onEpochEnd: (_e, logs) => void lrs.push(logs.lr) },
    });
    expect(lrs.map((x) => Number(x.toPrecision(3)))).toEqual([0.1, 0.1, 0.05, 0.025]);
    model.dispose();
  });

  it('bad run options throw clear errors', async () => {
    const model = Model.create(tinySpec(), { seed: 1, device: 'cpu' });
    await expect(fit(model, tinyData(16, 5), { iterations: 0 })).rejects.toThrow(/iterations must be a positive integer, got 0/);
    await expect(fit(model, tinyData(16, 5), { plateau: { factor: 2 } })).rejects.toThrow(/plateau.factor must lie in \(0, 1\), got 2/);
    await expect(fit(model, tinyData(16, 5), { warmStart: { lr: 0, untilTrainErrorBelow: 0.8 } })).rejects.toThrow(/warmStart needs lr > 0/);
    model.dispose();
  });
});

describe('plots', () => {
  const figure = {
    title: 'errors & <losses>',
    panels: [
      {
        title: 'plain',
        xLabel: 'iterations',
        yLabel: 'error (%)',
        series: [
          { label: 'plain-20 train', x: [0, 100, 200], y: [50, 20, 10], dashed: true, color: '#1f77b4' },
          { label: 'plain-20 test', x: [0, 100, 200], y: [52, 25, 14], width: 2.5, color: '#1f77b4' },
        ],
      },
      {
        title: 'gradients',
        xLabel: 'layer',
        yLabel: '||g|| (log)',
        yLog: true,
        series: [{ label: 'sigmoid', x: [1, 2, 3, 4], y: [1e-6, 0, 1e-3, 0.5] }],
      },
    ],
  };

  it('SVG with labelled axes, a legend and escaped text', () => {
    const svg = renderSvg(figure);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('errors &amp; &lt;losses&gt;');
    expect(svg.match(/class="x-label"[^>]*>iterations</g)).toHaveLength(1);
    expect(svg.match(/class="y-label"[^>]*>error \(%\)</g)).toHaveLength(1);
    const legend = svg.slice(svg.indexOf('<g class="legend">'));
    for (const label of ['plain-20 train', 'plain-20 test', 'sigmoid']) expect(legend).toContain(`>${label}</text>`);
    expect(legend).toContain('stroke-dasharray');
    // Log axis: decades as ticks; the zero is dropped, not drawn at -infinity.
    expect(svg).toContain('>1e-6<');
    expect(svg).not.toContain('NaN');
    expect(svg).not.toContain('Infinity');
    expect(() => renderSvg({ panels: [] })).toThrow(/at least one panel/);
  });

  it('PNG rendered from the SVG (valid signature, twice the size)', async () => {
    const svg = renderSvg(figure);
    const png = await svgToPng(svg, 2);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const width = Number(/width="(\d+)"/.exec(svg)?.[1]);
    const height = Number(/height="(\d+)"/.exec(svg)?.[1]);
    const header = new DataView(png.buffer, png.byteOffset, png.byteLength);
    expect(header.getUint32(16)).toBe(2 * width);
    expect(header.getUint32(20)).toBe(2 * height);
    // Text was rendered (fonts found): more than a few colours' worth of compressed data.
    expect(png.length).toBeGreaterThan(20000);
  });

  it('ticks and CSV', () => {
    expect(niceTicks(0, 10, 5)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0.13, 0.91, 4)).toEqual([0.2, 0.4, 0.6, 0.8]);
    expect(toCsv(['a', 'b'], [[1, 'x,y'], [NaN, undefined]])).toBe('a,b\n1,"x,y"\n,\n');
  });
});
