/**
 * The degradation experiment (He et al. 2015, Figures 1 and 6): plain and residual nets of two
 * depths trained on the same data and schedule. Deeper plain nets end with higher training error;
 * deeper residual nets do not.
 *
 * @module
 */

import { join } from 'node:path';

import { paletteColor, type Series } from '../plot.js';
import { depthOf, type ActivationKind, type ShortcutOption } from '../spec.js';
import { defaultRecipe, finalPoint, loadData, netLabel, netSpec, outputs, runAll, type ExperimentOptions } from './common.js';
import type { RunRecord } from './run.js';

export interface DegradationOptions extends ExperimentOptions {
  /** Depths: CIFAR 6n+2 (default [20, 56]) or, for image folders, ImageNet 18..152 (default [18, 34]). */
  depths?: number[];
  /** Shortcut of the residual nets (default 'A', the paper's CIFAR choice). */
  shortcut?: ShortcutOption;
  activation?: ActivationKind;
}

/** Final errors (%) of one net. */
export interface FinalErrors {
  name: string;
  depth: number;
  plain: boolean;
  trainError: number;
  trainEvalError?: number;
  testError: number;
  seconds: number;
}

export interface DegradationResult {
  runs: RunRecord[];
  finals: FinalErrors[];
  /** Training error of the deepest plain net minus the shallowest's (points; positive: degradation). */
  plainGap: number;
  /** The same for the residual nets. */
  residualGap: number;
  files: { csv: string; stepsCsv: string; svg: string; png: string; summary: string };
  /** A few lines for a terminal or README. */
  report: string;
}

export const CURVE_HEADER = [
  'run',
  'depth',
  'plain',
  'shortcut',
  'epoch',
  'iteration',
  'lr',
  'train_loss',
  'train_error',
  'train_eval_error',
  'test_loss',
  'test_error',
  'seconds',
] as const;

export const STEP_HEADER = ['run', 'epoch', 'iteration', 'train_loss', 'train_error'] as const;

/** Rows of the runs' dense training curves, for {@link STEP_HEADER}. */
export function stepRows(runs: RunRecord[]): (string | number)[][] {
  return runs.flatMap((r) => (r.steps ?? []).map((p) => [r.name, p.epoch, p.iteration, p.trainLoss, p.trainError]));
}

/** Curve rows of runs, for {@link CURVE_HEADER}. */
export function curveRows(runs: RunRecord[]): (string | number | undefined)[][] {
  return runs.flatMap((r) => {
    const depth = depthOf(r.spec);
    return r.curve.map((p) => [
      r.name,
      depth,
      r.spec.plain ? 1 : 0,
      r.spec.plain ? '' : r.spec.shortcut,
      p.epoch,
      p.iteration,
      p.lr,
      p.trainLoss,
      p.trainError,
      p.trainEvalError,
      p.testLoss,
      p.testError,
      p.seconds,
    ]);
  });
}

/** Training error (dashed) and test error (bold) against iterations, one series pair per run. */
export function errorSeries(runs: RunRecord[], label: (r: RunRecord) => string): Series[] {
  return runs.flatMap((r, i) => {
    const color = paletteColor(i);
    const x = r.curve.map((p) => p.iteration);
    // Dense training curves where the run recorded them (about ten points an epoch).
    const steps = r.steps !== undefined && r.steps.length > 0 ? r.steps : undefined;
    return [
      {
        label: `${label(r)} train`,
        x: steps ? steps.map((p) => p.iteration) : x,
        y: steps ? steps.map((p) => p.trainError) : r.curve.map((p) => p.trainError),
        color,
        dashed: true,
        width: 1.3,
      },
      { label: `${label(r)} test`, x, y: r.curve.map((p) => p.testError), color, width: 2.6 },
    ];
  });
}

/** A gap in points, or why there is none yet. */
function points(gap: number): string {
  return Number.isFinite(gap) ? `${gap.toFixed(2)} points` : 'n/a (needs two finished depths)';
}

/** Eval-mode training error where measured, else the running one. */
export function comparedTrainError(f: { trainError: number; trainEvalError?: number }): number {
  return f.trainEvalError ?? f.trainError;
}

/** Runs the experiment (resuming finished or partial runs in `out`) and writes CSV, SVG and PNG. */
export async function degradation(options: DegradationOptions): Promise<DegradationResult> {
  const data = await loadData(options.data, {
    ...(options.limitTrain !== undefined ? { train: options.limitTrain } : {}),
    ...(options.limitTest !== undefined ? { test: options.limitTest } : {}),
  });
  const depths = [...(options.depths ?? (data.family === 'imagenet' ? [18, 34] : [20, 56]))].sort((a, b) => a - b);
  if (depths.length < 2) throw new Error('the degradation experiment needs at least two depths');
  // The paper's CIFAR nets use option A; its ImageNet plain/residual comparison (Fig. 4) too.
  const specs = [true, false].flatMap((plain) =>
    depths.map((depth) =>
      netSpec(data, { depth, plain, shortcut: options.shortcut ?? 'A', ...(options.activation ? { activation: options.activation } : {}) }),
    ),
  );
  const runs = await runAll(specs, options, data);
  const out = outputs(options); // rank 0 writes
  const finals: FinalErrors[] = runs
    .filter((r) => r.curve.length > 0)
    .map((r) => {
      const p = finalPoint(r);
      const f: FinalErrors = {
        name: r.name,
        depth: depthOf(r.spec),
        plain: r.spec.plain,
        trainError: p.trainError,
        testError: p.testError,
        seconds: r.curve.reduce((a, q) => a + q.seconds, 0),
      };
      if (p.trainEvalError !== undefined) f.trainEvalError = p.trainEvalError;
      return f;
    });
  const gap = (plain: boolean): number => {
    const own = finals.filter((f) => f.plain === plain).sort((a, b) => a.depth - b.depth);
    const first = own[0];
    const last = own.at(-1);
    if (first === undefined || last === undefined || own.length < 2) return NaN;
    return comparedTrainError(last) - comparedTrainError(first);
  };
  const plainGap = gap(true);
  const residualGap = gap(false);

  const csv = join(options.out, 'degradation.csv');
  await out.csv(csv, CURVE_HEADER, curveRows(runs));
  const stepsCsv = join(options.out, 'degradation_steps.csv');
  await out.csv(stepsCsv, STEP_HEADER, stepRows(runs));
  const plainRuns = runs.filter((r) => r.spec.plain);
  const residualRuns = runs.filter((r) => !r.spec.plain);
  const allErrors = runs.flatMap((r) => r.curve.flatMap((p) => [p.trainError, p.testError]));
  const yMax = Math.min(100, Math.ceil((Math.max(...allErrors, 1) * 1.05) / 5) * 5);
  const title = `${data.label}: plain vs residual (${(options.recipe ?? defaultRecipe(data.family)).name}, seed ${options.seed ?? 0}); dashed: training error, bold: test error`;
  const fig = await out.figure(join(options.out, 'degradation'), {
    title,
    panels: [
      { title: 'plain networks', xLabel: 'iterations', yLabel: 'error (%)', series: errorSeries(plainRuns, (r) => netLabel(r.spec)), yRange: [0, yMax] },
      { title: 'residual networks', xLabel: 'iterations', yLabel: 'error (%)', series: errorSeries(residualRuns, (r) => netLabel(r.spec)), yRange: [0, yMax] },
    ],
  });
  const lines = [
    `| net | training error (running, %) | training error (eval, %) | test error (%) | time (s) |`,
    `|---|---|---|---|---|`,
    ...finals.map((f) => `| ${f.plain ? 'plain' : 'ResNet'}-${f.depth} | ${f.trainError.toFixed(2)} | ${f.trainEvalError?.toFixed(2) ?? '-'} | ${f.testError.toFixed(2)} | ${f.seconds.toFixed(0)} |`),
    '',
    `deepest minus shallowest training error: plain ${points(plainGap)}, residual ${points(residualGap)}`,
  ];
  const report = lines.join('\n');
  const summary = join(options.out, 'degradation.md');
  await out.text(summary, `${report}\n`);
  return { runs, finals, plainGap, residualGap, files: { csv, stepsCsv, svg: fig.svg, png: fig.png, summary }, report };
}
