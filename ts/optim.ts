/**
 * Optimizer and learning-rate schedule configurations: typed data, validated and applied in Rust.
 *
 * @module
 */

import { boolean, finite, integer, invalid, knownKeys, oneOf, optionsObject } from './validate.js';

/** A schedule in optimizer steps, as Rust runs it. */
export type Schedule =
  | { kind: 'constant' }
  /** Multiply the rate by `gamma` at each milestone step (the paper: /10 twice). */
  | { kind: 'multistep'; milestones: number[]; gamma: number }
  /** Cosine annealing from the base rate to `minLr` over `totalSteps`. */
  | { kind: 'cosine'; totalSteps: number; minLr: number };

/**
 * A schedule that may be given relative to the length of a run: `fractions` of the total steps
 * for multistep, or a cosine without `totalSteps` (the whole run). {@link resolveSchedule} (and
 * `fit`, which knows the run's length) turns it into a {@link Schedule}.
 */
export type ScheduleOption =
  | Schedule
  | { kind: 'multistep'; fractions: number[]; gamma: number }
  | { kind: 'cosine'; minLr: number; totalSteps?: undefined };

/** The SGD configuration Rust receives. */
export interface SgdConfig {
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
  schedule: Schedule;
  /** Steps of linear warm-up to the scheduled rate (0: none). */
  warmupSteps: number;
}

/** Options of {@link sgd}; every field has the paper's default. */
export interface SgdOptions {
  /** Default 0.1. */
  lr?: number;
  /** Default 0.9. */
  momentum?: number;
  /** Default 1e-4. */
  weightDecay?: number;
  /** Default false. */
  nesterov?: boolean;
  /** Default constant. */
  schedule?: ScheduleOption;
  /** Default 0. */
  warmupSteps?: number;
}

const SGD_KEYS = ['lr', 'momentum', 'weightDecay', 'nesterov', 'schedule', 'warmupSteps'] as const;

/**
 * SGD with the paper's defaults (lr 0.1, momentum 0.9, weight decay 1e-4), as typed options.
 *
 * @throws Error naming the option, the value and what is allowed: `lr` and `weightDecay` finite
 * and >= 0, `momentum` in [0, 1), `nesterov` a boolean (needing momentum > 0), `warmupSteps` an
 * integer >= 0, a schedule of a known kind with valid fields, no unknown option.
 */
export function sgd(options: SgdOptions = {}): Required<SgdOptions> {
  const what = 'optimizer';
  const o = optionsObject(what, options);
  knownKeys(what, o, SGD_KEYS);
  const momentum = finite(what, 'momentum', o.momentum ?? 0.9, 0);
  if (momentum >= 1) throw invalid(what, 'momentum', 'in [0, 1)', momentum);
  const nesterov = boolean(what, 'nesterov', o.nesterov ?? false);
  if (nesterov && momentum === 0) throw new Error(`${what}: nesterov: true needs momentum > 0, got momentum 0`);
  return {
    lr: finite(what, 'lr (the learning rate)', o.lr ?? 0.1, 0),
    momentum,
    weightDecay: finite(what, 'weightDecay', o.weightDecay ?? 1e-4, 0),
    nesterov,
    schedule: checkSchedule(o.schedule ?? schedules.constant()),
    warmupSteps: integer(what, 'warmupSteps', o.warmupSteps ?? 0, 0),
  };
}

/** A schedule's kind and fields, checked (see {@link ScheduleOption}). */
function checkSchedule(schedule: ScheduleOption): ScheduleOption {
  const what = 'optimizer';
  if (typeof schedule !== 'object' || schedule === null) {
    throw invalid(what, 'schedule', "a schedule such as schedules.paper() or { kind: 'constant' }", schedule);
  }
  const kind = oneOf(what, 'schedule.kind', (schedule as { kind?: unknown }).kind, ['constant', 'multistep', 'cosine'] as const);
  const s = schedule as Record<string, unknown>;
  if (kind === 'multistep') {
    finite(what, 'schedule.gamma', s['gamma'], 0);
    if (s['gamma'] === 0) throw invalid(what, 'schedule.gamma', 'a finite number > 0', 0);
    if ('fractions' in s) {
      const fractions = s['fractions'];
      if (!Array.isArray(fractions)) throw invalid(what, 'schedule.fractions', 'an array of numbers in (0, 1)', fractions);
      fractions.forEach((f: unknown, i) => {
        if (typeof f !== 'number' || !(f > 0 && f < 1)) throw invalid(what, `schedule.fractions[${i}]`, 'a number in (0, 1)', f);
      });
    } else {
      const milestones = s['milestones'];
      if (!Array.isArray(milestones)) throw invalid(what, 'schedule.milestones', 'an array of integer steps >= 0 (or give fractions)', milestones);
      milestones.forEach((m: unknown, i) => integer(what, `schedule.milestones[${i}]`, m, 0));
    }
  } else if (kind === 'cosine') {
    finite(what, 'schedule.minLr', s['minLr'] ?? 0, 0);
    if (s['totalSteps'] !== undefined) integer(what, 'schedule.totalSteps', s['totalSteps'], 1);
  }
  return schedule;
}

/** Learning-rate schedules. */
export const schedules = {
  /** The base rate throughout. */
  constant(): Schedule {
    return { kind: 'constant' };
  },

  /**
   * Multiply by `gamma` (default 0.1) at each milestone: absolute steps (`milestones`) or
   * fractions of the run (`fractions`, e.g. `[0.5, 0.75]`).
   */
  multistep(
    options: { milestones: number[]; gamma?: number } | { fractions: number[]; gamma?: number },
  ): ScheduleOption {
    const gamma = options.gamma ?? 0.1;
    if ('fractions' in options) {
      for (const f of options.fractions) {
        if (!(f > 0 && f < 1)) throw new Error(`multistep fractions must lie in (0, 1), got ${f}`);
      }
      return checkSchedule({ kind: 'multistep', fractions: [...options.fractions], gamma });
    }
    return checkSchedule({ kind: 'multistep', milestones: [...options.milestones], gamma });
  },

  /** Cosine annealing to `minLr` (default 0) over `totalSteps` (default: the whole run). */
  cosine(options: { totalSteps?: number; minLr?: number } = {}): ScheduleOption {
    const minLr = options.minLr ?? 0;
    return checkSchedule(
      options.totalSteps === undefined ? { kind: 'cosine', minLr } : { kind: 'cosine', totalSteps: options.totalSteps, minLr },
    );
  },

  /** The paper's recipe: divide by 10 at 50% and 75% of the run. */
  paper(): ScheduleOption {
    return { kind: 'multistep', fractions: [0.5, 0.75], gamma: 0.1 };
  },
};

/** The paper's milestones for a run of `totalSteps`: 50% and 75% of it. */
export function paperMilestones(totalSteps: number): number[] {
  return [Math.round(totalSteps * 0.5), Math.round(totalSteps * 0.75)];
}

/**
 * A {@link Schedule} in absolute optimizer steps. Relative schedules are placed on a run of
 * `totalSteps` that starts at step `startStep` (a resumed model's step count).
 *
 * @throws Error if the schedule is relative and `totalSteps` is not given.
 */
export function resolveSchedule(schedule: ScheduleOption, totalSteps?: number, startStep = 0): Schedule {
  const need = (what: string): number => {
    if (totalSteps === undefined) {
      throw new Error(`${what} needs the run's total steps: pass totalSteps, or train with fit()`);
    }
    return totalSteps;
  };
  switch (schedule.kind) {
    case 'constant':
      return schedule;
    case 'multistep':
      if ('fractions' in schedule) {
        const total = need('a multistep schedule given as fractions');
        return {
          kind: 'multistep',
          // A milestone before step 0 (a run resumed with more steps per epoch) has passed.
          milestones: schedule.fractions.map((f) => Math.max(0, startStep + Math.round(f * total))),
          gamma: schedule.gamma,
        };
      }
      return { kind: 'multistep', milestones: [...schedule.milestones], gamma: schedule.gamma };
    case 'cosine':
      return {
        kind: 'cosine',
        totalSteps: schedule.totalSteps ?? startStep + need('a cosine schedule without totalSteps'),
        minLr: schedule.minLr,
      };
  }
}

/** The full {@link SgdConfig} for Rust; see {@link resolveSchedule} for `totalSteps`/`startStep`. */
export function toSgdConfig(options: SgdOptions = {}, totalSteps?: number, startStep = 0): SgdConfig {
  const o = sgd(options);
  return {
    lr: o.lr,
    momentum: o.momentum,
    weightDecay: o.weightDecay,
    nesterov: o.nesterov,
    schedule: resolveSchedule(o.schedule, totalSteps, startStep),
    warmupSteps: o.warmupSteps,
  };
}
