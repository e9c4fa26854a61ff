/**
 * The paper's experiments as functions: each trains (or reuses) its runs in an output folder and
 * writes a CSV of the curves and a figure as SVG and PNG.
 *
 * @module
 */

export { degradation, type DegradationOptions, type DegradationResult, type FinalErrors } from './degradation.js';
export { shortcuts, type ShortcutsOptions, type ShortcutsResult, type ShortcutRow } from './shortcuts.js';
export { responses, type ResponsesOptions, type ResponsesResult, type ResponseProfile } from './responses.js';
export { gradients, type GradientsOptions, type GradientsResult, type GradientProfile } from './gradients.js';
export { trackedRun, readRun, type TrackedRunOptions, type RunRecord, type CurvePoint, type GradientSnapshot, type StepPoint } from './run.js';
export { loadData, runName, type DataSource, type ExperimentOptions, type ExperimentProgress } from './common.js';
