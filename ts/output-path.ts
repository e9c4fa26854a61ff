/**
 * Output locations checked before any work: a run that trains for an hour must not find at the end
 * that it cannot write its checkpoint or figures.
 *
 * @module
 */

import { closeSync, existsSync, mkdirSync, openSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

function reason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  switch (err.code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOTDIR':
    case 'EEXIST':
      return 'a file is in the way of a folder on that path';
    case 'ENOSPC':
      return 'no space left on the device';
    case 'ENOENT':
      return 'the file system refuses to create it';
    default:
      return err.message ?? String(e);
  }
}

/**
 * `mkdir -p`, one level at a time from the deepest existing folder. Node's own recursive mkdir
 * loops forever where the kernel answers ENOENT for a parent that exists (under /proc, say).
 */
function makeFolders(dir: string): void {
  const missing: string[] = [];
  let at = dir;
  while (!existsSync(at)) {
    missing.push(at);
    const up = dirname(at);
    if (up === at) break;
    at = up;
  }
  for (const folder of missing.reverse()) mkdirSync(folder);
}

/** Why `dir` cannot hold new files (after creating it if missing), or undefined when it can. */
function folderProblem(dir: string): string | undefined {
  try {
    if (!statSync(dir).isDirectory()) return 'it is a file, not a folder';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return reason(e);
    try {
      makeFolders(dir);
    } catch (made) {
      return `it cannot be created: ${reason(made)}`;
    }
  }
  // Permission bits do not tell (root, read-only mounts, ACLs): create and remove a file.
  const probe = join(dir, `.resnet-wgpu-write-test-${process.pid}`);
  try {
    closeSync(openSync(probe, 'wx'));
    rmSync(probe, { force: true });
  } catch (e) {
    return `it is not writable: ${reason(e)}`;
  }
  return undefined;
}

/** Creates folder `dir` if needed and checks it is writable; returns its absolute path. */
export function prepareOutputDir(dir: string, what: string): string {
  const abs = resolve(dir);
  const problem = folderProblem(abs);
  if (problem !== undefined) throw new Error(`${what} ${abs} cannot be used: ${problem}`);
  return abs;
}

/**
 * Checks that a file can be written at `path` (not a folder; its folder exists or can be made, and
 * is writable), creating the folder if needed, and returns the absolute path. Nothing is written
 * at `path` itself.
 */
export function prepareOutputFile(path: string, what: string): string {
  const abs = resolve(path);
  try {
    if (statSync(abs).isDirectory()) throw new Error(`${what} ${abs} is a folder; give a file path such as ${join(abs, 'model.safetensors')}`);
  } catch (e) {
    if (e instanceof Error && e.message.startsWith(what)) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${what} ${abs} cannot be used: ${reason(e)}`);
  }
  const problem = folderProblem(dirname(abs));
  if (problem !== undefined) throw new Error(`${what} ${abs} cannot be written: its folder ${dirname(abs)}: ${problem}`);
  return abs;
}
