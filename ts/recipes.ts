/**
 * The paper's training recipes as named presets (every field overridable), and their shortened
 * variants for a quick run. A recipe is plain data; {@link recipeFitOptions} turns it into
 * {@link FitOptions} and {@link splitForRecipe} makes its train/validation split.
 *
 * @module
 */

import { IMAGENET_STATS, type AugmentOptions, type ImageFolderOptions, type ImageFolderView, type Normalization } from './data.js';
import type { SgdOptions } from './optim.js';
import type { FitOptions, PlateauOptions, WarmStartOptions } from './trainer.js';

/** How a recipe normalises pixels (see `FitOptions.normalize`). */
export type RecipeNormalization = 'dataset' | 'perPixelMean' | 'none' | Normalization;

/** A training recipe: everything about a run except the network and the data. */
export interface Recipe {
  name: string;
  /** One line, saying what differs from the paper for shortened variants. */
  description: string;
  /** True for a shortened variant of a paper recipe (not the paper's schedule). */
  shortened: boolean;
  batchSize: number;
  optimizer: SgdOptions;
  /** Run length in epochs (ignored when `iterations` is set). */
  epochs: number;
  /** Run length in optimizer steps (the paper's CIFAR recipe: 64k). */
  iterations?: number;
  /** Pad-and-crop / flip augmentation of in-memory datasets. */
  augment: boolean | AugmentOptions;
  normalize: RecipeNormalization;
  /** Images held out of the training set for validation (the paper's CIFAR split: 5k of 50k). */
  validationImages: number;
  warmStart?: WarmStartOptions;
  plateau?: PlateauOptions;
  /** Image-folder options the recipe expects (ImageNet): training crop and evaluation views. */
  imageFolder?: ImageFolderRecipe;
}

/**
 * The image-folder side of the ImageNet recipe: the options of `datasets.imageFolder` for the
 * training set, and the evaluation views the paper reports.
 */
export interface ImageFolderRecipe {
  train: ImageFolderOptions;
  /** Single 224 centre crop, 10-crop, and fully-convolutional multi-scale ({224, ..., 640}). */
  evaluation: ImageFolderView[];
}

/** Options of {@link recipes}.cifarPaper: the depth picks ResNet-110's warm start. */
export type CifarRecipeOptions = Partial<Recipe> & { depth?: number };

function merge(base: Recipe, overrides: Partial<Recipe>): Recipe {
  const { optimizer, ...rest } = overrides;
  return { ...base, ...rest, optimizer: { ...base.optimizer, ...optimizer } };
}

/** The paper's recipes (He et al. 2015, sec. 3.4 and 4.2) and shortened variants. */
export const recipes = {
  /**
   * Sec. 4.2: batch 128, SGD lr 0.1, momentum 0.9, weight decay 1e-4, lr /10 at 32k and 48k
   * iterations, stop at 64k; 45k/5k train/validation split; 4-pixel pad, random crop and flip;
   * per-pixel mean subtracted. With `depth >= 110`: lr 0.01 until the training error is below
   * 80% (about 400 iterations), then 0.1.
   */
  cifarPaper(options: CifarRecipeOptions = {}): Recipe {
    const { depth, ...overrides } = options;
    const base: Recipe = {
      name: 'cifarPaper',
      description: 'He et al. 2015 sec. 4.2: 64k iterations of batch 128, lr 0.1 /10 at 32k and 48k, 45k/5k split',
      shortened: false,
      batchSize: 128,
      optimizer: {
        lr: 0.1,
        momentum: 0.9,
        weightDecay: 1e-4,
        schedule: { kind: 'multistep', milestones: [32000, 48000], gamma: 0.1 },
      },
      epochs: 164,
      iterations: 64000,
      augment: { padCrop: 4, flip: true },
      normalize: 'perPixelMean',
      validationImages: 5000,
    };
    if (depth !== undefined && depth >= 110) {
      base.warmStart = { lr: 0.01, untilTrainErrorBelow: 0.8, maxSteps: 400 * 4 };
    }
    return merge(base, overrides);
  },

  /**
   * SHORTENED cifarPaper: the same structure (batch 128, lr 0.1, momentum 0.9, weight decay 1e-4,
   * pad-4 crop + flip, lr /10 at 50% and 75% of the run) over 12 epochs of the whole training set,
   * with the dataset's mean/std, evaluated on the test set. This is the recipe of the
   * Fashion-MNIST degradation run and of `../anchors/torch_fmnist.py`.
   */
  cifarPaperShort(options: CifarRecipeOptions = {}): Recipe {
    const { depth, ...overrides } = options;
    const paper = recipes.cifarPaper(depth === undefined ? {} : { depth });
    const base: Recipe = {
      ...paper,
      name: 'cifarPaperShort',
      description: 'SHORTENED cifarPaper: 12 epochs, lr /10 at 50% and 75%, no validation split, dataset mean/std',
      shortened: true,
      epochs: 12,
      optimizer: { ...paper.optimizer, schedule: { kind: 'multistep', fractions: [0.5, 0.75], gamma: 0.1 } },
      normalize: 'dataset',
      validationImages: 0,
    };
    delete base.iterations;
    return merge(base, overrides);
  },

  /**
   * Sec. 3.4: batch 256, lr 0.1 divided by 10 when the error plateaus, weight decay 1e-4,
   * momentum 0.9, up to 60e4 iterations (about 120 epochs of ImageNet); scale augmentation
   * (shorter side in [256, 480]), 224 crops, flip, colour normalisation. Evaluation: single
   * 224 centre crop, 10-crop, and fully-convolutional multi-scale {224, 256, 384, 480, 640}.
   */
  imagenetPaper(overrides: Partial<Recipe> = {}): Recipe {
    const base: Recipe = {
      name: 'imagenetPaper',
      description: 'He et al. 2015 sec. 3.4: batch 256, lr 0.1 /10 on plateau, scale augmentation [256, 480], 224 crops',
      shortened: false,
      batchSize: 256,
      optimizer: { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 },
      epochs: 120,
      augment: false,
      normalize: IMAGENET_STATS,
      validationImages: 0,
      plateau: { factor: 0.1, patience: 5 },
      imageFolder: {
        train: { size: 224, resize: 256, train: 'scaleAugment', scaleRange: [256, 480], flip: true, normalize: IMAGENET_STATS },
        evaluation: ['center', 'tenCrop', { fullImage: [224, 256, 384, 480, 640] }],
      },
    };
    return merge(base, overrides);
  },

  /**
   * SHORTENED imagenetPaper: 16 epochs with lr /10 at 50% and 75% instead of dividing on
   * plateaus, otherwise the same.
   */
  imagenetPaperShort(overrides: Partial<Recipe> = {}): Recipe {
    const paper = recipes.imagenetPaper();
    const base: Recipe = {
      ...paper,
      name: 'imagenetPaperShort',
      description: 'SHORTENED imagenetPaper: 16 epochs, lr /10 at 50% and 75% instead of on plateaus',
      shortened: true,
      epochs: 16,
      optimizer: { ...paper.optimizer, schedule: { kind: 'multistep', fractions: [0.5, 0.75], gamma: 0.1 } },
    };
    delete base.plateau;
    return merge(base, overrides);
  },
};

/** Names accepted by {@link recipeByName}. */
export type RecipeName = keyof typeof recipes;

/** A recipe by name, e.g. from the CLI. */
export function recipeByName(name: string, options: CifarRecipeOptions = {}): Recipe {
  switch (name) {
    case 'cifarPaper':
    case 'cifarPaperShort':
      return recipes[name](options);
    case 'imagenetPaper':
    case 'imagenetPaperShort': {
      const { depth: _depth, ...rest } = options;
      return recipes[name](rest);
    }
    default:
      throw new Error(`unknown recipe '${name}': expected one of ${Object.keys(recipes).join(', ')}`);
  }
}

/**
 * The training set and validation set a recipe asks for: `validationImages` held out at random
 * (fixed by `seed`), or the whole set and no validation.
 */
export function splitForRecipe<T extends { readonly length: number; subset(indices: readonly number[]): T }>(
  train: T,
  recipe: Recipe,
  seed = 0,
): { train: T; validation?: T } {
  const k = recipe.validationImages;
  if (k <= 0) return { train };
  if (k >= train.length) throw new Error(`the recipe holds out ${k} validation images but the training set has ${train.length}`);
  const order = shuffled(train.length, seed);
  return { train: train.subset(order.slice(k).sort((a, b) => a - b)), validation: train.subset(order.slice(0, k).sort((a, b) => a - b)) };
}

/** A fixed permutation of 0..n-1 (xorshift; only needs to be stable across platforms). */
function shuffled(n: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  for (let i = n - 1; i > 0; i--) {
    const j = next() % (i + 1);
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

/** The {@link FitOptions} of a recipe (data, callbacks and validation set are the caller's). */
export function recipeFitOptions(recipe: Recipe): FitOptions {
  const options: FitOptions = {
    epochs: recipe.epochs,
    batchSize: recipe.batchSize,
    optimizer: recipe.optimizer,
    augment: recipe.augment,
    normalize: recipe.normalize,
  };
  if (recipe.iterations !== undefined) options.iterations = recipe.iterations;
  if (recipe.warmStart !== undefined) options.warmStart = recipe.warmStart;
  if (recipe.plateau !== undefined) options.plateau = recipe.plateau;
  return options;
}
