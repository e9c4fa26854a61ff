/**
 * torchvision interop: build the ImageNet ResNet that a torchvision state dict belongs to and load
 * it (`safetensors.torch.save_file(torchvision.models.resnet50(weights=...).state_dict(), path)`).
 * The rule (architecture name to depth, input channels and classes from the weights' shapes) is
 * Rust's (`resnet_core::model::torchvision`); this module only forwards to it.
 *
 * @module
 */

import { open } from 'node:fs/promises';

import { Model, type DeviceName } from './model.js';
import { native } from './native.js';

/** The torchvision architectures {@link loadTorchvision} takes (Rust maps each to its depth). */
export type TorchvisionArch = 'resnet18' | 'resnet34' | 'resnet50' | 'resnet101' | 'resnet152';

/** One entry of a safetensors header. */
export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The JSON header of a safetensors file (tensor name -> entry), without `__metadata__`. */
export async function readSafetensorsHeader(path: string): Promise<Record<string, SafetensorsEntry>> {
  const file = await open(path, 'r');
  try {
    const len = Buffer.alloc(8);
    const { bytesRead } = await file.read(len, 0, 8, 0);
    const size = (await file.stat()).size;
    const headerLen = bytesRead === 8 ? Number(len.readBigUInt64LE(0)) : -1;
    if (headerLen < 2 || headerLen > size - 8 || headerLen > 100_000_000) {
      throw new Error(`checkpoint ${path}: truncated or not a safetensors file`);
    }
    const header = Buffer.alloc(headerLen);
    await file.read(header, 0, headerLen, 8);
    const parsed = JSON.parse(header.toString('utf8')) as Record<string, SafetensorsEntry>;
    delete parsed['__metadata__'];
    return parsed;
  } finally {
    await file.close();
  }
}

/**
 * An ImageNet ResNet in torchvision's layout (`resnet.imagenet({ depth })`: option B projections
 * named `downsample.0/1`, the bottleneck's stride in its 3x3 convolution) holding the torchvision
 * state dict in the safetensors file at `path`. Input channels and classes are read from
 * `conv1.weight` and `fc.weight`. Throws naming every missing, unexpected or misshapen key.
 *
 * ```ts
 * const model = await loadTorchvision('resnet50', 'resnet50.safetensors');
 * const logits = await model.predict(images, [1, 3, 224, 224]);
 * ```
 */
export async function loadTorchvision(arch: TorchvisionArch, path: string, options: { device?: DeviceName } = {}): Promise<Model> {
  return Model.fromNative(await native.NativeModel.loadTorchvision(arch, path, options.device ?? 'auto'));
}
