/**
 * `npm run bench`: ResNet training and inference throughput (images per second, median step,
 * random data) and peak memory, printed beside PyTorch's figures for the same network with the
 * same thread count, measured in the same run, as ratios. Timings only: tests never assert on time.
 *
 * PyTorch is used where a Python with `torch` is found (`$TORCH_PYTHON`, else `python3`); the
 * network is the anchor's (`../shared/anchors/torch_resnet.py`: projection shortcuts, so ours
 * uses option B here to match it parameter for parameter).
 *
 * Usage: `node dist/bench.js [--steps N] [--batch N] [--depth N] [--size N] [--channels N]
 * [--device cpu|auto|gpu] [--no-torch]`
 *
 * `--ranks N`: the data-parallel bench instead (`bench-distributed.ts`: all-reduce times, a
 * ResNet-20 CPU step with batch 64 per rank (or `--batch`) with and without overlap, scaling
 * efficiency); it runs itself under `mpiexec -n N`.
 *
 * @module
 */

import { spawnSync } from 'node:child_process';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { benchWorker, distributedBench } from './bench-distributed.js';
import { Model, type DeviceName } from './model.js';
import { resnet } from './spec.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '7' },
    batch: { type: 'string', default: '128' },
    depth: { type: 'string', default: '20' },
    size: { type: 'string', default: '32' },
    channels: { type: 'string', default: '3' },
    device: { type: 'string', default: 'cpu' },
    'no-torch': { type: 'boolean', default: false },
    ranks: { type: 'string' },
    // Internal: one measurement run of the data-parallel bench, and its thread count.
    worker: { type: 'boolean', default: false },
    threads: { type: 'string' },
  },
});
const steps = Number(values.steps);
const batch = Number(values.batch);
const depth = Number(values.depth);
const size = Number(values.size);
const channels = Number(values.channels);
const threads = availableParallelism();

interface Figures {
  trainImgPerSec: number;
  inferImgPerSec: number;
}

function randomBatch(): { images: Float32Array; labels: Int32Array } {
  let state = 12345;
  const random = (): number => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
  const images = Float32Array.from({ length: batch * channels * size * size }, () => random() * 2 - 1);
  const labels = Int32Array.from({ length: batch }, () => Math.floor(random() * 10));
  return { images, labels };
}

/** Median seconds of `steps` runs after two warm-up runs. */
async function medianSeconds(run: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 2; i++) await run();
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await run();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? Number.NaN;
}

async function ours(): Promise<Figures> {
  const spec = resnet.cifar({ depth, shortcut: 'B', inChannels: channels, numClasses: 10 });
  const model = Model.create(spec, { seed: 0, device: values.device as DeviceName });
  model.setOptimizer({ lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
  const { images, labels } = randomBatch();
  const shape = [batch, channels, size, size] as const;
  const train = await medianSeconds(() => model.trainStep(images, labels, shape));
  const infer = await medianSeconds(() => model.predict(images, shape));
  model.dispose();
  return { trainImgPerSec: batch / train, inferImgPerSec: batch / infer };
}

function torch(): (Figures & { version: string }) | string {
  const here = dirname(fileURLToPath(import.meta.url));
  const script = join(here, '..', 'scripts', 'torch_cpu_bench.py');
  const python = process.env['TORCH_PYTHON'] ?? 'python3';
  const args = [script, String(threads), String(depth), String(batch), String(channels), String(size)];
  const r = spawnSync(python, args, { encoding: 'utf8' });
  if (r.status !== 0) {
    const why = (r.stderr || r.error?.message || '').trim().split('\n').pop();
    return `PyTorch not measured (${python}: ${why ?? 'failed'}); set TORCH_PYTHON to a Python with torch`;
  }
  const line = r.stdout.trim().split('\n').pop() ?? '{}';
  const j = JSON.parse(line) as { torch: string; train_img_s: number; infer_img_s: number };
  return { version: j.torch, trainImgPerSec: j.train_img_s, inferImgPerSec: j.infer_img_s };
}

async function main(): Promise<void> {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  console.log(`ResNet-${depth} (option B), batch ${batch}, ${channels}x${size}x${size}, device ${values.device}, ${threads} threads, ${cpu}`);
  const mine = await ours();
  const peakMiB = process.resourceUsage().maxRSS / 1024;
  console.log(`resnet-wgpu  train ${mine.trainImgPerSec.toFixed(1)} img/s   infer ${mine.inferImgPerSec.toFixed(1)} img/s   peak RSS ${peakMiB.toFixed(0)} MiB`);
  const theirs = values['no-torch'] ? 'PyTorch skipped (--no-torch)' : torch();
  if (typeof theirs === 'string') {
    console.log(theirs);
  } else {
    const ratio = (a: number, b: number): string => (a / b).toFixed(2);
    console.log(`PyTorch ${theirs.version}  train ${theirs.trainImgPerSec.toFixed(1)} img/s   infer ${theirs.inferImgPerSec.toFixed(1)} img/s`);
    console.log(
      `ratio (ours / PyTorch, same machine, same run): train ${ratio(mine.trainImgPerSec, theirs.trainImgPerSec)}x   infer ${ratio(mine.inferImgPerSec, theirs.inferImgPerSec)}x`,
    );
  }
}

if (values.worker || values.ranks !== undefined) {
  // The data-parallel bench measures ResNet-20 at batch 64 per rank unless --batch / --steps say otherwise.
  const options = {
    ranks: Number(values.ranks ?? 1),
    steps: process.argv.includes('--steps') ? steps : 5,
    batch: process.argv.includes('--batch') ? batch : 64,
  };
  if (!Number.isInteger(options.ranks) || options.ranks < 1) throw new Error(`--ranks must be an integer >= 1, got ${values.ranks}`);
  if (values.worker) await benchWorker(options, values.threads === undefined ? undefined : Number(values.threads));
  else distributedBench(options);
} else {
  await main();
}
