// Checkpoint hardening through the public API: per-tensor checksums, stale temp files of crashed
// saves, and the weights-only export PyTorch loads strictly (fixtures/weights_only.safetensors,
// written by scripts/make_fixtures.py weights: PyTorch loaded our export and stored its sha256).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { Model, resnet, type ResNetSpec } from '../ts/index.js';
import { ROOT, randomImages, randomLabels, rng, tempDir, tinySpec } from './helpers.js';
import { hashInitStateDict, readSafetensors, relErr, writeSafetensors } from './safetensors.js';

/** The golden tests' tolerance for logits (relative to |want| + rms(want)). */
const LOGITS_TOL = 1e-4;
const SHAPE = [8, 1, 12, 12] as const;
const images = randomImages(8 * 144, 31);
const labels = randomLabels(8, 10, 32);
const dir = tempDir('resnet-wgpu-checkpoint-');
const models: Model[] = [];
const track = (m: Model): Model => (models.push(m), m);
afterAll(() => models.forEach((m) => m.dispose()));

/** A tiny net after two SGD steps: weights, running statistics, counters and momentum all set. */
async function trained(seed: number): Promise<Model> {
  const m = track(Model.create(tinySpec(), { seed, device: 'cpu' }));
  m.setOptimizer({ lr: 0.05, momentum: 0.9 });
  for (let i = 0; i < 2; i++) await m.trainStep(images, labels, SHAPE);
  return m;
}

/** Each tensor's data bytes in the file: name -> [start, end). */
function dataRanges(bytes: Buffer): Map<string, [number, number]> {
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const out = new Map<string, [number, number]>();
  for (const [name, e] of Object.entries(header)) {
    if (name !== '__metadata__') out.set(name, [8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]]);
  }
  return out;
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('checksums', () => {
  it('a checkpoint with one flipped data byte fails to load, naming the file and the tensor', async () => {
    const model = await trained(5);
    const path = join(dir, 'flip.safetensors');
    await model.save(path);
    const valid = readFileSync(path);
    const meta = readSafetensors(path).meta;
    const sums = JSON.parse(meta['checksums.crc32'] ?? '{}') as Record<string, string>;
    const ranges = [...dataRanges(valid)].filter(([, [a, b]]) => b > a);
    expect(Object.keys(sums).sort()).toEqual(['__metadata__', ...dataRanges(valid).keys()].sort());
    expect(ranges.some(([n]) => n.startsWith('optimizer.momentum.'))).toBe(true);

    const r = rng(77);
    for (let round = 0; round < 6; round++) {
      const [name, [start, end]] = ranges[Math.floor(r() * ranges.length)] as [string, [number, number]];
      const bytes = Buffer.from(valid);
      const at = start + Math.floor(r() * (end - start));
      bytes[at] = (bytes[at] as number) ^ (1 << Math.floor(r() * 8));
      writeFileSync(path, bytes);
      await expect(Model.load(path, { device: 'cpu' })).rejects.toThrow(
        new RegExp(`${escape(path)}.*tensor \`${escape(name)}\`.*does not match its checksum`),
      );
      const other = track(Model.create(tinySpec(), { seed: 6, device: 'cpu' }));
      await expect(other.loadWeights(path)).rejects.toThrow(new RegExp(`\`${escape(name)}\``));
    }
    writeFileSync(path, valid);
    const back = track(await Model.load(path, { device: 'cpu' }));
    expect(await back.predict(images, SHAPE)).toEqual(await model.predict(images, SHAPE));
    expect(back.checkpointMetadata['checksums.crc32']).toBeUndefined();
  });

  it('files without checksums (older checkpoints, PyTorch) still load', async () => {
    const model = await trained(7);
    const path = join(dir, 'with.safetensors');
    await model.save(path, { note: 'kept' });
    const f = readSafetensors(path);
    const old = join(dir, 'without.safetensors');
    // Written as the fixtures and PyTorch write them: no checksums (and here no metadata at all).
    writeSafetensors(old, [...f.tensors].map(([name, e]) => [name, e.shape, e.data]));
    expect(readSafetensors(old).meta).toEqual({});
    const fresh = track(Model.create(tinySpec(), { seed: 8, device: 'cpu' }));
    expect(await fresh.predict(images, SHAPE)).not.toEqual(await model.predict(images, SHAPE));
    await fresh.loadWeights(old);
    expect(await fresh.predict(images, SHAPE)).toEqual(await model.predict(images, SHAPE));
  });
});

describe('stale temp files', () => {
  it('a save removes the temp files of dead processes for its path and keeps a live one', async () => {
    const model = await trained(9);
    const path = join(dir, 'tmp-test.safetensors');
    await model.save(path);
    // A process that has exited: its PID is free (and, this soon, not reused).
    const child = spawnSync(process.execPath, ['-e', '0']);
    const dead = child.pid as number;
    expect(existsSync(`/proc/${dead}`)).toBe(false);
    const hex = (): string => Array.from({ length: 16 }, () => '0123456789abcdef'[Math.floor(Math.random() * 16)]).join('');
    const stale = `tmp-test.safetensors.tmp-${dead}-${hex()}`;
    const live = `tmp-test.safetensors.tmp-${process.pid}-${hex()}`;
    const otherTarget = `other.safetensors.tmp-${dead}-${hex()}`;
    for (const f of [stale, live, otherTarget]) writeFileSync(join(dir, f), 'half a checkpoint');

    await model.save(path);
    const names = readdirSync(dir);
    expect(names).not.toContain(stale);
    expect(names).toContain(live);
    expect(names).toContain(otherTarget);
    expect((await Model.load(path, { device: 'cpu' })).step).toBe(2);
  });
});

describe('weights-only export', () => {
  it('holds the state dict alone and loads back; the CLI exports a checkpoint', async () => {
    const model = await trained(11);
    model.normalization = { mean: [0.5], std: [0.25] };
    const full = join(dir, 'full.safetensors');
    const only = join(dir, 'only.safetensors');
    await model.save(full);
    await model.exportWeights(only, { note: 'for torch' });
    const f = readSafetensors(full);
    const w = readSafetensors(only);
    const stateDict = [...f.tensors.keys()].filter((k) => !k.startsWith('optimizer.')).sort();
    expect(stateDict.length).toBeLessThan(f.tensors.size);
    expect([...w.tensors.keys()].sort()).toEqual(stateDict);
    for (const k of stateDict) expect(w.tensors.get(k), k).toEqual(f.tensors.get(k));
    expect(w.tensors.get('bn1.num_batches_tracked')).toEqual({ dtype: 'I64', shape: [], data: BigInt64Array.of(2n) });
    expect(Object.keys(w.meta).sort()).toEqual(['checksums.crc32', 'format', 'normalization', 'note', 'spec']);

    const back = track(await Model.load(only, { device: 'cpu' }));
    expect(back.step).toBe(0);
    expect(back.spec).toEqual(model.spec);
    expect(back.normalization).toEqual({ mean: [0.5], std: [0.25] });
    expect(await back.predict(images, SHAPE)).toEqual(await model.predict(images, SHAPE));

    // The CLI: checkpoint in, weights out (the normalisation travels; no note).
    const out = join(dir, 'cli', 'weights.safetensors');
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'export-weights', '--checkpoint', full, '--out', out], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`wrote ${out}`);
    const c = readSafetensors(out);
    expect([...c.tensors.keys()].sort()).toEqual(stateDict);
    expect(Object.keys(c.meta).sort()).toEqual(['checksums.crc32', 'format', 'normalization', 'spec']);
    const missing = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'export-weights', '--checkpoint', join(dir, 'nope.safetensors'), '--out', out], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/nope\.safetensors: file not found/);
  });

  const fixture = readSafetensors(join(ROOT, 'fixtures', 'weights_only.safetensors'));
  const torchvisionNames = JSON.parse(readSafetensors(join(ROOT, 'fixtures', 'imagenet_logits.safetensors')).meta['resnet18.names'] ?? '[]') as [
    string,
    number[],
    string,
  ][];

  for (const arch of ['resnet18', 'resnet20'] as const) {
    it(`${arch}: the bytes PyTorch loaded strictly, torchvision's keys only, PyTorch's logits`, async () => {
      const meta = (key: string): string => {
        const v = fixture.meta[`${arch}.${key}`];
        if (v === undefined) throw new Error(`fixture has no ${arch}.${key}`);
        return v;
      };
      const spec = JSON.parse(meta('spec')) as ResNetSpec;
      expect(spec).toMatchObject(
        arch === 'resnet18' ? resnet.imagenet({ depth: 18 }) : resnet.cifar({ depth: 20, shortcut: 'A', inChannels: 3, numClasses: 10 }),
      );
      const names = JSON.parse(meta('names')) as [string, number[], string][];
      if (arch === 'resnet18') expect(names).toEqual(torchvisionNames);
      const init = join(dir, `${arch}.init.safetensors`);
      writeSafetensors(init, hashInitStateDict(names));
      const model = track(Model.create(spec, { seed: Number(meta('seed')), device: 'cpu' }));
      await model.loadWeights(init);
      const path = join(dir, `${arch}.weights.safetensors`);
      await model.exportWeights(path);

      const bytes = readFileSync(path);
      expect(bytes.length).toBe(Number(meta('bytes')));
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(meta('sha256'));
      // Exactly the state dict's keys, shapes and dtypes: nothing strict=True would reject.
      const ours = readSafetensors(path);
      const rows = [...ours.tensors].map(([n, e]) => [n, e.shape, e.dtype]);
      expect(rows.sort()).toEqual([...names].sort());

      const input = fixture.tensors.get(`${arch}.input`);
      const want = fixture.tensors.get(`${arch}.logits`)?.data;
      if (input === undefined || !(want instanceof Float32Array)) throw new Error(`fixture lacks ${arch} input/logits`);
      const logits = await model.predict(input.data as Float32Array, input.shape as [number, number, number, number]);
      const err = relErr(logits, want);
      console.log(`${arch} weights-only export: logits max relative error ${err.toExponential(3)}`);
      expect(err).toBeLessThanOrEqual(LOGITS_TOL);
    });
  }
});
