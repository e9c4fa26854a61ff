/**
 * The paper's degradation experiment from TypeScript (He et al. 2015, Figures 1 and 6), then its
 * Figure 7 from the same runs: plain and residual nets of two depths on Fashion-MNIST with the
 * shortened CIFAR recipe, each run checkpointed after every epoch (rerun to resume).
 *
 * Run (after `npm run build`): `npx tsx examples/paper-experiments.ts [--limit N]`. The defaults
 * (ResNet/plain 20 and 56, 12 epochs) take minutes on a GPU and hours on a CPU; `--limit 512`
 * and a two-epoch recipe are what the tests run. In your own project, import from 'resnet-wgpu'.
 */

import { pathToFileURL } from 'node:url';

import { experiments, recipes, type DeviceName } from '../ts/index.js';

export interface PaperExampleOptions {
  out?: string;
  /** Use only the first N images of each split. */
  limit?: number;
  depths?: number[];
  epochs?: number;
  device?: DeviceName;
  log?: (line: string) => void;
}

export async function main(options: PaperExampleOptions = {}): Promise<{ plainGap: number; residualGap: number; files: string[] }> {
  const log = options.log ?? console.log;
  const common = {
    out: options.out ?? 'runs/paper-experiments',
    // The paper's CIFAR recipe, shortened (said as such in its description): 12 epochs, /10 at 50% and 75%.
    recipe: recipes.cifarPaperShort(options.epochs === undefined ? {} : { epochs: options.epochs }),
    depths: options.depths ?? [20, 56],
    seed: 0,
    ...(options.device ? { device: options.device } : {}),
    ...(options.limit !== undefined ? { limitTrain: options.limit, limitTest: options.limit } : {}),
    progress: {
      epoch: (name: string, p: experiments.CurvePoint) =>
        log(`${name} epoch ${p.epoch}: training error ${p.trainError.toFixed(2)}%, test error ${p.testError.toFixed(2)}%`),
      resumed: (name: string, info: { epoch: number }) => log(`${name}: resuming after epoch ${info.epoch}`),
    },
  };
  log(common.recipe.description);

  // Figures 1 and 6: training (dashed) and test (bold) error of plain and residual nets.
  const degradation = await experiments.degradation(common);
  log(degradation.report);

  // Figure 7 from the same (finished) runs: nothing is retrained.
  const responses = await experiments.responses({ ...common, images: Math.min(1000, options.limit ?? 1000) });
  log(responses.report);

  return {
    plainGap: degradation.plainGap,
    residualGap: degradation.residualGap,
    files: [...Object.values(degradation.files), ...Object.values(responses.files)],
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const i = process.argv.indexOf('--limit');
  const limit = i >= 0 ? Number(process.argv[i + 1]) : undefined;
  await main(limit === undefined ? {} : { limit });
}
