/**
 * Throughput of a CPU ResNet-20 (CIFAR, 3x32x32) at batch 128: training steps and inference,
 * in images per second. Random inputs; timings only (tests never assert on time).
 *
 * Usage: `node dist/bench.js [--steps N] [--batch N] [--depth N] [--device cpu|auto|gpu]`
 *
 * @module
 */

import { parseArgs } from 'node:util';
import { Model, type DeviceName } from './model.js';
import { resnet } from './spec.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '5' },
    batch: { type: 'string', default: '128' },
    depth: { type: 'string', default: '20' },
    device: { type: 'string', default: 'auto' },
  },
});
const steps = Number(values.steps);
const batch = Number(values.batch);
const depth = Number(values.depth);

const model = Model.create(resnet.cifar({ depth }), { seed: 0, device: values.device as DeviceName });
model.setOptimizer({ lr: 0.1 });
const shape = [batch, 3, 32, 32] as const;
let state = 12345;
const random = (): number => {
  state = (state * 1103515245 + 12345) % 2147483648;
  return state / 2147483648;
};
const images = Float32Array.from({ length: batch * 3 * 32 * 32 }, () => random() * 2 - 1);
const labels = Int32Array.from({ length: batch }, () => Math.floor(random() * 10));

async function time(label: string, run: () => Promise<unknown>): Promise<number> {
  await run(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await run();
  const seconds = (performance.now() - t0) / 1000;
  const imgPerSec = (steps * batch) / seconds;
  console.log(`${label}: ${imgPerSec.toFixed(1)} img/s (${((seconds / steps) * 1000).toFixed(0)} ms/batch)`);
  return imgPerSec;
}

console.log(`${model.name}, batch ${batch}, ${steps} timed steps, device ${values.device}`);
const train = await time('train', () => model.trainStep(images, labels, shape));
const infer = await time('infer', () => model.predict(images, shape));
console.log(`bench: model=${model.name} batch=${batch} train_img_per_sec=${train.toFixed(1)} infer_img_per_sec=${infer.toFixed(1)}`);
model.dispose();
