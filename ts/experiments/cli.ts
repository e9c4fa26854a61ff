/**
 * `resnet-wgpu experiment <name>`: the paper's experiments from the command line, with a progress
 * bar per run. Rerunning a command with the same output folder resumes where it stopped.
 *
 * @module
 */

import { Command, InvalidArgumentError, Option } from 'commander';

import { deviceOption, int, positiveNumber } from '../cli-options.js';
import * as distributed from '../distributed.js';
import type { DeviceName } from '../model.js';
import { Progress } from '../progress.js';
import { recipeByName, type Recipe } from '../recipes.js';
import type { ShortcutOption } from '../spec.js';
import type { DataSource, ExperimentOptions, ExperimentProgress } from './common.js';
import { degradation } from './degradation.js';
import { gradients } from './gradients.js';
import { responses } from './responses.js';
import { shortcuts } from './shortcuts.js';

interface CommonFlags {
  out?: string;
  dataset: 'fashion-mnist' | 'cifar10' | 'folder';
  data?: string;
  recipe?: string;
  epochs?: number;
  lr?: number;
  seed: number;
  device: DeviceName;
  trainEval: number;
  limitTrain?: number;
  limitTest?: number;
  fresh: boolean;
  only?: string[];
  distributed: boolean;
}

function intList(name: string) {
  return (value: string): number[] => {
    const list = value.split(',').map((v) => Number(v.trim()));
    if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1)) {
      throw new InvalidArgumentError(`${name} must be a comma-separated list of positive integers, got '${value}'`);
    }
    return list;
  };
}

function shortcutList(value: string): ShortcutOption[] {
  const list = value.split(',').map((v) => v.trim().toUpperCase());
  if (list.length === 0 || list.some((v) => v !== 'A' && v !== 'B' && v !== 'C')) {
    throw new InvalidArgumentError(`shortcut options must be a comma-separated list of A, B, C; got '${value}'`);
  }
  return list as ShortcutOption[];
}

function withCommon(cmd: Command, defaultOut: string): Command {
  return cmd
    .option('--out <dir>', 'output folder (runs, CSV, SVG, PNG); rerun with the same folder to resume', defaultOut)
    .addOption(
      new Option('--dataset <name>', 'training data (folder: ImageNet-style train/ and val/ folders, ImageNet networks)')
        .choices(['fashion-mnist', 'cifar10', 'folder'])
        .default('fashion-mnist'),
    )
    .option('--data <dir>', 'dataset folder (default /usr/share/datasets/fashion-mnist; CIFAR-10: the binary batches; folder: the root)')
    .addOption(
      new Option('--recipe <name>', 'training recipe (default cifarPaperShort, or imagenetPaperShort for folders)').choices([
        'cifarPaperShort',
        'cifarPaper',
        'imagenetPaperShort',
        'imagenetPaper',
      ]),
    )
    .option('--epochs <n>', "override the recipe's epochs", int('epochs', 1))
    .option('--lr <rate>', "override the recipe's learning rate", positiveNumber)
    .option('--seed <n>', 'seed for weights, order and augmentation', int('seed', 0), 0)
    .addOption(deviceOption())
    .option('--train-eval <n>', 'training images evaluated in eval mode after each epoch (0: none)', int('train-eval', 0), 10000)
    .option('--limit-train <n>', 'use only the first N training images', int('limit-train', 1))
    .option('--limit-test <n>', 'use only the first N test images', int('limit-test', 1))
    .option('--fresh', 'start every run over instead of resuming', false)
    .option('--only <names>', 'train only these runs (comma-separated folder names, e.g. plain-56); read the others from --out', (v: string) => v.split(',').map((x) => x.trim()))
    .option('--distributed', "data-parallel over the ranks of `mpiexec -n N` (the recipe's batch size per rank; rank 0 prints and writes)", false);
}

function dataSource(flags: CommonFlags): DataSource {
  if (flags.dataset === 'cifar10') {
    if (flags.data === undefined) throw new Error('--dataset cifar10 needs --data <dir> (the folder of data_batch_*.bin)');
    return { kind: 'cifar10', dir: flags.data };
  }
  if (flags.dataset === 'folder') {
    if (flags.data === undefined) throw new Error('--dataset folder needs --data <root> (with train/ and val/ folders of class folders)');
    return { kind: 'folder', root: flags.data };
  }
  return flags.data === undefined ? { kind: 'fashion-mnist' } : { kind: 'fashion-mnist', dir: flags.data };
}

function recipeOf(flags: CommonFlags, depth?: number): Recipe {
  const name = flags.recipe ?? (flags.dataset === 'folder' ? 'imagenetPaperShort' : 'cifarPaperShort');
  const r = recipeByName(name, depth === undefined ? {} : { depth });
  if (flags.epochs !== undefined) {
    r.epochs = flags.epochs;
    delete r.iterations;
    if (r.optimizer.schedule && r.optimizer.schedule.kind === 'multistep' && 'milestones' in r.optimizer.schedule) {
      r.optimizer = { ...r.optimizer, schedule: { kind: 'multistep', fractions: [0.5, 0.75], gamma: 0.1 } };
    }
  }
  if (flags.lr !== undefined) r.optimizer = { ...r.optimizer, lr: flags.lr };
  return r;
}

/** Bars per run, and one line per epoch. */
function terminalProgress(): ExperimentProgress {
  let bar: Progress | undefined;
  let total = 0;
  let runLoss = 0;
  let runAcc = 0;
  let seen = 0;
  return {
    runStart: (name, info) => {
      console.log(`run ${info.index + 1}/${info.count}: ${name}`);
      bar = new Progress(name);
      total = 0;
      seen = 0;
    },
    resumed: (name, info) => console.log(`${name}: resuming after epoch ${info.epoch} from its checkpoint`),
    batch: (_name, logs, info) => {
      if (bar === undefined) return;
      if (total === 0) {
        total = info.totalSteps;
        bar.start(total, info.step - 1);
      }
      const k = seen++ === 0 ? 1 : 0.1;
      runLoss += k * (logs.loss - runLoss);
      runAcc += k * (logs.acc - runAcc);
      bar.update(info.step, logs, runLoss, runAcc);
    },
    epoch: (name, p) => {
      bar?.stop();
      const evalErr = p.trainEvalError === undefined ? '' : ` (eval ${p.trainEvalError.toFixed(2)}%)`;
      console.log(
        `${name} epoch ${p.epoch}: train error ${p.trainError.toFixed(2)}%${evalErr}, test error ${p.testError.toFixed(2)}%, lr ${p.lr.toPrecision(3)}, ${p.seconds.toFixed(1)} s`,
      );
      bar?.resume();
    },
    runEnd: (name, record) => {
      bar?.stop();
      bar = undefined;
      const last = record.curve.at(-1);
      if (last !== undefined) console.log(`${name}: done, test error ${last.testError.toFixed(2)}% after ${record.curve.length} epoch(s)`);
    },
  };
}

/** The world of `--distributed` (first: it fixes this rank's GPU and threads), else none. */
let world: distributed.World | undefined;

/** Rank 0 (or the only process) prints. */
const lead = (): boolean => (world?.rank ?? 0) === 0;

async function withInterrupt<T>(flags: CommonFlags, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  world = flags.distributed ? await distributed.init() : undefined;
  const abort = new AbortController();
  const onSigint = (): void => {
    if (lead()) console.log('\ninterrupted: finishing the current batch; rerun the same command to resume from the last epoch');
    abort.abort();
  };
  process.once('SIGINT', onSigint);
  try {
    const result = await run(abort.signal);
    await world?.barrier(); // no rank exits before rank 0 has written every file
    return result;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

function experimentOptions(flags: CommonFlags, signal: AbortSignal, recipe: Recipe): ExperimentOptions {
  const o: ExperimentOptions = {
    out: flags.out ?? 'runs/experiment',
    data: dataSource(flags),
    recipe,
    seed: flags.seed,
    device: flags.device,
    trainEvalImages: flags.trainEval,
    fresh: flags.fresh,
    signal,
    ...(lead() ? { progress: terminalProgress() } : {}),
    ...(world !== undefined ? { distributed: world } : {}),
  };
  if (flags.limitTrain !== undefined) o.limitTrain = flags.limitTrain;
  if (flags.limitTest !== undefined) o.limitTest = flags.limitTest;
  if (flags.only !== undefined) o.only = flags.only;
  return o;
}

function printFiles(files: Record<string, string>, report: string): void {
  if (!lead()) return;
  console.log(report);
  for (const [kind, path] of Object.entries(files)) console.log(`wrote ${kind}: ${path}`);
}

/** The `experiment` command and its sub-commands. */
export function experimentCommand(): Command {
  const cmd = new Command('experiment').description("run the paper's experiments; each writes a CSV of its curves and a figure (SVG and PNG)");
  withCommon(
    cmd
      .command('degradation')
      .description('plain vs residual nets of two depths: training (dashed) and test (bold) error against iterations (Figures 1 and 6)')
      .option('--depths <list>', 'depths: CIFAR 6n+2 (default 20,56) or ImageNet for folders (default 18,34)', intList('depths'))
      .addOption(new Option('--shortcut <option>', 'shortcut of the residual nets').choices(['A', 'B', 'C']).default('A')),
    'runs/degradation',
  ).action((flags: CommonFlags & { depths?: number[]; shortcut: ShortcutOption }) =>
    withInterrupt(flags, async (signal) => {
      const r = await degradation({
        ...experimentOptions(flags, signal, recipeOf(flags, flags.depths && Math.max(...flags.depths))),
        ...(flags.depths ? { depths: flags.depths } : {}),
        shortcut: flags.shortcut,
      });
      printFiles(r.files, r.report);
    }),
  );
  withCommon(
    cmd
      .command('shortcuts')
      .description('shortcut options A, B and C on the same ResNet (Table 3)')
      .option('--depth <n>', 'depth: CIFAR 6n+2 (default 20) or ImageNet for folders (default 34)', int('depth', 8))
      .option('--options <list>', 'shortcut options', shortcutList, ['A', 'B', 'C'] as ShortcutOption[]),
    'runs/degradation',
  ).action((flags: CommonFlags & { depth?: number; options: ShortcutOption[] }) =>
    withInterrupt(flags, async (signal) => {
      const r = await shortcuts({
        ...experimentOptions(flags, signal, recipeOf(flags, flags.depth)),
        ...(flags.depth ? { depth: flags.depth } : {}),
        options: flags.options,
      });
      printFiles(r.files, r.report);
    }),
  );
  withCommon(
    cmd
      .command('responses')
      .description('std of 3x3 layer responses, plain vs residual (Figure 7), and per-layer gradient norms; reuses degradation runs in the same folder')
      .option('--depths <list>', 'depths: CIFAR 6n+2 (default 20,56) or ImageNet for folders (default 18,34)', intList('depths'))
      .addOption(new Option('--shortcut <option>', 'shortcut of the residual nets').choices(['A', 'B', 'C']).default('A'))
      .option('--images <n>', 'test images measured', int('images', 1), 1000),
    'runs/degradation',
  ).action((flags: CommonFlags & { depths?: number[]; shortcut: ShortcutOption; images: number }) =>
    withInterrupt(flags, async (signal) => {
      const r = await responses({
        ...experimentOptions(flags, signal, recipeOf(flags, flags.depths && Math.max(...flags.depths))),
        ...(flags.depths ? { depths: flags.depths } : {}),
        shortcut: flags.shortcut,
        images: flags.images,
      });
      printFiles(r.files, r.report);
    }),
  );
  cmd
    .command('gradients')
    .description('per-layer gradient norms at initialisation: deep plain nets with sigmoid, tanh, ReLU and the ResNet (log scale)')
    .option('--out <dir>', 'output folder', 'runs/gradients')
    .addOption(new Option('--dataset <name>', 'data for the batches').choices(['fashion-mnist', 'cifar10']).default('fashion-mnist'))
    .option('--data <dir>', 'dataset folder')
    .option('--depth <n>', 'CIFAR depth 6n+2', int('depth', 8), 56)
    .option('--batches <n>', 'batches of 128 averaged', int('batches', 1), 4)
    .option('--seed <n>', 'seed of the weights', int('seed', 0), 0)
    .addOption(deviceOption())
    .action(async (flags: CommonFlags & { depth: number; batches: number }) => {
      const r = await gradients({
        out: flags.out ?? 'runs/gradients',
        data: dataSource(flags),
        depth: flags.depth,
        batches: flags.batches,
        seed: flags.seed,
        device: flags.device,
      });
      printFiles(r.files, r.report);
    });
  return cmd;
}
