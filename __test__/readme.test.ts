// The README's TypeScript example, run verbatim as a user would: its code block is written to a
// fresh project where `resnet-wgpu` resolves to this checkout, compiled by tsc in strict mode and
// run by Node to the end (one full epoch of Fashion-MNIST: a few minutes on 2 cores).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { ROOT, tempDir } from './helpers.js';

const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** The code blocks of one README section, in order. */
function codeBlocks(section: string, lang: string): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(`\n## ${section}\n`);
  if (start < 0) throw new Error(`README has no section "${section}"`);
  const next = readme.indexOf('\n## ', start + 1);
  const body = readme.slice(start, next < 0 ? undefined : next);
  return [...body.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1] ?? '');
}

/** A project folder whose `node_modules/resnet-wgpu` is this checkout, as after `npm install`. */
function userProject(compilerOptions: Record<string, unknown>): string {
  const dir = tempDir('resnet-wgpu-readme-');
  mkdirSync(join(dir, 'node_modules'), { recursive: true });
  symlinkSync(ROOT, join(dir, 'node_modules', 'resnet-wgpu'), 'dir');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2022',
        outDir: 'out',
        skipLibCheck: false,
        ...compilerOptions,
      },
      include: ['*.ts'],
    }),
  );
  return dir;
}

function tsc(dir: string): string {
  const r = spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8', timeout: 120_000 });
  return `${r.stdout}${r.stderr}`.trim();
}

describe('README', () => {
  it('"Using it from TypeScript" has one TypeScript example', () => {
    expect(codeBlocks('Using it from TypeScript', 'ts')).toHaveLength(1);
  });

  it('the example type-checks in strict mode and runs verbatim to the end', () => {
    const [example] = codeBlocks('Using it from TypeScript', 'ts');
    const dir = userProject({ types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')] });
    writeFileSync(join(dir, 'example.ts'), example ?? '');
    expect(tsc(dir)).toBe('');

    const r = spawnSync(process.execPath, [join(dir, 'out', 'example.js')], { cwd: dir, encoding: 'utf8', timeout: 1_500_000 });
    expect(r.signal).toBeNull();
    // Only the device line of `auto` may reach stderr: nothing was stopped, nothing went wrong.
    expect(r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith("resnet-wgpu: device 'auto'"))).toEqual([]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('469 steps'); // the whole epoch: 60,000 images in batches of 128
    const top1 = Number(/test: top-1 ([\d.]+)%/.exec(r.stdout)?.[1]);
    expect(top1).toBeGreaterThan(80);
    // Eight predictions, each with its true class.
    expect(r.stdout.split('\n').filter((l) => / \(truth: [\w/ -]+\)$/.test(l))).toHaveLength(8);
    expect(existsSync(join(dir, 'runs', 'resnet20.safetensors'))).toBe(true);
  }, 1_600_000);

  it('the "Multi-GPU and cluster runs" example type-checks in strict mode', () => {
    const [example] = codeBlocks('Multi-GPU and cluster runs', 'ts');
    const dir = userProject({ types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')] });
    writeFileSync(join(dir, 'train.ts'), example ?? '');
    expect(tsc(dir)).toBe('');
  });

  it("the package's typings need neither @types/node nor the DOM library", () => {
    const dir = userProject({ types: [], lib: ['es2022'] });
    writeFileSync(
      join(dir, 'uses-types.ts'),
      `import { Model, distributed, fit, resnet, type FitOptions, type EvaluateResult, type History, type World } from 'resnet-wgpu';
export const options: FitOptions = { epochs: 1, signal: { aborted: false } };
export type Used = [Model, EvaluateResult, History, World, typeof fit, typeof resnet.cifar, typeof distributed.init];
`,
    );
    expect(tsc(dir)).toBe('');
  });
});
