/**
 * The one place that knows where the compiled addon lives: `native/index.cjs`, the loader napi-rs
 * generates beside `resnet-wgpu.<platform>.node`. The same relative path works from `ts/` (tests)
 * and from `dist/` (the published package).
 *
 * @internal
 * @module
 */

import { createRequire } from 'node:module';
import type * as Binding from '../native/index.js';
import { nativeLoadError } from './native-error.js';

const require = createRequire(import.meta.url);

function load(): typeof Binding {
  try {
    return require('../native/index.cjs') as typeof Binding;
  } catch (error) {
    throw nativeLoadError(error); // names the platform and how to build from source
  }
}

/** The napi-rs binding. */
export const native = load();

export type {
  FolderTransformOptions,
  NativeBatch,
  NativeDataset,
  NativeImageFolder,
  NativeLoader,
  NativeModel,
  NativeSgd,
  NativeTensor,
  NativeViewScore,
  NativeWorld,
  DistributedOptions,
  ShardOptions,
  EvalStats,
  TrainStats,
} from '../native/index.js';
