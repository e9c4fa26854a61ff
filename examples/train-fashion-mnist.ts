/**
 * Train a ResNet-20 on Fashion-MNIST with the paper's recipe, evaluate it and save a checkpoint.
 *
 * Run (after `npm run build`): `npx tsx examples/train-fashion-mnist.ts [--limit N]`, or set
 * `RESNET_EXAMPLE_LIMIT=N` to train on the first N images only (tests do this). In your own
 * project, import from 'resnet-wgpu' instead of '../ts/index.js'.
 */

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';

import { Model, datasets, fit, resnet, schedules, type History } from '../ts/index.js';

export interface ExampleOptions {
  /** Use only the first N images of each split. */
  limit?: number;
  epochs?: number;
  out?: string;
  dataDir?: string;
  log?: (line: string) => void;
}

export interface ExampleResult {
  history: History;
  testAccuracy: number;
  checkpoint: string;
}

export async function main(options: ExampleOptions = {}): Promise<ExampleResult> {
  const log = options.log ?? console.log;
  const dir = options.dataDir ?? '/usr/share/datasets/fashion-mnist';

  // 1. Data: u8 images stay in Rust; batches are normalised there too.
  let train = await datasets.fashionMnist({ dir, split: 'train' });
  let test = await datasets.fashionMnist({ dir, split: 'test' });
  if (options.limit !== undefined) {
    train = train.take(options.limit);
    test = test.take(options.limit);
  }

  // 2. The network: a CIFAR-style ResNet-20 (option A shortcuts) for 1-channel 28x28 images.
  const model = Model.create(resnet.cifar({ depth: 20, inChannels: 1, numClasses: 10 }), { seed: 0 });
  log(`${model.name}: ${model.numParameters.toLocaleString('en-US')} parameters, ${train.length} training images`);

  // 3. The paper's recipe: SGD lr 0.1, momentum 0.9, weight decay 1e-4, /10 at 50% and 75%.
  const history = await fit(model, train, {
    epochs: options.epochs ?? 1,
    batchSize: 128,
    optimizer: { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 },
    schedule: schedules.paper(),
    callbacks: {
      onBatchEnd: (step, logs) => {
        if (step % 50 === 0 || step === 1) {
          log(`step ${step}: loss ${logs.loss.toFixed(4)} acc ${logs.acc.toFixed(3)} lr ${logs.lr} ${logs.imgPerSec.toFixed(0)} img/s`);
        }
      },
      onEpochEnd: (epoch, logs) => log(`epoch ${epoch + 1}: loss ${logs.loss.toFixed(4)} acc ${logs.acc.toFixed(4)}`),
    },
  });

  // 4. Evaluate (normalised with the training statistics fit stored on the model) and save.
  const result = await model.evaluate(test);
  log(`test: top-1 ${(100 * result.top1).toFixed(2)}%  top-5 ${(100 * result.top5).toFixed(2)}%`);
  const checkpoint = options.out ?? 'runs/example-resnet20-fmnist.safetensors';
  mkdirSync(dirname(checkpoint), { recursive: true });
  await model.save(checkpoint, { example: 'train-fashion-mnist' });
  log(`saved ${checkpoint}`);
  model.dispose();
  return { history, testAccuracy: result.top1, checkpoint };
}

function limitFromArgs(): number | undefined {
  const i = process.argv.indexOf('--limit');
  const raw = i >= 0 ? process.argv[i + 1] : process.env['RESNET_EXAMPLE_LIMIT'];
  return raw === undefined ? undefined : Number(raw);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const limit = limitFromArgs();
  await main(limit === undefined ? {} : { limit });
}
