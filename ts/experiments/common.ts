/**
 * What every experiment shares: where the data comes from, the output folder, the recipe, and
 * hooks for progress display.
 *
 * @module
 */

import { join } from 'node:path';

import { datasets, type Dataset } from '../data.js';
import type { DeviceName } from '../model.js';
import { recipes, type Recipe } from '../recipes.js';
import type { ResNetSpec } from '../spec.js';
import type { BatchLogs } from '../trainer.js';
import { readRun, trackedRun, type CurvePoint, type RunRecord } from './run.js';
import type { Model } from '../model.js';

/** Where an experiment's images come from. */
export type DataSource =
  | { kind: 'fashion-mnist'; dir?: string }
  | { kind: 'cifar10'; dir: string };

/** Progress hooks (the CLI draws bars with them). */
export interface ExperimentProgress {
  runStart?(name: string, info: { index: number; count: number }): void;
  resumed?(name: string, info: { epoch: number }): void;
  batch?(name: string, logs: BatchLogs, info: { step: number; totalSteps: number }): void;
  epoch?(name: string, point: CurvePoint): void;
  runEnd?(name: string, record: RunRecord): void;
}

/** Options every training experiment takes. */
export interface ExperimentOptions {
  /** Output folder: one sub-folder per run, and the experiment's CSV and figures. */
  out: string;
  /** Default Fashion-MNIST from `/usr/share/datasets/fashion-mnist`. */
  data?: DataSource;
  /** Default {@link recipes}.cifarPaperShort (12 epochs). */
  recipe?: Recipe;
  /** Seeds weights, order and augmentation (default 0). */
  seed?: number;
  device?: DeviceName;
  /** Training images evaluated in eval mode after each epoch (default 10,000). */
  trainEvalImages?: number;
  /** Use only the first N training / test images (quick runs, tests). */
  limitTrain?: number;
  limitTest?: number;
  /** Start every run over instead of resuming. */
  fresh?: boolean;
  /**
   * Train only the runs with these names (e.g. `['plain-56']`, to spread an experiment over
   * processes or machines sharing the folder); the others are read from the folder if present.
   */
  only?: string[];
  signal?: AbortSignal;
  progress?: ExperimentProgress;
}

/** Training and test sets of a source. */
export async function loadData(source: DataSource = { kind: 'fashion-mnist' }, limits: { train?: number; test?: number } = {}): Promise<{ train: Dataset; test: Dataset; label: string }> {
  let train: Dataset;
  let test: Dataset;
  let label: string;
  switch (source.kind) {
    case 'fashion-mnist': {
      const dir = source.dir ?? '/usr/share/datasets/fashion-mnist';
      train = await datasets.fashionMnist({ dir, split: 'train' });
      test = await datasets.fashionMnist({ dir, split: 'test' });
      label = 'Fashion-MNIST';
      break;
    }
    case 'cifar10':
      train = await datasets.cifar10({ dir: source.dir, split: 'train' });
      test = await datasets.cifar10({ dir: source.dir, split: 'test' });
      label = 'CIFAR-10';
      break;
  }
  if (limits.train !== undefined) train = train.take(limits.train);
  if (limits.test !== undefined) test = test.take(limits.test);
  return { train, test, label };
}

/** The folder name of a run: `plain-20`, `resnet-56-optA`, `resnet-20-optB-tanh`, ... */
export function runName(spec: ResNetSpec): string {
  const depth = 2 + spec.stages.reduce((sum, s) => sum + s.count * (s.block === 'basic' ? 2 : 3), 0);
  const parts = [`${spec.plain ? 'plain' : spec.preActivation ? 'preresnet' : 'resnet'}-${depth}`];
  if (!spec.plain) parts.push(`opt${spec.shortcut}`);
  if (spec.activation !== undefined && spec.activation !== 'relu') parts.push(spec.activation);
  if (spec.stem === 'imagenet' && spec.bottleneckStride === '1x1') parts.push('paperstride');
  return parts.join('-');
}

/** Runs (or resumes) each spec in turn with the experiment's recipe; returns their records. */
export async function runAll(specs: ResNetSpec[], options: ExperimentOptions, data: { train: Dataset; test: Dataset }): Promise<RunRecord[]> {
  const recipe = options.recipe ?? recipes.cifarPaperShort();
  const records: RunRecord[] = [];
  for (const [index, spec] of specs.entries()) {
    const name = runName(spec);
    if (options.only !== undefined && !options.only.includes(name)) {
      const existing = await readRun(join(options.out, name), options.device);
      if (existing !== undefined) {
        existing.model.dispose();
        records.push(existing.record);
      }
      continue;
    }
    options.progress?.runStart?.(name, { index, count: specs.length });
    const { record, model }: { record: RunRecord; model: Model } = await trackedRun({
      dir: join(options.out, name),
      name,
      spec,
      train: data.train,
      test: data.test,
      recipe,
      seed: options.seed ?? 0,
      ...(options.device ? { device: options.device } : {}),
      ...(options.trainEvalImages !== undefined ? { trainEvalImages: options.trainEvalImages } : {}),
      ...(options.fresh ? { fresh: true } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      onBatch: (logs, info) => options.progress?.batch?.(name, logs, info),
      onEpoch: (point) => options.progress?.epoch?.(name, point),
      onResume: (info) => options.progress?.resumed?.(name, info),
    });
    model.dispose();
    records.push(record);
    options.progress?.runEnd?.(name, record);
    if (options.signal?.aborted) break;
  }
  return records;
}

/** The last point of a run's curve (throws if the run has none). */
export function finalPoint(record: RunRecord): CurvePoint {
  const p = record.curve.at(-1);
  if (p === undefined) throw new Error(`run ${record.name} has no finished epoch`);
  return p;
}
