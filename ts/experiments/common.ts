/**
 * What every experiment shares: where the data comes from, the output folder, the recipe, and
 * hooks for progress display.
 *
 * @module
 */

import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { writeFile } from 'node:fs/promises';

import type { AbortSignalLike } from '../abort.js';
import type { World } from '../distributed.js';
import { writeCsv, writeFigure, type Figure } from '../plot.js';
import { datasets, type AnyDataset, type ImageFolderOptions } from '../data.js';
import type { DeviceName } from '../model.js';
import { prepareOutputDir } from '../output-path.js';
import { recipes, splitForRecipe, type Recipe } from '../recipes.js';
import { depthOf, resnet, type ActivationKind, type ImagenetDepth, type ResNetSpec, type ShortcutOption } from '../spec.js';
import type { BatchLogs } from '../trainer.js';
import { readRun, trackedRun, type CurvePoint, type RunRecord } from './run.js';
import type { Model } from '../model.js';

/** Where an experiment's images come from. */
export type DataSource =
  | { kind: 'fashion-mnist'; dir?: string }
  | { kind: 'cifar10'; dir: string }
  /**
   * ImageNet-style folders `root/train/<class>/*` and `root/val/<class>/*` (or `root/test`),
   * trained with the ImageNet networks; `options` default to the imagenetPaper recipe's.
   */
  | { kind: 'folder'; root: string; options?: ImageFolderOptions };

/** Which family of networks a source is trained with: CIFAR-style (6n+2) or ImageNet (18..152). */
export type Family = 'cifar' | 'imagenet';

/** The data of an experiment. */
export interface ExperimentData {
  train: AnyDataset;
  test: AnyDataset;
  label: string;
  family: Family;
}

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
  /** Default {@link recipes}.cifarPaperShort (12 epochs), or imagenetPaperShort for folders. */
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
  signal?: AbortSignalLike;
  progress?: ExperimentProgress;
  /**
   * Train each run data-parallel over these ranks (`await distributed.init()` under `mpiexec`):
   * the recipe's batch size is then per rank. Every rank must see the same output folder (a
   * shared file system); rank 0 alone writes checkpoints, CSVs and figures.
   */
  distributed?: World;
}

/**
 * The experiment's files, written by rank 0 alone in a data-parallel run (the other ranks get the
 * same paths back, so every rank returns the same result).
 */
export function outputs(options: { distributed?: World }): {
  csv(path: string, header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number | undefined>>): Promise<void>;
  figure(base: string, figure: Figure): Promise<{ svg: string; png: string }>;
  text(path: string, content: string): Promise<void>;
} {
  const lead = (options.distributed?.rank ?? 0) === 0;
  return {
    csv: async (path, header, rows) => (lead ? writeCsv(path, header, rows) : undefined),
    figure: async (base, figure) => (lead ? writeFigure(base, figure) : { svg: `${base}.svg`, png: `${base}.png` }),
    text: async (path, content) => (lead ? writeFile(path, content) : undefined),
  };
}

/** Training and test sets of a source. */
export async function loadData(source: DataSource = { kind: 'fashion-mnist' }, limits: { train?: number; test?: number } = {}): Promise<ExperimentData> {
  let data: ExperimentData;
  switch (source.kind) {
    case 'fashion-mnist': {
      const dir = source.dir ?? '/usr/share/datasets/fashion-mnist';
      const train = await datasets.fashionMnist({ dir, split: 'train' });
      const test = await datasets.fashionMnist({ dir, split: 'test' });
      data = { train, test, label: 'Fashion-MNIST', family: 'cifar' };
      break;
    }
    case 'cifar10': {
      const train = await datasets.cifar10({ dir: source.dir, split: 'train' });
      const test = await datasets.cifar10({ dir: source.dir, split: 'test' });
      data = { train, test, label: 'CIFAR-10', family: 'cifar' };
      break;
    }
    case 'folder': {
      const evalDir = ['val', 'test'].map((d) => join(source.root, d)).find((d) => existsSync(d));
      if (evalDir === undefined) {
        throw new Error(`image folder ${source.root} needs train/ and val/ (or test/) sub-folders, one folder per class in each`);
      }
      const options = source.options ?? recipes.imagenetPaperShort().imageFolder?.train ?? {};
      const train = await datasets.imageFolder(join(source.root, 'train'), options);
      const test = await datasets.imageFolder(evalDir, options);
      data = { train, test, label: source.root, family: 'imagenet' };
      break;
    }
  }
  if (limits.train !== undefined) data.train = data.train.take(limits.train);
  if (limits.test !== undefined) data.test = data.test.take(limits.test);
  return data;
}

/** The recipe an experiment uses by default for a family. */
export function defaultRecipe(family: Family): Recipe {
  return family === 'imagenet' ? recipes.imagenetPaperShort() : recipes.cifarPaperShort();
}

/** A plain or residual net of `depth` in a family, sized for the data. */
export function netSpec(
  data: ExperimentData,
  options: { depth: number; plain: boolean; shortcut?: ShortcutOption; activation?: ActivationKind },
): ResNetSpec {
  const common = {
    plain: options.plain,
    inChannels: data.train.channels,
    numClasses: data.train.numClasses,
    ...(options.shortcut ? { shortcut: options.shortcut } : {}),
    ...(options.activation ? { activation: options.activation } : {}),
  };
  if (data.family === 'imagenet') {
    if (![18, 34, 50, 101, 152].includes(options.depth)) {
      throw new Error(`image folders train the ImageNet networks: depth must be 18, 34, 50, 101 or 152, got ${options.depth}`);
    }
    return resnet.imagenet({ depth: options.depth as ImagenetDepth, ...common });
  }
  return resnet.cifar({ depth: options.depth, ...common });
}

/** The folder name of a run: `plain-20`, `resnet-56-optA`, `resnet-20-optB-tanh`, `plain-56-sigmoid-nobn`, ... */
export function runName(spec: ResNetSpec): string {
  const depth = depthOf(spec);
  const parts = [`${spec.plain ? 'plain' : spec.preActivation ? 'preresnet' : 'resnet'}-${depth}`];
  if (!spec.plain) parts.push(`opt${spec.shortcut}`);
  if (spec.activation !== undefined && spec.activation !== 'relu') parts.push(spec.activation);
  if (spec.batchNorm === false) parts.push('nobn');
  if (spec.stem === 'imagenet' && spec.bottleneckStride === '1x1') parts.push('paperstride');
  return parts.join('-');
}

/** A run's label in figures and tables: `plain-20`, `ResNet-56`. */
export function netLabel(spec: ResNetSpec): string {
  return `${spec.plain ? 'plain' : 'ResNet'}-${depthOf(spec)}`;
}

/** Runs (or resumes) each spec in turn with the experiment's recipe; returns their records. */
export async function runAll(specs: ResNetSpec[], options: ExperimentOptions, data: ExperimentData): Promise<RunRecord[]> {
  // Before the first step: figures and checkpoints must have somewhere to go.
  prepareOutputDir(options.out, 'the experiment folder (out)');
  const recipe = options.recipe ?? defaultRecipe(data.family);
  // The recipe's held-out validation images (the paper's 45k/5k CIFAR split) are not trained on.
  const train = splitForRecipe(data.train, recipe, options.seed ?? 0).train;
  const names = specs.map(runName);
  const unknown = (options.only ?? []).filter((n) => !names.includes(n));
  if (unknown.length > 0) {
    throw new Error(`no run named ${unknown.join(', ')} in this experiment; its runs are ${names.join(', ')}`);
  }
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
      train,
      test: data.test,
      recipe,
      seed: options.seed ?? 0,
      ...(options.device ? { device: options.device } : {}),
      ...(options.trainEvalImages !== undefined ? { trainEvalImages: options.trainEvalImages } : {}),
      ...(options.fresh ? { fresh: true } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.distributed ? { distributed: options.distributed } : {}),
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
