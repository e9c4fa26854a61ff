/**
 * `npm run bench:gpu`: ours on the GPU beside PyTorch on the same GPU, in one run. For ResNet-20
 * and ResNet-56 (3x32x32) and ResNet-50 (224x224), batch 128: training and inference img/s and
 * the buffer pool's peak bytes, ours in fp32 and in precision 'mixed', beside PyTorch fp32, TF32
 * and bf16 autocast (`scripts/torch_gpu_bench.py`), as ratios. Each of our configurations runs in
 * its own child process (so each pool's peak is its own). Before timing, a mixed model's logits
 * are compared with fp32 ones from the same weights, and its first training step must be finite
 * and not skipped: a kernel that runs fast but wrong on this driver shows here.
 *
 * Usage: `node dist/bench-gpu.js [--smoke] [--no-torch] [--steps N] [--warmup N] [--json FILE]`.
 * `--smoke` runs tiny networks instead (a check of the script itself on lavapipe:
 * `RESNET_WGPU_ADAPTER=llvmpipe`). `scripts/device-check.sh` runs it on a lent GPU machine.
 * Timings only: tests never assert on time.
 *
 * @module
 */

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { benchModel, label, medianSeconds, python, randomBatch, type BenchConfig } from './bench-measure.js';
import type { Precision } from './model.js';
import { native } from './native.js';

const here = dirname(fileURLToPath(import.meta.url));

const { values } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    'no-torch': { type: 'boolean', default: false },
    steps: { type: 'string' },
    warmup: { type: 'string' },
    json: { type: 'string' },
    // Internal: one configuration and precision in a child process, as JSON.
    worker: { type: 'string' },
  },
});
const steps = Number(values.steps ?? (values.smoke ? 2 : 10));
const warmup = Number(values.warmup ?? (values.smoke ? 1 : 3));

const SUITE: BenchConfig[] = values.smoke
  ? [
      { net: 'cifar', depth: 8, channels: 3, size: 16, batch: 8 },
      { net: 'imagenet', depth: 18, channels: 3, size: 64, batch: 2 },
    ]
  : [
      { net: 'cifar', depth: 20, channels: 3, size: 32, batch: 128 },
      { net: 'cifar', depth: 56, channels: 3, size: 32, batch: 128 },
      { net: 'imagenet', depth: 50, channels: 3, size: 224, batch: 128 },
    ];
const PRECISIONS: Precision[] = ['fp32', 'mixed'];

/** One configuration's figures, ours. */
interface GpuFigures {
  trainImgPerSec: number;
  /** What `fit` gets between two reads: steps queued back to back, their figures read once at the end. */
  queuedTrainImgPerSec: number;
  inferImgPerSec: number;
  /** The buffer pool's peak bytes in live tensors over training and inference, MiB. */
  peakInUseMiB: number;
  /** The most the pool held from the driver (live tensors and cached buffers), MiB. */
  peakHeldMiB: number;
  /** GPU kernels dispatched by one training step, and by one prediction. */
  trainDispatches: number;
  inferDispatches: number;
  /** Mixed only: max |mixed - fp32| over the RMS of the fp32 logits, same weights and batch. */
  logitError?: number;
  /** Mixed only: steps skipped (overflow) before the first applied one, from the scale 2^16. */
  skippedSteps?: number;
}

interface TorchRow {
  config: BenchConfig;
  train_fp32: number;
  train_tf32: number;
  train_bf16: number;
  infer_fp32: number;
  infer_bf16: number;
  peak_train_mib_fp32: number;
}

/** In this process: one configuration in one precision. */
async function measure(c: BenchConfig, precision: Precision): Promise<GpuFigures> {
  // Created in fp32: a mixed model's first logits are compared with fp32 ones from the same weights.
  const model = benchModel(c, 'gpu');
  const { images, labels } = randomBatch(c);
  const shape = [c.batch, c.channels, c.size, c.size] as const;
  const timing = { steps, warmup };
  let logitError: number | undefined;
  let skippedSteps: number | undefined;
  if (precision === 'mixed') {
    const fp32 = await model.predict(images, shape);
    model.setPrecision('mixed');
    const mixed = await model.predict(images, shape);
    const rms = Math.sqrt(fp32.reduce((s, v) => s + v * v, 0) / fp32.length);
    logitError = mixed.reduce((m, v, i) => Math.max(m, Math.abs(v - (fp32[i] ?? 0))), 0) / rms;
    // GradScaler's first scale (2^16) may overflow at first, as in PyTorch: it halves until a step applies.
    skippedSteps = 0;
    for (;;) {
      const s = await model.trainStep(images, labels, shape);
      if (!Number.isFinite(s.loss)) throw new Error(`a mixed step on ${label(c)} gave ${JSON.stringify(s)}`);
      if (!s.skipped) break;
      if (++skippedSteps >= 24) throw new Error(`24 mixed steps in a row overflowed on ${label(c)}`);
    }
  }
  // Both calls read a result back: the GPU has finished when they resolve.
  const train = await medianSeconds(timing, () => model.trainStep(images, labels, shape));
  const queuedStart = performance.now();
  for (let i = 0; i < steps; i++) await model.queueTrainStep(images, labels, shape);
  await model.takeStepResults();
  const queued = (performance.now() - queuedStart) / 1000 / steps;
  const infer = await medianSeconds(timing, () => model.predict(images, shape));
  const stats = () => model.memoryStats() ?? { peakBytes: Number.NaN, peakInUseBytes: Number.NaN, dispatches: Number.NaN };
  const memory = stats();
  const beforeStep = memory.dispatches;
  await model.trainStep(images, labels, shape);
  const afterStep = stats().dispatches;
  await model.predict(images, shape);
  const afterPrediction = stats().dispatches;
  model.dispose();
  return {
    trainImgPerSec: c.batch / train,
    queuedTrainImgPerSec: c.batch / queued,
    inferImgPerSec: c.batch / infer,
    peakInUseMiB: memory.peakInUseBytes / 2 ** 20,
    peakHeldMiB: memory.peakBytes / 2 ** 20,
    trainDispatches: afterStep - beforeStep,
    inferDispatches: afterPrediction - afterStep,
    ...(logitError === undefined ? {} : { logitError }),
    ...(skippedSteps === undefined ? {} : { skippedSteps }),
  };
}

function inChild(c: BenchConfig, precision: Precision, env: Record<string, string> = {}): GpuFigures | string {
  const args = [join(here, 'bench-gpu.js'), '--worker', JSON.stringify({ c, precision }), '--steps', String(steps), '--warmup', String(warmup)];
  const r = spawnSync(process.execPath, args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 1 << 24,
    env: { ...process.env, ...env },
  });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !last.startsWith('{')) return `failed (exit ${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`;
  return JSON.parse(last) as GpuFigures;
}

function torchRows(): { version: string; gpu: string; rows: TorchRow[] } | string {
  if (values['no-torch']) return 'PyTorch skipped (--no-torch)';
  const script = join(here, '..', 'scripts', 'torch_gpu_bench.py');
  const r = spawnSync(python, [script, JSON.stringify(SUITE), '--steps', String(steps), '--warmup', String(warmup)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 24,
  });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !last.startsWith('{')) return `PyTorch not measured (${python} exited ${r.status ?? r.signal})`;
  const j = JSON.parse(last) as { torch: string; gpu: string; rows: TorchRow[] };
  return { version: j.torch, gpu: j.gpu, rows: j.rows };
}

async function main(): Promise<void> {
  const started = performance.now();
  const adapter = native.adaptersInfo().split('\n').find((l) => l.startsWith("device 'gpu' uses")) ?? 'no GPU';
  console.log(`resnet-wgpu bench:gpu, ${new Date().toISOString().slice(0, 10)}: ${adapter}; median of ${steps} steps after ${warmup} warm-up`);
  // Where 'mixed' runs on tensor cores, it is timed on the f16 tiled loop too (RESNET_WGPU_COOP=off).
  const tensorCores = /on tensor cores/.test(native.adaptersInfo());
  const ours = SUITE.map((c) => {
    const byPrecision = new Map<Precision, GpuFigures | string>();
    for (const p of PRECISIONS) {
      process.stderr.write(`measuring ours: ${label(c)} ${p} ...\n`);
      byPrecision.set(p, inChild(c, p));
    }
    const tiled = tensorCores ? inChild(c, 'mixed', { RESNET_WGPU_COOP: 'off' }) : undefined;
    return { c, byPrecision, tiled };
  });
  process.stderr.write('measuring PyTorch ...\n');
  const torch = torchRows();
  const num = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(0).padStart(7));
  const ratio = (a: number | undefined, b: number | undefined): string =>
    a === undefined || b === undefined || !(b > 0) ? '    -' : `${(a / b).toFixed(2)}x`;
  console.log(typeof torch === 'string' ? torch : `PyTorch ${torch.version} on ${torch.gpu}, same run`);
  for (const { c, byPrecision, tiled } of ours) {
    const t = typeof torch === 'string' ? undefined : torch.rows.find((r) => JSON.stringify(r.config) === JSON.stringify(c));
    const f32 = byPrecision.get('fp32');
    const mix = byPrecision.get('mixed');
    console.log(`\n${label(c)}`);
    const rows: Array<[string, GpuFigures | string | undefined]> = [['fp32', f32], ['mixed', mix]];
    if (tiled !== undefined) rows.push(['mixed (f16 tiled, no tensor cores)', tiled]);
    for (const [name, f] of rows) {
      if (typeof f === 'string' || f === undefined) {
        console.log(`  ours ${name}: ${f ?? 'not run'}`);
        continue;
      }
      const trainVs = name === 'fp32' ? [['PT fp32', t?.train_fp32]] : [['PT TF32', t?.train_tf32], ['PT bf16', t?.train_bf16]];
      const inferVs = name === 'fp32' ? [['PT fp32', t?.infer_fp32]] : [['PT fp32', t?.infer_fp32], ['PT bf16', t?.infer_bf16]];
      console.log(
        `  ours ${name.padEnd(5)} train ${num(f.trainImgPerSec)} img/s (${trainVs.map(([n, v]) => `${ratio(f.trainImgPerSec, v as number | undefined)} ${String(n)}`).join(', ')})` +
          `, queued ${num(f.queuedTrainImgPerSec)} (${ratio(f.queuedTrainImgPerSec, trainVs[0]?.[1] as number | undefined)} ${String(trainVs[0]?.[0])})` +
          `, infer ${num(f.inferImgPerSec)} img/s (${inferVs.map(([n, v]) => `${ratio(f.inferImgPerSec, v as number | undefined)} ${String(n)}`).join(', ')})` +
          `, peak in use ${num(f.peakInUseMiB)} MiB (${ratio(f.peakInUseMiB, t?.peak_train_mib_fp32)} PT fp32 train), held ${num(f.peakHeldMiB)} MiB` +
          `, kernels ${f.trainDispatches} a step, ${f.inferDispatches} a prediction` +
          (f.logitError === undefined ? '' : `, logits vs fp32 ${f.logitError.toExponential(1)}`) +
          (f.skippedSteps ? `, ${f.skippedSteps} first step(s) skipped (overflow)` : ''),
      );
    }
    if (t !== undefined) {
      console.log(
        `  PyTorch    train fp32 ${num(t.train_fp32)}, TF32 ${num(t.train_tf32)}, bf16 ${num(t.train_bf16)}; infer fp32 ${num(t.infer_fp32)}, bf16 ${num(t.infer_bf16)} img/s; ` +
          `peak ${num(t.peak_train_mib_fp32)} MiB (fp32 train)`,
      );
    }
  }
  console.log(`\nratios: ours / PyTorch img/s (above 1: we are faster); train: each step read back, as PyTorch's is synchronised; queued: ${steps} steps read back once (what fit does between reports), mean; peak: our pool's peak bytes in use / PyTorch's max_memory_allocated (below 1: we use less). ${((performance.now() - started) / 1000).toFixed(0)} s in all.`);
  if (values.json !== undefined) {
    const rows = ours.map(({ c, byPrecision, tiled }) => ({ config: c, fp32: byPrecision.get('fp32'), mixed: byPrecision.get('mixed'), mixedTiled: tiled }));
    writeFileSync(values.json, JSON.stringify({ date: new Date().toISOString(), adapter, ours: rows, torch }, null, 1));
  }
}

if (values.worker !== undefined) {
  const { c, precision } = JSON.parse(values.worker) as { c: BenchConfig; precision: Precision };
  console.log(JSON.stringify(await measure(c, precision)));
} else {
  await main();
}
