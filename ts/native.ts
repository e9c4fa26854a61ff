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

const require = createRequire(import.meta.url);

/** The napi-rs binding. */
export const native = require('../native/index.cjs') as typeof Binding;

export type {
  NativeBatch,
  NativeDataset,
  NativeLoader,
  NativeModel,
  NativeSgd,
  NativeTensor,
  EvalStats,
  TrainStats,
} from '../native/index.js';
