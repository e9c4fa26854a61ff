/**
 * Layer responses (He et al. 2015, Figure 7): the standard deviation of each 3x3 layer's output
 * after batch norm and before the nonlinearity or the addition, for trained plain and residual
 * nets, in layer order and sorted by magnitude. Residual functions are "generally closer to zero"
 * than the plain nets' responses. Alongside: per-layer gradient norms at initialisation and after
 * training, the vanishing-gradient view of the same nets.
 *
 * The nets are the degradation experiment's: pointed at the same folder, finished runs are reused.
 *
 * @module
 */

import { join } from 'node:path';

import { DataLoader } from '../data.js';
import { Model } from '../model.js';
import { paletteColor, type Series } from '../plot.js';
import type { ShortcutOption } from '../spec.js';
import { loadData, netLabel, netSpec, outputs, runAll, runName, type ExperimentOptions } from './common.js';
import type { RunRecord } from './run.js';

export interface ResponsesOptions extends ExperimentOptions {
  /** Default [20, 56] (CIFAR family) or [18, 34] (image folders). */
  depths?: number[];
  shortcut?: ShortcutOption;
  /** Test images whose responses are measured (default 1000). */
  images?: number;
}

export interface ResponseProfile {
  run: string;
  label: string;
  /** 3x3 layers in forward order. */
  layers: { index: number; name: string; std: number }[];
}

export interface ResponsesResult {
  runs: RunRecord[];
  profiles: ResponseProfile[];
  files: { csv: string; svg: string; png: string; gradientsCsv: string; gradientsSvg: string; gradientsPng: string; summary: string };
  report: string;
}

export async function responses(options: ResponsesOptions): Promise<ResponsesResult> {
  const data = await loadData(options.data, {
    ...(options.limitTrain !== undefined ? { train: options.limitTrain } : {}),
    ...(options.limitTest !== undefined ? { test: options.limitTest } : {}),
  });
  const depths = [...(options.depths ?? (data.family === 'imagenet' ? [18, 34] : [20, 56]))].sort((a, b) => a - b);
  const specs = [true, false].flatMap((plain) => depths.map((depth) => netSpec(data, { depth, plain, shortcut: options.shortcut ?? 'A' })));
  const runs = await runAll(specs, options, data);
  const out = outputs(options); // rank 0 writes
  const images = data.test.take(Math.min(options.images ?? 1000, data.test.length));
  const profiles: ResponseProfile[] = [];
  for (const run of runs) {
    const model = await Model.load(join(options.out, runName(run.spec), 'checkpoint.safetensors'), options.device ? { device: options.device } : {});
    try {
      const loader = new DataLoader(images, { batchSize: 250, shuffle: false, normalize: model.normalization ?? 'dataset' });
      // Pool the per-batch moments into the std over all images.
      const acc = new Map<string, { index: number; n: number; sum: number; sumSq: number }>();
      for await (const b of loader.epoch(0)) {
        const layers = await model.layerResponses(b.images, b.shape, { training: false });
        let index = 0;
        for (const l of layers) {
          if (l.kernel !== 3) continue;
          index++;
          const a = acc.get(l.name) ?? { index, n: 0, sum: 0, sumSq: 0 };
          const n = b.shape[0];
          a.n += n;
          a.sum += n * l.mean;
          a.sumSq += n * (l.std * l.std + l.mean * l.mean);
          acc.set(l.name, a);
        }
      }
      const layers = [...acc.entries()]
        .map(([name, a]) => {
          const mean = a.sum / a.n;
          return { index: a.index, name, std: Math.sqrt(Math.max(0, a.sumSq / a.n - mean * mean)) };
        })
        .sort((x, y) => x.index - y.index);
      profiles.push({ run: run.name, label: netLabel(run.spec), layers });
    } finally {
      model.dispose();
    }
  }

  const csv = join(options.out, 'responses.csv');
  await out.csv(
    csv,
    ['run', 'layer_index', 'layer', 'std', 'rank'],
    profiles.flatMap((p) => {
      const order = [...p.layers].sort((a, b) => b.std - a.std);
      return p.layers.map((l) => [p.run, l.index, l.name, l.std, order.indexOf(l) + 1]);
    }),
  );
  const style = (p: ResponseProfile, i: number): Pick<Series, 'color' | 'dashed' | 'width'> => ({
    color: paletteColor(i),
    dashed: p.label.startsWith('plain'),
    width: 1.6,
  });
  const fig = await out.figure(join(options.out, 'responses'), {
    title: `${data.label}: std of 3x3 layer responses (after BN, before nonlinearity/addition), ${images.length} test images`,
    panels: [
      {
        title: 'original layer order',
        xLabel: 'layer index',
        yLabel: 'std',
        series: profiles.map((p, i) => ({ label: p.label, x: p.layers.map((l) => l.index), y: p.layers.map((l) => l.std), ...style(p, i) })),
      },
      {
        title: 'sorted by magnitude',
        xLabel: 'layer index (sorted)',
        yLabel: 'std',
        series: profiles.map((p, i) => {
          const sorted = p.layers.map((l) => l.std).sort((a, b) => b - a);
          return { label: p.label, x: sorted.map((_, k) => k + 1), y: sorted, ...style(p, i) };
        }),
      },
    ],
  });

  // Gradient norms recorded by the runs: at initialisation and after the last epoch.
  const gradientsCsv = join(options.out, 'responses_gradients.csv');
  await out.csv(
    gradientsCsv,
    ['run', 'epoch', 'layer_index', 'layer', 'kernel', 'grad_norm'],
    runs.flatMap((r) =>
      r.gradients.flatMap((g) =>
        g.layers.filter((l) => !l.name.startsWith('fc')).map((l, i) => [r.name, g.epoch, i + 1, l.name, l.kernel, l.norm]),
      ),
    ),
  );
  const gradientPanel = (title: string, pick: (r: RunRecord) => RunRecord['gradients'][number] | undefined) => ({
    title,
    xLabel: 'layer (convolutions in forward order)',
    yLabel: '||dL/dW|| (log scale)',
    yLog: true,
    series: runs.flatMap((r, i) => {
      const g = pick(r);
      if (g === undefined) return [];
      const convs = g.layers.filter((l) => !l.name.startsWith('fc'));
      return [
        {
          label: netLabel(r.spec),
          x: convs.map((_, k) => k + 1),
          y: convs.map((l) => l.norm),
          color: paletteColor(i),
          dashed: r.spec.plain,
          width: 1.6,
        },
      ];
    }),
  });
  const gfig = await out.figure(join(options.out, 'responses_gradients'), {
    title: `${data.label}: per-layer gradient norms of one training batch`,
    panels: [
      gradientPanel('at initialisation', (r) => r.gradients.find((g) => g.epoch === 0)),
      gradientPanel('after the last epoch', (r) => [...r.gradients].sort((a, b) => b.epoch - a.epoch)[0]),
    ],
  });
  const report = [
    '| net | 3x3 layers | mean response std | max response std |',
    '|---|---|---|---|',
    ...profiles.map((p) => {
      const stds = p.layers.map((l) => l.std);
      const mean = stds.reduce((a, b) => a + b, 0) / Math.max(1, stds.length);
      return `| ${p.label} | ${stds.length} | ${mean.toFixed(3)} | ${Math.max(...stds).toFixed(3)} |`;
    }),
  ].join('\n');
  const summary = join(options.out, 'responses.md');
  await out.text(summary, `${report}\n`);
  return {
    runs,
    profiles,
    files: { csv, svg: fig.svg, png: fig.png, gradientsCsv, gradientsSvg: gfig.svg, gradientsPng: gfig.png, summary },
    report,
  };
}
