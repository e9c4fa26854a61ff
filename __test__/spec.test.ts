// Architectures: the factories, parameter counts against the paper and torchvision, summaries.
import { describe, expect, it } from 'vitest';

import { Model, depthOf, nameOf, resnet, type ImagenetDepth, type ResNetSpec } from '../ts/index.js';

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

describe('pre-activation (He et al. 2016)', () => {
  it('is an option of both factories, named PreResNet / PrePlain', () => {
    const spec = resnet.cifar({ depth: 110, preActivation: true });
    expect(spec.preActivation).toBe(true);
    expect(nameOf(spec)).toBe('PreResNet-110');
    expect(nameOf(resnet.cifar({ depth: 20, plain: true, preActivation: true }))).toBe('PrePlain-20');
    expect(nameOf(resnet.imagenet({ depth: 50, preActivation: true }))).toBe('PreResNet-50');
    expect('preActivation' in resnet.cifar({ depth: 20 })).toBe(false);
    const model = Model.create(spec, { device: 'cpu' });
    expect(model.name).toBe('PreResNet-110');
    expect(model.spec.preActivation).toBe(true);
    model.dispose();
  });

  it('names its tensors bnK before convK, bn_final, projections without batch norm', () => {
    const model = Model.create(resnet.cifar({ depth: 8, shortcut: 'B', preActivation: true }), { device: 'cpu' });
    const names = model.parameterNames();
    expect(names.slice(0, 4)).toEqual(['conv1.weight', 'layer1.0.bn1.weight', 'layer1.0.bn1.bias', 'layer1.0.conv1.weight']);
    expect(names.slice(-4)).toEqual(['bn_final.weight', 'bn_final.bias', 'fc.weight', 'fc.bias']);
    expect(names).toContain('layer2.0.downsample.0.weight');
    expect(names.some((n) => n.startsWith('bn1.') || n.includes('downsample.1'))).toBe(false);
    const s = model.summary();
    expect(s.rows.map((r) => r.name).slice(-3)).toEqual(['bn_final', 'avgpool', 'fc']);
    expect(s.totalParams).toBe(model.numParameters);
    model.dispose();
  });
});

describe('without batch norm (batchNorm: false)', () => {
  it('is an option of both factories, absent by default, and leaves the name alone', () => {
    const spec = resnet.cifar({ depth: 20, plain: true, batchNorm: false });
    expect(spec.batchNorm).toBe(false);
    expect(nameOf(spec)).toBe('Plain-20');
    expect(resnet.imagenet({ depth: 18, batchNorm: false }).batchNorm).toBe(false);
    expect('batchNorm' in resnet.cifar({ depth: 20 })).toBe(false);
    expect('batchNorm' in resnet.cifar({ depth: 20, batchNorm: true })).toBe(false);
    expect('batchNorm' in resnet.imagenet({ depth: 18 })).toBe(false);
    // The spec read back from Rust: false kept, true (the default) not written.
    const model = Model.create(spec, { device: 'cpu' });
    expect(model.spec).toMatchObject(spec);
    expect(model.spec.batchNorm).toBe(false);
    model.dispose();
    const normal = Model.create(resnet.cifar({ depth: 8 }), { device: 'cpu' });
    expect('batchNorm' in normal.spec).toBe(false);
    normal.dispose();
  });

  it('Plain-20 has convolution weights and fc only: 268,346 parameters', () => {
    // By hand: stem 3x16x9 = 432; stage 1 6 x 16x16x9 = 13,824; stage 2 16x32x9 + 5 x 32x32x9 =
    // 50,688; stage 3 32x64x9 + 5 x 64x64x9 = 202,752; fc 64x10 + 10 = 650. That is ResNet-20's
    // 269,722 less the weight and bias of its 688 batch-norm channels.
    const model = Model.create(resnet.cifar({ depth: 20, plain: true, batchNorm: false }), { device: 'cpu' });
    try {
      expect(model.numParameters).toBe(268_346);
      const s = model.summary();
      expect(s.totalParams).toBe(268_346);
      const names = model.parameterNames();
      expect(names.length).toBe(19 + 2);
      expect(names.some((n) => n.includes('bn'))).toBe(false);
      expect(names.filter((n) => n.endsWith('.weight') && n !== 'fc.weight').length).toBe(19);
      // The same multiply-adds as with batch norm (batch norm is not counted).
      const withBn = Model.create(resnet.cifar({ depth: 20, plain: true }), { device: 'cpu' });
      expect(s.totalMacs).toBe(withBn.summary().totalMacs);
      withBn.dispose();
    } finally {
      model.dispose();
    }
  });
});

describe('the paper\'s tables from summary()', () => {
  const count = (spec: ResNetSpec, size?: number): { params: number; macs: number } => {
    const model = Model.create(spec, { device: 'cpu' });
    try {
      const s = model.summary(size === undefined ? {} : { height: size });
      expect(s.totalParams).toBe(model.numParameters);
      return { params: s.totalParams, macs: s.totalMacs };
    } finally {
      model.dispose();
    }
  };

  // Table 6 (option A): 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M; exactly 97,216 n - 21,926 for
  // n = (depth - 2) / 6 (see crates/resnet-core/tests/model.rs), plain and pre-activation alike.
  it.each([
    [20, 0.27, 2],
    [32, 0.46, 2],
    [44, 0.66, 2],
    [56, 0.85, 2],
    [110, 1.7, 1],
    [1202, 19.4, 1],
  ])('CIFAR depth %i: %fM for ResNet, plain and pre-activation', (depth, paper, digits) => {
    const exact = 97_216 * ((depth - 2) / 6) - 21_926;
    for (const [plain, preActivation] of [[false, false], [true, false], [false, true]] as const) {
      const { params } = count(resnet.cifar({ depth, plain, preActivation }));
      expect(params).toBe(exact);
      expect(asPrinted(params, digits)).toBe(paper);
    }
  });

  // Table 1: 1.8, 3.6, 3.8, 7.6, 11.3 G multiply-adds (the paper's bottleneck: stride in the
  // first 1x1); torchvision v1.5 (stride in the 3x3): 4.1, 7.8, 11.5 G; the same parameters.
  it.each([
    [18, 1.8, 1.8],
    [34, 3.6, 3.6],
    [50, 3.8, 4.1],
    [101, 7.6, 7.8],
    [152, 11.3, 11.5],
  ] as const)('ImageNet ResNet-%i: %f GMACs (paper layout), %f (torchvision)', (depth, paper, torchvision) => {
    const v15 = count(resnet.imagenet({ depth }));
    const v1 = count(resnet.imagenet({ depth, bottleneckStride: '1x1' }));
    expect(v1.params).toBe(v15.params);
    expect(Math.abs(v1.macs / 1e9 - paper) / paper).toBeLessThan(0.05);
    expect(Math.abs(v15.macs / 1e9 - torchvision) / torchvision).toBeLessThan(0.05);
  });

  it('ResNet-34 with options A < B < C, and plain-18/34', () => {
    const r34 = (shortcut: 'A' | 'B' | 'C'): number => count(resnet.imagenet({ depth: 34, shortcut })).params;
    expect([r34('A'), r34('B'), r34('C')]).toEqual([21_623_848, 21_797_672, 22_716_840]);
    expect(count(resnet.imagenet({ depth: 34, plain: true })).params).toBe(21_623_848);
    expect(count(resnet.imagenet({ depth: 18, plain: true })).params).toBe(11_515_688);
    expect(count(resnet.imagenet({ depth: 18, preActivation: true })).params).toBe(11_687_720);
    expect(count(resnet.imagenet({ depth: 50, preActivation: true })).params).toBe(25_549_352);
  });
});
