// Test-side safetensors reading and writing, the fixtures' hash_init weights
// (scripts/make_fixtures.py) made bit for bit, and the golden tests' error measure.
import { readFileSync, writeFileSync } from 'node:fs';
import { expect } from 'vitest';

export interface Entry {
  dtype: string;
  shape: number[];
  data: Float32Array | BigInt64Array;
}

export interface Fixture {
  tensors: Map<string, Entry>;
  meta: Record<string, string>;
}

/** A safetensors reader for F32 and I64 (all the fixtures hold). */
export function readSafetensors(path: string): Fixture {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  const meta = (header['__metadata__'] ?? {}) as Record<string, string>;
  delete header['__metadata__'];
  const tensors = new Map<string, Entry>();
  for (const [name, raw] of Object.entries(header)) {
    const e = raw as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const bytes = buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    const copy = new Uint8Array(bytes).buffer; // aligned
    const data = e.dtype === 'F32' ? new Float32Array(copy) : e.dtype === 'I64' ? new BigInt64Array(copy) : null;
    if (data === null) throw new Error(`${name}: dtype ${e.dtype}`);
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { tensors, meta };
}

/** A safetensors writer for F32 and I64 tensors. */
export function writeSafetensors(path: string, tensors: [string, number[], Float32Array | BigInt64Array][]): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape, data] of tensors) {
    header[name] = { dtype: data instanceof Float32Array ? 'F32' : 'I64', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const parts = [len, Buffer.from(json, 'utf8'), ...tensors.map(([, , d]) => Buffer.from(d.buffer, d.byteOffset, d.byteLength))];
  writeFileSync(path, Buffer.concat(parts));
}

/** max |got - want| / (|want| + rms(want)). */
export function relErr(got: Float32Array, want: Float32Array): number {
  expect(got.length).toBe(want.length);
  let ss = 0;
  for (const w of want) ss += w * w;
  const rms = Math.sqrt(ss / Math.max(1, want.length));
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i] as number;
    const w = want[i] as number;
    const e = Number.isNaN(g) ? Infinity : Math.abs(g - w) / Math.max(Math.abs(w) + rms, 1e-30);
    worst = Math.max(worst, e);
  }
  return worst;
}

// --- hash_init (scripts/make_fixtures.py): the torchvision weights, made here bit for bit --------

function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(s, 'utf8')) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

function lowbias32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

export function hashInit(name: string, shape: number[]): Float32Array {
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  let [scale, offset] = [0, 0];
  if (name.endsWith('running_var')) [scale, offset] = [0.25, 1];
  else if (name.endsWith('running_mean') || name.endsWith('.bias')) [scale, offset] = [0.125, 0];
  else if (shape.length === 1) [scale, offset] = [0.25, 1];
  else if (name.startsWith('fc.')) scale = Math.fround(Math.sqrt(1 / fanIn));
  else scale = Math.fround(Math.sqrt(6 / fanIn));
  const seed = fnv1a32(name);
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const h = lowbias32((Math.imul(i, 0x9e3779b1) + seed) >>> 0) >>> 8;
    const u = h / 8388608 - 1; // exact
    out[i] = Math.fround(Math.fround(u * scale) + offset);
  }
  return out;
}

/** A state dict of hash_init weights (num_batches_tracked = 7) from `[name, shape, dtype]` rows. */
export function hashInitStateDict(names: [string, number[], string][]): [string, number[], Float32Array | BigInt64Array][] {
  return names.map(([n, s, d]) => [n, s, d === 'I64' ? BigInt64Array.of(7n) : hashInit(n, s)]);
}
