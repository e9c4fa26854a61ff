// ONNX export: the protobuf encoder byte for byte, and a round trip through onnxruntime-node
// (the exported graph's logits against model.predict, at two batch sizes).
import { join } from 'node:path';
import { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';

import { Model, resnet, type ResNetSpec } from '../ts/index.js';
import { ProtoWriter } from '../ts/onnx.js';
import { randomImages, tempDir, tinySpec } from './helpers.js';

const dir = tempDir('resnet-wgpu-onnx-test-');
const models: Model[] = [];
afterAll(() => models.forEach((m) => m.dispose()));

describe('ProtoWriter', () => {
  it('encodes varints, negative int64, floats, strings and nested messages', () => {
    const hex = (w: ProtoWriter): string => Buffer.from(w.finish()).toString('hex');
    expect(hex(new ProtoWriter().int(1, 150))).toBe('089601');
    expect(hex(new ProtoWriter().int(2, 0))).toBe('1000');
    expect(hex(new ProtoWriter().int(3, -1))).toBe('18ffffffffffffffffff01');
    expect(hex(new ProtoWriter().int(1, 2n ** 40n))).toBe('088080808080' + '20');
    expect(hex(new ProtoWriter().float(2, 1.5))).toBe('150000c03f');
    expect(hex(new ProtoWriter().string(2, 'testing'))).toBe('120774657374696e67');
    expect(hex(new ProtoWriter().message(3, (m) => m.int(1, 150)))).toBe('1a03089601');
    expect(hex(new ProtoWriter().int(20, 7))).toBe('a00107');
  });
});

function relErr(got: Float32Array, want: Float32Array): number {
  expect(got.length).toBe(want.length);
  const rms = Math.sqrt(want.reduce((a, v) => a + v * v, 0) / want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)) / (Math.abs(want[i] as number) + rms));
  }
  return worst;
}

const bottleneck: ResNetSpec = {
  ...resnet.imagenet({ depth: 50, numClasses: 7, bottleneckStride: '1x1' }),
  stemWidth: 8,
  stages: [
    { block: 'bottleneck', count: 1, width: 4, stride: 1 },
    { block: 'bottleneck', count: 2, width: 8, stride: 2 },
  ],
};

/** [name, spec, image side]; the input channels come from the spec. */
const cases: [string, ResNetSpec, number][] = [
  ['ResNet-20 (CIFAR, option A)', resnet.cifar({ depth: 20, inChannels: 3, numClasses: 10 }), 16],
  ['ResNet-18 (ImageNet, torchvision layout)', resnet.imagenet({ depth: 18, numClasses: 10 }), 64],
  ['ResNet-8, option C, tanh', tinySpec({ numClasses: 4, shortcut: 'C', activation: 'tanh' }), 12],
  ['plain-8', tinySpec({ numClasses: 4, plain: true }), 12],
  ['small bottleneck net, option B, ImageNet stem', { ...bottleneck, inChannels: 1, numClasses: 4 }, 12],
  ['PreResNet-20 (CIFAR, option A)', resnet.cifar({ depth: 20, inChannels: 3, numClasses: 10, preActivation: true }), 16],
  ['PreResNet-8, option B', tinySpec({ numClasses: 4, shortcut: 'B', preActivation: true }), 12],
  ['pre-activation plain-8, tanh', tinySpec({ numClasses: 4, plain: true, preActivation: true, activation: 'tanh' }), 12],
  ['ResNet-8 without batch norm, option B', tinySpec({ numClasses: 4, shortcut: 'B', batchNorm: false }), 12],
  ['plain-8 without batch norm, tanh', tinySpec({ numClasses: 4, plain: true, batchNorm: false, activation: 'tanh' }), 12],
  ['PreResNet-8 without batch norm, option A', tinySpec({ numClasses: 4, preActivation: true, batchNorm: false }), 12],
  [
    'small bottleneck net without batch norm, ImageNet stem, option C',
    { ...bottleneck, inChannels: 1, numClasses: 4, shortcut: 'C', batchNorm: false },
    12,
  ],
  [
    'small pre-activation bottleneck net without batch norm, ImageNet stem',
    { ...bottleneck, inChannels: 1, numClasses: 4, preActivation: true, batchNorm: false },
    12,
  ],
  [
    'small pre-activation bottleneck net, option B, ImageNet stem',
    { ...bottleneck, inChannels: 1, numClasses: 4, preActivation: true },
    12,
  ],
];

describe('exportOnnx round trip through onnxruntime-node', () => {
  for (const [name, spec, size] of cases) {
    it(name, async () => {
      const model = Model.create(spec, { seed: 1, device: 'cpu' });
      models.push(model);
      // A few steps so that the running statistics are not the initial ones.
      const c = spec.inChannels;
      for (let i = 0; i < 3; i++) {
        await model.trainStep(randomImages(8 * c * size * size, i), Int32Array.from({ length: 8 }, (_, k) => (k + i) % 4), [8, c, size, size]);
      }
      const path = join(dir, `${name.replace(/[^a-z0-9]+/gi, '_')}.onnx`);
      await model.exportOnnx(path);
      const session = await InferenceSession.create(path);
      expect(session.inputNames).toEqual(['input']);
      expect(session.outputNames).toEqual(['logits']);
      for (const n of [1, 5]) {
        const x = randomImages(n * c * size * size, 100 + n);
        const want = await model.predict(x, [n, c, size, size]);
        const out = await session.run({ input: new OrtTensor('float32', x, [n, c, size, size]) });
        const logits = out['logits'];
        expect(logits?.dims).toEqual([n, spec.numClasses]);
        const err = relErr(logits?.data as Float32Array, want);
        console.log(`${name}, batch ${n}: max relative error ${err.toExponential(2)}`);
        expect(err).toBeLessThanOrEqual(1e-4);
      }
      await session.release();
    });
  }
});
