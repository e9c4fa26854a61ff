// Running out of memory is an Error too, not an abort: a network or a batch that cannot fit is
// refused before anything is allocated, naming what it needs and what there is; an allocation
// that fails anyway (here under `ulimit -v`) is an Error naming the bytes, and the process goes on.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { Model, resnet } from '../ts/index.js';
import { ROOT, tempDir } from './helpers.js';

describe('memory', () => {
  it('ResNet-999998 is refused from its spec, naming what it needs and what the machine has', () => {
    const started = performance.now();
    expect(() => Model.create(resnet.cifar({ depth: 999_998 }), { device: 'cpu' })).toThrow(
      /^ResNet-999998 needs about [\d.]+ GiB for parameters, gradients and momentum \(16\.2 G parameters\); .*[\d.]+ [KMGT]iB( available)?/,
    );
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  // Node, V8 and the addon start in well under 1 GiB of address space here; 2 GiB leaves about a
  // gigabyte, which a 250,000-image batch of 12x12 images (16 x 12 x 12 floats an image after
  // the stem: 2.3 GB) cannot have.
  it.runIf(process.platform === 'linux')('under ulimit -v, a batch too large is an Error and the model trains on (no SIGABRT)', () => {
    const script = join(tempDir(), 'oom.mjs');
    writeFileSync(
      script,
      `
import { Model, resnet } from ${JSON.stringify(join(ROOT, 'dist', 'index.js'))};
const out = [];
const caught = async (what, f) => {
  try { await f(); out.push(what + ': no error'); } catch (e) { out.push(what + ': ' + e.message); }
};
const model = Model.create(resnet.cifar({ depth: 8, inChannels: 1 }), { seed: 1, device: 'cpu' });
await caught('create', () => Model.create(resnet.cifar({ depth: 999998 }), { device: 'cpu' }));
const n = 250000;
const images = new Float32Array(n * 144).fill(0.5);
const labels = new Int32Array(n).fill(1);
await caught('estimate', () => model.trainStep(images, labels, [n, 1, 12, 12]));
// Without the estimates the allocation itself must fail, as an Error.
process.env.RESNET_WGPU_MEMORY_CHECK = 'off';
await caught('allocation', () => model.trainStep(images, labels, [n, 1, 12, 12]));
await caught('predict', () => model.predict(images, [n, 1, 12, 12]));
const small = new Float32Array(8 * 144).map((_, i) => Math.sin(i));
const s = await model.trainStep(small, new Int32Array([0, 1, 2, 3, 4, 5, 6, 7]), [8, 1, 12, 12]);
out.push('trained: ' + Number.isFinite(s.loss) + ' step ' + model.step);
model.dispose();
console.log(JSON.stringify(out));
`,
    );
    const r = spawnSync('bash', ['-c', 'ulimit -v 2097152 && exec "$0" "$1"', process.execPath, script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.signal, r.stderr).toBeNull(); // not SIGABRT (exit 134 from a shell)
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const [create, estimate, allocation, predict, trained] = JSON.parse(r.stdout) as string[];
    expect(create).toMatch(/^create: ResNet-999998 needs about [\d.]+ GiB .*; the address-space limit \(ulimit -v\) of 2\.0 GiB leaves [\d.]+ [KMG]iB$/);
    expect(estimate).toMatch(
      /^estimate: a training step of ResNet-8 on a batch of \[250000, 1, 12, 12\] needs about [\d.]+ GiB .*the address-space limit \(ulimit -v\) of 2\.0 GiB leaves .*use a smaller batch \(about \d+ images fit\)$/,
    );
    expect(allocation).toMatch(/^allocation: out of memory: allocating [\d.]+ [MG]iB \(\d+ bytes\) on the host for a tensor failed \(the address-space limit/);
    expect(predict).toMatch(/^predict: out of memory: allocating .* bytes\)/);
    expect(trained).toBe('trained: true step 1');
  });
});
