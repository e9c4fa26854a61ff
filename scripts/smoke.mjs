// Release smoke test, run by .github/workflows/release.yml on every platform of the matrix with the
// binary that job just built (native/resnet-wgpu.<platform>.node) and the compiled dist/: load the
// package through ESM and through CommonJS `require`, build ResNet-20, take one training step on
// the CPU and check the loss. Needs no dataset, no GPU and no network.
//
//   node scripts/smoke.mjs
import { createRequire } from 'node:module';

const esm = await import('../dist/index.js');
const cjs = createRequire(import.meta.url)('../dist/index.js');
if (typeof cjs.Model?.create !== 'function' || cjs.Model !== esm.Model) {
  throw new Error('require() of the package did not give the same API as import');
}

const { Model, resnet } = esm;
const model = Model.create(resnet.cifar({ depth: 20, inChannels: 3, numClasses: 10 }), { seed: 0, device: 'cpu' });
const n = 4;
const images = new Float32Array(n * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.37));
const labels = Int32Array.from({ length: n }, (_, i) => i % 10);
const first = await model.trainStep(images, labels, [n, 3, 32, 32]);
const second = await model.trainStep(images, labels, [n, 3, 32, 32]);
const params = model.summary().totalParams;
const loaded = (process.report?.getReport().sharedObjects ?? []).filter((f) => /resnet-wgpu[^/\\]*\.node$/.test(f));
model.dispose();

console.log(JSON.stringify({ platform: `${process.platform}-${process.arch}`, node: process.version, params, loss: [first.loss, second.loss], loaded }));
if (!Number.isFinite(first.loss) || !Number.isFinite(second.loss) || first.loss <= 0) {
  throw new Error(`bad loss: ${first.loss}, ${second.loss}`);
}
if (params < 250_000 || params > 300_000) throw new Error(`ResNet-20 should have ~0.27M parameters, got ${params}`);
