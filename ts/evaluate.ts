/**
 * Multi-view evaluation: ten-crop and fully-convolutional multi-scale testing (He et al. 2015,
 * sec. 3.4 and table 3-5), averaging softmax probabilities over the views of each image.
 *
 * @module
 */

import { DataLoader, viewsPerImage, type AnyDataset, type ImageFolderView, type NormalizeOption } from './data.js';
import { reportAborted, type AbortSignalLike } from './abort.js';
import type { Model } from './model.js';
import { native } from './native.js';

/** Options of {@link evaluateViews}. */
export interface EvaluateViewsOptions {
  /**
   * The views of each image (image folders only; default the folder's `view` option):
   * `'center'`, `'tenCrop'` or `{ fullImage: scales }` (e.g. `{ fullImage: [224, 256, 384, 480, 640] }`).
   * In-memory datasets have one view (the whole image).
   */
  views?: ImageFolderView;
  /**
   * Images per batch (default: 256 divided by the views per image, at least 1). Ten crops make
   * batches of `10 * batchSize` rows; `fullImage` views always run one image at a time.
   */
  batchSize?: number;
  /** Normalisation (default: the model's, else the dataset's). */
  normalize?: NormalizeOption;
  /** Stops between batches: resolves with the images done so far and `aborted: true` (see {@link fit}). */
  signal?: AbortSignalLike;
}

/** Result of {@link evaluateViews}: means over the images. */
export interface ViewsEvaluateResult {
  /** Mean negative log of the averaged probability of the true class. */
  loss: number;
  /** Fraction of images whose averaged probabilities rank the true class first. */
  top1: number;
  /** ... among the five most probable. */
  top5: number;
  /** Images evaluated (files skipped under `onCorrupt: 'skip'` are not counted). */
  count: number;
  /** Views per image. */
  views: number;
  /** True when `signal` stopped the evaluation early: the means are over the first `count` images only. */
  aborted: boolean;
}

/**
 * Evaluates `model` (eval mode) on every image of `dataset`: the logits of each view go through a
 * softmax, the probabilities of an image's views are averaged, and top-1 / top-5 / loss are taken
 * on the average. With one view this is ordinary evaluation.
 *
 * ```ts
 * const val = await datasets.imageFolder('imagenet/val');
 * const tenCrop = await evaluateViews(model, val, { views: 'tenCrop' });
 * const multiScale = await evaluateViews(model, val, { views: { fullImage: [224, 256, 384, 480, 640] } });
 * ```
 */
export async function evaluateViews(model: Model, dataset: AnyDataset, options: EvaluateViewsOptions = {}): Promise<ViewsEvaluateResult> {
  const loader = new DataLoader(dataset, {
    batchSize: options.batchSize ?? Math.max(1, Math.floor(256 / viewsPerImage(options.views ?? 'center'))),
    shuffle: false,
    augment: false,
    normalize: options.normalize ?? model.normalization ?? 'dataset',
    ...(options.views === undefined ? {} : { view: options.views }),
  });
  const views = loader.view === undefined ? 1 : viewsPerImage(loader.view);
  // The averaging and the scoring are Rust's; this loop only feeds it batches.
  const score = new native.NativeViewScore();
  let aborted = false;
  for await (const batch of loader.epoch(0)) {
    if (options.signal?.aborted) {
      aborted = true;
      reportAborted('evaluateViews', options.signal, `after ${score.scored} of ${dataset.length} images`, 'the result covers those images only and has aborted: true');
      break;
    }
    await model.scoreViews(batch, score);
  }
  const { lossSum, top1, top5, count } = score.finish();
  return { loss: count ? lossSum / count : 0, top1: count ? top1 / count : 0, top5: count ? top5 / count : 0, count, views, aborted };
}
