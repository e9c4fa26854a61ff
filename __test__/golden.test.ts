// PyTorch golden fixtures (fixtures/, written by scripts/make_fixtures.py) through the public API:
// Tensor ops and their gradients, one ResNet-20 SGD step (explicit and Model.trainStep), and
// torchvision ResNet-18/50 logits through loadTorchvision. Errors are per element against
// |want| + rms(want): at most 1e-4 for ops and logits, 1e-3 for the whole step.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { Model, SGD, Tensor, loadTorchvision, ops, resnet, type ResNetSpec } from '../ts/index.js';
import { ROOT, tempDir } from './helpers.js';
import { hashInit, readSafetensors, relErr, writeSafetensors, type Entry, type Fixture } from './safetensors.js';

const OPS_TOL = 1e-4;
const STEP_TOL = 1e-3;
const dir = tempDir('resnet-wgpu-golden-');
const models: Model[] = [];
afterAll(() => models.forEach((m) => m.dispose()));

function load(name: string): Fixture {
  return readSafetensors(join(ROOT, 'fixtures', name));
}

function get(f: Fixture, name: string): Entry {
  const e = f.tensors.get(name);
  if (e === undefined) throw new Error(`fixture has no tensor ${name}`);
  return e;
}

function f32(f: Fixture, name: string): Float32Array {
  const e = get(f, name);
  if (!(e.data instanceof Float32Array)) throw new Error(`${name} is not F32`);
  return e.data;
}

function labelsOf(f: Fixture, name: string): Int32Array {
  return Int32Array.from(get(f, name).data as BigInt64Array, (v) => Number(v));
}

function tensor(f: Fixture, name: string, requiresGrad = false): Tensor {
  return Tensor.fromArray(f32(f, name), get(f, name).shape, { requiresGrad });
}

/** Compares tensors and keeps the worst error; `report` fails a suite that compared nothing. */
class Checker {
  worst = 0;
  worstWhat = '';
  checked = 0;
  constructor(
    readonly label: string,
    readonly tol: number,
  ) {}
  check(what: string, got: Float32Array, want: Float32Array): void {
    const e = relErr(got, want);
    this.checked++;
    if (e >= this.worst) [this.worst, this.worstWhat] = [e, what];
    expect(e, `${this.label}: ${what}: relative error ${e.toExponential(3)}`).toBeLessThanOrEqual(this.tol);
  }
  report(): void {
    expect(this.checked, `${this.label}: no tensor was compared`).toBeGreaterThan(0);
    console.log(`${this.label}: max relative error ${this.worst.toExponential(3)} (${this.worstWhat})`);
  }
}

function gradOf(t: Tensor): Float32Array {
  const g = t.grad;
  if (g === null) throw new Error('backward did not reach the tensor');
  return g.toArray();
}

/** sum(out * r) through a linear map, so backward seeds `out` with `r`. */
function weightedSum(out: Tensor, r: Float32Array): Tensor {
  return ops.linear(ops.reshape(out, [1, out.size]), Tensor.fromArray(r, [1, out.size]));
}

describe('ops against PyTorch', () => {
  const f = load('ops.safetensors');
  const cases = JSON.parse(f.meta['cases'] ?? '[]') as { name: string; op: string; [k: string]: unknown }[];
  const c = new Checker('TS ops', OPS_TOL);
  afterAll(() => c.report());

  it('conv2d (3x3, 1x1, 7x7, 5x5; strides 1-3; paddings 0-3; bias)', () => {
    const convs = cases.filter((k) => k.op === 'conv2d');
    expect(convs.length).toBeGreaterThanOrEqual(8);
    for (const k of convs) {
      const key = (t: string): string => `${k.name}.${t}`;
      const x = tensor(f, key('x'), true);
      const w = tensor(f, key('w'), true);
      const b = k['bias'] ? tensor(f, key('b'), true) : undefined;
      const y = ops.conv2d(x, w, { bias: b, stride: k['stride'] as number, padding: k['padding'] as number });
      expect(y.shape).toEqual(get(f, key('y')).shape);
      c.check(key('y'), y.toArray(), f32(f, key('y')));
      weightedSum(y, f32(f, key('r'))).backward();
      c.check(key('dx'), gradOf(x), f32(f, key('dx')));
      c.check(key('dw'), gradOf(w), f32(f, key('dw')));
      if (b) c.check(key('db'), gradOf(b), f32(f, key('db')));
    }
  });

  it('max pool, global average pool, linear', () => {
    const others = cases.filter((k) => ['max_pool2d', 'global_avg_pool', 'linear'].includes(k.op));
    // Each kind ran at least once: a fixture without them would otherwise pass by checking nothing.
    expect(new Set(others.map((k) => k.op))).toEqual(new Set(['max_pool2d', 'global_avg_pool', 'linear']));
    for (const k of others) {
      const key = (t: string): string => `${k.name}.${t}`;
      const x = tensor(f, key('x'), true);
      let y: Tensor;
      let w: Tensor | undefined;
      let b: Tensor | undefined;
      if (k.op === 'max_pool2d') {
        y = ops.maxPool2d(x, { kernel: k['kernel'] as number, stride: k['stride'] as number, padding: k['padding'] as number });
      } else if (k.op === 'global_avg_pool') {
        y = ops.globalAvgPool(x);
      } else {
        w = tensor(f, key('w'), true);
        b = k['bias'] ? tensor(f, key('b'), true) : undefined;
        y = ops.linear(x, w, b);
      }
      c.check(key('y'), y.toArray(), f32(f, key('y')));
      weightedSum(y, f32(f, key('r'))).backward();
      c.check(key('dx'), gradOf(x), f32(f, key('dx')));
      if (w) c.check(key('dw'), gradOf(w), f32(f, key('dw')));
      if (b) c.check(key('db'), gradOf(b), f32(f, key('db')));
    }
  });

  it('cross-entropy', () => {
    const logits = tensor(f, 'cross_entropy.logits', true);
    const loss = ops.crossEntropy(logits, labelsOf(f, 'cross_entropy.labels'));
    c.check('cross_entropy.loss', loss.toArray(), f32(f, 'cross_entropy.loss'));
    loss.backward();
    c.check('cross_entropy.dlogits', gradOf(logits), f32(f, 'cross_entropy.dlogits'));
  });
});

describe('ResNet-20 SGD step against PyTorch', () => {
  const f = load('resnet20_step.safetensors');
  const init = join(ROOT, 'fixtures', 'resnet20_init.safetensors');
  const shape = get(f, 'input').shape as [number, number, number, number];
  const labels = labelsOf(f, 'labels');
  const spec = resnet.cifar({ depth: 20, shortcut: 'A', inChannels: 3, numClasses: 10 });
  const c = new Checker('TS ResNet-20 step', STEP_TOL);
  afterAll(() => c.report());

  /** The saved state dict (parameters, running statistics, num_batches_tracked) against `after.*`. */
  async function checkAfter(model: Model, name: string): Promise<void> {
    const path = join(dir, name);
    await model.save(path);
    const saved = readSafetensors(path);
    let count = 0;
    for (const [key, e] of f.tensors) {
      if (!key.startsWith('after.')) continue;
      const mine = get(saved, key.slice('after.'.length));
      if (e.data instanceof Float32Array) c.check(key, mine.data as Float32Array, e.data);
      else expect([...(mine.data as BigInt64Array)], key).toEqual([...e.data]);
      count++;
    }
    expect(count).toBe(116);
  }

  it('forward, every gradient and the update (Tensor API + SGD)', async () => {
    const model = Model.create(spec, { device: 'cpu' });
    models.push(model);
    await model.loadWeights(init);
    const logits = model.forward(tensor(f, 'input'), { training: true });
    c.check('logits', logits.toArray(), f32(f, 'logits'));
    const loss = ops.crossEntropy(logits, labels);
    c.check('loss', loss.toArray(), f32(f, 'loss'));
    loss.backward();
    const names = model.parameterNames();
    expect(names.length).toBe([...f.tensors.keys()].filter((k) => k.startsWith('grad.')).length);
    for (const name of names) c.check(`grad.${name}`, gradOf(model.parameter(name)), f32(f, `grad.${name}`));
    new SGD(
      names.map((n) => model.parameter(n)),
      { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 },
    ).step();
    await checkAfter(model, 'explicit.safetensors');
  });

  it('Model.trainStep', async () => {
    const model = Model.create(spec, { device: 'cpu' });
    models.push(model);
    await model.loadWeights(init);
    model.setOptimizer({ lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
    const s = await model.trainStep(f32(f, 'input'), labels, shape);
    c.check('trainStep loss', Float32Array.of(s.loss), f32(f, 'loss'));
    await checkAfter(model, 'fast.safetensors');
  });
});

describe('torchvision ResNet-18 / ResNet-50 through loadTorchvision', () => {
  const f = load('imagenet_logits.safetensors');
  const input = f32(f, 'input');
  const shape = get(f, 'input').shape as [number, number, number, number];

  for (const arch of ['resnet18', 'resnet50'] as const) {
    it(`${arch}: PyTorch's logits (eval mode)`, async () => {
      const names = JSON.parse(f.meta[`${arch}.names`] ?? '[]') as [string, number[], string][];
      const sd = names.map(([n, s, d]): [string, number[], Float32Array | BigInt64Array] => [
        n,
        s,
        d === 'I64' ? BigInt64Array.of(7n) : hashInit(n, s),
      ]);
      expect([...(sd[0]?.[2] as Float32Array).subarray(0, 16)]).toEqual([...f32(f, `${arch}.probe.conv1.weight`)]);
      const path = join(dir, `${arch}.safetensors`);
      writeSafetensors(path, sd);
      const model = await loadTorchvision(arch, path, { device: 'cpu' });
      models.push(model);
      expect(model.spec).toMatchObject(resnet.imagenet({ depth: arch === 'resnet18' ? 18 : 50 }));
      const c = new Checker(`TS ${arch} logits`, OPS_TOL);
      c.check('logits', await model.predict(input, shape), f32(f, `${arch}.logits`));
      c.report();
    });
  }

  it('names the keys that do not fit', async () => {
    const r18 = join(dir, 'resnet18.safetensors');
    await expect(loadTorchvision('resnet34', r18, { device: 'cpu' })).rejects.toThrow(/missing keys: layer1\.2\.conv1\.weight/);
    const r50 = join(dir, 'resnet50.safetensors');
    await expect(loadTorchvision('resnet18', r50, { device: 'cpu' })).rejects.toThrow(
      /resnet50\.safetensors.*unexpected keys: layer1\.0\.bn3\.bias.*misshapen keys: layer1\.0\.conv1\.weight/s,
    );
  });
});

describe('pre-activation nets (He et al. 2016) against PyTorch', () => {
  for (const file of ['preresnet8_cifar.safetensors', 'preresnet_bottleneck.safetensors']) {
    it(`${file}: eval logits and one SGD step (Model.trainStep)`, async () => {
      const f = load(file);
      const spec = JSON.parse(f.meta['spec'] ?? '{}') as ResNetSpec;
      expect(spec.preActivation).toBe(true);
      const names = JSON.parse(f.meta['names'] ?? '[]') as [string, number[], string][];
      const weights = join(dir, `init-${file}`);
      writeSafetensors(
        weights,
        names.map(([n, s, d]): [string, number[], Float32Array | BigInt64Array] => [n, s, d === 'I64' ? BigInt64Array.of(7n) : hashInit(n, s)]),
      );
      const shape = get(f, 'input').shape as [number, number, number, number];
      const model = Model.create(spec, { device: 'cpu' });
      models.push(model);
      await model.loadWeights(weights);
      const logits = new Checker(`TS ${file} eval logits`, OPS_TOL);
      logits.check('eval.logits', await model.predict(f32(f, 'input'), shape), f32(f, 'eval.logits'));
      logits.report();

      const c = new Checker(`TS ${file} step`, STEP_TOL);
      model.setOptimizer({ lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
      const s = await model.trainStep(f32(f, 'input'), labelsOf(f, 'labels'), shape);
      c.check('trainStep loss', Float32Array.of(s.loss), f32(f, 'loss'));
      const path = join(dir, `after-${file}`);
      await model.save(path);
      const saved = readSafetensors(path);
      const after = [...f.tensors.keys()].filter((k) => k.startsWith('after.'));
      expect(after.length).toBe(names.length);
      for (const key of after) {
        const want = get(f, key).data;
        const mine = get(saved, key.slice('after.'.length)).data;
        if (want instanceof Float32Array) c.check(key, mine as Float32Array, want);
        else expect([...(mine as BigInt64Array)], key).toEqual([...want]);
      }
      c.report();
    });
  }
});
