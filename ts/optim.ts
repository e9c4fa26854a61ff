/**
 * Optimizer and learning-rate schedule configurations: typed data, validated and applied in Rust.
 *
 * @module
 */

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

/** SGD with the paper's defaults (lr 0.1, momentum 0.9, weight decay 1e-4), as typed options. */
export function sgd(options: SgdOptions = {}): Required<SgdOptions> {
  return {
    lr: options.lr ?? 0.1,
    momentum: options.momentum ?? 0.9,
    weightDecay: options.weightDecay ?? 1e-4,
    nesterov: options.nesterov ?? false,
    schedule: options.schedule ?? schedules.constant(),
    warmupSteps: options.warmupSteps ?? 0,
  };
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
      return { kind: 'multistep', fractions: [...options.fractions], gamma };
    }
    return { kind: 'multistep', milestones: [...options.milestones], gamma };
  },

  /** Cosine annealing to `minLr` (default 0) over `totalSteps` (default: the whole run). */
  cosine(options: { totalSteps?: number; minLr?: number } = {}): ScheduleOption {
    const minLr = options.minLr ?? 0;
    return options.totalSteps === undefined
      ? { kind: 'cosine', minLr }
      : { kind: 'cosine', totalSteps: options.totalSteps, minLr };
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
          milestones: schedule.fractions.map((f) => startStep + Math.round(f * total)),
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
