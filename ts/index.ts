/**
 * resnet-wgpu: define, train and run ResNets (He et al. 2015) from TypeScript; the work is done
 * in Rust.
 *
 * ```ts
 * import { resnet, Model, datasets, fit, schedules } from 'resnet-wgpu';
 * const train = await datasets.fashionMnist({ split: 'train' });
 * const model = Model.create(resnet.cifar({ depth: 20, inChannels: 1 }), { seed: 0 });
 * await fit(model, train, { epochs: 1, schedule: schedules.paper() });
 * ```
 *
 * @module
 */

export {
  resnet,
  depthOf,
  nameOf,
  defaultInputSize,
  type ResNetSpec,
  type StageSpec,
  type ShortcutOption,
  type BlockKind,
  type StemKind,
  type ActivationKind,
  type BottleneckStride,
  type CifarOptions,
  type ImagenetOptions,
  type ImagenetDepth,
} from './spec.js';
export {
  Model,
  type CreateOptions,
  type DeviceName,
  type Precision,
  type EvaluateResult,
  type LayerRow,
  type LayerResponse,
  type GradNorm,
  type ModelSummary,
  type Shape4,
  type TrainStepResult,
} from './model.js';
export { Tensor, ops, SGD } from './tensor.js';
export {
  sgd,
  schedules,
  paperMilestones,
  resolveSchedule,
  toSgdConfig,
  type Schedule,
  type ScheduleOption,
  type SgdConfig,
  type SgdOptions,
} from './optim.js';
export {
  Dataset,
  DataLoader,
  datasets,
  ImageFolder,
  IMAGENET_STATS,
  viewsPerImage,
  type AnyDataset,
  type AugmentOptions,
  type Batch,
  type DataLoaderOptions,
  type ImageFolderOptions,
  type ImageFolderTrainTransform,
  type ImageFolderView,
  type Normalization,
  type NormalizeOption,
  type PixelMean,
  type ResolvedImageFolderOptions,
  type SkippedImage,
  type Shard,
  type Split,
} from './data.js';
export { evaluateViews, type EvaluateViewsOptions, type ViewsEvaluateResult } from './evaluate.js';
export {
  fit,
  Trainer,
  type BatchLogs,
  type Callbacks,
  type EpochLogs,
  type FitOptions,
  type History,
  type PlateauOptions,
  type WarmStartOptions,
} from './trainer.js';
export { loadTorchvision, readSafetensorsHeader, type SafetensorsEntry, type TorchvisionArch } from './torchvision.js';
export { classifyImages, preprocess, FASHION_MNIST_CLASSES, type ClassScore } from './predict.js';
export { decodeImage, encodeImage, type DecodedImage } from './predict.js';
export {
  recipes,
  recipeByName,
  recipeFitOptions,
  splitForRecipe,
  type Recipe,
  type RecipeName,
  type RecipeNormalization,
  type ImageFolderRecipe,
  type CifarRecipeOptions,
} from './recipes.js';
export * as experiments from './experiments/index.js';
export * as distributed from './distributed.js';
export type { World, InitOptions as DistributedInitOptions } from './distributed.js';
export { renderSvg, svgToPng, writeFigure, writeCsv, toCsv, type Figure, type Panel, type Series } from './plot.js';
