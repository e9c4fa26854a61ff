/**
 * The training loop, in TypeScript: epochs, TF.js-style callbacks, validation, cancellation.
 * Each batch is one `trainStep` call; Rust does forward, backward and the update.
 *
 * @module
 */

import { DataLoader, resolveNormalization, type AugmentOptions, type Dataset, type Normalization } from './data.js';
import type { Model } from './model.js';
import { resolveSchedule, sgd, type ScheduleOption, type SgdConfig, type SgdOptions } from './optim.js';

/** Logs passed to `onBatchEnd`. */
export interface BatchLogs {
  /** Mean loss of this batch. */
  loss: number;
  /** Top-1 accuracy of this batch (training mode). */
  acc: number;
  /** The learning rate this step used. */
  lr: number;
  /** Images per second since the epoch began (loading included). */
  imgPerSec: number;
  /** Index of the batch within its epoch. */
  batch: number;
  /** Images in this batch. */
  size: number;
  epoch: number;
}

/** Logs passed to `onEpochEnd`. */
export interface EpochLogs {
  /** Mean training loss over the epoch. */
  loss: number;
  /** Training top-1 accuracy over the epoch. */
  acc: number;
  valLoss?: number;
  valAcc?: number;
  valTop5?: number;
  /** Wall-clock seconds of the epoch (validation included). */
  seconds: number;
}

/** Callbacks; each may return a Promise, which is awaited. */
export interface Callbacks {
  /** Once, before the first batch. */
  onTrainBegin?(info: { epochs: number; batchesPerEpoch: number; totalSteps: number; optimizer: SgdConfig }): void | Promise<void>;
  /** After each batch; `step` counts batches of this run from 1. */
  onBatchEnd?(step: number, logs: BatchLogs): void | Promise<void>;
  /** After each epoch (and its validation); `epoch` counts from 0. */
  onEpochEnd?(epoch: number, logs: EpochLogs): void | Promise<void>;
  /** Once, at the end (also after an abort). */
  onTrainEnd?(history: History): void | Promise<void>;
}

/** Options of {@link fit}. */
export interface FitOptions {
  /** Default 1. */
  epochs?: number;
  /** Default 128. */
  batchSize?: number;
  /** SGD options (default: the paper's lr 0.1, momentum 0.9, weight decay 1e-4). */
  optimizer?: SgdOptions;
  /**
   * Learning-rate schedule; overrides `optimizer.schedule`. Relative schedules (e.g.
   * `schedules.paper()`: /10 at 50% and 75%) are resolved against epochs x batches per epoch.
   */
  schedule?: ScheduleOption;
  /** `true` for the paper's pad-4 crop + flip (default none). */
  augment?: boolean | AugmentOptions;
  /** Default true. */
  shuffle?: boolean;
  /** Default `'dataset'`: the training set's per-channel mean/std (also used for validation). */
  normalize?: 'dataset' | 'none' | Normalization;
  /** Evaluated after every epoch. */
  validationData?: Dataset;
  /** Default 256. */
  validationBatchSize?: number;
  callbacks?: Callbacks;
  /**
   * Cancels between batches. `fit` then resolves normally with `history.aborted === true` (the
   * model keeps the updates made so far; save it if you like). It does not throw.
   */
  signal?: AbortSignal;
  /** Seeds shuffling and augmentation (default 0). */
  seed?: number;
  /**
   * The epoch to start from (default 0), to resume a run: `epochs` stays the run's total, the
   * loader draws epoch `initialEpoch`'s shuffle and augmentation, and relative schedules keep the
   * run's milestones (they are placed `initialEpoch` epochs before the model's current step).
   * Save with `model.save` (momentum buffers and step included), `Model.load`, then
   * `fit(model, data, { ...sameOptions, initialEpoch })` gives the parameters of an
   * uninterrupted run.
   */
  initialEpoch?: number;
}

/** What {@link fit} returns: per-epoch metrics (Keras/TF.js style). */
export interface History {
  /** Epoch indices completed. */
  epoch: number[];
  history: { loss: number[]; acc: number[]; valLoss: number[]; valAcc: number[] };
  /** True when `signal` stopped the run early. */
  aborted: boolean;
  /** Optimizer steps taken in this run. */
  steps: number;
  /** Normalisation used (also stored on the model). */
  normalization: Normalization;
}

/**
 * Trains `model` on `dataset`. The model's {@link Model.normalization} is set to the training
 * normalisation, so `evaluate` and `save` use it afterwards.
 */
export async function fit(model: Model, dataset: Dataset, options: FitOptions = {}): Promise<History> {
  const epochs = options.epochs ?? 1;
  if (!Number.isInteger(epochs) || epochs < 1) throw new Error(`epochs must be a positive integer, got ${epochs}`);
  const normalization = resolveNormalization(options.normalize, dataset);
  const loader = new DataLoader(dataset, {
    batchSize: options.batchSize ?? 128,
    shuffle: options.shuffle ?? true,
    augment: options.augment ?? false,
    normalize: normalization,
    seed: options.seed ?? 0,
  });
  const batchesPerEpoch = loader.length;
  const totalSteps = epochs * batchesPerEpoch;
  const initialEpoch = options.initialEpoch ?? 0;
  if (!Number.isInteger(initialEpoch) || initialEpoch < 0 || initialEpoch >= epochs) {
    throw new Error(`initialEpoch must be an integer in [0, epochs), got ${initialEpoch} with epochs ${epochs}`);
  }
  const optimizerOptions = sgd({ ...options.optimizer, ...(options.schedule ? { schedule: options.schedule } : {}) });
  // Where this run's step 0 was: relative schedules are placed there, so a resumed run keeps them.
  const runStart = Math.max(0, model.step - initialEpoch * batchesPerEpoch);
  const schedule = resolveSchedule(optimizerOptions.schedule, totalSteps, runStart);
  const optimizer = model.setOptimizer({ ...optimizerOptions, schedule }, { totalSteps });
  model.normalization = normalization;

  const callbacks = options.callbacks ?? {};
  const signal = options.signal;
  const history: History = {
    epoch: [],
    history: { loss: [], acc: [], valLoss: [], valAcc: [] },
    aborted: false,
    steps: 0,
    normalization,
  };
  await callbacks.onTrainBegin?.({ epochs, batchesPerEpoch, totalSteps, optimizer });

  for (let epoch = initialEpoch; epoch < epochs && !history.aborted; epoch++) {
    const started = performance.now();
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    let batchIndex = 0;
    for await (const batch of loader.epoch(epoch)) {
      if (signal?.aborted) {
        history.aborted = true;
        break;
      }
      const s = await model.trainStep(batch.images, batch.labels, batch.shape);
      lossSum += s.loss * s.batch;
      correct += s.correct;
      seen += s.batch;
      history.steps++;
      const seconds = (performance.now() - started) / 1000;
      await callbacks.onBatchEnd?.(history.steps, {
        loss: s.loss,
        acc: s.acc,
        lr: s.lr,
        imgPerSec: seconds > 0 ? seen / seconds : 0,
        batch: batchIndex++,
        size: s.batch,
        epoch,
      });
    }
    if (history.aborted || signal?.aborted) {
      history.aborted = true;
      break;
    }
    const logs: EpochLogs = { loss: seen ? lossSum / seen : 0, acc: seen ? correct / seen : 0, seconds: 0 };
    if (options.validationData !== undefined) {
      const v = await model.evaluate(options.validationData, {
        batchSize: options.validationBatchSize ?? 256,
        normalize: normalization,
      });
      logs.valLoss = v.loss;
      logs.valAcc = v.top1;
      logs.valTop5 = v.top5;
      history.history.valLoss.push(v.loss);
      history.history.valAcc.push(v.top1);
    }
    logs.seconds = (performance.now() - started) / 1000;
    history.epoch.push(epoch);
    history.history.loss.push(logs.loss);
    history.history.acc.push(logs.acc);
    await callbacks.onEpochEnd?.(epoch, logs);
  }
  await callbacks.onTrainEnd?.(history);
  return history;
}

/** A model with fixed fit options, for repeated runs: `new Trainer(model, opts).fit(train)`. */
export class Trainer {
  readonly model: Model;
  readonly options: FitOptions;

  constructor(model: Model, options: FitOptions = {}) {
    this.model = model;
    this.options = options;
  }

  /** {@link fit} with this trainer's options, overridden by `overrides`. */
  fit(dataset: Dataset, overrides: FitOptions = {}): Promise<History> {
    return fit(this.model, dataset, { ...this.options, ...overrides });
  }
}
