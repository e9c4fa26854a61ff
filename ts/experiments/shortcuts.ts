/**
 * Shortcut options A, B and C on the same network (He et al. 2015, Table 3): zero-padding
 * identity, projections where shapes change, projections everywhere.
 *
 * @module
 */

import { join } from 'node:path';

import type { ShortcutOption } from '../spec.js';
import { finalPoint, loadData, netSpec, outputs, runAll, type ExperimentOptions } from './common.js';
import { CURVE_HEADER, STEP_HEADER, curveRows, errorSeries, stepRows } from './degradation.js';
import type { RunRecord } from './run.js';

export interface ShortcutsOptions extends ExperimentOptions {
  /** CIFAR depth 6n+2 (default 20), or ImageNet depth for image folders (default 34, as Table 3). */
  depth?: number;
  /** Default ['A', 'B', 'C']. */
  options?: ShortcutOption[];
}

/** One row of the Table-3-like result. */
export interface ShortcutRow {
  option: ShortcutOption;
  parameters: number;
  trainError: number;
  trainEvalError?: number;
  testError: number;
  testTop5Error?: number;
}

export interface ShortcutsResult {
  runs: RunRecord[];
  table: ShortcutRow[];
  files: { csv: string; stepsCsv: string; svg: string; png: string; table: string };
  report: string;
}

export async function shortcuts(options: ShortcutsOptions): Promise<ShortcutsResult> {
  const which = options.options ?? ['A', 'B', 'C'];
  const data = await loadData(options.data, {
    ...(options.limitTrain !== undefined ? { train: options.limitTrain } : {}),
    ...(options.limitTest !== undefined ? { test: options.limitTest } : {}),
  });
  const depth = options.depth ?? (data.family === 'imagenet' ? 34 : 20);
  const specs = which.map((shortcut) => netSpec(data, { depth, plain: false, shortcut }));
  const runs = await runAll(specs, options, data);
  const out = outputs(options); // rank 0 writes
  const table: ShortcutRow[] = runs
    .filter((r) => r.curve.length > 0)
    .map((r) => {
      const p = finalPoint(r);
      const row: ShortcutRow = { option: r.spec.shortcut, parameters: r.numParameters, trainError: p.trainError, testError: p.testError };
      if (p.trainEvalError !== undefined) row.trainEvalError = p.trainEvalError;
      if (p.testTop5Error !== undefined) row.testTop5Error = p.testTop5Error;
      return row;
    });
  const csv = join(options.out, 'shortcuts.csv');
  await out.csv(csv, CURVE_HEADER, curveRows(runs));
  const stepsCsv = join(options.out, 'shortcuts_steps.csv');
  await out.csv(stepsCsv, STEP_HEADER, stepRows(runs));
  const fig = await out.figure(join(options.out, 'shortcuts'), {
    title: `${data.label}: ResNet-${depth} with shortcut options A, B, C; dashed: training error, bold: test error`,
    panels: [{ title: `ResNet-${depth}`, xLabel: 'iterations', yLabel: 'error (%)', series: errorSeries(runs, (r) => `option ${r.spec.shortcut}`) }],
  });
  const lines = [
    `| ResNet-${depth} | parameters | training error (running, %) | training error (eval, %) | top-1 test error (%) | top-5 test error (%) |`,
    '|---|---|---|---|---|---|',
    ...table.map(
      (t) =>
        `| option ${t.option} | ${t.parameters.toLocaleString('en-US')} | ${t.trainError.toFixed(2)} | ${t.trainEvalError?.toFixed(2) ?? '-'} | ${t.testError.toFixed(2)} | ${t.testTop5Error?.toFixed(2) ?? '-'} |`,
    ),
  ];
  const report = lines.join('\n');
  const tablePath = join(options.out, 'shortcuts.md');
  await out.text(tablePath, `${report}\n`);
  return { runs, table, files: { csv, stepsCsv, svg: fig.svg, png: fig.png, table: tablePath }, report };
}
