/**
 * One tracked, resumable training run: the curves an experiment plots (training and test error
 * against iterations), per-layer gradient norms each epoch, and a checkpoint after every epoch
 * holding both the model and the curves, so an interrupted run loses at most one epoch.
 *
 * @module
 */

import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import type { AbortSignalLike } from '../abort.js';
import type { World } from '../distributed.js';
import { DataLoader, type AnyDataset, type Batch, type Normalization } from '../data.js';
import { Model, type DeviceName } from '../model.js';
import { writeAtomic } from '../plot.js';
import { recipeFitOptions, type Recipe } from '../recipes.js';
import type { ResNetSpec } from '../spec.js';
import { fit, type BatchLogs } from '../trainer.js';

/** One point of a run's curves (after each epoch). Errors are percentages. */
export interface CurvePoint {
  epoch: number;
  iteration: number;
  lr: number;
  trainLoss: number;
  /** Running training error over the epoch, in training mode with augmentation (the paper's). */
  trainError: number;
  /** Error on `trainEvalImages` training images in eval mode, no augmentation. */
  trainEvalError?: number;
  testLoss: number;
  testError: number;
  testTop5Error?: number;
  /** Wall-clock seconds of the epoch, evaluation included. */
  seconds: number;
}

/** Running training error over a stretch of an epoch's steps, for dense training curves. */
export interface StepPoint {
  epoch: number;
  /** The step that ended the stretch. */
  iteration: number;
  trainLoss: number;
  /** Percent, in training mode with augmentation. */
  trainError: number;
}

/** Per-layer gradient norms of one probe batch at one point of training (epoch 0 = initialisation). */
export interface GradientSnapshot {
  epoch: number;
  layers: { name: string; kernel: number; norm: number }[];
}

/** What a tracked run leaves behind. */
export interface RunRecord {
  name: string;
  spec: ResNetSpec;
  /** The recipe as run (a different recipe in the same folder is refused). */
  recipe: Recipe;
  seed: number;
  device: 'cpu' | 'gpu';
  numParameters: number;
  curve: CurvePoint[];
  /** About ten running training-error points per epoch (absent in records of older versions). */
  steps?: StepPoint[];
  gradients: GradientSnapshot[];
  /** True when every epoch of the recipe has been run. */
  complete: boolean;
}

/** Options of {@link trackedRun}. */
export interface TrackedRunOptions {
  /** The run's folder (created): `checkpoint.safetensors` and `run.json`. */
  dir: string;
  name: string;
  spec: ResNetSpec;
  train: AnyDataset;
  test: AnyDataset;
  recipe: Recipe;
  seed?: number;
  device?: DeviceName;
  /** Training images evaluated in eval mode after each epoch (default 10,000; 0 for none). */
  trainEvalImages?: number;
  /** Record per-layer gradient norms at initialisation and after each epoch (default true). */
  gradients?: boolean;
  /** Start over even if the folder holds a run. */
  fresh?: boolean;
  signal?: AbortSignalLike;
  /** Train data-parallel over these ranks; rank 0 alone writes the checkpoint and `run.json`. */
  distributed?: World;
  onBatch?(logs: BatchLogs, info: { totalSteps: number; step: number }): void;
  onEpoch?(point: CurvePoint): void;
  onResume?(info: { epoch: number }): void;
}

const RECORD_KEY = 'resnet_wgpu.run';
const CHECKPOINT = 'checkpoint.safetensors';

async function firstBatch(data: AnyDataset, normalization: Normalization, size: number): Promise<Batch> {
  const loader = new DataLoader(data, { batchSize: Math.min(size, data.length), shuffle: false, normalize: normalization });
  for await (const b of loader.epoch(0)) return b;
  throw new Error('cannot take a probe batch from an empty dataset');
}

/** The run recorded in a run folder's checkpoint, if any. */
export async function readRun(dir: string, device?: DeviceName): Promise<{ record: RunRecord; model: Model } | undefined> {
  const path = join(dir, CHECKPOINT);
  if (!existsSync(path)) return undefined;
  let model: Model;
  try {
    model = await Model.load(path, device ? { device } : {});
  } catch (e) {
    throw new Error(`cannot resume the run in ${dir}: ${(e as Error).message} (delete the folder or pass fresh)`);
  }
  const raw = model.checkpointMetadata[RECORD_KEY];
  if (raw === undefined) throw new Error(`checkpoint ${path} was not written by an experiment run (no ${RECORD_KEY} metadata)`);
  return { record: JSON.parse(raw) as RunRecord, model };
}

/**
 * Trains `spec` with `recipe`, evaluating on `test` after each epoch, and checkpoints the model
 * with its curves after every epoch. Called again on the same folder, it resumes after the last
 * finished epoch (the continuation is the same as an uninterrupted run), or returns the record at
 * once if the run is complete.
 */
export async function trackedRun(options: TrackedRunOptions): Promise<{ record: RunRecord; model: Model }> {
  const { dir, recipe } = options;
  const seed = options.seed ?? 0;
  await mkdir(dir, { recursive: true });
  const fitOptions = recipeFitOptions(recipe);
  let model: Model | undefined;
  let record: RunRecord | undefined;
  const previous = options.fresh ? undefined : await readRun(dir, options.device);
  if (previous !== undefined) {
    const same = JSON.stringify(previous.record.spec) === JSON.stringify(options.spec) && JSON.stringify(previous.record.recipe) === JSON.stringify(recipe) && previous.record.seed === seed;
    if (!same) {
      previous.model.dispose();
      throw new Error(
        `${dir} holds a different run (${previous.record.name}, recipe ${previous.record.recipe.name}${previous.record.recipe.name === recipe.name ? ' with other settings' : ''}, seed ${previous.record.seed}); use another output folder or start fresh`,
      );
    }
    ({ model, record } = previous);
    if (record.complete) return { record, model };
    if (options.device !== undefined && options.device !== 'auto' && options.device !== model.device) {
      model.dispose();
      model = (await Model.load(join(dir, CHECKPOINT), { device: options.device })) as Model;
    }
    options.onResume?.({ epoch: record.curve.length });
  }
  if (model === undefined || record === undefined) {
    model = Model.create(options.spec, { seed, ...(options.device ? { device: options.device } : {}) });
    record = {
      name: options.name,
      spec: options.spec,
      recipe,
      seed,
      device: model.device,
      numParameters: model.numParameters,
      curve: [],
      steps: [],
      gradients: [],
      complete: false,
    };
  }
  const run = record;
  const net = model;
  const trainEvalImages = Math.min(options.trainEvalImages ?? 10000, options.train.length);
  const trainEval = trainEvalImages > 0 ? options.train.take(trainEvalImages) : undefined;
  const wantGradients = options.gradients ?? true;
  let probe: Batch | undefined;
  const probeGradients = async (epoch: number, norm: Normalization): Promise<void> => {
    if (!wantGradients || run.gradients.some((g) => g.epoch === epoch)) return;
    probe ??= await firstBatch(options.train, norm, 128);
    const layers = await net.gradientNorms(probe.images, probe.labels, probe.shape);
    run.gradients.push({ epoch, layers: layers.map((l) => ({ name: l.name, kernel: l.kernel, norm: l.norm })) });
  };
  let totalSteps = 0;
  let epochs = 0;
  // Training error over stretches of about a tenth of an epoch; kept once their epoch is saved.
  let stride = 1;
  let pending: StepPoint[] = [];
  let stretch = { loss: 0, correct: 0, seen: 0, steps: 0 };
  const closeStretch = (epoch: number): void => {
    if (stretch.seen === 0) return;
    pending.push({ epoch: epoch + 1, iteration: net.step, trainLoss: stretch.loss / stretch.seen, trainError: 100 * (1 - stretch.correct / stretch.seen) });
    stretch = { loss: 0, correct: 0, seen: 0, steps: 0 };
  };
  const world = options.distributed?.isDistributed === true ? options.distributed : undefined;
  const save = async (): Promise<void> => {
    if (world !== undefined && world.rank !== 0) return; // one writer
    await net.save(join(dir, CHECKPOINT), { [RECORD_KEY]: JSON.stringify(run) });
    await writeAtomic(join(dir, 'run.json'), JSON.stringify(run, null, 1));
  };
  await fit(net, options.train, {
    ...fitOptions,
    validationData: options.test,
    seed,
    initialEpoch: run.curve.length,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(world !== undefined ? { distributed: world } : {}),
    callbacks: {
      onTrainBegin: async (info) => {
        totalSteps = info.totalSteps;
        epochs = info.epochs;
        stride = Math.max(1, Math.round(info.batchesPerEpoch / 10));
        // fit has set the model's normalisation by now, so the probe batch matches training.
        if (run.curve.length === 0 && net.normalization) await probeGradients(0, net.normalization);
      },
      onBatchEnd: (step, logs) => {
        stretch.loss += logs.loss * logs.size;
        stretch.correct += logs.acc * logs.size;
        stretch.seen += logs.size;
        if (++stretch.steps >= stride) closeStretch(logs.epoch);
        options.onBatch?.(logs, { totalSteps, step: net.step });
      },
      onEpochEnd: async (epoch, logs) => {
        const started = performance.now();
        const norm = net.normalization as Normalization;
        const point: CurvePoint = {
          epoch: epoch + 1,
          iteration: logs.step,
          lr: logs.lr,
          trainLoss: logs.loss,
          trainError: 100 * (1 - logs.acc),
          testLoss: logs.valLoss ?? NaN,
          testError: 100 * (1 - (logs.valAcc ?? NaN)),
          seconds: 0,
        };
        if (logs.valTop5 !== undefined) point.testTop5Error = 100 * (1 - logs.valTop5);
        if (trainEval !== undefined) {
          const r = await net.evaluate(trainEval, { normalize: norm, ...(world !== undefined ? { distributed: world } : {}) });
          point.trainEvalError = 100 * (1 - r.top1);
        }
        await probeGradients(epoch + 1, norm);
        point.seconds = logs.seconds + (performance.now() - started) / 1000;
        run.curve.push(point);
        closeStretch(epoch);
        run.steps = [...(run.steps ?? []), ...pending];
        pending = [];
        run.complete = epoch + 1 >= epochs;
        await save();
        options.onEpoch?.(point);
      },
    },
  });
  // Rank 0's last checkpoint is on disk before any rank reads it (the responses experiment does).
  await world?.barrier();
  return { record: run, model: net };
}
