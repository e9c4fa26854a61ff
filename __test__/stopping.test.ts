// Runs cut short and outputs that cannot be written: said before the work, or said when it happens.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { Model, evaluateViews, fit } from '../ts/index.js';
import { prepareOutputDir, prepareOutputFile } from '../ts/output-path.js';
import { ROOT, learnableDataset, tempDir, tinySpec } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli.js');

function captureStderr(): { lines: () => string[] } {
  const seen: string[] = [];
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    seen.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  });
  return { lines: () => seen.join('').split('\n').filter((l) => l !== '') };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('an AbortSignal stops fit and evaluate the same way', () => {
  const data = learnableDataset(96, 3);

  it('fit resolves with aborted: true, keeps its updates, and says where it stopped on stderr', async () => {
    const model = Model.create(tinySpec({ inChannels: 1, numClasses: 4 }), { seed: 1, device: 'cpu' });
    const abort = new AbortController();
    const stderr = captureStderr();
    const history = await fit(model, data, {
      epochs: 2,
      batchSize: 16,
      callbacks: { onBatchEnd: (step) => (step === 3 ? abort.abort(new Error('enough')) : undefined) },
      signal: abort.signal,
    });
    vi.restoreAllMocks();
    expect(history.aborted).toBe(true);
    expect(history.steps).toBe(3);
    expect(model.step).toBe(3);
    expect(stderr.lines()).toEqual([
      'resnet-wgpu: fit stopped by its AbortSignal (Error: enough) after step 3 of 12 (epoch 1 of 2); the model keeps the updates made so far and history.aborted is true',
    ]);
    model.dispose();
  });

  it('a run that finishes says nothing on stderr', async () => {
    const model = Model.create(tinySpec({ inChannels: 1, numClasses: 4 }), { seed: 1, device: 'cpu' });
    const stderr = captureStderr();
    const history = await fit(model, data, { epochs: 1, batchSize: 32, signal: new AbortController().signal });
    const evaluated = await model.evaluate(data, { signal: new AbortController().signal });
    vi.restoreAllMocks();
    expect(history.aborted).toBe(false);
    expect(evaluated.aborted).toBe(false);
    expect(evaluated.count).toBe(96);
    expect(stderr.lines()).toEqual([]);
    model.dispose();
  });

  it('evaluate and evaluateViews resolve with aborted: true over the images done, and say so', async () => {
    const model = Model.create(tinySpec({ inChannels: 1, numClasses: 4 }), { seed: 1, device: 'cpu' });
    const stderr = captureStderr();
    const r = await model.evaluate(data, { batchSize: 32, signal: AbortSignal.abort(new Error('stop')) });
    const v = await evaluateViews(model, data, { batchSize: 32, signal: AbortSignal.abort(new Error('stop')) });
    vi.restoreAllMocks();
    expect(r).toEqual({ loss: 0, top1: 0, top5: 0, count: 0, aborted: true });
    expect(v.aborted).toBe(true);
    expect(v.count).toBe(0);
    expect(stderr.lines()).toEqual([
      'resnet-wgpu: evaluate stopped by its AbortSignal (Error: stop) after 0 of 96 images; the result covers those images only and has aborted: true',
      'resnet-wgpu: evaluateViews stopped by its AbortSignal (Error: stop) after 0 of 96 images; the result covers those images only and has aborted: true',
    ]);
    model.dispose();
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
    const child = spawn(process.execPath, [CLI, 'train', '--device', 'cpu', '--depth', '8', '--limit', '20000', '--batch-size', '32', '--out', out], {
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
