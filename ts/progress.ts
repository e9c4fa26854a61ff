/**
 * Training progress on the terminal: a bar on a TTY, a line every ~5% otherwise (logs, CI, pipes).
 *
 * @module
 */

import cliProgress from 'cli-progress';

import type { BatchLogs } from './trainer.js';

export function fmtSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--';
  const m = Math.floor(s / 60);
  const sec = Math.round(s % 60);
  return m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** Progress display of one run of `total` steps. */
export class Progress {
  readonly #tty = Boolean(process.stdout.isTTY);
  readonly #label: string;
  readonly #bar: cliProgress.SingleBar;
  #total = 0;
  #step = 0;
  #payload = { imgPerSec: '-', loss: '-', acc: '-', lr: '-' };
  #nextReport = 0;
  #started = performance.now();
  #first = 0;

  /** `label` starts each line (e.g. the run's name). */
  constructor(label = 'train') {
    this.#label = label;
    this.#bar = new cliProgress.SingleBar(
      {
        format: `${label} {bar} {value}/{total} | {imgPerSec} img/s | loss {loss} | acc {acc} | lr {lr} | ETA {eta_formatted}`,
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  /** Starts at step `done` of `total` (a resumed run starts past 0). */
  start(total: number, done = 0): void {
    this.#total = total;
    this.#step = done;
    this.#first = done;
    this.#started = performance.now();
    this.#nextReport = done;
    if (this.#tty) this.#bar.start(total, done, this.#payload);
    else console.log(`${this.#label}: ${total} steps${done > 0 ? `, resuming at ${done}` : ''}`);
  }

  /** Continues after {@link Progress.stop} (e.g. once an epoch's line is printed). */
  resume(): void {
    if (this.#tty) this.#bar.start(this.#total, this.#step, this.#payload);
  }

  update(step: number, logs: BatchLogs, runLoss: number, runAcc: number): void {
    const payload = {
      imgPerSec: logs.imgPerSec.toFixed(0),
      loss: runLoss.toFixed(4),
      acc: runAcc.toFixed(4),
      lr: logs.lr.toPrecision(3),
    };
    this.#step = step;
    this.#payload = payload;
    if (this.#tty) {
      this.#bar.update(step, payload);
      return;
    }
    if (step >= this.#nextReport || step === this.#total) {
      const elapsed = (performance.now() - this.#started) / 1000;
      const eta = (elapsed / Math.max(1, step - this.#first)) * (this.#total - step);
      const pct = Math.round((100 * step) / this.#total);
      console.log(
        `${this.#label} step ${step}/${this.#total} (${pct}%) | ${payload.imgPerSec} img/s | loss ${payload.loss} | acc ${payload.acc} | lr ${payload.lr} | ETA ${fmtSeconds(eta)}`,
      );
      this.#nextReport = step + Math.max(1, Math.floor(this.#total / 20));
    }
  }

  stop(): void {
    if (this.#tty) this.#bar.stop();
  }
}

