// Precision 'mixed' from TypeScript: refused by name where it cannot run, and on lavapipe (f16
// shaders through wgpu 30) trained, fitted, saved and resumed as a user would.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { Model, type Precision } from '../ts/index.js';
import { ROOT, tempDir, tinySpec } from './helpers.js';

describe('precision', () => {
  it("'mixed' on the CPU is refused, naming why; fp32 is the default", () => {
    expect(() => Model.create(tinySpec(), { device: 'cpu', precision: 'mixed' })).toThrow(
      /precision 'mixed' needs a GPU .*use precision 'fp32' or device 'gpu'/,
    );
    const model = Model.create(tinySpec(), { device: 'cpu' });
    expect(model.precision).toBe('fp32');
    expect(() => model.setPrecision('fp16' as Precision)).toThrow(/precision/);
    model.setPrecision('fp32');
    expect(model.precision).toBe('fp32');
    model.dispose();
  });

  it("the CLI's --precision: checked by commander, and 'mixed' on the CPU refused before any work", () => {
    const cli = (args: string[]): { status: number | null; stderr: string } => {
      const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli.js'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
      return { status: r.status, stderr: r.stderr };
    };
    const bad = cli(['train', '--precision', 'fp16']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/--precision.*fp16.*Allowed choices are fp32, mixed/s);
    const onCpu = cli(['train', '--device', 'cpu', '--precision', 'mixed', '--limit', '10', '--out', join(tempDir(), 'x.safetensors')]);
    expect(onCpu.status).toBe(1);
    expect(onCpu.stderr).toMatch(/precision 'mixed' needs a GPU/);
  });

  // CI installs lavapipe (scripts/setup.sh), which offers f16 shaders: there the mixed path runs.
  const lavapipe = existsSync('/usr/share/vulkan/icd.d/lvp_icd.x86_64.json');
  it.runIf(lavapipe || process.env['CI'] !== undefined)(
    "'mixed' on the GPU (lavapipe): steps with a loss scale, fit, a checkpoint that resumes at its scale and loads on the CPU",
    () => {
      const dir = tempDir();
      const script = join(dir, 'mixed.mjs');
      const checkpoint = join(dir, 'mixed.safetensors');
      writeFileSync(
        script,
        `
import { Dataset, Model, fit, resnet } from ${JSON.stringify(join(ROOT, 'dist', 'index.js'))};
const spec = resnet.cifar({ depth: 8, inChannels: 1, numClasses: 4 });
// Class k brightens row band k of a 12x12 image: learnable in a few steps.
const n = 64, size = 12;
const images = new Uint8Array(n * size * size), labels = new Uint8Array(n);
for (let i = 0; i < n; i++) {
  labels[i] = i % 4;
  for (let p = 0; p < size * size; p++) images[i * size * size + p] = (Math.floor(p / size / 3) === i % 4 ? 140 : 0) + ((i * 31 + p * 17) % 100);
}
const data = Dataset.fromArrays({ images, labels, channels: 1, height: size, width: size, numClasses: 4 });
const model = Model.create(spec, { seed: 3, device: 'gpu', precision: 'mixed' });
const x = new Float32Array(8 * size * size).map((_, i) => Math.sin(i));
const step = await model.trainStep(x, new Int32Array([0, 1, 2, 3, 0, 1, 2, 3]), [8, 1, size, size]);
const history = await fit(model, data, { epochs: 3, batchSize: 16, optimizer: { lr: 0.05 }, precision: 'mixed' });
await model.save(${JSON.stringify(checkpoint)});
const resumed = await Model.load(${JSON.stringify(checkpoint)}, { device: 'gpu', precision: 'mixed' });
const next = await resumed.trainStep(x, new Int32Array([0, 1, 2, 3, 0, 1, 2, 3]), [8, 1, size, size]);
const onCpu = await Model.load(${JSON.stringify(checkpoint)}, { device: 'cpu' });
const cpuEval = await onCpu.evaluate(data, { batchSize: 32 });
console.log(JSON.stringify({
  precision: model.precision,
  step: { lossScale: step.lossScale, skipped: step.skipped, step: step.step, finite: Number.isFinite(step.loss) },
  fit: { steps: history.steps, skipped: history.skippedSteps, losses: history.history.loss },
  saved: JSON.parse(resumed.checkpointMetadata.lossScaler),
  resumed: { precision: resumed.precision, lossScale: next.lossScale, step: next.step },
  cpu: { precision: onCpu.precision, top1: cpuEval.top1 },
}));
`,
      );
      const r = spawnSync(process.execPath, [script], {
        encoding: 'utf8',
        timeout: 240_000,
        env: { ...process.env, RESNET_WGPU_ADAPTER: 'llvmpipe' },
      });
      expect(r.signal).toBeNull();
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout) as {
        precision: string;
        step: { lossScale: number | null; skipped: boolean; step: number; finite: boolean };
        fit: { steps: number; skipped: number; losses: number[] };
        saved: { scale: number; cleanSteps: number; growthInterval: number };
        resumed: { precision: string; lossScale: number | null; step: number };
        cpu: { precision: string; top1: number };
      };
      expect(out.precision).toBe('mixed');
      expect(out.step).toEqual({ lossScale: 65536, skipped: false, step: 1, finite: true });
      // 64 images in batches of 16, three epochs: 12 steps, none overflowing at 2^16.
      expect(out.fit.steps + out.fit.skipped).toBe(12);
      expect(out.fit.skipped).toBe(0);
      expect(out.fit.losses[2]).toBeLessThan(out.fit.losses[0] ?? 0);
      // The scaler is saved and taken up again: 13 clean steps, the scale unchanged.
      expect(out.saved).toEqual({ scale: 65536, cleanSteps: 13, growthInterval: 2000 });
      expect(out.resumed).toEqual({ precision: 'mixed', lossScale: 65536, step: 14 });
      // f32 master weights: the checkpoint evaluates on the CPU, in fp32, and has learnt.
      expect(out.cpu.precision).toBe('fp32');
      expect(out.cpu.top1).toBeGreaterThan(0.5);
    },
  );
});
