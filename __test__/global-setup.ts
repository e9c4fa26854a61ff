// Runs once before the suite: the addon must be built (npm run build:native), and dist/ is rebuilt
// from ts/ so the CLI and child-process tests run the current sources. It also owns the scratch
// directory every test's tempDir() lands in, and removes it when the run ends: the experiment tests
// alone write ~0.5 GB of checkpoints, which used to pile up in /tmp run after run until a disk filled.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export const TEST_TMP_ENV = 'RESNET_WGPU_TEST_TMP';

export default function setup(): () => void {
  if (!existsSync(join(root, 'native', 'resnet-wgpu.linux-x64-gnu.node'))) {
    throw new Error('native addon missing: run `npm run build:native` first');
  }
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], {
    cwd: root,
    stdio: 'inherit',
  });
  // Set before vitest forks its workers, which inherit it (and so do the CLIs they spawn).
  const scratch = mkdtempSync(join(tmpdir(), 'resnet-wgpu-test-run-'));
  process.env[TEST_TMP_ENV] = scratch;
  return () => {
    if (process.env.RESNET_WGPU_KEEP_TEST_TMP === undefined) rmSync(scratch, { recursive: true, force: true });
  };
}
