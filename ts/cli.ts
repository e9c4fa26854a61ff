#!/usr/bin/env node
/**
 * `resnet-wgpu` command line: train on Fashion-MNIST, evaluate a checkpoint, print a summary.
 * Errors print `error: <message>` and exit with code 1.
 *
 * @module
 */

import { Command, Option } from 'commander';

import { datasets, type Dataset } from './data.js';
import { native } from './native.js';
import { Model, type DeviceName, type Precision } from './model.js';
import { schedules } from './optim.js';
import { classifyImages } from './predict.js';
import { resnet, type ResNetSpec, type ShortcutOption } from './spec.js';
import { fit } from './trainer.js';
import { Progress } from './progress.js';
import { experimentCommand } from './experiments/cli.js';
import { deviceOption, int, positiveNumber, precisionOption } from './cli-options.js';
import { prepareOutputFile } from './output-path.js';
import * as distributed from './distributed.js';

const DEFAULT_DATA = '/usr/share/datasets/fashion-mnist';

function cifarSpec(model: string, depth: number, inChannels: number, numClasses: number, shortcut: ShortcutOption): ResNetSpec {
  return resnet.cifar({ depth, shortcut, plain: model === 'plain', inChannels, numClasses });
}

function limit(ds: Dataset, n: number | undefined): Dataset {
  return n === undefined ? ds : ds.take(n);
}

interface TrainFlags {
  model: string;
  depth: number;
  epochs: number;
  batchSize: number;
  lr: number;
  seed: number;
  data: string;
  out: string;
  augment: boolean;
  limit?: number;
  device: DeviceName;
  precision: Precision;
  shortcut: ShortcutOption;
  distributed: boolean;
  syncBn: boolean;
}

/** The signals that stop training cleanly (evaluate, save, then exit), and whether a person sent it. */
const STOP_SIGNALS: ReadonlyArray<{ name: NodeJS.Signals; byUser: boolean }> = [
  { name: 'SIGINT', byUser: true }, // Ctrl-C at the terminal
  { name: 'SIGTERM', byUser: false }, // a scheduler's time limit, `kill`: the job did not finish
];

/** Exit code of `train`: 0 when it finished or the user pressed Ctrl-C, 1 when something else stopped it. */
async function train(flags: TrainFlags): Promise<number> {
  const started = performance.now();
  // First, before any model or loader: it fixes this rank's GPU adapter and CPU threads.
  const world = flags.distributed ? await distributed.init() : undefined;
  const lead = world === undefined || world.rank === 0; // the one rank that prints and writes
  const say = (line: string): void => {
    if (lead) console.log(line);
  };
  // Before any work: an hour of training must not end in "cannot write the checkpoint".
  const out = lead ? prepareOutputFile(flags.out, '--out') : flags.out;
  const trainSet = limit(await datasets.fashionMnist({ dir: flags.data, split: 'train' }), flags.limit);
  const testSet = limit(await datasets.fashionMnist({ dir: flags.data, split: 'test' }), flags.limit);
  const spec = cifarSpec(flags.model, flags.depth, trainSet.channels, trainSet.numClasses, flags.shortcut);
  const model = Model.create(spec, { seed: flags.seed, device: flags.device, precision: flags.precision });
  const ranks = world?.isDistributed === true ? world.size : 1;
  say(
    `${model.name} (${model.numParameters.toLocaleString('en-US')} parameters) on Fashion-MNIST: ` +
      `${trainSet.length} train / ${testSet.length} test images, ${flags.epochs} epoch(s), batch ${flags.batchSize}` +
      (ranks > 1 ? ` per rank x ${ranks} ranks = ${flags.batchSize * ranks}${flags.syncBn ? ', synchronised batch norm' : ''}` : '') +
      `, lr ${flags.lr} (/10 at 50% and 75%), shortcut ${flags.shortcut}, augment ${flags.augment ? 'on' : 'off'}` +
      (flags.precision === 'mixed' ? ', mixed precision' : ''),
  );
  if (world !== undefined) say(`distributed: ${world.size} rank(s), ${world.library.split('\n')[0] ?? ''}`);

  const abort = new AbortController();
  let stoppedBy: { name: NodeJS.Signals; byUser: boolean } | undefined;
  const handlers = STOP_SIGNALS.map((sig) => {
    const handler = (): void => {
      stoppedBy ??= sig;
      abort.abort(new Error(`${sig.name} received`));
    };
    process.once(sig.name, handler);
    return { name: sig.name, handler };
  });
  const progress = new Progress();
  let runLoss = 0;
  let runAcc = 0;
  let lastImgPerSec = 0;
  let history;
  try {
    history = await fit(model, trainSet, {
      epochs: flags.epochs,
      batchSize: flags.batchSize,
      optimizer: { lr: flags.lr, momentum: 0.9, weightDecay: 1e-4 },
      schedule: schedules.paper(),
      augment: flags.augment,
      seed: flags.seed,
      signal: abort.signal,
      ...(world === undefined ? {} : { distributed: world, syncBatchNorm: flags.syncBn }),
      callbacks: lead
        ? {
            onTrainBegin: ({ totalSteps }) => progress.start(totalSteps),
            onBatchEnd: (step, logs) => {
              // Exponential moving averages: a readable trend rather than per-batch noise.
              const k = step === 1 ? 1 : 0.1;
              runLoss += k * (logs.loss - runLoss);
              runAcc += k * (logs.acc - runAcc);
              lastImgPerSec = logs.imgPerSec;
              progress.update(step, logs, runLoss, runAcc);
            },
            onEpochEnd: (epoch, logs) => {
              progress.stop();
              console.log(`epoch ${epoch + 1}/${flags.epochs}: loss=${logs.loss.toFixed(4)} acc=${logs.acc.toFixed(4)} (${logs.seconds.toFixed(1)}s)`);
              if (epoch + 1 < flags.epochs) progress.resume();
            },
          }
        : {},
    });
  } finally {
    progress.stop();
    for (const { name, handler } of handlers) process.removeListener(name, handler);
  }
  if (history.aborted && lead) console.error(`${stoppedBy?.name ?? 'stopped'}: evaluating and saving the partly trained model (${history.steps} steps)`);

  // Every rank evaluates its shard of the test set; the figures are the whole set's.
  const test = await model.evaluate(testSet, { batchSize: 256, ...(world === undefined ? {} : { distributed: world }) });
  if (lead) await model.save(out, { dataset: 'fashion-mnist', epochs: String(flags.epochs), seed: String(flags.seed) });
  // No rank may exit (a non-zero exit stops the job) before rank 0 has written the checkpoint.
  await world?.barrier();
  const seconds = (performance.now() - started) / 1000;
  say(`test: loss=${test.loss.toFixed(4)} top1=${test.top1.toFixed(4)} top5=${test.top5.toFixed(4)} (${test.count} images)`);
  say(`saved ${out}`);
  const last = history.history;
  say(
    `final: loss=${(last.loss.at(-1) ?? NaN).toFixed(4)} train_acc=${(last.acc.at(-1) ?? NaN).toFixed(4)} ` +
      `test_loss=${test.loss.toFixed(4)} test_acc=${test.top1.toFixed(4)} test_top5=${test.top5.toFixed(4)} ` +
      `steps=${history.steps}${history.skippedSteps > 0 ? ` skipped_steps=${history.skippedSteps}` : ''} img_per_sec=${lastImgPerSec.toFixed(1)} seconds=${seconds.toFixed(1)} ` +
      `aborted=${history.aborted} checkpoint=${out}`,
  );
  model.dispose();
  return history.aborted && stoppedBy?.byUser !== true ? 1 : 0;
}

async function evaluate(flags: { checkpoint: string; data: string; batchSize: number; limit?: number; device: DeviceName }): Promise<void> {
  const model = await Model.load(flags.checkpoint, { device: flags.device });
  const testSet = limit(await datasets.fashionMnist({ dir: flags.data, split: 'test' }), flags.limit);
  const r = await model.evaluate(testSet, { batchSize: flags.batchSize });
  console.log(`${model.name} from ${flags.checkpoint} (step ${model.step}) on ${r.count} test images`);
  console.log(`final: test_loss=${r.loss.toFixed(4)} test_acc=${r.top1.toFixed(4)} test_top5=${r.top5.toFixed(4)} count=${r.count}`);
  model.dispose();
}

/** A checkpoint's weights alone, for PyTorch (`Model.exportWeights`). */
async function exportWeights(flags: { checkpoint: string; out: string }): Promise<void> {
  const out = prepareOutputFile(flags.out, '--out');
  const model = await Model.load(flags.checkpoint, { device: 'cpu' });
  try {
    await model.exportWeights(out);
    console.log(`${model.name} (step ${model.step}) from ${flags.checkpoint}: weights, running statistics and counters`);
    console.log(`wrote ${out}`);
  } finally {
    model.dispose();
  }
}

function summary(flags: {
  model: string;
  depth: number;
  family: string;
  inChannels: number;
  numClasses?: number;
  size?: number;
  shortcut?: ShortcutOption;
}): void {
  let spec: ResNetSpec;
  if (flags.family === 'imagenet') {
    const depth = flags.depth as 18 | 34 | 50 | 101 | 152;
    spec = resnet.imagenet({ depth, shortcut: flags.shortcut ?? 'B', plain: flags.model === 'plain', inChannels: flags.inChannels, numClasses: flags.numClasses ?? 1000 });
  } else {
    spec = cifarSpec(flags.model, flags.depth, flags.inChannels, flags.numClasses ?? 10, flags.shortcut ?? 'A');
  }
  const model = Model.create(spec, { device: 'cpu' });
  console.log(model.summary(flags.size === undefined ? {} : { height: flags.size, width: flags.size }).toString());
  model.dispose();
}

/**
 * The CLI's recipe is the anchor's (`shared/anchors/torch_fmnist.py`), whose CIFAR ResNet projects
 * where shapes change: option B. The library's own default stays the paper's option A.
 */
const shortcutOption = (fallback?: ShortcutOption): Option => {
  const o = new Option('--shortcut <option>', 'A: zero-pad, B: project where shapes change, C: project everywhere').choices(['A', 'B', 'C']);
  return fallback === undefined ? o : o.default(fallback);
};
const modelOption = (): Option =>
  new Option('--model <kind>', 'residual network or its plain counterpart').choices(['resnet', 'plain']).default('resnet');

export function program(): Command {
  const cmd = new Command('resnet-wgpu').description('Train and run ResNets (He et al. 2015), computed in Rust');
  cmd
    .command('train')
    .description('train a CIFAR-style ResNet on Fashion-MNIST, evaluate it and save a checkpoint')
    .addOption(modelOption())
    .option('--depth <n>', 'depth 6n+2 (20, 32, 44, 56, 110)', int('depth', 8), 20)
    .option('--epochs <n>', 'passes over the training set', int('epochs', 1), 1)
    .option('--batch-size <n>', 'images per step (per rank with --distributed)', int('batch size', 1), 128)
    .option('--lr <rate>', 'initial learning rate (divided by 10 at 50% and 75% of the run)', positiveNumber, 0.1)
    .option('--seed <n>', 'seed for weights, order and augmentation', int('seed', 0), 0)
    .option('--data <dir>', 'Fashion-MNIST directory (IDX files, gzip or raw)', DEFAULT_DATA)
    .option('--out <file>', 'checkpoint to write (safetensors)', 'runs/resnet20-fmnist.safetensors')
    .option('--augment', 'pad-4 random crop and horizontal flip', false)
    .option('--limit <n>', 'use only the first N images of each split (quick runs, tests)', int('limit', 1))
    .addOption(shortcutOption('B'))
    .addOption(deviceOption())
    .addOption(precisionOption())
    .option(
      '--distributed',
      'data-parallel over the ranks of `mpiexec -n N` (batch size per rank; rank 0 prints and saves; local rank k uses GPU k)',
      false,
    )
    .option('--sync-bn', 'with --distributed: batch-norm statistics over the global batch', false)
    .action(async (flags: TrainFlags) => {
      commandExitCode = await train(flags);
    });
  cmd
    .command('evaluate')
    .description('evaluate a checkpoint on the Fashion-MNIST test set')
    .requiredOption('--checkpoint <file>', 'checkpoint written by train')
    .option('--data <dir>', 'Fashion-MNIST directory', DEFAULT_DATA)
    .option('--batch-size <n>', 'images per batch', int('batch size', 1), 256)
    .option('--limit <n>', 'use only the first N test images', int('limit', 1))
    .addOption(deviceOption())
    .action((flags: { checkpoint: string; data: string; batchSize: number; limit?: number; device: DeviceName }) => evaluate(flags));
  cmd
    .command('export-weights')
    .description(
      "write a checkpoint's weights, running statistics and num_batches_tracked alone (torchvision names, no optimizer state): " +
        'model.load_state_dict(safetensors.torch.load_file(OUT), strict=True) in PyTorch',
    )
    .requiredOption('--checkpoint <file>', 'checkpoint written by train or Model.save')
    .requiredOption('--out <file>', 'safetensors file to write')
    .action((flags: { checkpoint: string; out: string }) => exportWeights(flags));
  cmd
    .command('info')
    .description(
      'list the CPU (model, threads, GEMM kernel), the GPU adapters, their backend, driver, limits and features, ' +
        'and which device is used and why; and whether the MPI plugin is found',
    )
    .action(() => {
      console.log(native.cpuInfo());
      console.log(native.adaptersInfo());
      // Only looked up: initialising MPI here would need a launcher.
      const plugin = distributed.locatePlugin();
      const from = plugin.source === 'env' ? ` (${distributed.PLUGIN_ENV})` : '';
      console.log(
        plugin.found
          ? `MPI plugin: found ${plugin.path}${from}: train --distributed under mpiexec runs data-parallel`
          : `MPI plugin: not found (${plugin.path}${from}); for multi-process training install MPICH ` +
              '(apt-get install mpich libmpich-dev libclang-dev) and run `npm run build:mpi`',
      );
    });
  cmd
    .command('summary')
    .description('print the layers, output shapes, parameters and multiply-adds of a network')
    .addOption(modelOption())
    .addOption(new Option('--family <family>', 'CIFAR (6n+2) or ImageNet (18..152) network').choices(['cifar', 'imagenet']).default('cifar'))
    .option('--depth <n>', 'network depth', int('depth', 1), 20)
    .option('--in-channels <n>', 'input channels', int('in-channels', 1), 3)
    .option('--num-classes <n>', 'classes (default 10, or 1000 for ImageNet)', int('num-classes', 1))
    .option('--size <n>', 'input height and width (default 32, or 224 for ImageNet)', int('size', 1))
    .addOption(shortcutOption())
    .action(summary);
  cmd
    .command('predict')
    .description('classify JPEG or PNG images with a checkpoint (top classes and probabilities)')
    .argument('<images...>', 'JPEG or PNG files')
    .requiredOption('--checkpoint <file>', 'checkpoint written by train')
    .option('--size <n>', 'resize to N x N (default: the training size; ImageNet models: resize 256, centre crop 224)', int('size', 1))
    .option('--top <k>', 'classes to print per image', int('top', 1), 5)
    .addOption(deviceOption())
    .action(async (images: string[], flags: { checkpoint: string; size?: number; top: number; device: DeviceName }) => {
      const model = await Model.load(flags.checkpoint, { device: flags.device });
      try {
        const results = await classifyImages(model, images, { top: flags.top, ...(flags.size === undefined ? {} : { size: flags.size }) });
        for (const r of results) {
          console.log(`${r.file}: ${r.top.map((t) => `${t.label} (${t.index}) ${(100 * t.probability).toFixed(1)}%`).join(', ')}`);
        }
      } finally {
        model.dispose();
      }
    });
  cmd.addCommand(experimentCommand());
  return cmd;
}

/** Set by a command that finished without throwing but must not report success (a stopped run). */
let commandExitCode = 0;

export async function main(argv: string[] = process.argv): Promise<number> {
  commandExitCode = 0;
  try {
    await program().parseAsync(argv);
    return commandExitCode;
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

process.exitCode = await main();
