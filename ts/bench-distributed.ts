/**
 * `npm run bench -- --ranks N`: what data-parallel training costs and gains on this machine.
 * The command starts itself three times: under `mpiexec -n N` (all-reduce times for ResNet-20's
 * and ResNet-50's gradients, and a ResNet-20 training step with and without overlapping the
 * all-reduce with backward), then alone with one rank's share of the cores, then alone with all
 * of them; and prints the scaling efficiency against each. Timings only: tests never assert on
 * them.
 *
 * @internal
 * @module
 */

import { spawnSync } from 'node:child_process';
import { availableParallelism, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

import { DataLoader, Dataset } from './data.js';
import * as distributed from './distributed.js';
import { Model } from './model.js';
import { resnet } from './spec.js';

/** Settings shared by the parent and its workers. */
export interface DistributedBenchOptions {
  ranks: number;
  /** Timed steps per measurement (after two warm-up steps). */
  steps: number;
  /** Images per rank per step. */
  batch: number;
}

/** What one worker run measures (rank 0 reports it). */
interface WorkerFigures {
  ranks: number;
  threads: number;
  library: string;
  /** Mean seconds of one all-reduce of each net's gradient (distributed runs only). */
  allReduce?: { resnet20: { floats: number; seconds: number }; resnet50: { floats: number; seconds: number } };
  /** Median seconds of a step; `overlapOff` only for distributed runs. */
  stepOverlapOn: number;
  stepOverlapOff?: number;
}

const MARK = 'BENCH-FIGURES ';
const SIZE = 32;
const CHANNELS = 3;

/** A random 3x32x32 dataset, the same on every rank (the loader gives each rank its shard). */
function randomDataset(images: number): Dataset {
  let state = 12345;
  const next = (): number => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
  const pixels = Uint8Array.from({ length: images * CHANNELS * SIZE * SIZE }, () => Math.floor(next() * 256));
  const labels = Uint8Array.from({ length: images }, () => Math.floor(next() * 10));
  return Dataset.fromArrays({ images: pixels, labels, channels: CHANNELS, height: SIZE, width: SIZE, numClasses: 10 });
}

/** Median seconds of a training step over `steps` steps after two warm-up steps, on loader batches. */
async function medianStep(model: Model, data: Dataset, options: DistributedBenchOptions, world: distributed.World, epoch: number): Promise<number> {
  const loader = new DataLoader(data, {
    batchSize: options.batch,
    shuffle: true,
    seed: 1,
    ...(world.isDistributed ? { shard: { rank: world.rank, count: world.size } } : {}),
  });
  const times: number[] = [];
  let seen = 0;
  for await (const batch of loader.epoch(epoch)) {
    const t0 = performance.now();
    await model.trainStep(batch);
    if (seen++ >= 2) times.push((performance.now() - t0) / 1000);
    if (times.length === options.steps) break;
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? Number.NaN;
}

/** One measurement run: under mpiexec it is one rank; alone, one process with `threads` threads. */
export async function benchWorker(options: DistributedBenchOptions, threads: number | undefined): Promise<void> {
  const world = await distributed.init(threads === undefined ? {} : { cpuThreads: threads });
  const figures: WorkerFigures = {
    ranks: world.size,
    threads: threads ?? Math.max(1, Math.floor(availableParallelism() / world.localSize)),
    library: world.library.split('\n')[0] ?? '',
    stepOverlapOn: Number.NaN,
  };
  const r20 = resnet.cifar({ depth: 20, shortcut: 'B', inChannels: CHANNELS, numClasses: 10 });
  const model = Model.create(r20, { seed: 0, device: 'cpu' });
  model.setOptimizer({ lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
  const nativeWorld = distributed.nativeWorldOf(world);
  if (world.isDistributed && nativeWorld !== undefined) {
    const r50 = Model.create(resnet.imagenet({ depth: 50 }), { device: 'cpu' });
    const floats50 = r50.numParameters;
    r50.dispose();
    const floats20 = model.numParameters;
    figures.allReduce = {
      resnet20: { floats: floats20, seconds: await nativeWorld.benchAllReduce(floats20, 50) },
      resnet50: { floats: floats50, seconds: await nativeWorld.benchAllReduce(floats50, 5) },
    };
  }
  const data = randomDataset(options.batch * world.size * (options.steps + 3));
  if (world.isDistributed) {
    await model.attachDistributed(world, { overlap: true });
    figures.stepOverlapOn = await medianStep(model, data, options, world, 0);
    await model.detachDistributed();
    await model.attachDistributed(world, { overlap: false });
    figures.stepOverlapOff = await medianStep(model, data, options, world, 1);
    await model.detachDistributed();
  } else {
    figures.stepOverlapOn = await medianStep(model, data, options, world, 0);
  }
  model.dispose();
  if (world.rank === 0) console.log(`${MARK}${JSON.stringify(figures)}`);
}

/** Starts this script as a worker and returns rank 0's figures. */
function runWorker(command: string, args: string[]): WorkerFigures {
  const r = spawnSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.error !== undefined) throw new Error(`could not start ${command}: ${r.error.message}`);
  const line = r.stdout.split('\n').find((l) => l.startsWith(MARK));
  if (r.status !== 0 || line === undefined) throw new Error(`${command} ${args.join(' ')} failed (exit ${r.status}): ${r.stdout.trim()}`);
  return JSON.parse(line.slice(MARK.length)) as WorkerFigures;
}

const ms = (s: number): string => `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;

/** The parent: runs the three measurements and prints the report. */
export function distributedBench(options: DistributedBenchOptions): void {
  if (distributed.launchedByMpi()) throw new Error('run `npm run bench -- --ranks N` directly: it starts mpiexec itself');
  const where = distributed.locatePlugin();
  if (!where.found) throw distributed.missingPluginError(where);
  const script = fileURLToPath(new URL('./bench.js', import.meta.url));
  const common = ['--worker', '--steps', String(options.steps), '--batch', String(options.batch)];
  const cores = availableParallelism();
  const perRank = Math.max(1, Math.floor(cores / options.ranks));
  const { ranks, batch } = options;

  const multi = runWorker('mpiexec', ['-n', String(ranks), process.execPath, script, ...common]);
  const one = runWorker(process.execPath, [script, ...common, '--threads', String(perRank)]);
  const all = runWorker(process.execPath, [script, ...common, '--threads', String(cores)]);

  const imgPerSec = (ranksUsed: number, seconds: number): number => (ranksUsed * batch) / seconds;
  const multiOn = imgPerSec(ranks, multi.stepOverlapOn);
  const multiOff = imgPerSec(ranks, multi.stepOverlapOff ?? Number.NaN);
  const oneRate = imgPerSec(1, one.stepOverlapOn);
  const allRate = imgPerSec(1, all.stepOverlapOn);
  const lines = [
    `distributed bench: ${ranks} ranks on one machine, ${cpus()[0]?.model ?? 'unknown CPU'}, ${cores} cores (${perRank} thread(s) per rank), ${multi.library}`,
  ];
  const ar = multi.allReduce;
  if (ar !== undefined) {
    for (const [name, f] of [['ResNet-20', ar.resnet20], ['ResNet-50', ar.resnet50]] as const) {
      const mb = (f.floats * 4) / 1e6;
      lines.push(
        `all-reduce per step, ${name} gradients (${f.floats.toLocaleString('en-US')} f32 = ${mb.toFixed(1)} MB): ${ms(f.seconds)} ` +
          `(${(mb / 1000 / f.seconds).toFixed(2)} GB/s of gradient)`,
      );
    }
  }
  lines.push(
    `ResNet-20 step, CPU, batch ${batch} per rank (global ${batch * ranks}): overlap on ${ms(multi.stepOverlapOn)} (${multiOn.toFixed(1)} img/s), ` +
      `overlap off ${ms(multi.stepOverlapOff ?? Number.NaN)} (${multiOff.toFixed(1)} img/s)`,
    `one process, ${perRank} thread(s) (one rank's share), batch ${batch}: ${ms(one.stepOverlapOn)} (${oneRate.toFixed(1)} img/s)`,
    `one process, all ${cores} cores, batch ${batch}: ${ms(all.stepOverlapOn)} (${allRate.toFixed(1)} img/s)`,
    `scaling efficiency (${ranks} ranks' img/s / (${ranks} x one rank's)): ${((100 * multiOn) / (ranks * oneRate)).toFixed(1)}%; ` +
      `${ranks} ranks vs the all-cores process: ${(multiOn / allRate).toFixed(2)}x`,
  );
  console.log(lines.join('\n'));
}
