/**
 * `Model`: a ResNet whose parameters, buffers, optimizer and autograd tape live in Rust. Heavy
 * calls return Promises and run on the libuv thread pool, so the event loop stays free.
 *
 * @module
 */

import { reportAborted, type AbortSignalLike } from './abort.js';
import {
  DataLoader,
  nativeBatchOf,
  parseNormalization,
  serializeNormalization,
  type AnyDataset,
  type Batch,
  type ImageFolderView,
  type Normalization,
  type NormalizeOption,
} from './data.js';
import { nativeWorldOf, type World } from './distributed.js';
import { evaluateViews } from './evaluate.js';
import { native, type NativeBatch, type NativeModel, type NativeViewScore, type TrainStats } from './native.js';
import { exportOnnx } from './onnx.js';
import { toSgdConfig, type SgdConfig, type SgdOptions } from './optim.js';
import { defaultInputSize, nameOf, type ResNetSpec } from './spec.js';
import { Tensor } from './tensor.js';
import * as check from './validate.js';

/**
 * Where the model runs. `'auto'` takes a hardware GPU when wgpu finds one and the CPU otherwise
 * (and says which once); `'gpu'` throws when there is no usable adapter.
 */
export type DeviceName = 'cpu' | 'gpu' | 'auto';

/**
 * The arithmetic of the convolutions and the classifier. `'fp32'` (the default) computes in f32
 * throughout. `'mixed'` works like PyTorch's automatic mixed precision: the GEMMs take f16
 * operands and sum in f32; batch norm, the loss, the optimizer and the weights stay f32, and the
 * loss is scaled dynamically (as `GradScaler` does: a step whose gradients overflow is skipped and
 * the scale halved). `'mixed'` needs a GPU with f16 shaders; elsewhere it throws, naming what is
 * missing (`npx resnet-wgpu info` says what each adapter offers).
 */
export type Precision = 'fp32' | 'mixed';

/** Options of {@link Model.create}. */
export interface CreateOptions {
  /** Seeds the weight initialisation (default 0): the same seed gives the same weights. */
  seed?: number;
  /** Default `'auto'`. */
  device?: DeviceName;
  /** Default `'fp32'`. */
  precision?: Precision;
}

/** An NCHW shape. */
export type Shape4 = readonly [number, number, number, number];

/** Result of one {@link Model.trainStep}. */
export interface TrainStepResult {
  /** Mean cross-entropy of the batch (before the update). */
  loss: number;
  /** Top-1 accuracy of the batch, training mode, before the update. */
  acc: number;
  correct: number;
  batch: number;
  /**
   * The learning rate this step used, as configured: the schedule's value computed in f64 from
   * the settings as written (lr 0.1 reports 0.1, and 0.01 after a /10 milestone), not the f32
   * the update applies widened to 0.10000000149011612.
   */
  lr: number;
  /** Optimizer steps taken so far, this one included (a skipped step is not counted). */
  step: number;
  /** Precision `'mixed'`: the loss scale this step used; `null` in `'fp32'`. */
  lossScale: number | null;
  /** Precision `'mixed'`: the gradients overflowed, so the weights were left as they were and the scale halved. */
  skipped: boolean;
}

function stepResult(s: TrainStats): TrainStepResult {
  return {
    loss: s.loss,
    acc: s.batch > 0 ? s.correct / s.batch : 0,
    correct: s.correct,
    batch: s.batch,
    lr: s.lr,
    step: s.step,
    lossScale: s.lossScale ?? null,
    skipped: s.skipped,
  };
}

/** Result of {@link Model.evaluate}: means over the dataset. */
export interface EvaluateResult {
  loss: number;
  top1: number;
  top5: number;
  /** Images evaluated. */
  count: number;
  /** True when `signal` stopped the evaluation early: the means are over the first `count` images only. */
  aborted: boolean;
}

/** One row of {@link Model.summary}. */
export interface LayerRow {
  name: string;
  kind: string;
  outputShape: number[];
  params: number;
  /** Multiply-adds of the forward pass for one image. */
  macs: number;
}

/**
 * One convolution layer's response to a batch ({@link Model.layerResponses}): the quantity whose
 * standard deviation the paper's Figure 7 plots.
 */
export interface LayerResponse {
  /** torchvision-style layer name: `conv1` (the stem), `layer1.0.conv2`, `layer2.0.downsample.0`. */
  name: string;
  /** Kernel size: 3 for the paper's 3x3 layers; 1 for projections and bottleneck 1x1s; 7 for an ImageNet stem. */
  kernel: number;
  /** Standard deviation over every element of the response (N x C x H x W; population). */
  std: number;
  mean: number;
}

/** The loss gradient of one layer's weight ({@link Model.gradientNorms}). */
export interface GradNorm {
  /** `conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`, ..., `fc`. */
  name: string;
  /** Kernel size of a convolution; 0 for the fully connected classifier `fc`. */
  kernel: number;
  /** L2 norm of dL/dW, L the batch's mean cross-entropy (no weight decay). */
  norm: number;
  /** Elements of the weight (`norm / sqrt(numel)` is the root mean square). */
  numel: number;
}

/** Per-layer rows and totals; `toString()` renders a table. */
export interface ModelSummary {
  name: string;
  inputShape: number[];
  rows: LayerRow[];
  totalParams: number;
  totalMacs: number;
  /**
   * Where the input size came from: the `height`/`width` options, the data the model has seen
   * ({@link Model.inputSize}), or the family's default ({@link defaultInputSize}).
   */
  inputSource: 'options' | 'data' | 'default';
  toString(): string;
}

/** Metadata key holding the normalisation a model was trained with (a per-pixel mean included). */
const NORMALIZATION_KEY = 'normalization';

/** Metadata key holding the image size the model was trained at: `"28"`, or `"HxW"` when not square. */
const IMAGE_SIZE_KEY = 'imageSize';

/**
 * Labels in any of the accepted forms, as the Int32Array Rust takes.
 *
 * @throws Error naming `what` when a value is not an integer (1.5, or a Float32Array's 1.5, would
 * otherwise be truncated and trained on) or `labels` is not an array of numbers.
 */
export function toLabels(labels: Int32Array | Uint8Array | readonly number[], what = 'labels'): Int32Array {
  return check.labels(what, labels);
}

/**
 * A ResNet owned by Rust. Call {@link Model.dispose} to free its memory before the GC would.
 *
 * **Call order.** The asynchronous calls of one model (`trainStep`, `predict`, `evaluateBatch`,
 * `evaluate`, `layerResponses`, `gradientNorms`, `save`, `loadWeights`, `exportOnnx`) run one
 * at a time, in the order they were made (a per-model FIFO queue), whether or not each is awaited
 * before the next: eight `trainStep`s issued in a loop take steps 1 to 8 in loop order, exactly
 * as if each had been awaited. Inputs are taken as they are at the call (a buffer reused for the
 * next batch before the previous call finished does not change it). `evaluate` and `fit` queue
 * one call per batch, so calls made while they run take their place between two batches.
 * Synchronous methods (`setOptimizer`, `forward`, `parameter`, `step`, `summary`, ...) do not
 * wait for the queue: await pending calls first when their order matters. Different models do
 * not wait for each other.
 */
export class Model {
  readonly #native: NativeModel;
  readonly #spec: ResNetSpec;
  readonly #metadata: Readonly<Record<string, string>>;
  /** Native calls queued or running (see "Call order" above). */
  #pending = 0;
  /** Settles when the last queued call has settled. */
  #tail: Promise<unknown> = Promise.resolve();
  /** [height, width] of the images trained on (else evaluated on), or from the checkpoint. */
  #inputSize: [number, number] | undefined;
  /**
   * The input normalisation this model expects (set by `fit`, saved in checkpoints, restored by
   * `load`); `evaluate` uses it.
   */
  normalization: Normalization | undefined;

  private constructor(nativeModel: NativeModel, metadata: Record<string, string> = {}) {
    this.#native = nativeModel;
    this.#spec = JSON.parse(nativeModel.specJson()) as ResNetSpec;
    this.#metadata = metadata;
    const stored = metadata[NORMALIZATION_KEY];
    if (stored !== undefined) this.normalization = parseNormalization(stored);
    this.#inputSize = parseImageSize(metadata[IMAGE_SIZE_KEY]) ?? pixelMeanSize(this.normalization);
  }

  /**
   * Runs `call` after every call this model already has queued, or at once when none is (see
   * "Call order"). `call` must start its native work synchronously: the binding copies the
   * inputs then.
   */
  #serial<T>(call: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => call();
    const result = this.#pending === 0 ? run() : this.#tail.then(run, run);
    this.#pending++;
    const settled = (): void => {
      this.#pending--;
    };
    this.#tail = result.then(settled, settled);
    return result;
  }

  /** `value` itself when nothing is queued (the native call copies it now), else a copy taken now. */
  #snapshot<A extends Float32Array | Int32Array>(value: A): A {
    return (this.#pending === 0 ? value : value.slice()) as A;
  }

  /** Checks a labelled batch's arguments for `what` and takes its inputs as they are now (see "Call order"). */
  #labelledBatch(
    what: string,
    images: Float32Array,
    labels: Int32Array | Uint8Array | readonly number[],
    shape: Shape4 | undefined,
  ): { images: Float32Array; labels: Int32Array; shape: number[] } {
    check.float32Array(what, 'images', images);
    const y = toLabels(labels, what);
    const s4 = this.#shapeOf(what, images, y.length, shape);
    return { images: this.#snapshot(images), labels: this.#snapshot(y), shape: s4 };
  }

  /**
   * A labelled call's input: the loader's own batch when `input` is one JS has not read (it goes
   * to Rust as it is), else checked JS arrays (a {@link Batch}'s, or the loose arguments).
   */
  #labelledInput(
    what: string,
    input: Float32Array | Batch,
    labels: Int32Array | Uint8Array | readonly number[] | undefined,
    shape: Shape4 | undefined,
  ): { loaded: NativeBatch; shape: readonly number[] } | { loaded?: undefined; images: Float32Array; labels: Int32Array; shape: number[] } {
    if (!isBatch(input)) return this.#labelledBatch(what, input, labels as Int32Array | Uint8Array | readonly number[], shape);
    const loaded = nativeBatchOf(input);
    if (loaded !== undefined) return { loaded, shape: input.shape };
    return this.#labelledBatch(what, input.images, input.labels, input.shape);
  }

  /** The caller's metadata plus the normalisation this model expects, for a file it writes. */
  #fileMetadata(metadata: Record<string, string>): Record<string, string> {
    const meta: Record<string, string> = { ...metadata };
    if (this.normalization !== undefined) meta[NORMALIZATION_KEY] = serializeNormalization(this.normalization);
    return meta;
  }

  /** Remembers the image size of a batch that went through (training sizes win over evaluation's). */
  #noteInputSize(shape: readonly number[], training: boolean): void {
    if (training || this.#inputSize === undefined) this.#inputSize = [shape[2] ?? 0, shape[3] ?? 0];
  }

  /**
   * `[height, width]` of the images this model was trained on (else evaluated or predicted on),
   * or read from its checkpoint (metadata `imageSize`, or the per-pixel mean's shape);
   * `undefined` for a fresh model that has seen no data. {@link Model.summary} uses it.
   */
  get inputSize(): [number, number] | undefined {
    return this.#inputSize === undefined ? undefined : [...this.#inputSize];
  }

  /** @internal A model around a native one another module made (torchvision import). */
  static fromNative(nativeModel: NativeModel): Model {
    return new Model(nativeModel);
  }

  /** A freshly initialised model (He init, seeded). */
  static create(spec: ResNetSpec, options: CreateOptions = {}): Model {
    const model = new Model(new native.NativeModel(JSON.stringify(spec), options.seed ?? 0, options.device ?? 'auto'));
    return model.#withPrecision(options.precision);
  }

  /**
   * A model rebuilt from a checkpoint written by {@link Model.save}: architecture, weights,
   * buffers, optimizer state, step count and normalisation.
   */
  static async load(path: string, options: { device?: DeviceName; precision?: Precision } = {}): Promise<Model> {
    const nativeModel = await native.NativeModel.load(path, options.device ?? 'auto');
    // A mixed run's checkpoint holds its loss scale: setPrecision('mixed') takes it up again.
    return new Model(nativeModel, nativeModel.checkpointMetadata()).#withPrecision(options.precision);
  }

  /** This model in `precision` (if given); a refusal frees it before the error is thrown. */
  #withPrecision(precision: Precision | undefined): Model {
    if (precision === undefined) return this;
    try {
      this.setPrecision(precision);
    } catch (error) {
      this.dispose();
      throw error;
    }
    return this;
  }

  /** The architecture (a copy). */
  get spec(): ResNetSpec {
    return structuredClone(this.#spec);
  }

  /** A short name such as `ResNet-20`. */
  get name(): string {
    return nameOf(this.#spec);
  }

  /** Trainable parameters (weights and BN affine terms; not running statistics). */
  get numParameters(): number {
    return this.#native.numParameters();
  }

  /** Optimizer steps taken so far (a queued mixed-precision step counts once read: the device decides whether it is applied, and this reads what it decided). */
  get step(): number {
    return this.#native.step();
  }

  /** The metadata of the checkpoint this model was loaded from (empty for a new model). */
  get checkpointMetadata(): Readonly<Record<string, string>> {
    return this.#metadata;
  }

  /** Where the model's tensors live: `'cpu'` or `'gpu'` (what `'auto'` resolved to). */
  get device(): 'cpu' | 'gpu' {
    return this.#native.device() === 'gpu' ? 'gpu' : 'cpu';
  }

  /**
   * The GPU buffer pool, process-wide: `liveBytes` and `peakBytes`, what it holds from the driver
   * now and the most so far (it reaches a steady state after the first steps); `inUseBytes` and
   * `peakInUseBytes`, what live tensors take (the figure to compare with PyTorch's
   * `max_memory_allocated`); `dispatches`, the GPU kernels run so far (a difference counts a
   * step's). `null` for a model on the CPU.
   */
  memoryStats(): {
    liveBytes: number;
    peakBytes: number;
    inUseBytes: number;
    peakInUseBytes: number;
    dispatches: number;
  } | null {
    return this.#native.memoryStats() ?? null;
  }

  /** The arithmetic of the convolutions and the classifier (see {@link Precision}). */
  get precision(): Precision {
    return this.#native.precision() === 'mixed' ? 'mixed' : 'fp32';
  }

  /**
   * Computes in `precision` from now on. The weights stay f32 either way, so checkpoints,
   * evaluation and export do not depend on it. Throws on the CPU and on a GPU without f16 shaders
   * when `precision` is `'mixed'`. Like {@link Model.setOptimizer} it does not wait for queued calls.
   */
  setPrecision(precision: Precision): void {
    this.#native.setPrecision(check.oneOf('setPrecision', 'precision', precision, ['fp32', 'mixed'] as const));
  }

  /** Whether {@link Model.dispose} has been called. */
  get disposed(): boolean {
    return this.#native.disposed;
  }

  /**
   * Sets the optimizer (SGD). A schedule given relative to a run (fractions) needs
   * `run.totalSteps`; it is placed after the model's current step.
   */
  setOptimizer(options: SgdOptions = {}, run: { totalSteps?: number } = {}): SgdConfig {
    const config = toSgdConfig(options, run.totalSteps, this.step);
    this.#native.configureOptimizer(JSON.stringify(config));
    return config;
  }

  /**
   * The NCHW shape of a batch. Without `shape`, it is inferred as
   * `[labels.length, spec.inChannels, s, s]` for square images (s*s = pixels per image); pass
   * `shape` for anything else.
   */
  #shapeOf(what: string, images: Float32Array, n: number, shape: Shape4 | undefined): number[] {
    if (shape !== undefined) return Array.from(shape); // its values are checked in Rust
    const c = this.#spec.inChannels;
    const perImage = n > 0 ? images.length / (n * c) : 0;
    const side = Math.round(Math.sqrt(perImage));
    if (n === 0 || !Number.isInteger(perImage) || side * side !== perImage) {
      throw new Error(
        `cannot infer the image shape from ${images.length} values for ${n} image(s) of ${c} channel(s); pass shape [N, C, H, W]`,
      );
    }
    return [n, c, side, side];
  }

  /**
   * One training step on a batch: forward, cross-entropy, backward and the optimizer update, on a
   * worker thread. `images` are normalised NCHW values; `labels` are class indices. A
   * {@link Batch} from a {@link DataLoader} can be passed as it is (`trainStep(batch)`): its
   * values then go from the Rust loader to the model without a copy through JS.
   */
  trainStep(batch: Batch): Promise<TrainStepResult>;
  trainStep(images: Float32Array, labels: Int32Array | Uint8Array | readonly number[], shape?: Shape4): Promise<TrainStepResult>;
  async trainStep(
    images: Float32Array | Batch,
    labels?: Int32Array | Uint8Array | readonly number[],
    shape?: Shape4,
  ): Promise<TrainStepResult> {
    const b = this.#labelledInput('trainStep', images, labels, shape);
    const s = await this.#serial(() =>
      b.loaded !== undefined ? this.#native.trainBatch(b.loaded) : this.#native.trainStep(b.images, b.shape, b.labels),
    );
    this.#noteInputSize(b.shape, true);
    return stepResult(s);
  }

  /**
   * {@link Model.trainStep} without waiting for the step's figures: its loss and hits stay on the
   * device until {@link Model.takeStepResults} reads those of every queued step at once. A read
   * from a GPU waits for all the work before it, so on a GPU this lets the device run the step
   * while the host prepares the next (never more than one step ahead). On the CPU only the time
   * the figures arrive changes. `fit` queues the steps between two reports
   * ({@link FitOptions.reportEvery}). In precision `'mixed'` the device itself skips an
   * overflowing step and moves the loss scale, so {@link Model.step} counts a queued step once its
   * figures are read. While distributed, each step still reads its figures itself (the ranks sum
   * them), and only hands them over later.
   */
  queueTrainStep(batch: Batch): Promise<void>;
  queueTrainStep(images: Float32Array, labels: Int32Array | Uint8Array | readonly number[], shape?: Shape4): Promise<void>;
  async queueTrainStep(
    images: Float32Array | Batch,
    labels?: Int32Array | Uint8Array | readonly number[],
    shape?: Shape4,
  ): Promise<void> {
    const b = this.#labelledInput('queueTrainStep', images, labels, shape);
    await this.#serial(() =>
      b.loaded !== undefined ? this.#native.queueTrainBatch(b.loaded) : this.#native.queueTrainStep(b.images, b.shape, b.labels),
    );
    this.#noteInputSize(b.shape, true);
  }

  /**
   * The results of every step queued by {@link Model.queueTrainStep} since the last call, oldest
   * first, read from the device in one go. A queued step whose loss is not finite makes this throw
   * the "training diverged" error that `trainStep` throws, naming that step; the figures of the
   * steps queued with it are dropped.
   */
  async takeStepResults(): Promise<TrainStepResult[]> {
    const stats = await this.#serial(() => this.#native.takeStepStats());
    return stats.map(stepResult);
  }

  /**
   * Logits `[N, numClasses]` (row-major) in eval mode. Without `shape`, `n` images of
   * `inChannels` square channels are assumed (see {@link Model.trainStep}). A {@link Batch} from
   * a {@link DataLoader} can be passed as it is (`predict(batch)`, no copy through JS).
   */
  predict(batch: Batch): Promise<Float32Array>;
  predict(images: Float32Array, shape: Shape4 | { n: number }): Promise<Float32Array>;
  async predict(images: Float32Array | Batch, shape?: Shape4 | { n: number }): Promise<Float32Array> {
    const what = 'predict';
    if (isBatch(images)) {
      const loaded = nativeBatchOf(images);
      if (loaded !== undefined) {
        const logits = await this.#serial(() => this.#native.predictBatch(loaded));
        this.#noteInputSize(images.shape, false);
        return logits;
      }
      return this.predict(images.images, images.shape);
    }
    check.float32Array(what, 'images', images);
    if (typeof shape !== 'object' || shape === null) throw check.invalid(what, 'shape', '[N, C, H, W] or { n }', shape);
    const s = 'n' in shape ? this.#shapeOf(what, images, check.integer(what, 'shape.n', shape.n, 1), undefined) : Array.from(shape);
    const x = this.#snapshot(images);
    const logits = await this.#serial(() => this.#native.predict(x, s));
    this.#noteInputSize(s, false);
    return logits;
  }

  /**
   * Loss, top-1 and top-5 on one labelled batch (eval mode), as sums. A {@link Batch} from a
   * {@link DataLoader} can be passed as it is (`evaluateBatch(batch)`, no copy through JS).
   */
  evaluateBatch(batch: Batch): Promise<{ lossSum: number; top1: number; top5: number; count: number }>;
  evaluateBatch(
    images: Float32Array,
    labels: Int32Array | Uint8Array | readonly number[],
    shape?: Shape4,
  ): Promise<{ lossSum: number; top1: number; top5: number; count: number }>;
  async evaluateBatch(
    images: Float32Array | Batch,
    labels?: Int32Array | Uint8Array | readonly number[],
    shape?: Shape4,
  ): Promise<{ lossSum: number; top1: number; top5: number; count: number }> {
    const b = this.#labelledInput('evaluateBatch', images, labels, shape);
    const r = await this.#serial(() =>
      b.loaded !== undefined ? this.#native.evaluateLoadedBatch(b.loaded) : this.#native.evaluateBatch(b.images, b.shape, b.labels),
    );
    this.#noteInputSize(b.shape, false);
    return r;
  }

  /**
   * Mean loss and top-1/top-5 accuracy over a dataset, in eval mode. Images are normalised with
   * `options.normalize`, else the model's {@link Model.normalization}, else the dataset's own
   * statistics. For an image folder, `views` (default: the folder's `view` option) picks
   * `'center'`, `'tenCrop'` or `{ fullImage: scales }`; with several views per image the softmax
   * probabilities of its views are averaged ({@link evaluateViews}).
   *
   * `signal` stops it between batches as it stops {@link fit}: it resolves with the means over the
   * images evaluated so far, `aborted: true`, and one line on stderr; it does not throw.
   *
   * `distributed` (a world of several ranks from `distributed.init()`; every rank must call):
   * each rank evaluates its shard of the set and one all-reduce sums the ranks' figures, so every
   * rank gets the whole set's (top-1/top-5 exactly as one process; the loss to float rounding).
   * Multi-view evaluation is not sharded: each rank evaluates the whole set.
   */
  async evaluate(
    dataset: AnyDataset,
    options: { batchSize?: number; normalize?: NormalizeOption; signal?: AbortSignalLike; views?: ImageFolderView; distributed?: World } = {},
  ): Promise<EvaluateResult> {
    if (options.views !== undefined || (dataset.defaultView ?? 'center') !== 'center') {
      // Multi-view scores are not sharded: every rank evaluates the whole set (same result).
      const r = await evaluateViews(this, dataset, options);
      return { loss: r.loss, top1: r.top1, top5: r.top5, count: r.count, aborted: r.aborted };
    }
    const world = options.distributed?.isDistributed === true ? options.distributed : undefined;
    const loader = new DataLoader(dataset, {
      batchSize: options.batchSize ?? 256,
      shuffle: false,
      normalize: options.normalize ?? this.normalization ?? 'dataset',
      ...(world === undefined ? {} : { shard: { rank: world.rank, count: world.size } }),
    });
    let lossSum = 0;
    let top1 = 0;
    let top5 = 0;
    let count = 0;
    let queued = 0;
    let aborted = false;
    for await (const batch of loader.epoch(0)) {
      if (options.signal?.aborted) {
        aborted = true;
        reportAborted('evaluate', options.signal, `after ${queued} of ${dataset.length} images`, 'the result covers those images only and has aborted: true');
        break;
      }
      // Queued: the sums stay on the device (a GPU evaluates this batch while the loader
      // prepares the next) and are read once, after the loop.
      const b = this.#labelledInput('evaluate', batch, undefined, undefined);
      queued += b.shape[0] ?? 0;
      if (b.loaded === undefined) {
        const s = await this.evaluateBatch(batch);
        [lossSum, top1, top5, count] = [lossSum + s.lossSum, top1 + s.top1, top5 + s.top5, count + s.count];
        continue;
      }
      const loaded = b.loaded;
      await this.#serial(() => this.#native.queueEvaluateLoadedBatch(loaded));
      this.#noteInputSize(b.shape, false);
    }
    // The sums are Rust's, each batch's as evaluateBatch gives it; only their totals are taken here.
    for (const s of await this.#serial(() => this.#native.takeEvalStats())) {
      lossSum += s.lossSum;
      top1 += s.top1;
      top5 += s.top5;
      count += s.count;
    }
    if (world !== undefined) {
      // Each rank summed its shard; the sums over ranks are the whole set's (the counts exactly).
      // Every rank reaches this call even when a signal stopped it early (it adds what it has),
      // so no rank is left waiting.
      [lossSum = 0, top1 = 0, top5 = 0, count = 0] = await world.allReduceSum([lossSum, top1, top5, count]);
    }
    return { loss: count ? lossSum / count : 0, top1: count ? top1 / count : 0, top5: count ? top5 / count : 0, count, aborted };
  }

  /**
   * @internal Joins a data-parallel run: checks that every rank has the same spec, optimizer
   * and options (throws naming the ranks that differ), then copies rank 0's parameters, buffers,
   * momentum and step count to all. While attached, `trainStep` averages gradients over the
   * ranks and returns figures summed over them. `fit` attaches and detaches by itself.
   */
  async attachDistributed(world: World, options: { syncBatchNorm?: boolean; bucketCapMb?: number; overlap?: boolean } = {}): Promise<void> {
    const nativeWorld = nativeWorldOf(world);
    if (nativeWorld === undefined) throw new Error('attachDistributed needs a world from distributed.init() launched by mpiexec');
    const o = { syncBatchNorm: options.syncBatchNorm ?? false, bucketCapMb: options.bucketCapMb ?? 25, overlap: options.overlap ?? true };
    await this.#serial(() => this.#native.attachDistributed(nativeWorld, o));
  }

  /** @internal Leaves the data-parallel run (after the queued calls): the model trains alone again. */
  async detachDistributed(): Promise<void> {
    await this.#serial(async () => this.#native.detachDistributed());
  }

  /**
   * @internal Adds a loader batch's views to a multi-view score ({@link evaluateViews}); queued
   * like every other call of this model.
   */
  async scoreViews(batch: Batch, score: NativeViewScore): Promise<void> {
    const loaded = nativeBatchOf(batch) ?? native.NativeBatch.fromArrays(batch.images, batch.labels, Array.from(batch.shape), batch.positions ?? null);
    await this.#serial(() => this.#native.scoreViews(loaded, score));
    this.#noteInputSize(batch.shape, false);
  }

  /**
   * Per-layer output shapes, parameter counts and multiply-adds for one input of
   * `height` x `width`. Without them, the size of the data the model has seen
   * ({@link Model.inputSize}: trained on, else evaluated on, or stored in its checkpoint), and
   * for a fresh model {@link defaultInputSize} (28 for a 1-channel CIFAR-style net, as
   * Fashion-MNIST; 32 for other CIFAR-style nets; 224 for ImageNet stems). `inputSource` says
   * which.
   */
  summary(options: { height?: number; width?: number } = {}): ModelSummary {
    const what = 'summary';
    let height: number;
    let width: number;
    let inputSource: ModelSummary['inputSource'];
    if (options.height !== undefined || options.width !== undefined) {
      height = check.integer(what, 'height', options.height ?? options.width, 1);
      width = check.integer(what, 'width', options.width ?? height, 1);
      inputSource = 'options';
    } else if (this.#inputSize !== undefined) {
      [height, width] = this.#inputSize;
      inputSource = 'data';
    } else {
      height = width = defaultInputSize(this.#spec);
      inputSource = 'default';
    }
    const rows = JSON.parse(this.#native.summary(height, width)) as LayerRow[];
    const totalParams = rows.reduce((a, r) => a + r.params, 0);
    const totalMacs = rows.reduce((a, r) => a + r.macs, 0);
    const name = this.name;
    const inputShape = [1, this.#spec.inChannels, height, width];
    const note = inputSource === 'default' ? ' (the default size for this net; pass { height, width } for others)' : '';
    return {
      name,
      inputShape,
      inputSource,
      rows,
      totalParams,
      totalMacs,
      toString: () => formatSummary(`${name}, input [${inputShape.join(', ')}]${note}`, rows, totalParams, totalMacs),
    };
  }

  /**
   * Writes a safetensors checkpoint (torchvision parameter names, atomic write) holding the
   * weights, buffers, optimizer state, the spec, the normalisation and your `metadata`. The
   * directory must exist. Each tensor's CRC-32 is stored too, and loading checks it: a corrupted
   * file is an `Error` naming the file and the tensor. Temp files an interrupted save left for
   * this path are removed once their process is gone. For PyTorch, see {@link Model.exportWeights}.
   */
  async save(path: string, metadata: Record<string, string> = {}): Promise<void> {
    const meta = this.#fileMetadata(metadata);
    const size = this.#inputSize;
    if (size !== undefined && meta[IMAGE_SIZE_KEY] === undefined) meta[IMAGE_SIZE_KEY] = size[0] === size[1] ? String(size[0]) : `${size[0]}x${size[1]}`;
    await this.#serial(() => this.#native.save(path, meta));
  }

  /**
   * Writes only the state dict, for PyTorch and other tools: weights, batch-norm running
   * statistics and `num_batches_tracked` (int64) under torchvision's names, without the optimizer
   * state {@link Model.save} adds, so that PyTorch loads it strictly:
   *
   * ```python
   * from safetensors.torch import load_file
   * torchvision.models.resnet18().load_state_dict(load_file(path), strict=True)
   * ```
   *
   * (a CIFAR net needs a PyTorch module with the same names). The metadata holds your `metadata`,
   * the spec, the normalisation and per-tensor checksums (PyTorch ignores it), so
   * {@link Model.load} (step 0, default optimizer) and {@link Model.loadWeights} read the file
   * too. The same weights give the same bytes. Atomic write; the directory must exist. CLI:
   * `resnet-wgpu export-weights --checkpoint X --out Y`.
   */
  async exportWeights(path: string, metadata: Record<string, string> = {}): Promise<void> {
    const meta = this.#fileMetadata(metadata);
    await this.#serial(() => this.#native.exportWeights(path, meta));
  }

  /**
   * Loads weights from a checkpoint of the same architecture (throws naming the difference
   * otherwise); resolves to the checkpoint's metadata.
   */
  async loadWeights(path: string): Promise<Record<string, string>> {
    const meta = await this.#serial(() => this.#native.loadWeights(path));
    const stored = meta[NORMALIZATION_KEY];
    if (stored !== undefined) this.normalization = parseNormalization(stored) ?? this.normalization;
    this.#inputSize = parseImageSize(meta[IMAGE_SIZE_KEY]) ?? pixelMeanSize(this.normalization) ?? this.#inputSize;
    return meta;
  }

  /**
   * Writes the model as ONNX (opset 17) for inference in eval mode: input `input`
   * [batch, C, H, W] (normalised as for `predict`), output `logits` [batch, classes], with a
   * dynamic batch dimension.
   */
  async exportOnnx(path: string): Promise<void> {
    await exportOnnx(this, path);
  }

  /** Parameter and buffer names in torchvision's convention (`layer1.0.conv1.weight`, ...). */
  parameterNames(): string[] {
    return this.#native.parameterNames();
  }

  /** The live parameter (shares storage with the model; its `grad` is filled by `backward`). */
  parameter(name: string): Tensor {
    return new Tensor(this.#native.parameter(name));
  }

  /** Logits for `x`; with `training: true` batch statistics are used and the graph is recorded. */
  forward(x: Tensor, options: { training?: boolean } = {}): Tensor {
    return new Tensor(this.#native.forward(x.native, options.training ?? false));
  }

  /** Globally pooled features `[N, C]` before the classifier (for custom heads). */
  features(x: Tensor, options: { training?: boolean } = {}): Tensor {
    return new Tensor(this.#native.features(x.native, options.training ?? false));
  }

  /**
   * The output of every stage: C2..C5 of an ImageNet net (strides 4, 8, 16, 32), the three
   * stages of a CIFAR net. For backbones (feature pyramids, probes). In a pre-activation net these
   * are the stages' sums, before the final batch norm and activation. With `training: true` batch
   * statistics are used and the graph is recorded.
   */
  stageOutputs(x: Tensor, options: { training?: boolean } = {}): Tensor[] {
    return this.#native.stageOutputs(x.native, options.training ?? false).map((t) => new Tensor(t));
  }

  /**
   * The response of every convolution layer to a batch, in layer order (the stem `conv1`, then
   * each block's convolutions, then its projection shortcut where it has one): for the original
   * nets the layer's batch-norm output, before the activation or the addition, as in the paper's
   * Figure 7 ("the outputs of each 3x3 layer, after BN and before other nonlinearity"); for
   * pre-activation nets (`spec.preActivation`), whose batch norms come before the convolutions,
   * the convolution's output, as also for nets without batch norm (`spec.batchNorm === false`).
   * Keep `kernel === 3` for the paper's plot.
   *
   * `training: true` normalises with the batch's statistics (as during training) without updating
   * the running statistics; the default uses the running statistics (eval mode). Runs on a worker
   * thread and changes nothing in the model.
   */
  async layerResponses(images: Float32Array, shape: Shape4, options: { training?: boolean } = {}): Promise<LayerResponse[]> {
    const what = 'layerResponses';
    check.float32Array(what, 'images', images);
    const s4 = Array.from(shape);
    const training = check.boolean(what, 'options.training', options.training ?? false);
    const x = this.#snapshot(images);
    return this.#serial(() => this.#native.layerResponses(x, s4, training));
  }

  /**
   * The L2 norm of the gradient of the batch's mean cross-entropy with respect to every
   * convolution weight and the classifier's weight, in layer order (as {@link Model.layerResponses},
   * then `fc`), in training mode (batch statistics): for vanishing-gradient plots. Runs on a worker
   * thread and changes nothing in the model: parameters, running statistics, optimizer state,
   * step, and any gradients already held stay as they were.
   *
   * @throws Error for a bad shape or a label outside [0, numClasses).
   */
  async gradientNorms(images: Float32Array, labels: Int32Array | Uint8Array | readonly number[], shape: Shape4): Promise<GradNorm[]> {
    // `shape` is required here (no inference from the image count).
    if (shape === undefined) throw check.invalid('gradientNorms', 'shape', '[N, C, H, W] (4 numbers)', shape);
    const b = this.#labelledBatch('gradientNorms', images, labels, shape);
    return this.#serial(() => this.#native.gradientNorms(b.images, b.shape, b.labels));
  }

  /** Frees the model's memory now; later calls throw "model has been disposed". */
  dispose(): void {
    this.#native.dispose();
  }
}

/** Whether a call's first argument is a {@link Batch} rather than loose images. */
function isBatch(value: Float32Array | Batch): value is Batch {
  return typeof value === 'object' && value !== null && !ArrayBuffer.isView(value) && !Array.isArray(value) && 'images' in value && 'shape' in value;
}

/** Metadata `imageSize`: `"28"` or `"28x32"` (height x width). */
function parseImageSize(text: string | undefined): [number, number] | undefined {
  const m = text === undefined ? null : /^(\d+)(?:x(\d+))?$/.exec(text.trim());
  if (m === null) return undefined;
  const h = Number(m[1]);
  const w = m[2] === undefined ? h : Number(m[2]);
  return h > 0 && w > 0 ? [h, w] : undefined;
}

/** The image size a per-pixel mean was computed at. */
function pixelMeanSize(n: Normalization | undefined): [number, number] | undefined {
  const shape = n?.pixelMean?.shape;
  return shape === undefined ? undefined : [shape[1], shape[2]];
}

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

function formatSummary(title: string, rows: LayerRow[], totalParams: number, totalMacs: number): string {
  const header = ['Layer', 'Kind', 'Output shape', 'Params', 'MACs'];
  const body = rows.map((r) => [r.name, r.kind, `[${r.outputShape.join(', ')}]`, r.params.toLocaleString('en-US'), formatCount(r.macs)]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i >= 3 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [
    title,
    line(header),
    rule,
    ...body.map(line),
    rule,
    `Total params: ${totalParams.toLocaleString('en-US')} (${formatCount(totalParams)})`,
    `Total MACs per image: ${totalMacs.toLocaleString('en-US')} (${formatCount(totalMacs)})`,
  ].join('\n');
}
