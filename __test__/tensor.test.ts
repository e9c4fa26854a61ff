// The explicit tensor API: ops, autograd through a custom head and the whole network, SGD.
import { describe, expect, it } from 'vitest';

import { Model, SGD, Tensor, ops } from '../ts/index.js';
import { randomImages, randomLabels, tinySpec } from './helpers.js';

/** Central difference of `f` in element `i` of `values`. */
function finiteDifference(values: Float32Array, i: number, eps: number, f: (v: Float32Array) => number): number {
  const plus = values.slice();
  const minus = values.slice();
  plus[i] = (plus[i] as number) + eps;
  minus[i] = (minus[i] as number) - eps;
  return (f(plus) - f(minus)) / (2 * eps);
}

function argmaxAbs(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (Math.abs(a[i] as number) > Math.abs(a[best] as number)) best = i;
  return best;
}

describe('ops', () => {
  it('compute the expected values and shapes', () => {
    const x = Tensor.fromArray([-1, 2, -3, 4], [1, 1, 2, 2]);
    expect(Array.from(ops.relu(x).toArray())).toEqual([0, 2, 0, 4]);
    expect(Array.from(ops.add(x, x).toArray())).toEqual([-2, 4, -6, 8]);
    expect(Array.from(ops.scale(x, 0.5).toArray())).toEqual([-0.5, 1, -1.5, 2]);
    expect(Array.from(ops.maxPool2d(x, { kernel: 2 }).toArray())).toEqual([4]);
    expect(ops.globalAvgPool(x).toArray()[0]).toBeCloseTo(0.5, 6);
    expect(ops.flatten(x).shape).toEqual([1, 4]);
    expect(ops.reshape(x, [2, 2]).shape).toEqual([2, 2]);
    // 1x1 convolution with weight 2 doubles; 3x3 padding 1 keeps the size.
    expect(Array.from(ops.conv2d(x, Tensor.fromArray([2], [1, 1, 1, 1])).toArray())).toEqual([-2, 4, -6, 8]);
    const w = Tensor.fromArray(randomImages(3 * 9, 1), [3, 1, 3, 3]);
    expect(ops.conv2d(x, w, { padding: 1 }).shape).toEqual([1, 3, 2, 2]);
    const lin = ops.linear(Tensor.fromArray([1, 2], [1, 2]), Tensor.fromArray([1, 0, 0, 1, 1, 1], [3, 2]), Tensor.fromArray([0, 0, 1], [3]));
    expect(Array.from(lin.toArray())).toEqual([1, 2, 4]);
  });

  it('throw errors that name the op and the shapes', () => {
    const a = Tensor.fromArray([1, 2, 3], [3]);
    const b = Tensor.fromArray([1, 2], [2]);
    expect(() => ops.add(a, b)).toThrow(/add.*\[3\].*\[2\]/);
    expect(() => Tensor.fromArray([1, 2, 3], [2, 2])).toThrow(/needs 4 values, got 3/);
    expect(() => ops.crossEntropy(Tensor.fromArray([0, 1, 2, 3], [2, 2]), [0, 5])).toThrow(/labels out of range/);
  });
});

describe('autograd', () => {
  const model = Model.create(tinySpec({ numClasses: 10 }), { seed: 21 });
  const n = 4;
  const xValues = randomImages(n * 144, 22);
  const y = randomLabels(n, 3, 23);

  it('a custom head on pooled features: gradients exist and match a finite difference', () => {
    const features = model.features(Tensor.fromArray(xValues, [n, 1, 12, 12])).detach();
    expect(features.shape).toEqual([n, 64]);
    const wValues = randomImages(3 * 64, 24).map((v) => v * 0.1);
    const w = Tensor.fromArray(wValues, [3, 64], { requiresGrad: true });
    const b = Tensor.fromArray([0.1, -0.2, 0.05], [3], { requiresGrad: true });
    const loss = ops.crossEntropy(ops.linear(features, w, b), y);
    expect(loss.shape).toEqual([1]);
    expect(w.grad).toBeNull();
    loss.backward();
    const gw = w.grad?.toArray();
    expect(gw).toBeDefined();
    expect(w.grad?.shape).toEqual([3, 64]);
    expect(b.grad?.shape).toEqual([3]);
    const grad = gw as Float32Array;
    expect(grad.some((v) => v !== 0)).toBe(true);

    const lossAt = (values: Float32Array): number =>
      ops.crossEntropy(ops.linear(features, Tensor.fromArray(values, [3, 64]), b.detach()), y).item();
    const i = argmaxAbs(grad);
    expect(Math.abs(grad[i] as number)).toBeGreaterThan(0.01); // large enough for f32 differences
    const fd = finiteDifference(wValues, i, 1e-2, lossAt);
    expect(Math.abs(fd - (grad[i] as number))).toBeLessThan(1e-4 + 0.01 * Math.abs(fd));
    // Gradients accumulate until cleared.
    ops.crossEntropy(ops.linear(features, w, b), y).backward();
    expect(w.grad?.toArray()[i]).toBeCloseTo(2 * (grad[i] as number), 4);
    w.zeroGrad();
    expect(w.grad).toBeNull();
  });

  it('through the whole network (eval mode) the input gradient matches a finite difference', () => {
    const x = Tensor.fromArray(xValues, [n, 1, 12, 12], { requiresGrad: true });
    ops.crossEntropy(model.forward(x), y).backward();
    const grad = x.grad?.toArray() as Float32Array;
    expect(grad.length).toBe(xValues.length);
    const lossAt = (values: Float32Array): number => ops.crossEntropy(model.forward(Tensor.fromArray(values, [n, 1, 12, 12])), y).item();
    // Per-pixel gradients are small (~1e-3), so compare the derivative along the gradient's
    // direction, which must equal its norm: a much better signal for f32 differences.
    const norm = Math.hypot(...grad);
    expect(norm).toBeGreaterThan(1e-3);
    const eps = 1e-2;
    const along = (sign: number): Float32Array => xValues.map((v, k) => v + (sign * eps * (grad[k] as number)) / norm);
    const directional = (lossAt(along(1)) - lossAt(along(-1))) / (2 * eps);
    expect(Math.abs(directional - norm)).toBeLessThan(0.02 * norm);
    // One element too, with a looser bound (its difference is near f32 resolution).
    const i = argmaxAbs(grad);
    const fd = finiteDifference(xValues, i, 1e-2, lossAt);
    expect(Math.abs(fd - (grad[i] as number))).toBeLessThan(0.15 * Math.abs(grad[i] as number));
  });

  it('training-mode backward reaches the model parameters', () => {
    const conv1 = model.parameter('conv1.weight');
    expect(conv1.shape).toEqual([16, 1, 3, 3]);
    conv1.zeroGrad();
    ops.crossEntropy(model.forward(Tensor.fromArray(xValues, [n, 1, 12, 12]), { training: true }), y).backward();
    const g = conv1.grad?.toArray();
    expect(g?.length).toBe(16 * 9);
    expect(g?.some((v) => v !== 0 && Number.isFinite(v))).toBe(true);
    conv1.zeroGrad();
  });
});

describe('SGD', () => {
  it('fits a linear classifier in an explicit loop', () => {
    const n = 32;
    const x = Tensor.fromArray(randomImages(n * 8, 31), [n, 8]);
    const y = randomLabels(n, 4, 32);
    const w = Tensor.fromArray(new Float32Array(4 * 8).fill(0.01), [4, 8], { requiresGrad: true });
    const b = Tensor.fromArray(new Float32Array(4), [4], { requiresGrad: true });
    const opt = new SGD([w, b], { lr: 0.5, momentum: 0.9, weightDecay: 0 });
    expect(opt.lr).toBeCloseTo(0.5, 6);
    const losses: number[] = [];
    for (let i = 0; i < 30; i++) {
      const loss = ops.crossEntropy(ops.linear(x, w, b), y);
      losses.push(loss.item());
      loss.backward();
      opt.step();
      opt.zeroGrad();
    }
    expect(w.grad).toBeNull();
    expect(losses.at(-1) as number).toBeLessThan((losses[0] as number) * 0.7);
  });

  it('follows a schedule and rejects bad configs', () => {
    const w = Tensor.fromArray([1, 2], [2], { requiresGrad: true });
    const opt = new SGD([w], { lr: 1, momentum: 0, weightDecay: 0, schedule: { kind: 'multistep', milestones: [1], gamma: 0.1 } });
    ops.crossEntropy(ops.reshape(w, [1, 2]), [0]).backward();
    opt.step();
    expect(opt.lr).toBeCloseTo(0.1, 6);
    expect(() => new SGD([w], { lr: -1 })).toThrow(/learning rate/);
    expect(() => new SGD([w], { schedule: { kind: 'multistep', fractions: [0.5], gamma: 0.1 } })).toThrow(/total steps/);
  });
});

describe('Tensor.dispose', () => {
  it('frees the handle now; later use throws naming the disposed tensor', () => {
    const x = Tensor.fromArray([1, 2, 3, 4], [2, 2]);
    const y = ops.scale(x, 2);
    expect(x.disposed).toBe(false);
    x.dispose();
    expect(x.disposed).toBe(true);
    expect(() => x.toArray()).toThrow(/Tensor has been disposed/);
    expect(() => x.shape).toThrow(/Tensor has been disposed/);
    expect(() => ops.relu(x)).toThrow(/Tensor has been disposed/);
    // A result computed before keeps its own values.
    expect(Array.from(y.toArray())).toEqual([2, 4, 6, 8]);
    x.dispose(); // twice is harmless
  });
});
