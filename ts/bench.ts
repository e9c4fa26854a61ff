/**
 * `npm run bench`: where we stand against PyTorch on the CPU, in one run. Training and inference
 * throughput (images per second, median step after warm-up, random data) and peak RSS, ours and
 * PyTorch's for the same network with the same thread count, as ratios, for ResNet-20 (3x32x32
 * and 1x28x28, batch 128), ResNet-56 (3x32x32, batch 128) and ResNet-18 (3x112x112, batch 32).
 * Then a per-phase breakdown of one ResNet-20 training step (convolution forward, its gradients,
 * batch norm, elementwise, pooling, loss, linear, optimizer, copies, other) beside PyTorch's
 * profiler grouped the same way: the rows where ours costs more locate the gap. Every figure is
 * measured in its own child process (peak RSS is per configuration). Timings only: tests never
 * assert on time.
 *
 * PyTorch is used where a Python with `torch` is found (`$TORCH_PYTHON`, else `python3`); the
 * CIFAR networks are the anchor's (`../shared/anchors/torch_resnet.py`: projection shortcuts, so
 * ours uses option B to match it parameter for parameter), ResNet-18 is torchvision's.
 *
 * Usage: `node dist/bench.js [--quick] [--steps N] [--device cpu|auto|gpu] [--precision fp32|mixed] [--no-torch]`: the
 * suite above. With any of `--net cifar|imagenet --depth N --size N --channels N --batch N`: that
 * one configuration (defaults ResNet-20, 3x32x32, batch 128), and `--phases` adds its breakdown.
 *
 * `--ranks N`: the data-parallel bench instead (`bench-distributed.ts`: all-reduce times, a
 * ResNet-20 CPU step with batch 64 per rank (or `--batch`) with and without overlap, scaling
 * efficiency); it runs itself under `mpiexec -n N`.
 *
 * @module
 */

import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import {
  label,
  measureOurs,
  oursInChild,
  profileOurs,
  python,
  torchFigures,
  torchPhases,
  type BenchConfig,
  type Figures,
  type Phases,
  type Timing,
  type TorchFigures,
} from './bench-measure.js';
import { benchWorker, distributedBench } from './bench-distributed.js';
import type { DeviceName, Precision } from './model.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '7' },
    // Ours and PyTorch alternate this many times per configuration; each side's best round counts.
    rounds: { type: 'string' },
    quick: { type: 'boolean', default: false },
    net: { type: 'string', default: 'cifar' },
    batch: { type: 'string', default: '128' },
    depth: { type: 'string', default: '20' },
    size: { type: 'string', default: '32' },
    channels: { type: 'string', default: '3' },
    device: { type: 'string', default: 'cpu' },
    // Ours only: 'mixed' needs a GPU (PyTorch's side stays fp32 on the CPU).
    precision: { type: 'string', default: 'fp32' },
    phases: { type: 'boolean', default: false },
    'no-torch': { type: 'boolean', default: false },
    ranks: { type: 'string' },
    // Internal: one measurement run of the data-parallel bench, and its thread count.
    worker: { type: 'boolean', default: false },
    threads: { type: 'string' },
    // Internal: one configuration's figures (or phase breakdown) in a child process, as JSON.
    'worker-config': { type: 'string' },
    'worker-phases': { type: 'string' },
    warmup: { type: 'string' },
  },
});
const steps = Number(values.quick && !process.argv.includes('--steps') ? 3 : values.steps);
const batch = Number(values.batch);
const threads = availableParallelism();
const device = values.device as DeviceName;
if (values.precision !== 'fp32' && values.precision !== 'mixed') throw new Error(`--precision must be 'fp32' or 'mixed', got '${values.precision}'`);
const precision: Precision = values.precision;
const timing: Timing = { steps, warmup: values.warmup !== undefined ? Number(values.warmup) : values.quick ? 1 : 2 };
/** Training steps under the profilers (after the warm-up). */
const profileSteps = values.quick ? 2 : 3;

const SUITE: BenchConfig[] = [
  { net: 'cifar', depth: 20, channels: 3, size: 32, batch: 128 },
  { net: 'cifar', depth: 20, channels: 1, size: 28, batch: 128 },
  { net: 'cifar', depth: 56, channels: 3, size: 32, batch: 128 },
  { net: 'imagenet', depth: 18, channels: 3, size: 112, batch: 32 },
];

/** The better of two rounds: the higher rates, the higher peak RSS (the one to plan memory by). */
function bestOf(a: Figures | undefined, b: Figures): Figures {
  if (a === undefined) return b;
  return {
    trainImgPerSec: Math.max(a.trainImgPerSec, b.trainImgPerSec),
    inferImgPerSec: Math.max(a.inferImgPerSec, b.inferImgPerSec),
    peakRssMiB: Math.max(a.peakRssMiB, b.peakRssMiB),
  };
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be an integer >= 1, got ${String(v)}`);
  return v;
}

function singleConfig(): BenchConfig {
  const net = values.net;
  if (net !== 'cifar' && net !== 'imagenet') throw new Error(`--net must be 'cifar' or 'imagenet', got '${net}'`);
  // --net imagenet alone means ResNet-18 at 112x112, batch 32 (the suite's).
  const given = (flag: string): boolean => process.argv.includes(`--${flag}`);
  const imagenet = net === 'imagenet';
  return {
    net,
    depth: positiveInt('depth', imagenet && !given('depth') ? 18 : Number(values.depth)),
    channels: positiveInt('channels', Number(values.channels)),
    size: positiveInt('size', imagenet && !given('size') ? 112 : Number(values.size)),
    batch: positiveInt('batch', imagenet && !given('batch') ? 32 : batch),
  };
}

const ms = (s: number): string => (s * 1000).toFixed(1);
const pad = (s: string, n: number): string => s.padStart(n);

function figuresTable(rows: { config: BenchConfig; ours: Figures; theirs: TorchFigures | string }[]): void {
  const ratio = (a: number, b: number | undefined): string => (b === undefined ? '-' : `${(a / b).toFixed(2)}x`);
  const num = (v: number | undefined, digits = 1): string => (v === undefined ? '-' : v.toFixed(digits));
  console.log(
    `${'img/s (median step)'.padEnd(26)}${pad('train ours', 11)}${pad('PyTorch', 9)}${pad('ratio', 8)}` +
      `${pad('infer ours', 12)}${pad('PyTorch', 9)}${pad('ratio', 8)}${pad('peak RSS ours', 15)}${pad('PyTorch', 9)}`,
  );
  for (const { config, ours, theirs } of rows) {
    const t = typeof theirs === 'string' ? undefined : theirs;
    console.log(
      `${label(config).padEnd(26)}${pad(num(ours.trainImgPerSec), 11)}${pad(num(t?.trainImgPerSec), 9)}` +
        `${pad(ratio(ours.trainImgPerSec, t?.trainImgPerSec), 8)}${pad(num(ours.inferImgPerSec), 12)}` +
        `${pad(num(t?.inferImgPerSec), 9)}${pad(ratio(ours.inferImgPerSec, t?.inferImgPerSec), 8)}` +
        `${pad(`${num(ours.peakRssMiB, 0)} MiB`, 15)}${pad(t === undefined ? '-' : `${num(t.peakRssMiB, 0)} MiB`, 9)}`,
    );
  }
  console.log('ratio = ours / PyTorch images per second (below 1: we are slower); peak RSS of each child process.');
}

/** Our phases beside PyTorch's, ms per step; PyTorch's convolution backward is one op for both gradients. */
function phasesTable(config: BenchConfig, ours: Phases, theirs: Phases | string): void {
  const t = typeof theirs === 'string' ? undefined : theirs;
  console.log(`\nPhase breakdown, ${label(config)} training step (ms per step, ${profileSteps} profiled steps each)`);
  console.log(`${'phase'.padEnd(30)}${pad('ours', 9)}${pad('calls', 7)}${pad('PyTorch', 9)}${pad('ours/PT', 9)}${pad('ours-PT', 9)}`);
  const row = (name: string, a: number, b: number | undefined, calls?: number): void => {
    const cells = b === undefined ? [pad('-', 9), pad('-', 9), pad('-', 9)] : [
      pad(ms(b), 9),
      pad(b > 0 ? `${(a / b).toFixed(2)}x` : '-', 9),
      pad(ms(a - b), 9),
    ];
    console.log(`${name.padEnd(30)}${pad(ms(a), 9)}${pad(calls === undefined ? '' : calls.toFixed(0), 7)}${cells.join('')}`);
  };
  const mine = (p: string): number => ours.phases[p] ?? 0;
  const theirsOf = (p: string): number | undefined => (t === undefined ? undefined : (t.phases[p] ?? 0));
  const calls = (p: string): number | undefined => ours.calls?.[p];
  row('conv forward', mine('conv forward'), theirsOf('conv forward'), calls('conv forward'));
  row('conv backward (data+weight)', mine('conv data grad') + mine('conv weight grad'), theirsOf('conv backward'));
  row('  conv data grad', mine('conv data grad'), undefined, calls('conv data grad'));
  row('  conv weight grad', mine('conv weight grad'), undefined, calls('conv weight grad'));
  for (const p of ['bn forward', 'bn backward', 'elementwise', 'pooling', 'loss', 'linear', 'optimizer', 'alloc/copy']) {
    row(p, mine(p), theirsOf(p), calls(p));
  }
  row('other (autograd, framework)', ours.otherSeconds, t?.otherSeconds);
  row('step (profiled wall)', ours.wallSeconds, t?.wallSeconds);
  console.log(
    'ours/PT above 1: that phase costs us more. "other": wall time outside the phases (ours: autograd, tape,\n' +
      'freeing, binding; PyTorch: autograd engine, Python, the profiler). PyTorch computes both convolution\n' +
      'gradients in one op, so its backward is one row. Self CPU times of its ops, grouped by the outermost op.',
  );
  if (typeof theirs === 'string') console.log(theirs);
}

async function main(): Promise<void> {
  positiveInt('steps', timing.steps);
  // A shared VM's speed drifts over minutes (PyTorch's own rate moved 5x between runs here), so the
  // two sides alternate, A B A B, and each keeps its best round: a slow spell then costs a round,
  // not the ratio.
  const rounds = positiveInt('rounds', Number(values.rounds ?? (values.quick ? 1 : 2)));
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const suite = ['net', 'depth', 'size', 'channels', 'batch'].some((f) => process.argv.includes(`--${f}`)) ? [singleConfig()] : SUITE;
  console.log(
    `resnet-wgpu bench: device ${device}${precision === 'mixed' ? ' (ours in precision mixed)' : ''}, ${threads} threads, ${cpu}; median of ${timing.steps} steps after ${timing.warmup} warm-up, ` +
      `best of ${rounds} alternating rounds` +
      (values['no-torch'] ? '' : `; PyTorch from ${python}`),
  );
  let torchMissing: string | undefined = values['no-torch'] ? 'PyTorch skipped (--no-torch)' : undefined;
  const rows: { config: BenchConfig; ours: Figures; theirs: TorchFigures | string }[] = [];
  for (const config of suite) {
    let ours: Figures | undefined;
    let theirs: TorchFigures | string | undefined = torchMissing;
    for (let round = 1; round <= rounds; round++) {
      // The table comes at the end; a long run says where it is.
      process.stderr.write(`measuring ${label(config)}, round ${round} of ${rounds} ...\n`);
      ours = bestOf(ours, oursInChild<Figures>('--worker-config', config, childArgs()));
      if (typeof theirs === 'string') continue;
      const t = torchFigures(config, timing, threads);
      theirs = typeof t === 'string' ? t : { ...bestOf(theirs, t), version: t.version };
    }
    if (ours === undefined || theirs === undefined) throw new Error('bench: no round ran');
    if (typeof theirs === 'string') torchMissing = theirs;
    rows.push({ config, ours, theirs });
  }
  figuresTable(rows);
  const versions = rows.map((r) => r.theirs).find((t): t is TorchFigures => typeof t !== 'string');
  if (versions !== undefined) console.log(`PyTorch ${versions.version}, same machine, same thread count, same run.`);
  if (torchMissing !== undefined) console.log(torchMissing);

  const phaseConfig = suite === SUITE ? SUITE[0] : values.phases ? suite[0] : undefined;
  if (phaseConfig === undefined) return;
  if (device !== 'cpu') {
    console.log('\nPhase breakdown: CPU only (GPU calls return before their work is done); run with --device cpu.');
    return;
  }
  process.stderr.write(`profiling ${label(phaseConfig)} ...\n`);
  const ours = oursInChild<Phases>('--worker-phases', phaseConfig, childArgs());
  phasesTable(phaseConfig, ours, torchMissing ?? torchPhases(phaseConfig, timing, threads, profileSteps));
}

function childArgs(): string[] {
  return [
    ...['--steps', String(timing.steps), '--warmup', String(timing.warmup), '--device', device, '--precision', precision],
    ...(values.quick ? ['--quick'] : []),
  ];
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
} else if (values['worker-config'] !== undefined) {
  const config = JSON.parse(values['worker-config']) as BenchConfig;
  console.log(JSON.stringify(await measureOurs(config, timing, device, precision)));
} else if (values['worker-phases'] !== undefined) {
  const config = JSON.parse(values['worker-phases']) as BenchConfig;
  console.log(JSON.stringify(await profileOurs(config, timing.warmup, profileSteps)));
} else {
  await main();
}
