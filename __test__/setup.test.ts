// The clone's npm set-up: a lock file `npm ci` can trust, and npm commands that print no warnings.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { ROOT } from './helpers.js';

interface LockEntry {
  version?: string;
  optionalDependencies?: Record<string, string>;
  dependencies?: Record<string, string>;
}

describe('npm set-up', () => {
  it('package-lock.json lists every optional dependency of every package (so npm install does not rewrite it)', () => {
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
    const missing: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === '') continue;
      for (const name of Object.keys(entry.optionalDependencies ?? {})) {
        // Node's resolution: nested under the package first, then each folder above it.
        const candidates = [`${path}/node_modules/${name}`, `node_modules/${name}`];
        if (!candidates.some((c) => c in lock.packages)) missing.push(`${name} (optional dependency of ${path})`);
      }
    }
    expect(missing).toEqual([]);
    expect(Object.keys(lock.packages).length).toBeGreaterThan(100);
  });

  it('npm commands in the clone print no config warnings (no unknown keys in .npmrc)', () => {
    const r = spawnSync('npm', ['pkg', 'get', 'name'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('"resnet-wgpu"');
    expect(r.stderr).not.toMatch(/Unknown (project|user|global|env) config/);
    expect(r.stderr).toBe('');
    if (existsSync(join(ROOT, '.npmrc'))) {
      expect(readFileSync(join(ROOT, '.npmrc'), 'utf8')).not.toMatch(/onnxruntime-node-install/);
    }
  });

  it("onnxruntime-node's download script stays off, through package.json's allowScripts", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> };
    expect(pkg.allowScripts?.['onnxruntime-node']).toBe(false);
  });
});
