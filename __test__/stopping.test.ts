// Runs cut short and outputs that cannot be written: said before the work, or said when it happens.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { prepareOutputDir, prepareOutputFile } from '../ts/output-path.js';
import { ROOT, tempDir } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli.js');

/** Runs an ES module in a fresh Node (the package's dist/ as `rw`) and returns what it printed. */
function runScript(body: string): { status: number | null; stdout: string; stderr: string } {
  const script = join(tempDir(), 'script.mjs');
  writeFileSync(
    script,
    `import * as rw from ${JSON.stringify(join(ROOT, 'dist', 'index.js'))};
const n = 96, size = 12;
const images = new Uint8Array(n * size * size).map((_, i) => (i * 37 + (i >> 4)) % 251);
const labels = new Uint8Array(n).map((_, i) => (i * 7) % 4);
const data = rw.Dataset.fromArrays({ images, labels, channels: 1, height: size, width: size, numClasses: 4 });
const model = rw.Model.create(rw.resnet.cifar({ depth: 8, inChannels: 1, numClasses: 4 }), { seed: 1, device: 'cpu' });
${body}
model.dispose();
`,
  );
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('an AbortSignal stops fit and evaluate the same way', () => {
  it('fit resolves with aborted: true, keeps its updates, and says where it stopped on stderr', () => {
    const r = runScript(`
const abort = new AbortController();
const history = await rw.fit(model, data, {
  epochs: 2,
  batchSize: 16,
  callbacks: { onBatchEnd: (step) => (step === 3 ? abort.abort(new Error('enough')) : undefined) },
  signal: abort.signal,
});
console.log(JSON.stringify({ aborted: history.aborted, steps: history.steps, modelStep: model.step }));
`);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ aborted: true, steps: 3, modelStep: 3 });
    expect(r.stderr).toBe(
      'resnet-wgpu: fit stopped by its AbortSignal (Error: enough) after step 3 of 12 (epoch 1 of 2); the model keeps the updates made so far and history.aborted is true\n',
    );
  });

  it('a run that finishes says nothing on stderr', () => {
    const r = runScript(`
const history = await rw.fit(model, data, { epochs: 1, batchSize: 32, signal: new AbortController().signal });
const evaluated = await model.evaluate(data, { signal: new AbortController().signal });
console.log(JSON.stringify({ aborted: history.aborted, evalAborted: evaluated.aborted, count: evaluated.count }));
`);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ aborted: false, evalAborted: false, count: 96 });
    expect(r.stderr).toBe('');
  });

  it('evaluate and evaluateViews resolve with aborted: true over the images done, and say so', () => {
    const r = runScript(`
const stop = () => AbortSignal.abort(new Error('stop'));
const e = await model.evaluate(data, { batchSize: 32, signal: stop() });
const v = await rw.evaluateViews(model, data, { batchSize: 32, signal: stop() });
console.log(JSON.stringify({ e, v: { count: v.count, aborted: v.aborted } }));
`);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { e: unknown; v: unknown };
    expect(out.e).toEqual({ loss: 0, top1: 0, top5: 0, count: 0, aborted: true });
    expect(out.v).toEqual({ count: 0, aborted: true });
    expect(r.stderr.split('\n').filter((l) => l !== '')).toEqual([
      'resnet-wgpu: evaluate stopped by its AbortSignal (Error: stop) after 0 of 96 images; the result covers those images only and has aborted: true',
      'resnet-wgpu: evaluateViews stopped by its AbortSignal (Error: stop) after 0 of 96 images; the result covers those images only and has aborted: true',
    ]);
  });
});

describe('output locations are checked before any work', () => {
  it('prepareOutputFile: creates the folder, refuses a folder, a file in the way and a read-only folder', () => {
    const dir = tempDir();
    const file = prepareOutputFile(join(dir, 'a', 'b', 'model.safetensors'), '--out');
    expect(file).toBe(join(dir, 'a', 'b', 'model.safetensors'));
    expect(existsSync(join(dir, 'a', 'b'))).toBe(true);
    expect(readdirSync(join(dir, 'a', 'b'))).toEqual([]); // the write probe is gone, nothing written
    expect(() => prepareOutputFile(join(dir, 'a'), '--out')).toThrow(`--out ${join(dir, 'a')} is a folder; give a file path such as`);
    writeFileSync(join(dir, 'plain-file'), 'x');
    expect(() => prepareOutputFile(join(dir, 'plain-file', 'model.safetensors'), '--out')).toThrow(
      `--out ${join(dir, 'plain-file', 'model.safetensors')} cannot be used: a file is in the way of a folder on that path`,
    );
    expect(() => prepareOutputDir(join(dir, 'plain-file'), 'the experiment folder (out)')).toThrow(
      `the experiment folder (out) ${join(dir, 'plain-file')} cannot be used: it is a file, not a folder`,
    );
  });

  it('a folder that cannot be written is refused (a read-only mount, or no permission)', () => {
    // /proc is read-only for everyone, root included (permission bits alone do not stop root).
    expect(() => prepareOutputFile('/proc/resnet-wgpu-test/model.safetensors', '--out')).toThrow(/^--out \/proc\/resnet-wgpu-test\/model\.safetensors cannot/);
    if (process.getuid?.() !== 0) {
      const dir = tempDir();
      mkdirSync(join(dir, 'locked'));
      chmodSync(join(dir, 'locked'), 0o500);
      expect(() => prepareOutputFile(join(dir, 'locked', 'm.safetensors'), '--out')).toThrow(/is not writable: permission denied/);
    }
  });

  it('train --out refuses a bad path before loading data or training (no raw EEXIST at the end)', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'taken'), 'x');
    const started = performance.now();
    const r = spawnSync(process.execPath, [CLI, 'train', '--device', 'cpu', '--out', join(dir, 'taken', 'x.safetensors')], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe(`error: --out ${join(dir, 'taken', 'x.safetensors')} cannot be used: a file is in the way of a folder on that path`);
    expect(r.stdout).toBe(''); // no model was built, no step taken
    expect(performance.now() - started).toBeLessThan(30_000);
    const folder = spawnSync(process.execPath, [CLI, 'train', '--device', 'cpu', '--out', dir], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(folder.status).toBe(1);
    expect(folder.stderr).toContain(`error: --out ${dir} is a folder`);
  });

  it('experiment --out refuses a file before training', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'taken'), 'x');
    const r = spawnSync(
      process.execPath,
      [CLI, 'experiment', 'degradation', '--device', 'cpu', '--limit-train', '64', '--limit-test', '64', '--epochs', '1', '--out', join(dir, 'taken')],
      { cwd: ROOT, encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`the experiment folder (out) ${join(dir, 'taken')} cannot be used: it is a file, not a folder`);
    expect(existsSync(join(dir, 'taken', 'resnet-20-optA'))).toBe(false);
  });
});

describe('the CLI stopped by a signal', () => {
  /** Starts `train`, sends `signal` once the first steps are done, and collects what it did. */
  function trainAndStop(signal: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string; out: string }> {
    const out = join(tempDir(), 'stopped.safetensors');
    const child = spawn(process.execPath, [CLI, 'train', '--device', 'cpu', '--depth', '8', '--limit', '4000', '--batch-size', '32', '--out', out], {
      cwd: ROOT,
    });
    let stdout = '';
    let stderr = '';
    let sent = false;
    const onOutput = (): void => {
      // The progress line shows a step count once training has begun.
      if (!sent && /step [1-9]\d*\//.test(stdout + stderr)) {
        sent = true;
        child.kill(signal);
      }
    };
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      onOutput();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      onOutput();
    });
    const timer = setTimeout(() => {
      if (!sent) {
        sent = true;
        child.kill(signal);
      }
    }, 20_000);
    return new Promise((resolvePromise) => {
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolvePromise({ code, stdout, stderr, out });
      });
    });
  }

  it('Ctrl-C (SIGINT): evaluates, saves the partly trained model, says so, exits 0', async () => {
    const r = await trainAndStop('SIGINT');
    expect(r.stderr).toContain('SIGINT: evaluating and saving the partly trained model');
    expect(r.stderr).toContain('resnet-wgpu: fit stopped by its AbortSignal (Error: SIGINT received)');
    expect(r.stdout).toMatch(/aborted=true/);
    expect(existsSync(r.out)).toBe(true);
    expect(r.code).toBe(0);
  });

  it('SIGTERM (a scheduler, kill): saves the model but exits non-zero, since the user did not ask', async () => {
    const r = await trainAndStop('SIGTERM');
    expect(r.stderr).toContain('SIGTERM: evaluating and saving the partly trained model');
    expect(existsSync(r.out)).toBe(true);
    expect(r.code).toBe(1);
  });
});
