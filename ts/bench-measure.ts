/**
 * The measurements of `npm run bench`, each in its own process so that peak RSS belongs to one
 * configuration: ours in a child `node dist/bench.js --worker-config ...`, PyTorch in a child
 * `python scripts/torch_cpu_bench.py ...`. Both answer with one JSON line.
 *
 * @internal
 * @module
 */

import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Model, type DeviceName, type Precision } from './model.js';
import { native } from './native.js';
import { resnet, type ImagenetDepth, type ResNetSpec } from './spec.js';

/** One network, input and batch. `cifar`: option B (the anchor's projections); `imagenet`: torchvision's. */
export interface BenchConfig {
  net: 'cifar' | 'imagenet';
  depth: number;
  channels: number;
  size: number;
  batch: number;
}

/** Median step after warm-up. */
export interface Timing {
  steps: number;
  warmup: number;
}

export interface Figures {
  trainImgPerSec: number;
  inferImgPerSec: number;
  peakRssMiB: number;
}

/** Seconds per training step, by phase (our names; PyTorch's ops are grouped into the same ones). */
export interface Phases {
  /** Wall time per profiled step. */
  wallSeconds: number;
  /** Per step: wall time outside the phases (autograd, tape, framework, binding). */
  otherSeconds: number;
  phases: Record<string, number>;
  /** Backend calls per step (ours only). */
  calls?: Record<string, number>;
}

export function label(c: BenchConfig): string {
  return `ResNet-${c.depth} ${c.channels}x${c.size}x${c.size} b${c.batch}`;
}

function spec(c: BenchConfig): ResNetSpec {
  return c.net === 'cifar'
    ? resnet.cifar({ depth: c.depth, shortcut: 'B', inChannels: c.channels, numClasses: 10 })
    : // resnet.imagenet names a depth it has no layout for.
      resnet.imagenet({ depth: c.depth as ImagenetDepth, inChannels: c.channels, numClasses: 10 });
}

/** A configuration's batch of random images and labels (seeded: the same every run). */
export function randomBatch(c: BenchConfig): { images: Float32Array; labels: Int32Array } {
  let state = 12345;
  const random = (): number => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
  const images = Float32Array.from({ length: c.batch * c.channels * c.size * c.size }, () => random() * 2 - 1);
  const labels = Int32Array.from({ length: c.batch }, () => Math.floor(random() * 10));
  return { images, labels };
}

/** The median of `t.steps` calls of `run` after `t.warmup` more. */
export async function medianSeconds(t: Timing, run: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < t.warmup; i++) await run();
  const times: number[] = [];
  for (let i = 0; i < t.steps; i++) {
    const t0 = performance.now();
    await run();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? Number.NaN;
}

/** A configuration's model, seeded, with the bench's SGD settings. */
export function benchModel(c: BenchConfig, device: DeviceName, precision: Precision = 'fp32'): Model {
  const m = Model.create(spec(c), { seed: 0, device, precision });
  m.setOptimizer({ lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
  return m;
}

/** In this process: our training and inference throughput (the child's side of `oursInChild`). */
export async function measureOurs(c: BenchConfig, t: Timing, device: DeviceName, precision: Precision = 'fp32'): Promise<Figures> {
  const m = benchModel(c, device, precision);
  const { images, labels } = randomBatch(c);
  const shape = [c.batch, c.channels, c.size, c.size] as const;
  const train = await medianSeconds(t, () => m.trainStep(images, labels, shape));
  const infer = await medianSeconds(t, () => m.predict(images, shape));
  m.dispose();
  return {
    trainImgPerSec: c.batch / train,
    inferImgPerSec: c.batch / infer,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  };
}

/** In this process: our phase breakdown of `steps` training steps after warm-up, per step. CPU only. */
export async function profileOurs(c: BenchConfig, warmup: number, steps: number): Promise<Phases> {
  const m = benchModel(c, 'cpu');
  const { images, labels } = randomBatch(c);
  const shape = [c.batch, c.channels, c.size, c.size] as const;
  for (let i = 0; i < warmup; i++) await m.trainStep(images, labels, shape);
  native.profileStart();
  for (let i = 0; i < steps; i++) await m.trainStep(images, labels, shape);
  const p = native.profileTake();
  m.dispose();
  return {
    wallSeconds: p.wallSeconds / steps,
    otherSeconds: p.otherSeconds / steps,
    phases: Object.fromEntries(p.phases.map((x) => [x.phase, x.seconds / steps])),
    calls: Object.fromEntries(p.phases.map((x) => [x.phase, x.calls / steps])),
  };
}

const here = dirname(fileURLToPath(import.meta.url));

function lastJsonLine<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as T;
}

/** Our figures (or phases, with `--worker-phases`) from a child process of `dist/bench.js`. */
export function oursInChild<T>(mode: '--worker-config' | '--worker-phases', c: BenchConfig, args: string[]): T {
  const r = spawnSync(process.execPath, [join(here, 'bench.js'), mode, JSON.stringify(c), ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`the bench child for ${label(c)} failed (exit ${r.status ?? r.signal})`);
  return lastJsonLine<T>(r.stdout);
}

export interface TorchFigures extends Figures {
  version: string;
}

interface TorchJson {
  torch: string;
  train_img_s: number;
  infer_img_s: number;
  peak_rss_mib: number;
  profile_wall_s: number;
  other_s: number;
  phases: Record<string, number>;
}

export const python = process.env['TORCH_PYTHON'] ?? 'python3';

/** PyTorch's figures (or phases with `profileSteps`), or why there are none. */
function runTorch(c: BenchConfig, t: Timing, threads: number, profileSteps?: number): TorchJson | string {
  const script = join(here, '..', 'scripts', 'torch_cpu_bench.py');
  const args = [script, ...[threads, c.depth, c.batch, c.channels, c.size].map(String), '--net', c.net];
  args.push('--steps', String(t.steps), '--warmup', String(t.warmup));
  if (profileSteps !== undefined) args.push('--profile', String(profileSteps));
  const r = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) {
    const why = (r.stderr || r.error?.message || '').trim().split('\n').pop();
    return `PyTorch not measured (${python}: ${why ?? 'failed'}); set TORCH_PYTHON to a Python with torch (and torchvision for ResNet-18)`;
  }
  return lastJsonLine<TorchJson>(r.stdout);
}

export function torchFigures(c: BenchConfig, t: Timing, threads: number): TorchFigures | string {
  const j = runTorch(c, t, threads);
  if (typeof j === 'string') return j;
  return { version: j.torch, trainImgPerSec: j.train_img_s, inferImgPerSec: j.infer_img_s, peakRssMiB: j.peak_rss_mib };
}

export function torchPhases(c: BenchConfig, t: Timing, threads: number, steps: number): Phases | string {
  const j = runTorch(c, t, threads, steps);
  if (typeof j === 'string') return j;
  return { wallSeconds: j.profile_wall_s, otherSeconds: j.other_s, phases: j.phases };
}
