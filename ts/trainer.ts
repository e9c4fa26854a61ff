/**
 * The training loop, in TypeScript: epochs, TF.js-style callbacks, validation, cancellation.
 * Each batch is one `trainStep` call; Rust does forward, backward and the update.
 *
 * @module
 */

import {
  DataLoader,
  resolveNormalization,
  type AnyDataset,
  type AugmentOptions,
  type Normalization,
  type NormalizeOption,
} from './data.js';
import { reportAborted, type AbortSignalLike } from './abort.js';
import type { World } from './distributed.js';
import { agreeOnRun, failRank } from './distributed-fit.js';
import type { Model, Precision, TrainStepResult } from './model.js';
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
  /** Precision `'mixed'`: the loss scale this step used (`null` in `'fp32'`). */
  lossScale: number | null;
  /** Precision `'mixed'`: the step was skipped because its gradients overflowed. */
  skipped: boolean;
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
  /** Learning rate of the epoch's last step. */
  lr: number;
  /** The model's optimizer step count at the end of the epoch. */
  step: number;
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
  /**
   * Images per step (default 128). With `distributed`, images per step **per rank**: a step then
   * takes `world.size` x `batchSize` images in all (the global batch), and the learning rate and
   * schedule apply to that global batch.
   */
  batchSize?: number;
  /** SGD options (default: the paper's lr 0.1, momentum 0.9, weight decay 1e-4). */
  optimizer?: SgdOptions;
  /**
   * Learning-rate schedule; overrides `optimizer.schedule`. Relative schedules (e.g.
   * `schedules.paper()`: /10 at 50% and 75%) are resolved against epochs x batches per epoch.
   */
  schedule?: ScheduleOption;
  /**
   * `true` for the paper's pad-4 crop + flip (default none). For an image folder the default is
   * `true`: its training transform (random resized crop or scale augmentation, and flip);
   * `false` trains on its evaluation centre crops.
   */
  augment?: boolean | AugmentOptions;
  /** Default true. */
  shuffle?: boolean;
  /**
   * Default `'dataset'`: the training set's per-channel mean/std (an image folder's `normalize`
   * option); `'perPixelMean'`: the training set's mean image subtracted (the paper's CIFAR
   * preprocessing); `'none'` or explicit values. The resolved normalisation is used for
   * validation too, stored on the model and saved in checkpoints.
   */
  normalize?: NormalizeOption;
  /** Evaluated after every epoch (an image folder with its evaluation view). */
  validationData?: AnyDataset;
  /** Default 256. */
  validationBatchSize?: number;
  callbacks?: Callbacks;
  /**
   * Cancels between batches. `fit` then resolves with `history.aborted === true` (the model keeps
   * the updates made so far; save it if you like) and writes one line on stderr saying at which
   * step of how many it stopped, and why. It does not throw; `Model.evaluate` behaves the same way.
   * Leave it out for a run that must finish: a timeout here cuts training short.
   */
  signal?: AbortSignalLike;
  /** Seeds shuffling and augmentation (default 0). */
  seed?: number;
  /**
   * Sets the model's precision for this run and after (see {@link Precision}); left out, the
   * model keeps its own (`'fp32'` unless created or loaded with another).
   */
  precision?: Precision;
  /**
   * Steps between two reads of the training figures (loss, accuracy) from the device. Default 1
   * on the CPU, where a read costs nothing, and 10 on a GPU, where a read waits for all the work
   * queued before it and so leaves the device idle while the host prepares the next step.
   * `onBatchEnd` still runs once for every step, in order, with that step's own figures; the
   * calls for the steps between two reads come together after the last of them (and
   * `model.step` is then ahead of the step they report). While `warmStart` is warming, every
   * step is read. See {@link Model.queueTrainStep}.
   */
  reportEvery?: number;
  /**
   * The epoch to start from (default 0), to resume a run: `epochs` stays the run's total, the
   * loader draws epoch `initialEpoch`'s shuffle and augmentation, and relative schedules keep the
   * run's milestones (they are placed `initialEpoch` epochs before the model's current step).
   * Save with `model.save` (momentum buffers and step included), `Model.load`, then
   * `fit(model, data, { ...sameOptions, initialEpoch })` gives the parameters of an
   * uninterrupted run.
   */
  initialEpoch?: number;
  /**
   * Length of the run in optimizer steps instead of epochs (the paper counts iterations: 64k for
   * CIFAR). The last epoch stops at this step; `epochs` is then derived and ignored.
   */
  iterations?: number;
  /**
   * Start at a lower rate until the running training error falls below a threshold, then switch
   * to the configured rate and schedule: the paper's ResNet-110 recipe (lr 0.01 until training
   * error < 80%, about 400 iterations, then 0.1). Applies to runs started at epoch 0.
   */
  warmStart?: WarmStartOptions;
  /**
   * Divide the rate when the monitored error stops improving (the paper's ImageNet recipe: /10 when
   * the error plateaus). Monitors validation error when `validationData` is given, else training
   * error; checked once per epoch. Replaces the schedule by a constant rate that this changes.
   */
  plateau?: PlateauOptions;
  /**
   * Data-parallel training over the ranks of `await distributed.init()` (a run started with
   * `mpiexec -n N`; a one-process world trains as without it). Rank 0's parameters, buffers,
   * momentum and step count are copied to every rank first (after checking that every rank has
   * the same spec, optimizer and options); each rank trains on its shard of every global batch
   * (one shuffle shared by all ranks); gradients are averaged over the ranks, so every rank holds
   * the same parameters after every step. Logs, callbacks' figures and the validation are over
   * all ranks (the same on every rank); callbacks run on every rank, so print and save on rank 0
   * (`world.rank === 0`). Steps, epochs and schedules count global steps. If anything throws on a
   * rank, that rank stops every rank (`world.abort`) with `resnet-wgpu: rank R failed: ...`.
   *
   * Resuming: load the same checkpoint on every rank and pass `initialEpoch`, as alone. On a
   * different number of ranks the weights, momentum and step count carry over exactly, and
   * relative schedules keep their milestones at the same epochs of the run; the data order and
   * which images share a step do not (the global batch changes).
   */
  distributed?: World;
  /**
   * With `distributed`: batch-norm statistics over the global batch (N ranks x batch b train as
   * one process with batch N x b). Default false: each rank normalises with its own batch's
   * statistics (as PyTorch DDP without SyncBatchNorm); the running statistics are then rank 0's.
   */
  syncBatchNorm?: boolean;
}

/** See {@link FitOptions.warmStart}. */
export interface WarmStartOptions {
  /** The low rate (paper: 0.01). */
  lr: number;
  /** Switch once the running training error (a fraction) is below this (paper: 0.8). */
  untilTrainErrorBelow: number;
  /** Batches averaged for the running error (default 20). */
  window?: number;
  /** Switch after this many steps at the latest (default: never forced). */
  maxSteps?: number;
}

/** See {@link FitOptions.plateau}. */
export interface PlateauOptions {
  /** Multiplier of the rate (default 0.1). */
  factor?: number;
  /** Epochs without improvement before dividing (default 3). */
  patience?: number;
  /** Improvement smaller than this (in error fraction) does not count (default 0.001). */
  minDelta?: number;
  /** Never go below this rate (default 1e-5). */
  minLr?: number;
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
  /** Precision `'mixed'`: batches whose step was skipped because their gradients overflowed (not in `steps`). */
  skippedSteps: number;
  /** Normalisation used (also stored on the model). */
  normalization: Normalization;
}

/**
 * Trains `model` on `dataset`. The model's {@link Model.normalization} is set to the training
 * normalisation, so `evaluate` and `save` use it afterwards.
 */
export async function fit(model: Model, dataset: AnyDataset, options: FitOptions = {}): Promise<History> {
  const world = options.distributed?.isDistributed === true ? options.distributed : undefined;
  if (world === undefined) return train(model, dataset, options, undefined);
  try {
    return await train(model, dataset, options, world);
  } catch (error) {
    // The other ranks would wait for this one in their next collective: stop them all now.
    return failRank(world, error);
  }
}

async function train(model: Model, dataset: AnyDataset, options: FitOptions, world: World | undefined): Promise<History> {
  const callbacks = options.callbacks ?? {};
  const signal = options.signal;
  const iterations = options.iterations;
  if (iterations !== undefined && (!Number.isInteger(iterations) || iterations < 1)) {
    throw new Error(`iterations must be a positive integer, got ${iterations}`);
  }
  if (options.precision !== undefined) model.setPrecision(options.precision);
  const reportEvery = options.reportEvery ?? (model.device === 'gpu' ? 10 : 1);
  if (!Number.isInteger(reportEvery) || reportEvery < 1) {
    throw new Error(`reportEvery must be a positive integer, got ${reportEvery}`);
  }
  const normalization = resolveNormalization(options.normalize, dataset);
  const loader = new DataLoader(dataset, {
    batchSize: options.batchSize ?? 128,
    shuffle: options.shuffle ?? true,
    augment: options.augment ?? dataset.augmentsByDefault,
    normalize: normalization,
    seed: options.seed ?? 0,
    ...(world === undefined ? {} : { shard: { rank: world.rank, count: world.size } }),
  });
  const batchesPerEpoch = loader.length;
  const epochs = iterations === undefined ? (options.epochs ?? 1) : Math.ceil(iterations / batchesPerEpoch);
  if (!Number.isInteger(epochs) || epochs < 1) throw new Error(`epochs must be a positive integer, got ${epochs}`);
  const totalSteps = iterations ?? epochs * batchesPerEpoch;
  const initialEpoch = options.initialEpoch ?? 0;
  if (!Number.isInteger(initialEpoch) || initialEpoch < 0 || initialEpoch >= epochs) {
    throw new Error(`initialEpoch must be an integer in [0, epochs), got ${initialEpoch} with epochs ${epochs}`);
  }
  const optimizerOptions = sgd({ ...options.optimizer, ...(options.schedule ? { schedule: options.schedule } : {}) });
  // Where this run's step 0 was: relative schedules are placed there, so a resumed run keeps them.
  // Negative when the run resumes with more steps per epoch than it had (fewer ranks, a smaller
  // batch): the milestones then still fall at the same epochs of the run.
  const runStart = model.step - initialEpoch * batchesPerEpoch;
  const schedule = resolveSchedule(optimizerOptions.schedule, totalSteps, runStart);
  const optimizer = model.setOptimizer({ ...optimizerOptions, schedule }, { totalSteps });
  model.normalization = normalization;
  const lrControl = new LrControl(model, optimizer, options, initialEpoch === 0);
  if (world !== undefined) {
    // Every rank must stop at the same step and epoch, or one would wait for the others forever.
    await agreeOnRun(world, {
      'training images': dataset.length,
      'validation images': options.validationData?.length ?? -1,
      'batches per epoch': batchesPerEpoch,
      epochs,
      'total steps': totalSteps,
      'initial epoch': initialEpoch,
      'start step (model.step)': model.step,
    });
    await model.attachDistributed(world, { syncBatchNorm: options.syncBatchNorm ?? false });
  }
  // Ranks stop together: a signal that fired on one rank stops all of them at the same batch.
  const stopRequested = async (): Promise<boolean> => {
    if (world === undefined || signal === undefined) return signal?.aborted === true;
    const [votes = 0] = await world.allReduceSum([signal.aborted ? 1 : 0]);
    return votes > 0;
  };

  const history: History = {
    epoch: [],
    history: { loss: [], acc: [], valLoss: [], valAcc: [] },
    aborted: false,
    steps: 0,
    skippedSteps: 0,
    normalization,
  };
  await callbacks.onTrainBegin?.({ epochs, batchesPerEpoch, totalSteps, optimizer });

  for (let epoch = initialEpoch; epoch < epochs && !history.aborted; epoch++) {
    const started = performance.now();
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    let batchIndex = 0;
    let lastLr = 0;
    let queued = 0;
    const report = async (s: TrainStepResult): Promise<void> => {
      lastLr = s.lr;
      lrControl.afterStep(s.correct, s.batch);
      lossSum += s.loss * s.batch;
      correct += s.correct;
      seen += s.batch;
      if (s.skipped) history.skippedSteps++;
      else history.steps++;
      const seconds = (performance.now() - started) / 1000;
      await callbacks.onBatchEnd?.(history.steps + history.skippedSteps, {
        loss: s.loss,
        acc: s.acc,
        lr: s.lr,
        imgPerSec: seconds > 0 ? seen / seconds : 0,
        batch: batchIndex++,
        size: s.batch,
        epoch,
        lossScale: s.lossScale,
        skipped: s.skipped,
      });
    };
    const reportQueued = async (): Promise<void> => {
      if (queued === 0) return;
      queued = 0;
      for (const s of await model.takeStepResults()) await report(s);
    };
    for await (const batch of loader.epoch(epoch)) {
      if (await stopRequested()) {
        history.aborted = true;
        break;
      }
      if (model.step - runStart >= totalSteps) break;
      // The loader's batch goes to Rust as it is: no copy of its images through JS.
      if (reportEvery === 1 || lrControl.warming) {
        await reportQueued();
        await report(await model.trainStep(batch));
        continue;
      }
      await model.queueTrainStep(batch);
      if (++queued >= reportEvery) await reportQueued();
    }
    await reportQueued();
    if (history.aborted || (await stopRequested())) {
      history.aborted = true;
      break;
    }
    const logs: EpochLogs = {
      loss: seen ? lossSum / seen : 0,
      acc: seen ? correct / seen : 0,
      seconds: 0,
      lr: lastLr,
      step: model.step,
    };
    if (options.validationData !== undefined) {
      // Distributed: each rank evaluates its shard and the sums are reduced (the whole set's figures).
      const v = await model.evaluate(options.validationData, {
        batchSize: options.validationBatchSize ?? 256,
        normalize: normalization,
        ...(world === undefined ? {} : { distributed: world }),
      });
      logs.valLoss = v.loss;
      logs.valAcc = v.top1;
      logs.valTop5 = v.top5;
      history.history.valLoss.push(v.loss);
      history.history.valAcc.push(v.top1);
    }
    lrControl.afterEpoch(logs.valAcc !== undefined ? 1 - logs.valAcc : 1 - logs.acc);
    logs.seconds = (performance.now() - started) / 1000;
    history.epoch.push(epoch);
    history.history.loss.push(logs.loss);
    history.history.acc.push(logs.acc);
    await callbacks.onEpochEnd?.(epoch, logs);
  }
  if (world !== undefined) await model.detachDistributed(); // the model trains and evaluates alone again
  if (history.aborted && signal !== undefined && (world === undefined || world.rank === 0)) {
    const done = model.step - runStart;
    reportAborted('fit', signal, `after step ${done} of ${totalSteps} (epoch ${history.epoch.length + initialEpoch + 1} of ${epochs})`,
      'the model keeps the updates made so far and history.aborted is true');
  }
  await callbacks.onTrainEnd?.(history);
  return history;
}

/** Changes the rate mid-run for {@link FitOptions.warmStart} and {@link FitOptions.plateau}. */
class LrControl {
  readonly #model: Model;
  readonly #config: SgdConfig;
  readonly #warm: WarmStartOptions | undefined;
  readonly #plateau: Required<PlateauOptions> | undefined;
  #warming = false;
  #steps = 0;
  #window: Array<[number, number]> = [];
  #best = Infinity;
  #bad = 0;
  #lr: number;

  constructor(model: Model, config: SgdConfig, options: FitOptions, fromStart: boolean) {
    this.#model = model;
    this.#config = config;
    this.#lr = config.lr;
    this.#warm = options.warmStart;
    if (options.plateau !== undefined) {
      const p = options.plateau;
      this.#plateau = { factor: p.factor ?? 0.1, patience: p.patience ?? 3, minDelta: p.minDelta ?? 0.001, minLr: p.minLr ?? 1e-5 };
      if (!(this.#plateau.factor > 0 && this.#plateau.factor < 1)) throw new Error(`plateau.factor must lie in (0, 1), got ${this.#plateau.factor}`);
      this.#model.setOptimizer({ ...config, schedule: { kind: 'constant' } });
    }
    const warm = this.#warm;
    if (warm !== undefined && fromStart) {
      if (!(warm.lr > 0) || !(warm.untilTrainErrorBelow > 0 && warm.untilTrainErrorBelow <= 1)) {
        throw new Error(`warmStart needs lr > 0 and untilTrainErrorBelow in (0, 1], got ${JSON.stringify(warm)}`);
      }
      this.#warming = true;
      this.#model.setOptimizer({ ...config, lr: warm.lr, schedule: { kind: 'constant' }, warmupSteps: 0 });
    }
  }

  /** True while the warm-start rate is in force (its end depends on every step's accuracy). */
  get warming(): boolean {
    return this.#warming;
  }

  afterStep(correct: number, batch: number): void {
    const warm = this.#warm;
    if (!this.#warming || warm === undefined) return;
    this.#steps++;
    this.#window.push([correct, batch]);
    const size = warm.window ?? 20;
    if (this.#window.length > size) this.#window.shift();
    const [c, n] = this.#window.reduce(([a, b], [x, y]) => [a + x, b + y], [0, 0]);
    const full = this.#window.length === size;
    if ((full && n > 0 && 1 - c / n < warm.untilTrainErrorBelow) || (warm.maxSteps !== undefined && this.#steps >= warm.maxSteps)) {
      this.#warming = false;
      this.#model.setOptimizer(this.#plateau ? { ...this.#config, lr: this.#lr, schedule: { kind: 'constant' } } : this.#config);
    }
  }

  afterEpoch(error: number): void {
    const p = this.#plateau;
    if (p === undefined || this.#warming) return;
    if (error < this.#best - p.minDelta) {
      this.#best = error;
      this.#bad = 0;
      return;
    }
    if (++this.#bad >= p.patience && this.#lr > p.minLr) {
      this.#lr = Math.max(p.minLr, this.#lr * p.factor);
      this.#bad = 0;
      this.#model.setOptimizer({ ...this.#config, lr: this.#lr, schedule: { kind: 'constant' } });
    }
  }
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
  fit(dataset: AnyDataset, overrides: FitOptions = {}): Promise<History> {
    return fit(this.model, dataset, { ...this.options, ...overrides });
  }
}
