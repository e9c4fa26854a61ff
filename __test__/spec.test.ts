// Architectures: the factories, parameter counts against the paper and torchvision, summaries.
import { describe, expect, it } from 'vitest';

import { Model, depthOf, nameOf, resnet, type ImagenetDepth } from '../ts/index.js';

/** Rounds like the paper's tables: 0.27M, 0.85M, 1.7M, 11.7M, ... */
function asPrinted(count: number, digits: number): number {
  return Number((count / 1e6).toFixed(digits));
}

describe('resnet.cifar', () => {
  it('builds 6n+2 networks with three stages of n basic blocks', () => {
    const spec = resnet.cifar({ depth: 56 });
    expect(spec.stem).toBe('cifar');
    expect(spec.stemWidth).toBe(16);
    expect(spec.shortcut).toBe('A');
    expect(spec.stages).toEqual([
      { block: 'basic', count: 9, width: 16, stride: 1 },
      { block: 'basic', count: 9, width: 32, stride: 2 },
      { block: 'basic', count: 9, width: 64, stride: 2 },
    ]);
    expect(depthOf(spec)).toBe(56);
    expect(nameOf(resnet.cifar({ depth: 20, plain: true }))).toBe('Plain-20');
  });

  it.each([0, 7, 21, 19.5, 100])('rejects depth %s naming it', (depth) => {
    expect(() => resnet.cifar({ depth })).toThrow(new RegExp(`6n\\+2.*got depth ${depth}`));
  });
});

describe('resnet.imagenet', () => {
  it('uses bottlenecks from 50 layers on, with torchvision defaults', () => {
    const spec = resnet.imagenet({ depth: 50 });
    expect(spec.stem).toBe('imagenet');
    expect(spec.shortcut).toBe('B');
    expect(spec.bottleneckStride).toBe('3x3');
    expect(spec.stages.map((s) => [s.block, s.count, s.width, s.stride])).toEqual([
      ['bottleneck', 3, 64, 1],
      ['bottleneck', 4, 128, 2],
      ['bottleneck', 6, 256, 2],
      ['bottleneck', 3, 512, 2],
    ]);
    expect(depthOf(resnet.imagenet({ depth: 152 }))).toBe(152);
    expect(depthOf(resnet.imagenet({ depth: 34 }))).toBe(34);
  });

  it('rejects other depths', () => {
    expect(() => resnet.imagenet({ depth: 20 as ImagenetDepth })).toThrow(/18, 34, 50, 101 or 152, got depth 20/);
  });
});

describe('parameter counts', () => {
  // CIFAR-10, option A, 3 input channels (paper sec. 4.2, Table 6). Exact values follow from the
  // architecture: e.g. ResNet-110 = 464 (stem) + 84,096 + 329,472 + 1,313,280 + 650 (fc).
  it.each([
    [20, 0.27, 2, 269_722],
    [56, 0.85, 2, 853_018],
    [110, 1.7, 1, 1_727_962],
  ])('CIFAR ResNet-%i has the paper\'s %fM parameters', (depth, paper, digits, exact) => {
    const model = Model.create(resnet.cifar({ depth }), { seed: 1 });
    try {
      expect(model.numParameters).toBe(exact);
      expect(asPrinted(model.numParameters, digits)).toBe(paper);
    } finally {
      model.dispose();
    }
  });

  it('a plain CIFAR network has the same parameters as its ResNet (option A is parameter-free)', () => {
    const a = Model.create(resnet.cifar({ depth: 20 }));
    const b = Model.create(resnet.cifar({ depth: 20, plain: true }));
    expect(b.numParameters).toBe(a.numParameters);
    a.dispose();
    b.dispose();
  });

  // ImageNet, option B: within 1% of the paper's figures and exactly torchvision's.
  it.each([
    [18, 11.7, 11_689_512],
    [34, 21.8, 21_797_672],
    [50, 25.6, 25_557_032],
    [101, 44.5, 44_549_160],
    [152, 60.2, 60_192_808],
  ] as const)('ImageNet ResNet-%i: %fM (torchvision %i)', (depth, paper, torchvision) => {
    const model = Model.create(resnet.imagenet({ depth }));
    try {
      expect(model.numParameters).toBe(torchvision);
      expect(Math.abs(model.numParameters / 1e6 - paper) / paper).toBeLessThan(0.01);
    } finally {
      model.dispose();
    }
  });
});

describe('summary', () => {
  it('lists every layer with output shapes, and totals that match numParameters', () => {
    const model = Model.create(resnet.cifar({ depth: 20 }));
    const s = model.summary();
    expect(s.inputShape).toEqual([1, 3, 32, 32]);
    expect(s.rows.map((r) => r.name)).toEqual([
      'conv1',
      'layer1.0', 'layer1.1', 'layer1.2',
      'layer2.0', 'layer2.1', 'layer2.2',
      'layer3.0', 'layer3.1', 'layer3.2',
      'avgpool',
      'fc',
    ]);
    const shape = (name: string): number[] | undefined => s.rows.find((r) => r.name === name)?.outputShape;
    expect(shape('conv1')).toEqual([1, 16, 32, 32]);
    expect(shape('layer2.0')).toEqual([1, 32, 16, 16]);
    expect(shape('layer3.2')).toEqual([1, 64, 8, 8]);
    expect(shape('fc')).toEqual([1, 10]);
    expect(s.totalParams).toBe(model.numParameters);
    // ~41M multiply-adds for ResNet-20 on 32x32 (the commonly quoted 41 MFLOPs).
    expect(s.totalMacs / 1e6).toBeGreaterThan(40);
    expect(s.totalMacs / 1e6).toBeLessThan(42);
    const table = s.toString();
    expect(table).toContain('ResNet-20');
    expect(table).toContain('layer3.2');
    expect(table).toContain('269,722');
    model.dispose();
  });

  it('follows the input size and the ImageNet stem', () => {
    const model = Model.create(resnet.imagenet({ depth: 18, numClasses: 7 }));
    const s = model.summary({ height: 64, width: 96 });
    expect(s.rows[0]?.outputShape).toEqual([1, 64, 32, 48]);
    expect(s.rows.find((r) => r.name === 'maxpool')?.outputShape).toEqual([1, 64, 16, 24]);
    expect(s.rows.at(-1)?.outputShape).toEqual([1, 7]);
    model.dispose();
  });
});
