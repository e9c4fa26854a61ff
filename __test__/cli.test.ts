// End to end: the CLI, the example, and a plain script using the addon exiting by itself.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { main as example } from '../examples/train-fashion-mnist.js';
import { Model } from '../ts/index.js';
import { ROOT, hasHardwareGpu, tempDir } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli.js');

function cli(args: string[], env: Record<string, string> = {}, timeout = 120_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('resnet-wgpu CLI', () => {
  const dir = tempDir();
  const out = join(dir, 'runs', 'cli.safetensors');

  it('runs as the Quick start runs it: `npx resnet-wgpu` from the clone', () => {
    // npx executes dist/cli.js itself, so the build must leave it executable (tsc does not).
    expect(statSync(CLI).mode & 0o111).toBe(0o111);
    const r = spawnSync('npx', ['--no-install', 'resnet-wgpu', '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).not.toMatch(/Permission denied/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: resnet-wgpu /);
  });

  it('train --limit 512 --epochs 1: progress, a final line, a checkpoint', () => {
    const r = cli(['train', '--limit', '512', '--epochs', '1', '--out', out, '--seed', '1']);
    // Device 'auto' says once which device it took; nothing else may reach stderr.
    expect(r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith("resnet-wgpu: device 'auto' uses"))).toEqual([]);
    expect(r.status).toBe(0);
    // The CLI's recipe uses option B (projection shortcuts), as the PyTorch anchor does.
    expect(r.stdout).toMatch(/ResNet-20 \(272,186 parameters\)/);
    expect(r.stdout).toMatch(/step 4\/4 \(100%\) \| \d+ img\/s \| loss \d\.\d{4} \| acc \d\.\d{4} \| lr [\d.e-]+ \| ETA/);
    const final = r.stdout.split('\n').find((l) => l.startsWith('final: '));
    expect(final).toBeDefined();
    const fields = Object.fromEntries((final as string).slice(7).split(' ').map((kv) => kv.split('=') as [string, string]));
    expect(Number(fields['test_acc'])).toBeGreaterThan(0);
    expect(Number(fields['test_top5'])).toBeGreaterThanOrEqual(Number(fields['test_acc']));
    expect(fields['steps']).toBe('4');
    expect(fields['checkpoint']).toBe(out);
    expect(existsSync(out)).toBe(true);
  });

  it('evaluate --checkpoint reproduces the test accuracy', async () => {
    const r = cli(['evaluate', '--checkpoint', out, '--limit', '512']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/final: test_loss=\d+\.\d+ test_acc=\d\.\d+ test_top5=\d\.\d+ count=512/);
    const model = await Model.load(out);
    expect(model.step).toBe(4);
    expect(model.normalization?.mean[0]).toBeGreaterThan(0.2);
    model.dispose();
  });

  it('summary --depth 20 prints the table', () => {
    const r = cli(['summary', '--depth', '20']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('layer3.2');
    expect(r.stdout).toContain('Total params: 269,722');
  });

  it('info names the CPU, its threads and the GEMM kernel this CPU runs', () => {
    const r = cli(['info']);
    expect(r.status).toBe(0);
    const line = /^CPU: (.+), (\d+) threads\n {2}f32 GEMM kernel: (.+) \(chosen at run time\)$/m.exec(r.stdout);
    expect(line, r.stdout).not.toBeNull();
    const [, , threads, kernel] = line as RegExpExecArray;
    expect(Number(threads)).toBeGreaterThan(0);
    expect(['AVX-512 (x86-v4)', 'AVX2+FMA (x86-v3)', 'NEON', 'scalar fallback']).toContain(kernel);
    // Cross-checked against the kernel's own account of the CPU, independently of Rust's detection.
    if (process.arch === 'x64' && existsSync('/proc/cpuinfo')) {
      const flags = readFileSync('/proc/cpuinfo', 'utf8');
      const want = /\bavx512f\b/.test(flags) ? 'AVX-512 (x86-v4)' : /\bfma\b/.test(flags) ? 'AVX2+FMA (x86-v3)' : 'scalar fallback';
      expect(kernel).toBe(want);
    }
    // The direct convolution kernels need AVX-512, and RESNET_WGPU_CPU_CONV=im2col turns them off.
    const avx512 = kernel === 'AVX-512 (x86-v4)';
    expect(r.stdout).toMatch(avx512 ? /^ {2}convolutions: direct AVX-512 kernels/m : /^ {2}convolutions: im2col \+ GEMM$/m);
    if (avx512) expect(cli(['info'], { RESNET_WGPU_CPU_CONV: 'im2col' }).stdout).toMatch(/^ {2}convolutions: im2col \+ GEMM$/m);
  });

  it('errors print one line and exit 1', () => {
    const missing = cli(['train', '--data', join(dir, 'nowhere'), '--limit', '10']);
    expect(missing.status).toBe(1);
    expect(missing.stderr.trim()).toMatch(/^error: .*Fashion-MNIST not found/);
    expect(missing.stderr).not.toMatch(/\n\s+at /); // no stack trace
    const depth = cli(['summary', '--depth', '21']);
    expect(depth.status).toBe(1);
    expect(depth.stderr.trim()).toBe('error: CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got depth 21');
    expect(cli(['train', '--epochs', 'zero']).status).toBe(1);
  });

  it.runIf(process.env['RESNET_WGPU_ADAPTER'] === undefined && !hasHardwareGpu())(
    "--device gpu without a hardware GPU fails with the reason",
    () => {
      const gpu = cli(['train', '--device', 'gpu', '--limit', '10']);
      expect(gpu.status).toBe(1);
      expect(gpu.stderr.trim()).toMatch(/^error: device error: no GPU adapter found .*use device 'cpu' or 'auto'/);
    },
  );
});

describe('examples/train-fashion-mnist.ts', () => {
  it('runs on a subset', async () => {
    const lines: string[] = [];
    const out = join(tempDir(), 'example.safetensors');
    const r = await example({ limit: 256, out, log: (l) => lines.push(l) });
    expect(r.history.steps).toBe(2);
    expect(r.testAccuracy).toBeGreaterThanOrEqual(0);
    expect(existsSync(out)).toBe(true);
    expect(lines.some((l) => l.startsWith('test: top-1'))).toBe(true);
  });
});

describe('process lifetime', () => {
  it('a script that uses the addon (and never disposes) exits by itself with code 0', () => {
    const script = join(tempDir(), 'uses-addon.mjs');
    writeFileSync(
      script,
      `
import { Model, DataLoader, Dataset, datasets, resnet } from ${JSON.stringify(join(ROOT, 'dist', 'index.js'))};
const model = Model.create(resnet.cifar({ depth: 8, inChannels: 1 }), { seed: 1, device: 'cpu' });
const images = new Uint8Array(64 * 144).map((_, i) => (i * 37) % 251);
const labels = new Uint8Array(64).map((_, i) => i % 10);
const ds = Dataset.fromArrays({ images, labels, channels: 1, height: 12, width: 12, numClasses: 10 });
const loader = new DataLoader(ds, { batchSize: 16 });
for await (const b of loader.epoch(0)) { await model.trainStep(b.images, b.labels, b.shape); break; } // abandoned mid-epoch
const unfinished = new DataLoader(ds, { batchSize: 8 }).epoch(1); await unfinished.next(); // never closed
await model.predict(new Float32Array(144).fill(0.5), [1, 1, 12, 12]);
await datasets.fashionMnist({ split: 'test' });
try { await model.trainStep(new Float32Array(3), [0], [1, 1, 12, 12]); } catch { console.log('caught'); }
console.log('done', model.step);
`,
    );
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal).toBeNull(); // not killed by the timeout
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('caught\ndone 1\n');
  });

  // CI installs lavapipe (scripts/setup.sh), so there the GPU path always runs; elsewhere it runs
  // where the software driver is present.
  const lavapipe = existsSync('/usr/share/vulkan/icd.d/lvp_icd.x86_64.json');
  it.runIf(lavapipe || process.env['CI'] !== undefined)('a script that trains on the GPU (lavapipe) exits by itself with code 0', () => {
    const script = join(tempDir(), 'uses-gpu.mjs');
    writeFileSync(
      script,
      `
import { Dataset, Model, fit, resnet } from ${JSON.stringify(join(ROOT, 'dist', 'index.js'))};
const model = Model.create(resnet.cifar({ depth: 8, inChannels: 1 }), { seed: 1, device: 'gpu' });
const images = new Float32Array(4 * 64).map((_, i) => Math.sin(i));
const first = await model.trainStep(images, new Int32Array([0, 1, 2, 3]), [4, 1, 8, 8]);
const before = model.memoryStats()?.dispatches ?? 0;
await model.trainStep(images, new Int32Array([0, 1, 2, 3]), [4, 1, 8, 8]);
const stepKernels = (model.memoryStats()?.dispatches ?? 0) - before;
const logits = await model.predict(images, [4, 1, 8, 8]);
const mem = model.memoryStats();
const held = mem !== null && mem.liveBytes > 0 && mem.peakBytes >= mem.liveBytes;
const inUse = mem !== null && mem.inUseBytes > 0 && mem.inUseBytes <= mem.liveBytes && mem.peakInUseBytes >= mem.inUseBytes && mem.peakInUseBytes <= mem.peakBytes;
console.log(model.device, Number.isFinite(first.loss), logits.length, held && inUse && stepKernels > 20);
// fit on a GPU reads the figures every 10 steps by default: all 6 steps arrive at the epoch's end.
const data = Dataset.fromArrays({ images: new Uint8Array(24 * 64).map((_, i) => (i * 37) % 251), labels: new Uint8Array(24).map((_, i) => i % 10), channels: 1, height: 8, width: 8, numClasses: 10 });
const seen = [];
await fit(model, data, { batchSize: 4, callbacks: { onBatchEnd: (step, logs) => { seen.push(step + '@' + model.step + (Number.isFinite(logs.loss) ? '' : '!')); } } });
console.log(seen.join(' '));
// evaluate queues its batches (10, 10, 4 images) and reads their sums once.
const ev = await model.evaluate(data, { batchSize: 10 });
console.log(ev.count, Number.isFinite(ev.loss), ev.top1 >= 0 && ev.top1 <= 1);
// A step left queued at exit: the process still ends by itself.
await model.queueTrainStep(images, new Int32Array([0, 1, 2, 3]), [4, 1, 8, 8]);
`,
    );
    const r = spawnSync(process.execPath, [script], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, RESNET_WGPU_ADAPTER: 'llvmpipe' },
    });
    expect(r.signal).toBeNull();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('gpu true 40 true\n1@8 2@8 3@8 4@8 5@8 6@8\n24 true true\n');
  });
});
