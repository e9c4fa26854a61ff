/**
 * Datasets (u8 images held in Rust, or image folders decoded per batch in Rust) and the batch
 * loader (shuffle, augmentation and normalisation on a Rust background thread; a batch stays in
 * Rust, and goes to the model from there, until JS reads its arrays).
 *
 * @module
 */

import { native, type FolderTransformOptions, type NativeBatch, type NativeDataset, type NativeImageFolder, type NativeLoader } from './native.js';
import * as check from './validate.js';

/** `'train'` or `'test'`. */
export type Split = 'train' | 'test';

/**
 * Per-channel `(pixel/255 - mean) / std`; with `pixelMean`, `(pixel/255 - pixelMean[c][y][x] -
 * mean) / std` (the paper's CIFAR preprocessing, "per-pixel mean subtracted").
 */
export interface Normalization {
  mean: number[];
  std: number[];
  /**
   * A mean image subtracted before augmentation (so the crop's zero padding is 0 after
   * normalisation). In-memory datasets of that exact shape only. Saved in checkpoints.
   */
  pixelMean?: PixelMean;
}

/** A mean image of pixel/255, `shape` = [channels, height, width], `data` channel-major. */
export interface PixelMean {
  shape: [number, number, number];
  data: Float32Array;
}

/**
 * How a loader normalises: `'dataset'` (the dataset's own per-channel mean/std; for an image
 * folder, its `normalize` option), `'none'` (pixel/255), `'perPixelMean'` (subtract the dataset's
 * mean image, no division; in-memory datasets only; compute it on the training split, as `fit`
 * does), or explicit values.
 */
export type NormalizeOption = 'dataset' | 'none' | 'perPixelMean' | Normalization;

/** The paper's augmentation: zero-pad then random crop back, and random horizontal flip. */
export interface AugmentOptions {
  /** Pixels of zero padding on each side before the random crop (paper: 4; 0 disables). */
  padCrop: number;
  /** Random horizontal flip with p = 0.5. */
  flip: boolean;
}

/**
 * Anything a {@link DataLoader}, `fit` and `model.evaluate` take: a {@link Dataset} (u8 images in
 * memory) or an {@link ImageFolder} (files decoded per batch). Each kind says itself how it is
 * normalised, augmented and loaded, so no caller branches on its class.
 */
export interface AnyDataset {
  readonly length: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames: string[];
  /** The given samples, in that order. */
  subset(indices: readonly number[]): AnyDataset;
  /** The first `k` samples. */
  take(k: number): AnyDataset;
  /** @internal Whether `fit` augments it unless told otherwise (image folders: their training transform). */
  readonly augmentsByDefault: boolean;
  /** @internal The evaluation view when none is asked for; `undefined` for one view, the whole image. */
  readonly defaultView: ImageFolderView | undefined;
  /** @internal A normalisation option resolved against this data (statistics computed in Rust). */
  resolveNormalization(normalize: NormalizeOption | undefined): Normalization;
  /** @internal The augmentation and view a loader with these options uses. */
  loaderSettings(options: DataLoaderOptions): { augment: AugmentOptions | undefined; view: ImageFolderView | undefined };
  /** @internal Starts the native loader of one epoch. */
  openLoader(loader: DataLoader, epoch: number): NativeLoader;
}

/** A labelled image dataset: `length` images of `channels` x `height` x `width` u8 pixels. */
export class Dataset implements AnyDataset {
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
    const what = 'Dataset.fromArrays';
    if (!(options.images instanceof Uint8Array)) throw check.invalid(what, 'images', 'a Uint8Array of pixels (NCHW)', options.images);
    let labels: Uint8Array;
    if (options.labels instanceof Uint8Array) labels = options.labels;
    else {
      // Checked before the u8 conversion, which would truncate 1.5 to 1 and wrap 256 to 0.
      const values = check.labels(what, options.labels);
      const i = values.findIndex((v) => v < 0 || v > 255);
      if (i >= 0) throw new Error(`${what}: labels must be integers in [0, 255] (and below numClasses), got ${values[i]} at index ${i}`);
      labels = Uint8Array.from(values);
    }
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

  /**
   * The files the samples were read from: for Fashion-MNIST the images file and the labels file
   * actually read (gzip'd or raw; see {@link datasets}.fashionMnist), for CIFAR-10 its batches;
   * empty for a dataset made from arrays. Subsets keep their parent's.
   */
  get files(): string[] {
    return this.native.files;
  }

  /** The labels (a copy). */
  labels(): Uint8Array {
    return this.native.labels();
  }

  /** Per-channel mean and (population) standard deviation of pixel/255. */
  meanStd(): Normalization {
    return this.native.meanStd();
  }

  /** The mean image of pixel/255 ([channels, height, width]), computed in Rust. */
  pixelMean(): PixelMean {
    return { shape: [this.channels, this.height, this.width], data: this.native.pixelMean() };
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

  /**
   * Frees the images now instead of when the garbage collector gets to them (a loader still
   * running keeps its share until it ends; subsets made earlier keep their own copy). Any later
   * use of this dataset throws an `Error` saying it has been disposed.
   */
  dispose(): void {
    this.native.dispose();
  }

  /** Whether {@link Dataset.dispose} has been called. */
  get disposed(): boolean {
    return this.native.disposed;
  }

  /** @internal */
  get augmentsByDefault(): boolean {
    return false;
  }

  /** @internal */
  get defaultView(): ImageFolderView | undefined {
    return undefined;
  }

  /** @internal */
  resolveNormalization(normalize: NormalizeOption | undefined): Normalization {
    if (normalize === undefined || normalize === 'dataset') return this.meanStd();
    const c = this.channels;
    if (normalize === 'none') return { mean: new Array<number>(c).fill(0), std: new Array<number>(c).fill(1) };
    if (normalize === 'perPixelMean') return { mean: new Array<number>(c).fill(0), std: new Array<number>(c).fill(1), pixelMean: this.pixelMean() };
    return normalize;
  }

  /** @internal */
  loaderSettings(options: DataLoaderOptions): { augment: AugmentOptions | undefined; view: ImageFolderView | undefined } {
    if (options.view !== undefined && options.view !== 'center') throw new Error('view applies to image folders only');
    return { augment: resolveAugment(options.augment), view: undefined };
  }

  /** @internal */
  openLoader(loader: DataLoader, epoch: number): NativeLoader {
    const n = loader.normalization;
    return new native.NativeLoader(
      this.native,
      {
        batchSize: loader.batchSize,
        shuffle: loader.shuffle,
        dropLast: loader.dropLast,
        ...(loader.augment === undefined ? {} : { augment: loader.augment }),
        mean: n.mean,
        std: n.std,
        ...(n.pixelMean === undefined ? {} : { pixelMean: n.pixelMean.data }),
        seed: loader.seed,
        ...(loader.shard === undefined ? {} : { shard: loader.shard }),
      },
      epoch,
    );
  }
}

/** Readers for datasets on disk. */
export const datasets = {
  /**
   * Fashion-MNIST (28x28 grey, 10 classes) from IDX files, gzip'd or not. `dir` defaults to
   * `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`). Where a file exists
   * in both forms (`train-images-idx3-ubyte.gz` and `train-images-idx3-ubyte`), the more recently
   * modified one is read (the `.gz` when their times are equal, as after `gunzip -k`), and a
   * line on stderr says so, once per file. {@link Dataset.files} lists the files read.
   */
  async fashionMnist(options: { dir?: string; split?: Split } = {}): Promise<Dataset> {
    return new Dataset(await native.NativeDataset.fashionMnist(options.split ?? 'train', options.dir ?? null));
  },

  /** CIFAR-10 (32x32 RGB, 10 classes) from the binary batches (`data_batch_*.bin`, `test_batch.bin`). */
  async cifar10(options: { dir: string; split?: Split }): Promise<Dataset> {
    return new Dataset(await native.NativeDataset.cifar10(options.split ?? 'train', options.dir));
  },

  /**
   * An image folder `root/<class>/<image>.{jpg,jpeg,png}` (torchvision's `ImageFolder`, ImageNet's
   * layout): one sub-folder per class, class index = sorted folder-name order. Throws naming the
   * path when `root` is missing, has no class folders, or a class folder has no images; other
   * files are ignored. Images are decoded and transformed in Rust per batch (see
   * {@link ImageFolderOptions}).
   *
   * ```ts
   * const train = await datasets.imageFolder('imagenet/train', { train: 'scaleAugment' });
   * const val = await datasets.imageFolder('imagenet/val', { view: 'tenCrop' });
   * await fit(model, train, { epochs: 90 });            // random crops + flips
   * const { top1, top5 } = await model.evaluate(val);   // 10-crop, softmax averaged per image
   * ```
   */
  async imageFolder(root: string, options: ImageFolderOptions = {}): Promise<ImageFolder> {
    const resolved = resolveImageFolderOptions(options);
    return new ImageFolder(await native.NativeImageFolder.scan(root), resolved);
  },
};

/** torchvision's ImageNet statistics on [0, 1] pixels: the default of image folders. */
export const IMAGENET_STATS: Normalization = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/**
 * How an image folder is viewed for evaluation:
 * - `'center'`: shorter side to `resize`, centre `size` x `size` crop (one view);
 * - `'tenCrop'`: shorter side to `resize`, then the four corner and the centre crops and their
 *   mirror images (torchvision's `TenCrop`: 10 views);
 * - `{ fullImage: scales }`: the whole image, shorter side at each scale (e.g. the paper's
 *   `[224, 256, 384, 480, 640]`), no crop: fully-convolutional multi-scale testing. Sizes differ
 *   between images, so every such view is a batch of one image.
 *
 * Multi-view evaluation averages the softmax probabilities of an image's views
 * ({@link evaluateViews}).
 */
export type ImageFolderView = 'center' | 'tenCrop' | { fullImage: number | readonly number[] };

/** Training transform of an image folder, before the random flip. */
export type ImageFolderTrainTransform = 'randomResizedCrop' | 'scaleAugment' | 'none';

/** Options of {@link datasets}.imageFolder. All resizes are bilinear (antialiased). */
export interface ImageFolderOptions {
  /** Side of the square crops the network sees (default 224). */
  size?: number;
  /** Shorter side before the evaluation centre crop and ten crops (default 256; at least `size`). */
  resize?: number;
  /**
   * Training transform, used when the loader augments (`fit` does by default for image folders):
   * `'randomResizedCrop'` (default; torchvision's: 8-100% of the area, aspect ratio 3/4-4/3,
   * resized to `size`), `'scaleAugment'` (the paper's: shorter side a random integer in
   * `scaleRange`, then a random `size` crop), or `'none'` (the evaluation centre crop).
   */
  train?: ImageFolderTrainTransform;
  /** Shorter-side range of `'scaleAugment'`, inclusive (default [256, 480]; min >= size). */
  scaleRange?: readonly [number, number];
  /** Evaluation view (default `'center'`); `model.evaluate(folder, { views })` overrides it. */
  view?: ImageFolderView;
  /** Random horizontal flip in training (default true). */
  flip?: boolean;
  /** Per-channel normalisation of [0, 1] pixels (default ImageNet's, {@link IMAGENET_STATS}). */
  normalize?: Normalization;
  /**
   * An image that cannot be read or decoded: `'fail'` (default) makes the batch throw an `Error`
   * naming the file; `'skip'` leaves it out of its batch, warns once on stderr and lists it in
   * {@link ImageFolder.skipped}.
   */
  onCorrupt?: 'fail' | 'skip';
  /** Decoding threads per loader (default: one per core, at most 16). */
  workers?: number;
}

/** {@link ImageFolderOptions} with every default filled in. */
export type ResolvedImageFolderOptions = Required<Omit<ImageFolderOptions, 'workers'>> & {
  scaleRange: readonly [number, number];
  workers: number | undefined;
};

/**
 * Fills in the defaults; the rules (sizes, ranges, the transform names) are checked in Rust
 * (`checkFolderTransform`), so a bad option throws here, when the folder is opened.
 */
function resolveImageFolderOptions(o: ImageFolderOptions): ResolvedImageFolderOptions {
  const normalize = o.normalize ?? IMAGENET_STATS;
  if (normalize.mean.length !== 3 || normalize.std.length !== 3 || normalize.pixelMean !== undefined) {
    throw new Error('imageFolder: normalize takes 3 means and 3 stds (images are RGB; no per-pixel mean)');
  }
  const resolved: ResolvedImageFolderOptions = {
    size: o.size ?? 224,
    resize: o.resize ?? 256,
    train: o.train ?? 'randomResizedCrop',
    scaleRange: o.scaleRange ?? [256, 480],
    view: o.view ?? 'center',
    flip: o.flip ?? true,
    normalize,
    onCorrupt: o.onCorrupt ?? 'fail',
    workers: o.workers,
  };
  native.checkFolderTransform(folderTransform(resolved, resolved.view));
  return resolved;
}

/** The folder's transforms as Rust takes them, evaluated with `view`. */
function folderTransform(o: ResolvedImageFolderOptions, view: ImageFolderView): FolderTransformOptions {
  const scales = viewScales(view);
  return {
    size: o.size,
    resize: o.resize,
    train: o.train as FolderTransformOptions['train'],
    scaleRange: [...o.scaleRange],
    view: (scales === undefined ? view : 'fullImage') as FolderTransformOptions['view'],
    ...(scales === undefined ? {} : { scales }),
    onCorrupt: o.onCorrupt as FolderTransformOptions['onCorrupt'],
    ...(o.workers === undefined ? {} : { workers: o.workers }),
  };
}

/** The fullImage scales of a view, or undefined for the cropped views (their values are checked in Rust). */
function viewScales(view: ImageFolderView): number[] | undefined {
  if (view === 'center' || view === 'tenCrop') return undefined;
  if (typeof view !== 'object' || view === null || !('fullImage' in view)) {
    throw new Error(`unknown view ${JSON.stringify(view)} (expected 'center', 'tenCrop' or { fullImage: scales })`);
  }
  const scales = typeof view.fullImage === 'number' ? [view.fullImage] : [...view.fullImage];
  if (scales.length === 0) throw new Error('view fullImage needs at least one scale');
  return scales;
}

/** Views per image of an evaluation view (1, 10, or the number of scales). */
export function viewsPerImage(view: ImageFolderView): number {
  if (view === 'center') return 1;
  if (view === 'tenCrop') return 10;
  return viewScales(view)?.length ?? 1;
}

/** A file an image-folder loader left out (`onCorrupt: 'skip'`). */
export interface SkippedImage {
  path: string;
  /** The decoder's message, naming the file. */
  reason: string;
}

/**
 * Images on disk, `root/<class>/<image>`, decoded, transformed and normalised in Rust per batch
 * (on a small pool of threads per loader, off the Node main thread). Make one with
 * {@link datasets}.imageFolder. `fit`, {@link DataLoader} and `model.evaluate` take it wherever
 * they take a {@link Dataset}.
 */
export class ImageFolder implements AnyDataset {
  /** @internal */
  readonly native: NativeImageFolder;
  /** The options, with defaults filled in. */
  readonly options: Readonly<ResolvedImageFolderOptions>;

  /** @internal Use {@link datasets}.imageFolder. */
  constructor(nativeFolder: NativeImageFolder, options: ResolvedImageFolderOptions) {
    this.native = nativeFolder;
    this.options = options;
  }

  /** Number of images. */
  get length(): number {
    return this.native.length;
  }
  /** Always 3: images are decoded to RGB (grey replicated, alpha dropped, 16-bit scaled). */
  get channels(): number {
    return 3;
  }
  /** The crop side `size` (training and centre/ten-crop views). */
  get height(): number {
    return this.options.size;
  }
  /** The crop side `size`. */
  get width(): number {
    return this.options.size;
  }
  get numClasses(): number {
    return this.native.numClasses;
  }
  /** The class folder names, in class-index order. */
  get classNames(): string[] {
    return this.native.classNames;
  }
  get root(): string {
    return this.native.root;
  }
  /** The per-channel normalisation of the `normalize` option (default ImageNet's). */
  get normalization(): Normalization {
    return this.options.normalize;
  }
  /** Files left out so far because they could not be decoded (`onCorrupt: 'skip'`), by path. */
  get skipped(): SkippedImage[] {
    return this.native.skipped();
  }

  /** Class index of each image (a copy). */
  labels(): Int32Array {
    return this.native.labels();
  }

  /** The image paths, in sample order (by class, then path). */
  paths(): string[] {
    return this.native.paths();
  }

  /** The given images, in that order, with the same options. */
  subset(indices: readonly number[]): ImageFolder {
    return new ImageFolder(this.native.subset([...indices]), this.options);
  }

  /** The first `k` images. */
  take(k: number): ImageFolder {
    const n = Math.max(0, Math.min(Math.floor(k), this.length));
    return this.subset(Array.from({ length: n }, (_, i) => i));
  }

  /** The same images with other options (e.g. another view or `onCorrupt`). */
  withOptions(options: ImageFolderOptions): ImageFolder {
    return new ImageFolder(this.native, resolveImageFolderOptions({ ...this.options, ...options }));
  }

  /** @internal */
  get augmentsByDefault(): boolean {
    return true;
  }

  /** @internal */
  get defaultView(): ImageFolderView {
    return this.options.view;
  }

  /** @internal */
  resolveNormalization(normalize: NormalizeOption | undefined): Normalization {
    if (normalize === undefined || normalize === 'dataset') return this.normalization;
    if (normalize === 'perPixelMean' || (typeof normalize === 'object' && normalize.pixelMean !== undefined)) {
      throw new Error('image folders take per-channel normalisation only (images differ in size; no per-pixel mean)');
    }
    if (normalize === 'none') return { mean: [0, 0, 0], std: [1, 1, 1] };
    return normalize;
  }

  /** @internal */
  loaderSettings(options: DataLoaderOptions): { augment: AugmentOptions | undefined; view: ImageFolderView | undefined } {
    const a = options.augment;
    if (typeof a === 'object' && a.padCrop !== 0) throw new Error('augment.padCrop does not apply to image folders (use their train transform)');
    const view = options.view ?? this.options.view;
    viewScales(view);
    return { augment: a === true ? { padCrop: 0, flip: this.options.flip } : a === false || a === undefined ? undefined : a, view };
  }

  /** @internal */
  openLoader(loader: DataLoader, epoch: number): NativeLoader {
    return native.NativeLoader.fromFolder(
      this.native,
      {
        batchSize: loader.batchSize,
        shuffle: loader.shuffle,
        dropLast: loader.dropLast,
        train: loader.augment !== undefined,
        flip: loader.augment?.flip ?? false,
        mean: loader.normalization.mean,
        std: loader.normalization.std,
        seed: loader.seed,
        ...(loader.shard === undefined ? {} : { shard: loader.shard }),
      },
      folderTransform(this.options, loader.view ?? this.options.view),
      epoch,
    );
  }
}

const NORMALIZATION_VERSION = 1;

/**
 * The JSON form of a normalisation for checkpoint metadata: a per-pixel mean is stored as
 * base64 of its little-endian float32 values (exact, and a third of the size of decimal text).
 */
export function serializeNormalization(n: Normalization): string {
  const { pixelMean, ...rest } = n;
  if (pixelMean === undefined) return JSON.stringify(rest);
  const bytes = Buffer.from(pixelMean.data.buffer, pixelMean.data.byteOffset, pixelMean.data.byteLength);
  return JSON.stringify({ ...rest, pixelMean: { version: NORMALIZATION_VERSION, shape: pixelMean.shape, float32le: bytes.toString('base64') } });
}

/** Reads {@link serializeNormalization}'s form; undefined when it is not a normalisation. */
export function parseNormalization(text: string): Normalization | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as { mean?: unknown; std?: unknown; pixelMean?: unknown };
  const nums = (a: unknown): a is number[] => Array.isArray(a) && a.every((x) => typeof x === 'number');
  if (!nums(o.mean) || !nums(o.std)) return undefined;
  const out: Normalization = { mean: o.mean, std: o.std };
  if (o.pixelMean !== undefined) {
    const p = o.pixelMean as { shape?: unknown; float32le?: unknown };
    if (!nums(p.shape) || p.shape.length !== 3 || typeof p.float32le !== 'string') return undefined;
    const bytes = Buffer.from(p.float32le, 'base64');
    const [c, h, w] = p.shape as [number, number, number];
    if (bytes.byteLength !== c * h * w * 4) return undefined;
    const data = new Float32Array(c * h * w);
    new Uint8Array(data.buffer).set(bytes);
    out.pixelMean = { shape: [c, h, w], data };
  }
  return out;
}

/** Options of a {@link DataLoader}. */
export interface DataLoaderOptions {
  /** Default 128. */
  batchSize?: number;
  /** Reshuffle every epoch (default true). */
  shuffle?: boolean;
  /** Drop the last, smaller batch (default false). */
  dropLast?: boolean;
  /**
   * `true` for the paper's pad-4 crop + flip; default none. For an {@link ImageFolder}: `true`
   * (or an object, whose `flip` is used and whose `padCrop` must be 0) applies the folder's
   * training transform; otherwise its evaluation view.
   */
  augment?: boolean | AugmentOptions;
  /**
   * `'dataset'` (default): this dataset's own mean/std; `'none'`: pixel/255; `'perPixelMean'`:
   * this dataset's mean image subtracted; or explicit values (use the training set's for
   * validation data).
   */
  normalize?: NormalizeOption;
  /** Seeds the order and augmentation (default 0). */
  seed?: number;
  /** Image folders: the evaluation view, overriding the folder's `view` option. */
  view?: ImageFolderView;
  /**
   * This process's part of each batch in a data-parallel run (`fit` sets it from its
   * `distributed` world): every global batch of `count` x `batchSize` consecutive samples of the
   * epoch's order (one order, the same on every rank) is split into `count` near-equal contiguous
   * pieces and rank `rank` gets its piece. A last global batch smaller than `count` joins the one
   * before. The ranks' pieces together are the epoch, each sample once; every rank gets the same
   * number of batches; augmentation per sample is the same as in one process.
   */
  shard?: Shard;
}

/** See {@link DataLoaderOptions.shard}. */
export interface Shard {
  rank: number;
  count: number;
}

/**
 * One batch of normalised images (NCHW) and labels. With multi-view evaluation of an image
 * folder a row is a view: the views of one image are consecutive rows (or batches, for
 * `fullImage`) sharing a `positions` entry.
 */
export interface Batch {
  images: Float32Array;
  labels: Int32Array;
  shape: [number, number, number, number];
  /** Dataset index of each row's image. */
  indices?: Uint32Array;
  /** Position in the epoch order of each row's image. */
  positions?: Uint32Array;
}

/**
 * A batch as the loader prepared it. Its values stay in Rust: `model.trainStep(batch)`,
 * `evaluateBatch(batch)` and `predict(batch)` hand them to the model without a copy; reading
 * `images`, `labels`, `indices` or `positions` copies that array out once (and from then on the
 * model takes the JS arrays, which the reader may have changed).
 */
class LoadedBatch implements Batch {
  readonly #native: NativeBatch;
  readonly shape: [number, number, number, number];
  #images: Float32Array | undefined;
  #labels: Int32Array | undefined;
  #indices: Uint32Array | undefined;
  #positions: Uint32Array | undefined;

  constructor(nativeBatch: NativeBatch) {
    this.#native = nativeBatch;
    const [n = 0, c = 0, h = 0, w = 0] = nativeBatch.shape;
    this.shape = [n, c, h, w];
  }

  get images(): Float32Array {
    return (this.#images ??= this.#native.images());
  }
  set images(value: Float32Array) {
    this.#images = value;
  }
  get labels(): Int32Array {
    return (this.#labels ??= this.#native.labels());
  }
  set labels(value: Int32Array) {
    this.#labels = value;
  }
  get indices(): Uint32Array {
    return (this.#indices ??= this.#native.indices());
  }
  get positions(): Uint32Array {
    return (this.#positions ??= this.#native.positions());
  }

  /** The Rust batch, while JS has not read (and so cannot have changed) its images or labels. */
  get untouched(): NativeBatch | undefined {
    return this.#images === undefined && this.#labels === undefined ? this.#native : undefined;
  }
}

/**
 * @internal The loader's own batch behind `batch`, for a model call that takes it without a copy;
 * undefined for a batch made in JS or one whose values JS has read.
 */
export function nativeBatchOf(batch: Batch): NativeBatch | undefined {
  return batch instanceof LoadedBatch ? batch.untouched : undefined;
}

/** Resolves an augmentation option to the loader's form (`true` is the paper's pad-4 crop + flip). */
export function resolveAugment(augment: boolean | AugmentOptions | undefined): AugmentOptions | undefined {
  if (augment === true) return { padCrop: 4, flip: true };
  if (augment === false || augment === undefined) return undefined;
  return augment;
}

/**
 * Resolves a normalisation option against a dataset (statistics computed in Rust; for
 * `'perPixelMean'` the mean image, with mean 0 and std 1 per channel).
 */
export function resolveNormalization(normalize: NormalizeOption | undefined, dataset: AnyDataset): Normalization {
  return dataset.resolveNormalization(normalize);
}

/** Validates a loader's shard; a one-rank shard is no shard. */
function checkShard(shard: Shard | undefined, loader: DataLoader): Shard | undefined {
  if (shard === undefined) return undefined;
  const { rank, count } = shard;
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(rank) || rank < 0 || rank >= count) {
    throw new Error(`shard must be { rank, count } with integers 0 <= rank < count, got ${JSON.stringify(shard)}`);
  }
  if (loader.view !== undefined && loader.augment === undefined && typeof loader.view === 'object') {
    throw new Error('shard does not apply to a fullImage view (one batch per image and scale)');
  }
  return count === 1 ? undefined : { rank, count };
}

/**
 * Global batches of `global` samples over `n`, as the sharded loader cuts them: a final global
 * batch with fewer samples than ranks joins the previous one (every rank needs at least one).
 */
function shardedBatches(n: number, global: number, count: number, dropLast: boolean): number {
  const full = Math.floor(n / global);
  const rest = n - full * global;
  if (dropLast || rest === 0) return full;
  return rest >= count || full === 0 ? full + 1 : full;
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
  readonly dataset: AnyDataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly augment: AugmentOptions | undefined;
  /** The normalisation applied (resolved from the options). */
  readonly normalization: Normalization;
  readonly seed: number;
  /** Image folders: the evaluation view used when not augmenting. */
  readonly view: ImageFolderView | undefined;
  /** This rank's part of each global batch, in a data-parallel run. */
  readonly shard: Shard | undefined;

  constructor(dataset: AnyDataset, options: DataLoaderOptions = {}) {
    this.dataset = dataset;
    this.batchSize = options.batchSize ?? 128;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) {
      throw new Error(`batchSize must be a positive integer, got ${this.batchSize}`);
    }
    this.shuffle = options.shuffle ?? true;
    this.dropLast = options.dropLast ?? false;
    ({ augment: this.augment, view: this.view } = dataset.loaderSettings(options));
    this.normalization = dataset.resolveNormalization(options.normalize);
    const pm = this.normalization.pixelMean;
    if (pm !== undefined) {
      const want = [dataset.channels, dataset.height, dataset.width];
      if (pm.shape.some((v, i) => v !== want[i]) || pm.data.length !== want[0]! * want[1]! * want[2]!) {
        throw new Error(`the per-pixel mean has shape [${pm.shape.join(', ')}] but the images are [${want.join(', ')}]`);
      }
    }
    this.seed = options.seed ?? 0;
    this.shard = checkShard(options.shard, this);
  }

  /**
   * Batches per epoch (for an image folder with `onCorrupt: 'skip'`, an upper bound; with a
   * `fullImage` view, one batch per image and scale). With a `shard`, this rank's batches, which
   * is every rank's and the number of global batches.
   */
  get length(): number {
    const n = this.dataset.length;
    if (this.view !== undefined && this.augment === undefined && typeof this.view === 'object') return n * viewsPerImage(this.view);
    if (this.shard !== undefined) return shardedBatches(n, this.batchSize * this.shard.count, this.shard.count, this.dropLast);
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /**
   * The batches of epoch `epoch`, prepared ahead on a Rust thread. Breaking out of the loop stops
   * the preparation.
   */
  async *epoch(epoch = 0): AsyncGenerator<Batch, void, undefined> {
    const loader = this.dataset.openLoader(this, epoch);
    try {
      for (;;) {
        const batch = await loader.next();
        if (batch === null) return;
        yield new LoadedBatch(batch);
      }
    } finally {
      loader.close();
    }
  }
}
