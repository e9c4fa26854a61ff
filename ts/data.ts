/**
 * Datasets (u8 images held in Rust) and the batch loader (shuffle, augmentation and normalisation
 * on a Rust background thread; batches arrive as `Float32Array`s without a copy).
 *
 * @module
 */

import { native, type NativeDataset } from './native.js';

/** `'train'` or `'test'`. */
export type Split = 'train' | 'test';

/** Per-channel `(pixel/255 - mean) / std`. */
export interface Normalization {
  mean: number[];
  std: number[];
}

/** The paper's augmentation: zero-pad then random crop back, and random horizontal flip. */
export interface AugmentOptions {
  /** Pixels of zero padding on each side before the random crop (paper: 4; 0 disables). */
  padCrop: number;
  /** Random horizontal flip with p = 0.5. */
  flip: boolean;
}

/** A labelled image dataset: `length` images of `channels` x `height` x `width` u8 pixels. */
export class Dataset {
  /** @internal */
  readonly native: NativeDataset;

  /** @internal Use {@link datasets} or {@link Dataset.fromArrays}. */
  constructor(nativeDataset: NativeDataset) {
    this.native = nativeDataset;
  }

  /**
   * A dataset from u8 pixels in NCHW order (`labels.length` images) and labels below
   * `numClasses`. Both arrays are copied.
   */
  static fromArrays(options: {
    images: Uint8Array;
    labels: Uint8Array | readonly number[];
    channels: number;
    height: number;
    width: number;
    numClasses: number;
    classNames?: string[];
  }): Dataset {
    const labels = options.labels instanceof Uint8Array ? options.labels : Uint8Array.from(options.labels);
    return new Dataset(
      native.NativeDataset.fromArrays(
        options.images,
        labels,
        options.channels,
        options.height,
        options.width,
        options.numClasses,
        options.classNames ?? null,
      ),
    );
  }

  get length(): number {
    return this.native.length;
  }
  get channels(): number {
    return this.native.channels;
  }
  get height(): number {
    return this.native.height;
  }
  get width(): number {
    return this.native.width;
  }
  get numClasses(): number {
    return this.native.numClasses;
  }
  /** Class names, or an empty array when unknown. */
  get classNames(): string[] {
    return this.native.classNames;
  }

  /** The labels (a copy). */
  labels(): Uint8Array {
    return this.native.labels();
  }

  /** Per-channel mean and (population) standard deviation of pixel/255. */
  meanStd(): Normalization {
    return this.native.meanStd();
  }

  /** The given samples, in that order. */
  subset(indices: readonly number[]): Dataset {
    return new Dataset(this.native.subset([...indices]));
  }

  /** The first `k` samples (all of them if `k` exceeds the length). */
  take(k: number): Dataset {
    const n = Math.max(0, Math.min(Math.floor(k), this.length));
    return this.subset(Array.from({ length: n }, (_, i) => i));
  }

  /** The first `k` samples and the rest. */
  splitAt(k: number): [Dataset, Dataset] {
    const [a, b] = this.native.splitAt(k);
    return [new Dataset(a), new Dataset(b)];
  }
}

/** Readers for datasets on disk. */
export const datasets = {
  /**
   * Fashion-MNIST (28x28 grey, 10 classes) from IDX files, gzip'd or not. `dir` defaults to
   * `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`).
   */
  async fashionMnist(options: { dir?: string; split?: Split } = {}): Promise<Dataset> {
    return new Dataset(await native.NativeDataset.fashionMnist(options.split ?? 'train', options.dir ?? null));
  },

  /** CIFAR-10 (32x32 RGB, 10 classes) from the binary batches (`data_batch_*.bin`, `test_batch.bin`). */
  async cifar10(options: { dir: string; split?: Split }): Promise<Dataset> {
    return new Dataset(await native.NativeDataset.cifar10(options.split ?? 'train', options.dir));
  },
};

/** Options of a {@link DataLoader}. */
export interface DataLoaderOptions {
  /** Default 128. */
  batchSize?: number;
  /** Reshuffle every epoch (default true). */
  shuffle?: boolean;
  /** Drop the last, smaller batch (default false). */
  dropLast?: boolean;
  /** `true` for the paper's pad-4 crop + flip; default none. */
  augment?: boolean | AugmentOptions;
  /**
   * `'dataset'` (default): this dataset's own mean/std; `'none'`: pixel/255; or explicit values
   * (use the training set's for validation data).
   */
  normalize?: 'dataset' | 'none' | Normalization;
  /** Seeds the order and augmentation (default 0). */
  seed?: number;
}

/** One batch of normalised images (NCHW) and labels. */
export interface Batch {
  images: Float32Array;
  labels: Int32Array;
  shape: [number, number, number, number];
}

/** Resolves an augmentation option to the loader's form (`true` is the paper's pad-4 crop + flip). */
export function resolveAugment(augment: boolean | AugmentOptions | undefined): AugmentOptions | undefined {
  if (augment === true) return { padCrop: 4, flip: true };
  if (augment === false || augment === undefined) return undefined;
  return augment;
}

/** Resolves a normalisation option against a dataset. */
export function resolveNormalization(normalize: DataLoaderOptions['normalize'], dataset: Dataset): Normalization {
  if (normalize === undefined || normalize === 'dataset') return dataset.meanStd();
  if (normalize === 'none') {
    return { mean: new Array<number>(dataset.channels).fill(0), std: new Array<number>(dataset.channels).fill(1) };
  }
  return normalize;
}

/**
 * Batches of a dataset, epoch by epoch. The order and the augmentation are functions of
 * (seed, epoch), so a run repeats exactly.
 *
 * ```ts
 * const loader = new DataLoader(train, { batchSize: 128, augment: true });
 * for await (const batch of loader.epoch(0)) await model.trainStep(batch.images, batch.labels, batch.shape);
 * ```
 */
export class DataLoader {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly augment: AugmentOptions | undefined;
  /** The normalisation applied (resolved from the options). */
  readonly normalization: Normalization;
  readonly seed: number;

  constructor(dataset: Dataset, options: DataLoaderOptions = {}) {
    this.dataset = dataset;
    this.batchSize = options.batchSize ?? 128;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) {
      throw new Error(`batchSize must be a positive integer, got ${this.batchSize}`);
    }
    this.shuffle = options.shuffle ?? true;
    this.dropLast = options.dropLast ?? false;
    this.augment = resolveAugment(options.augment);
    this.normalization = resolveNormalization(options.normalize, dataset);
    this.seed = options.seed ?? 0;
  }

  /** Batches per epoch. */
  get length(): number {
    const n = this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /**
   * The batches of epoch `epoch`, prepared ahead on a Rust thread. Breaking out of the loop stops
   * the preparation.
   */
  async *epoch(epoch = 0): AsyncGenerator<Batch, void, undefined> {
    const loader = new native.NativeLoader(
      this.dataset.native,
      {
        batchSize: this.batchSize,
        shuffle: this.shuffle,
        dropLast: this.dropLast,
        ...(this.augment === undefined ? {} : { augment: this.augment }),
        mean: this.normalization.mean,
        std: this.normalization.std,
        seed: this.seed,
      },
      epoch,
    );
    try {
      for (;;) {
        const batch = await loader.next();
        if (batch === null) return;
        const [n = 0, c = 0, h = 0, w = 0] = batch.shape;
        yield { images: batch.images, labels: batch.labels, shape: [n, c, h, w] };
      }
    } finally {
      loader.close();
    }
  }
}
