// Runs once before the suite: the addon must be built (npm run build:native), and dist/ is rebuilt
// from ts/ so the CLI and child-process tests run the current sources.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export default function setup(): void {
  if (!existsSync(join(root, 'native', 'resnet-wgpu.linux-x64-gnu.node'))) {
    throw new Error('native addon missing: run `npm run build:native` first');
  }
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], {
    cwd: root,
    stdio: 'inherit',
  });
}
