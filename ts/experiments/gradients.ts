/**
 * The vanishing gradient made visible: per-layer gradient norms at initialisation of a deep plain
 * net with sigmoid, tanh and ReLU, and of the residual net with ReLU, each with batch norm (as all
 * of the paper's nets) and without it, on log-scale plots: what ReLU, batch norm and shortcuts
 * each do about it.
 *
 * @module
 */

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { DataLoader } from '../data.js';
import { Model } from '../model.js';
import { prepareOutputDir } from '../output-path.js';
import { writeCsv, writeFigure } from '../plot.js';
import { resnet, type ActivationKind, type ResNetSpec } from '../spec.js';
import { loadData, runName, type DataSource } from './common.js';
import type { DeviceName } from '../model.js';

export interface GradientsOptions {
  out: string;
  data?: DataSource;
  /** CIFAR depth 6n+2 of the nets (default 56). */
  depth?: number;
  /** Batches of 128 training images averaged (default 4). */
  batches?: number;
  batchSize?: number;
  seed?: number;
  device?: DeviceName;
}

/** One net's per-layer norms, input side first. */
export interface GradientProfile {
  name: string;
  label: string;
  batchNorm: boolean;
  layers: { index: number; name: string; kernel: number; norm: number }[];
  /** Norm of the first convolution's gradient over the last's: << 1 means vanishing. */
  firstOverLast: number;
}

export interface GradientsResult {
  profiles: GradientProfile[];
  files: { csv: string; svg: string; png: string; summary: string };
  report: string;
}

export async function gradients(options: GradientsOptions): Promise<GradientsResult> {
  const depth = options.depth ?? 56;
  const batches = options.batches ?? 4;
  const batchSize = options.batchSize ?? 128;
  const seed = options.seed ?? 0;
  prepareOutputDir(options.out, 'the experiment folder (out)');
  const data = await loadData(options.data, { train: batches * batchSize });
  const nets: { spec: ResNetSpec; label: string; batchNorm: boolean }[] = [true, false].flatMap((batchNorm) => {
    const common = { depth, inChannels: data.train.channels, numClasses: data.train.numClasses, ...(batchNorm ? {} : { batchNorm: false }) };
    const bn = batchNorm ? 'BN' : 'no BN';
    return [
      ...(['sigmoid', 'tanh', 'relu'] as ActivationKind[]).map((activation) => ({
        spec: resnet.cifar({ ...common, plain: true, activation }),
        label: `plain-${depth}, ${activation}, ${bn}`,
        batchNorm,
      })),
      { spec: resnet.cifar({ ...common }), label: `ResNet-${depth}, relu, ${bn}`, batchNorm },
    ];
  });
  const loader = new DataLoader(data.train, { batchSize, shuffle: false, normalize: 'dataset' });
  const batchList = [];
  for await (const b of loader.epoch(0)) batchList.push(b);
  const profiles: GradientProfile[] = [];
  for (const net of nets) {
    const model = Model.create(net.spec, { seed, ...(options.device ? { device: options.device } : {}) });
    try {
      let sums: number[] = [];
      let names: { name: string; kernel: number }[] = [];
      for (const b of batchList) {
        const layers = await model.gradientNorms(b.images, b.labels, b.shape);
        names = layers.map((l) => ({ name: l.name, kernel: l.kernel }));
        sums = layers.map((l, i) => (sums[i] ?? 0) + l.norm);
      }
      // Convolutions only (the classifier is not part of the depth profile).
      const layers = names
        .map((n, i) => ({ ...n, norm: (sums[i] ?? 0) / batchList.length }))
        .filter((l) => !l.name.startsWith('fc'))
        .map((l, i) => ({ index: i + 1, ...l }));
      const first = layers[0]?.norm ?? NaN;
      const last = layers.at(-1)?.norm ?? NaN;
      profiles.push({ name: runName(net.spec), label: net.label, batchNorm: net.batchNorm, layers, firstOverLast: first / last });
    } finally {
      model.dispose();
    }
  }
  const csv = join(options.out, 'gradients.csv');
  await writeCsv(
    csv,
    ['net', 'batch_norm', 'layer_index', 'layer', 'kernel', 'grad_norm'],
    profiles.flatMap((p) => p.layers.map((l) => [p.name, p.batchNorm ? 1 : 0, l.index, l.name, l.kernel, l.norm])),
  );
  const fig = await writeFigure(join(options.out, 'gradients'), {
    title: `${data.label}: per-layer weight-gradient norms at initialisation (${batchList.length} x ${batchSize} images)`,
    panels: [true, false].map((batchNorm) => ({
      title: `${depth}-layer nets ${batchNorm ? 'with' : 'without'} batch norm, input side on the left`,
      xLabel: 'layer (convolutions in forward order)',
      yLabel: '||dL/dW|| (log scale)',
      yLog: true,
      series: profiles
        .filter((p) => p.batchNorm === batchNorm)
        .map((p) => ({ label: p.label.replace(/, (no )?BN$/, ''), x: p.layers.map((l) => l.index), y: p.layers.map((l) => l.norm), width: 2 })),
    })),
  });
  const report = [
    '| net | first-layer / last-layer gradient norm |',
    '|---|---|',
    ...profiles.map((p) => `| ${p.label} | ${p.firstOverLast.toExponential(2)} |`),
  ].join('\n');
  const summary = join(options.out, 'gradients.md');
  await writeFile(summary, `${report}\n`);
  return { profiles, files: { csv, svg: fig.svg, png: fig.png, summary }, report };
}
