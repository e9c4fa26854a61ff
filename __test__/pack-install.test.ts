// The package as users get it: `npm pack` the main package and the linux-x64-gnu platform package
// (produced the way the release workflow produces it: `napi create-npm-dirs` output in npm/, filled
// by `napi artifacts`), install both tarballs into an empty project with no Rust toolchain on PATH,
// and from there build ResNet-20 and take a training step, from ESM and from CommonJS.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  accessSync,
  constants,
  copyFileSync,
  cpSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { delimiter, dirname, join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PREBUILT_PLATFORMS, nativeLoadError } from '../ts/native-error.js';
import { ROOT, tempDir } from './helpers.js';

const PLATFORM = 'linux-x64-gnu';
const TRIPLE = 'x86_64-unknown-linux-gnu';
const BINARY = `resnet-wgpu.${PLATFORM}.node`;
const supported = process.platform === 'linux' && process.arch === 'x64';

interface PackedFile {
  path: string;
  size: number;
}
interface PackResult {
  filename: string;
  files: PackedFile[];
}

/** An executable named `tool` in a PATH directory, or undefined. */
function which(tool: string, path: string): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return join(dir, tool);
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The environment of the consumer project: PATH without the directories that hold `cargo` or
 * `rustc` (nothing may be compiled on install), with this `node` and `npm` linked in front, and
 * none of the `npm test` run's npm_* variables.
 */
function consumerEnv(binDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    const k = key.toLowerCase();
    if (k.startsWith('npm_') && !['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig'].includes(k)) continue;
    if (k === 'init_cwd' || k === 'node_options' || k.startsWith('vitest')) continue;
    env[key] = value;
  }
  const path = process.env.PATH ?? '';
  const npm = which('npm', path);
  if (npm === undefined) throw new Error(`npm is not on PATH (${path})`);
  mkdirSync(binDir, { recursive: true });
  symlinkSync(process.execPath, join(binDir, 'node'));
  symlinkSync(realpathSync(npm), join(binDir, 'npm'));
  const kept = path.split(delimiter).filter((dir) => dir !== '' && which('cargo', dir) === undefined && which('rustc', dir) === undefined);
  env.PATH = [binDir, ...kept].join(delimiter);
  env.CARGO = '';
  env.RUSTC = '';
  return env;
}

/** Runs a command; a non-zero exit throws with the whole output, so a failure says what npm said. */
function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
  if (r.error !== undefined || r.status !== 0) {
    throw new Error(
      [
        `\`${cmd} ${args.join(' ')}\` (in ${cwd}) failed: ${r.error?.message ?? `exit ${String(r.status)}, signal ${String(r.signal)}`}`,
        `--- stdout ---\n${r.stdout ?? ''}`,
        `--- stderr ---\n${r.stderr ?? ''}`,
      ].join('\n'),
    );
  }
  return r;
}

/** `npm pack --json` output (the JSON array is on stdout; npm's warnings go to stderr). */
function packJson(stdout: string): PackResult {
  const parsed: unknown = JSON.parse(stdout.slice(stdout.indexOf('[')));
  const first = Array.isArray(parsed) ? (parsed[0] as PackResult | undefined) : undefined;
  if (first === undefined) throw new Error(`unexpected npm pack output:\n${stdout}`);
  return first;
}

// Each script builds ResNet-20 from the installed package, takes one training step on the CPU and
// prints the loss plus which resnet-wgpu .node file the process loaded.
const BODY = `
const model = Model.create(resnet.cifar({ depth: 20, inChannels: 3, numClasses: 10 }), { seed: 0, device: 'cpu' });
const n = 4;
const images = new Float32Array(n * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.37));
const labels = Int32Array.from({ length: n }, (_, i) => i % 10);
const step = await model.trainStep(images, labels, [n, 3, 32, 32]);
const loaded = process.report.getReport().sharedObjects.filter((f) => /resnet-wgpu.*\\.node$/.test(f));
console.log(JSON.stringify({ loss: step.loss, params: model.summary().totalParams, loaded }));
model.dispose();
`;
const ESM = `import { Model, resnet } from 'resnet-wgpu';\n${BODY}`;
const CJS = `const { Model, resnet } = require('resnet-wgpu');\n(async () => {${BODY}})().catch((e) => { console.error(e); process.exit(1); });\n`;

describe.runIf(supported)('npm pack + install (no Rust toolchain)', () => {
  let tmp = '';

  beforeAll(() => {
    tmp = tempDir('resnet-wgpu-pack-');
  });
  afterAll(() => {
    // RESNET_WGPU_KEEP_PACK=1 keeps the tarballs and the consumer project for a look.
    if (tmp !== '' && process.env.RESNET_WGPU_KEEP_PACK === undefined) rmSync(tmp, { recursive: true, force: true });
    else if (tmp !== '') console.log(`pack-install: kept ${tmp}`);
  });

  it('the main package ships the JS, the loader and the types, and no Rust, target, fixtures or binaries', () => {
    const { files } = packJson(run('npm', ['pack', '--dry-run', '--json'], ROOT).stdout);
    const paths = files.map((f) => f.path);
    for (const needed of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'native/index.cjs', 'native/index.d.ts']) {
      expect(paths, `npm pack should include ${needed}`).toContain(needed);
    }
    const forbidden = paths.filter(
      (p) =>
        /\.rs$|Cargo\.(toml|lock)$|\.node$|\.safetensors$/.test(p) ||
        /^(crates|target|npm|__test__|fixtures|scripts|artifacts|runs|docs)\//.test(p) ||
        /(^|\/)fixtures?\//.test(p),
    );
    expect(forbidden, 'files that must not be published').toEqual([]);

    // The published typings are strict: no `any` in a declaration (comments aside).
    const withAny = paths
      .filter((p) => p.endsWith('.d.ts'))
      .filter((p) => /\bany\b/.test(readFileSync(join(ROOT, p), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')));
    expect(withAny, 'declaration files with `any`').toEqual([]);
  });

  it('installs from the tarballs and trains a step from ESM and from CommonJS', () => {
    const rootPkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      version: string;
      napi: { targets: string[] };
      optionalDependencies?: Record<string, string>;
    };
    expect(rootPkg.napi.targets).toContain(TRIPLE);

    // 1. Platform package: the committed npm/<platform> dir, filled by `napi artifacts` from the
    //    built binary, as the publish job does (restricted to this one target).
    const stage = join(tmp, 'stage');
    mkdirSync(join(stage, 'artifacts', `bindings-${TRIPLE}`), { recursive: true });
    cpSync(join(ROOT, 'npm', PLATFORM), join(stage, 'npm', PLATFORM), { recursive: true });
    copyFileSync(join(ROOT, 'native', BINARY), join(stage, 'artifacts', `bindings-${TRIPLE}`, BINARY));
    writeFileSync(join(stage, 'package.json'), JSON.stringify({ ...rootPkg, napi: { ...rootPkg.napi, targets: [TRIPLE] } }, null, 2));
    run(process.execPath, [join(ROOT, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js'), 'artifacts', '--cwd', stage, '--output-dir', 'artifacts', '--npm-dir', 'npm'], stage);
    const platformPack = packJson(run('npm', ['pack', '--json', '--pack-destination', tmp], join(stage, 'npm', PLATFORM)).stdout);
    expect(platformPack.files.map((f) => f.path).sort()).toEqual(['README.md', BINARY, 'package.json'].sort());

    // 2. Main package: what `npm pack` takes from the repository, with the optionalDependencies that
    //    `napi prepublish` writes at publish time (here only the platform we install).
    const main = join(tmp, 'main');
    const { files } = packJson(run('npm', ['pack', '--dry-run', '--json'], ROOT).stdout);
    for (const f of files) {
      mkdirSync(dirname(join(main, f.path)), { recursive: true });
      copyFileSync(join(ROOT, f.path), join(main, f.path));
    }
    const mainPkg = { ...rootPkg, optionalDependencies: { ...rootPkg.optionalDependencies, [`resnet-wgpu-${PLATFORM}`]: rootPkg.version } };
    writeFileSync(join(main, 'package.json'), JSON.stringify(mainPkg, null, 2));
    const mainPack = packJson(run('npm', ['pack', '--json', '--pack-destination', tmp], main).stdout);

    // 3. An empty project; dependencies (commander, cli-progress) come from the warm npm cache.
    const app = join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }, null, 2));
    const env = consumerEnv(join(tmp, 'bin'));
    expect(spawnSync('cargo', ['--version'], { env }).error, 'cargo must not be on the consumer PATH').toBeDefined();
    run(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', join(tmp, mainPack.filename), join(tmp, platformPack.filename)],
      app,
      env,
    );
    const installedBinary = join(app, 'node_modules', `resnet-wgpu-${PLATFORM}`, BINARY);
    accessSync(installedBinary);

    writeFileSync(join(app, 'train.mjs'), ESM);
    writeFileSync(join(app, 'train.cjs'), CJS);
    for (const script of ['train.mjs', 'train.cjs']) {
      const out = run(process.execPath, [script], app, env).stdout.trim().split('\n').pop() ?? '';
      let result: { loss: number; params: number; loaded: string[] };
      try {
        result = JSON.parse(out) as typeof result;
      } catch {
        throw new Error(`${script} printed no result line:\n${out}`);
      }
      expect(Number.isFinite(result.loss) && result.loss > 0, `${script}: loss ${String(result.loss)}`).toBe(true);
      expect(result.params).toBeGreaterThan(250_000); // ResNet-20: 0.27M
      expect(result.loaded, `${script} loaded the binary from the platform package`).toEqual([installedBinary]);
    }

    // The command line works from the install too.
    const summary = run(join(app, 'node_modules', '.bin', 'resnet-wgpu'), ['summary', '--depth', '20'], app, env).stdout;
    expect(summary).toMatch(/Total params: 2[67]\d,\d{3}/);

    // Without the platform package: a clear error naming the platform and how to build from source.
    renameSync(join(app, 'node_modules', `resnet-wgpu-${PLATFORM}`), join(app, 'hidden-platform-package'));
    const missing = spawnSync(process.execPath, ['train.mjs'], { cwd: app, env, encoding: 'utf8', timeout: 60_000 });
    expect(missing.status, `train.mjs without the binary:\n${missing.stdout}\n${missing.stderr}`).not.toBe(0);
    expect(missing.stderr).toContain(`could not load the native addon for ${PLATFORM}`);
    expect(missing.stderr).toContain(`resnet-wgpu-${PLATFORM}`);
    expect(missing.stderr).toContain('npm run build');
  }, 180_000);

  it('the list of prebuilt platforms matches npm/ and napi.targets', () => {
    const dirs = readdirSync(join(ROOT, 'npm')).sort();
    expect([...PREBUILT_PLATFORMS].sort()).toEqual(dirs);
    const { napi } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { napi: { targets: string[] } };
    expect(napi.targets).toHaveLength(dirs.length);
  });
});

describe('the error when no native binary loads', () => {
  it('names the platform, the prebuilt ones and the build from source', () => {
    const cause = new Error('Cannot find native binding.');
    const e = nativeLoadError(cause, 'freebsd-x64');
    expect(e.message).toContain('could not load the native addon for freebsd-x64');
    expect(e.message).toContain('No prebuilt binary for freebsd-x64');
    expect(e.message).toContain('linux-x64-gnu, linux-x64-musl');
    expect(e.message).toContain('npm install && npm run build');
    expect(e.message).toContain('Cannot find native binding.');
    expect(e.cause).toBe(cause);
    expect(nativeLoadError(cause, 'linux-arm64-musl').message).toContain('optional dependency `resnet-wgpu-linux-arm64-musl`');
  });
});
