/**
 * Classifying image files (JPEG or PNG) with a trained model: decode (in Rust, with the `image`
 * crate), resize, convert to the model's channels, normalise as in training, softmax, top-k. Used
 * by `resnet-wgpu predict`.
 *
 * @module
 */

import { readFile } from 'node:fs/promises';

import type { Model } from './model.js';
import { native } from './native.js';
import { defaultInputSize } from './spec.js';

/** Fashion-MNIST's classes, in label order. */
export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

/** One class of a prediction. */
export interface ClassScore {
  index: number;
  label: string;
  probability: number;
}

/** The input side a checkpoint was trained at: metadata `imageSize`, 28 for Fashion-MNIST, else the stem's default. */
export function inputSizeOf(model: Model): number {
  const meta = model.checkpointMetadata;
  const stored = Number(meta['imageSize']);
  if (Number.isInteger(stored) && stored > 0) return stored;
  if (meta['dataset'] === 'fashion-mnist') return 28;
  return defaultInputSize(model.spec);
}

/** Class names from metadata `classNames` (JSON array), Fashion-MNIST's, or `class <k>`. */
export function classNamesOf(model: Model): string[] {
  const meta = model.checkpointMetadata;
  const n = model.spec.numClasses;
  try {
    const parsed: unknown = JSON.parse(meta['classNames'] ?? 'null');
    if (Array.isArray(parsed) && parsed.length === n) return parsed.map(String);
  } catch {
    // fall through
  }
  if (meta['dataset'] === 'fashion-mnist' && n === FASHION_MNIST_CLASSES.length) return FASHION_MNIST_CLASSES;
  return Array.from({ length: n }, (_, k) => `class ${k}`);
}

/** torchvision's ImageNet normalisation, for ImageNet models that carry none of their own. */
export const IMAGENET_NORMALIZATION = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/**
 * The NCHW input (one image) for a decoded RGBA image: bilinear resize to `size` x `size` (or,
 * with `resizeShorter`, the ImageNet evaluation transform: shorter side to `resizeShorter`, then
 * the centre `size` x `size` crop), grey (ITU-R 601 luma) for 1-channel models, then
 * `(pixel/255 - mean) / std`.
 */
export function preprocess(
  rgba: Uint8Array,
  width: number,
  height: number,
  size: number,
  channels: number,
  norm: { mean: number[]; std: number[] } | undefined,
  resizeShorter?: number,
): Float32Array {
  if (channels !== 1 && channels !== 3) throw new Error(`predict takes 1- or 3-channel models, this one has ${channels}`);
  const out = new Float32Array(channels * size * size);
  const px = (x: number, y: number, c: number): number => rgba[(y * width + x) * 4 + c] as number;
  // Output pixel o maps to source (o + offset + 0.5) / scale - 0.5 along each axis.
  const scaleX = resizeShorter === undefined ? size / width : resizeShorter / Math.min(width, height);
  const scaleY = resizeShorter === undefined ? size / height : scaleX;
  const offX = resizeShorter === undefined ? 0 : Math.floor((Math.round(width * scaleX) - size) / 2);
  const offY = resizeShorter === undefined ? 0 : Math.floor((Math.round(height * scaleY) - size) / 2);
  for (let oy = 0; oy < size; oy++) {
    const sy = Math.min(Math.max((oy + offY + 0.5) / scaleY - 0.5, 0), height - 1);
    const y0 = Math.floor(sy);
    const y1 = Math.min(y0 + 1, height - 1);
    const fy = sy - y0;
    for (let ox = 0; ox < size; ox++) {
      const sx = Math.min(Math.max((ox + offX + 0.5) / scaleX - 0.5, 0), width - 1);
      const x0 = Math.floor(sx);
      const x1 = Math.min(x0 + 1, width - 1);
      const fx = sx - x0;
      const sample = (c: number): number =>
        (1 - fy) * ((1 - fx) * px(x0, y0, c) + fx * px(x1, y0, c)) + fy * ((1 - fx) * px(x0, y1, c) + fx * px(x1, y1, c));
      const rgb = [sample(0), sample(1), sample(2)] as const;
      const values = channels === 1 ? [0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]] : [...rgb];
      values.forEach((v, c) => {
        const mean = norm?.mean[c] ?? 0;
        const std = norm?.std[c] ?? 1;
        out[(c * size + oy) * size + ox] = (v / 255 - mean) / std;
      });
    }
  }
  return out;
}

/** A decoded image: 8-bit RGBA pixels, row-major. */
export interface DecodedImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/**
 * Decodes JPEG or PNG bytes (the format is read from the content) to 8-bit RGBA, in Rust off the
 * main thread: grey is replicated, alpha kept (opaque where absent), 16-bit scaled to 8 bits.
 */
export async function decodeImage(bytes: Uint8Array): Promise<DecodedImage> {
  return native.decodeImage(bytes);
}

/**
 * Encodes 8-bit interleaved pixels (`channels` 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) as PNG, or
 * as JPEG when `jpegQuality` (1-100) is given (alpha dropped). Handy for writing test images and
 * image folders.
 */
export function encodeImage(
  pixels: Uint8Array,
  options: { width: number; height: number; channels: 1 | 2 | 3 | 4; jpegQuality?: number },
): Uint8Array {
  return native.encodeImage(pixels, options.width, options.height, options.channels, options.jpegQuality ?? null);
}

/**
 * Top-`k` classes (default 5) of each JPEG or PNG file. ImageNet-stem models get the ImageNet evaluation
 * transform (resize 256, centre crop 224, ImageNet normalisation unless the checkpoint has its
 * own) unless `size` is given; other models are resized to their training size.
 */
export async function classifyImages(
  model: Model,
  files: readonly string[],
  options: { size?: number; top?: number } = {},
): Promise<{ file: string; top: ClassScore[] }[]> {
  const imagenet = model.spec.stem === 'imagenet' && options.size === undefined;
  const size = imagenet ? 224 : (options.size ?? inputSizeOf(model));
  const norm = model.normalization ?? (imagenet ? IMAGENET_NORMALIZATION : undefined);
  const names = classNamesOf(model);
  const c = model.spec.inChannels;
  const results = [];
  for (const file of files) {
    let image;
    try {
      image = await decodeImage(await readFile(file));
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      // The decoder's messages already say "cannot read/decode the image ...".
      throw new Error(message.startsWith('cannot ') ? `${file}: ${message}` : `${file}: cannot decode the image (JPEG or PNG expected): ${message}`);
    }
    const x = preprocess(image.data, image.width, image.height, size, c, norm, imagenet ? 256 : undefined);
    const logits = await model.predict(x, [1, c, size, size]);
    const max = Math.max(...logits);
    const exp = Array.from(logits, (v) => Math.exp(v - max));
    const sum = exp.reduce((a, b) => a + b, 0);
    const scores = exp.map((e, index) => ({ index, label: names[index] ?? `class ${index}`, probability: e / sum }));
    scores.sort((a, b) => b.probability - a.probability);
    results.push({ file, top: scores.slice(0, options.top ?? 5) });
  }
  return results;
}
