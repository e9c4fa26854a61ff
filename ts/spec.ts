/**
 * Architectures as plain typed data. A {@link ResNetSpec} crosses to Rust once, as JSON; Rust
 * builds the module tree from it. `resnet.cifar` and `resnet.imagenet` build the paper's networks.
 *
 * @module
 */

import { boolean, integer, invalid, knownKeys, oneOf, show } from './validate.js';

/**
 * How a residual block's shortcut handles a change of shape (He et al. 2015, sec. 3.3):
 * `A` zero-pads and subsamples (no parameters), `B` projects with a 1x1 convolution only where the
 * shape changes, `C` projects on every block.
 */
export type ShortcutOption = 'A' | 'B' | 'C';

/** `basic`: two 3x3 convolutions. `bottleneck`: 1x1, 3x3, 1x1 (output is 4x the width). */
export type BlockKind = 'basic' | 'bottleneck';

/** `cifar`: one 3x3 convolution. `imagenet`: 7x7 stride-2 convolution, then 3x3 stride-2 max pool. */
export type StemKind = 'cifar' | 'imagenet';

/** Elementwise nonlinearity used throughout the network. */
export type ActivationKind = 'relu' | 'tanh' | 'sigmoid';

/**
 * Which convolution of a bottleneck carries the stage's stride: `1x1` as in the paper, `3x3` as
 * torchvision ("ResNet v1.5", whose pretrained weights expect it).
 */
export type BottleneckStride = '1x1' | '3x3';

/** One stage: `count` blocks of one kind; the first block applies `stride`. */
export interface StageSpec {
  block: BlockKind;
  count: number;
  /** Channels of the block's 3x3 convolutions (a bottleneck outputs four times this). */
  width: number;
  stride: number;
}

/** A whole network. Plain data: build it by hand, or with {@link resnet}. */
export interface ResNetSpec {
  stem: StemKind;
  stemWidth: number;
  stages: StageSpec[];
  shortcut: ShortcutOption;
  /** No shortcuts at all: the paper's "plain" baseline. */
  plain: boolean;
  inChannels: number;
  numClasses: number;
  /** Default `'3x3'` (torchvision). */
  bottleneckStride?: BottleneckStride;
  /** Default `'relu'`. */
  activation?: ActivationKind;
  /**
   * The pre-activation residual unit of He et al. 2016, "Identity Mappings in Deep Residual
   * Networks" (default `false`): batch norm and activation before each convolution, nothing after
   * the addition, a final batch norm + activation (`bn_final`) before the pooling. A CIFAR stem is
   * then a bare convolution; an ImageNet stem keeps conv-BN-act-maxpool. A shortcut that changes
   * the shape takes the pre-activated input (projections have no batch norm). With `plain`: the
   * same ordering without shortcuts.
   */
  preActivation?: boolean;
  /**
   * Batch normalisation (default `true`; the key is left out then, so existing specs and
   * checkpoints compare unchanged). `false` builds the network without any batch norm, for the
   * vanishing-gradient experiments: none in the stem, the blocks, the projection shortcuts or a
   * pre-activation net's `bn_final`. Each convolution then feeds the activation directly (or the
   * addition, then the activation); a pre-activation block is act-conv. The convolutions stay
   * bias-free and He-initialised (the same weights for a seed as with batch norm): the experiment
   * measures gradients at initialisation, where a zero bias changes nothing. The state dict has
   * only convolution weights and `fc`; {@link Model.layerResponses} reports each convolution's
   * output. {@link nameOf} does not change (`Plain-20` either way).
   */
  batchNorm?: boolean;
}

/** Options of {@link resnet}.cifar. */
export interface CifarOptions {
  /** 6n+2: 20, 32, 44, 56, 110, 1202, ... (8 is the smallest). */
  depth: number;
  /** Default `'A'` (the paper's CIFAR choice). */
  shortcut?: ShortcutOption;
  /** Default `false`. */
  plain?: boolean;
  /** Default 3. */
  inChannels?: number;
  /** Default 10. */
  numClasses?: number;
  /** Default `'relu'`. */
  activation?: ActivationKind;
  /** Pre-activation residual units (He et al. 2016); default `false`. See {@link ResNetSpec.preActivation}. */
  preActivation?: boolean;
  /** Default `true`; `false`: no batch norm anywhere (vanishing-gradient experiments). See {@link ResNetSpec.batchNorm}. */
  batchNorm?: boolean;
}

/** Depths of the paper's ImageNet networks (Table 1). */
export type ImagenetDepth = 18 | 34 | 50 | 101 | 152;

/** Options of {@link resnet}.imagenet. */
export interface ImagenetOptions {
  depth: ImagenetDepth;
  /** Default `'B'` (torchvision's choice). */
  shortcut?: ShortcutOption;
  /** Default `false`. */
  plain?: boolean;
  /** Default 3. */
  inChannels?: number;
  /** Default 1000. */
  numClasses?: number;
  /** Default `'3x3'` (torchvision v1.5). */
  bottleneckStride?: BottleneckStride;
  /** Default `'relu'`. */
  activation?: ActivationKind;
  /** Pre-activation residual units (He et al. 2016); default `false`. See {@link ResNetSpec.preActivation}. */
  preActivation?: boolean;
  /** Default `true`; `false`: no batch norm anywhere (vanishing-gradient experiments). See {@link ResNetSpec.batchNorm}. */
  batchNorm?: boolean;
}

const IMAGENET_LAYOUT: Record<ImagenetDepth, { block: BlockKind; counts: [number, number, number, number] }> = {
  18: { block: 'basic', counts: [2, 2, 2, 2] },
  34: { block: 'basic', counts: [3, 4, 6, 3] },
  50: { block: 'bottleneck', counts: [3, 4, 6, 3] },
  101: { block: 'bottleneck', counts: [3, 4, 23, 3] },
  152: { block: 'bottleneck', counts: [3, 8, 36, 3] },
};

/** The allowed values of the string options, for validation and messages. */
const SHORTCUTS: readonly ShortcutOption[] = ['A', 'B', 'C'];
const ACTIVATIONS: readonly ActivationKind[] = ['relu', 'tanh', 'sigmoid'];
const BOTTLENECK_STRIDES: readonly BottleneckStride[] = ['1x1', '3x3'];
const CIFAR_KEYS = ['depth', 'shortcut', 'plain', 'inChannels', 'numClasses', 'activation', 'preActivation', 'batchNorm'] as const;
const IMAGENET_KEYS = [...CIFAR_KEYS, 'bottleneckStride'] as const;

/**
 * The options shared by both factories, checked (each error names the factory, the option, the
 * value and what is allowed) and filled with defaults.
 */
function commonOptions(
  what: string,
  options: CifarOptions | ImagenetOptions,
  defaults: { shortcut: ShortcutOption; numClasses: number },
): Pick<ResNetSpec, 'shortcut' | 'plain' | 'inChannels' | 'numClasses'> & {
  activation: ActivationKind | undefined;
  preActivation: boolean;
  batchNorm: boolean;
} {
  const o = options;
  return {
    shortcut: oneOf(what, 'shortcut', o.shortcut ?? defaults.shortcut, SHORTCUTS),
    plain: boolean(what, 'plain', o.plain ?? false),
    inChannels: integer(what, 'inChannels', o.inChannels ?? 3, 1),
    numClasses: integer(what, 'numClasses', o.numClasses ?? defaults.numClasses, 1),
    activation: o.activation === undefined ? undefined : oneOf(what, 'activation', o.activation, ACTIVATIONS),
    preActivation: boolean(what, 'preActivation', o.preActivation ?? false),
    batchNorm: boolean(what, 'batchNorm', o.batchNorm ?? true),
  };
}

/** The options object itself: an object with no unknown keys (a typo would otherwise be ignored). */
function checkOptions(what: string, options: unknown, keys: readonly string[]): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalid(what, 'options', `an object such as { depth: ${what.endsWith('cifar') ? 20 : 50} }`, options);
  }
  knownKeys(what, options, keys);
}

/** Factories for the networks of He et al. (2015), in torchvision's style. */
export const resnet = {
  /**
   * The CIFAR-10 networks of section 4.2: a 3x3 stem of width 16, then three stages of n basic
   * blocks (widths 16, 32, 64; strides 1, 2, 2), global average pooling and a linear classifier.
   *
   * @throws Error if `depth` is not 6n+2, or an option has a value it does not allow (the
   * message names the option, the value and the allowed values), or an option is unknown.
   */
  cifar(options: CifarOptions): ResNetSpec {
    const what = 'resnet.cifar';
    checkOptions(what, options, CIFAR_KEYS);
    const { depth } = options;
    if (typeof depth !== 'number' || !Number.isInteger(depth) || depth < 8 || (depth - 2) % 6 !== 0) {
      throw new Error(`CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got depth ${show(depth)}`);
    }
    const { shortcut, plain, inChannels, numClasses, activation, preActivation, batchNorm } = commonOptions(what, options, {
      shortcut: 'A',
      numClasses: 10,
    });
    const n = (depth - 2) / 6;
    const spec: ResNetSpec = {
      stem: 'cifar',
      stemWidth: 16,
      stages: [
        { block: 'basic', count: n, width: 16, stride: 1 },
        { block: 'basic', count: n, width: 32, stride: 2 },
        { block: 'basic', count: n, width: 64, stride: 2 },
      ],
      shortcut,
      plain,
      inChannels,
      numClasses,
    };
    if (activation !== undefined) spec.activation = activation;
    if (preActivation) spec.preActivation = true;
    if (!batchNorm) spec.batchNorm = false;
    return spec;
  },

  /**
   * The ImageNet networks of Table 1: 7x7/2 stem of width 64 and 3x3/2 max pool, then four stages
   * (widths 64, 128, 256, 512; strides 1, 2, 2, 2) of basic (18, 34) or bottleneck (50, 101, 152)
   * blocks.
   *
   * @throws Error if `depth` is not 18, 34, 50, 101 or 152, or an option has a value it does not
   * allow (the message names the option, the value and the allowed values), or an option is unknown.
   */
  imagenet(options: ImagenetOptions): ResNetSpec {
    const what = 'resnet.imagenet';
    checkOptions(what, options, IMAGENET_KEYS);
    const { depth } = options;
    const layout = typeof depth === 'number' ? IMAGENET_LAYOUT[depth] : undefined;
    if (layout === undefined) {
      throw new Error(`ImageNet ResNet depth must be 18, 34, 50, 101 or 152, got depth ${show(depth)}`);
    }
    const { shortcut, plain, inChannels, numClasses, activation, preActivation, batchNorm } = commonOptions(what, options, {
      shortcut: 'B',
      numClasses: 1000,
    });
    const bottleneckStride = oneOf(what, 'bottleneckStride', options.bottleneckStride ?? '3x3', BOTTLENECK_STRIDES);
    const widths = [64, 128, 256, 512];
    const strides = [1, 2, 2, 2];
    const spec: ResNetSpec = {
      stem: 'imagenet',
      stemWidth: 64,
      stages: layout.counts.map((count, i) => ({
        block: layout.block,
        count,
        width: widths[i] as number,
        stride: strides[i] as number,
      })),
      shortcut,
      plain,
      inChannels,
      numClasses,
      bottleneckStride,
    };
    if (activation !== undefined) spec.activation = activation;
    if (preActivation) spec.preActivation = true;
    if (!batchNorm) spec.batchNorm = false;
    return spec;
  },
};

/** Weighted layers of a spec: stem + 2 or 3 per block + classifier (the paper's "depth"). */
export function depthOf(spec: ResNetSpec): number {
  return 2 + spec.stages.reduce((sum, s) => sum + s.count * (s.block === 'basic' ? 2 : 3), 0);
}

/** A short name: `ResNet-20`, `Plain-56`, and for pre-activation nets `PreResNet-110`, `PrePlain-20`. */
export function nameOf(spec: ResNetSpec): string {
  const family = spec.plain ? 'Plain' : 'ResNet';
  return `${spec.preActivation === true ? 'Pre' : ''}${family}-${depthOf(spec)}`;
}

/**
 * The input side assumed for a net that has seen no data ({@link Model.summary}, `predict` on a
 * checkpoint without `imageSize` metadata): 224 for ImageNet stems (the paper's crops); for
 * CIFAR stems 28 with one input channel (MNIST and Fashion-MNIST, this package's default
 * dataset) and 32 otherwise (CIFAR-10).
 */
export function defaultInputSize(spec: ResNetSpec): number {
  if (spec.stem !== 'cifar') return 224;
  return spec.inChannels === 1 ? 28 : 32;
}
