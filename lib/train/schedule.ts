/**
 * Learning-rate schedules with linear warmup, as transformers defines them (get_constant_schedule_with_warmup,
 * get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup; verl's cosine adds a floor, min_lr_ratio).
 *
 * `step` counts optimizer steps already taken (0 for the first update), as torch's LambdaLR does: with a warmup
 * the first update uses lr 0. With W warmup steps and T total steps, the multiplier f(step) is
 *   warmup (step < W):  step / max(1, W)
 *   constant:           1
 *   linear:             max(0, (T - step) / max(1, T - W))
 *   cosine:             p = (step - W) / max(1, T - W);  c = max(0, 0.5 * (1 + cos(pi * 2 * cycles * p)))
 *                       f = minLrRatio + (1 - minLrRatio) * c      (cycles = 0.5: one half-cosine down to the floor)
 * and lr(step) = peak * f(step). A warmup ratio r becomes W = ceil(T * r), as transformers' get_warmup_steps does.
 */
import { RecodeError } from '../errors'

export type ScheduleKind = 'constant' | 'linear' | 'cosine'

export interface ScheduleOptions {
  kind: ScheduleKind
  /** Peak learning rate (reached at the end of warmup). */
  learningRate: number
  /** Total optimizer steps of the run. */
  totalSteps: number
  /** Warmup in steps; or give warmupRatio (a fraction of totalSteps). */
  warmupSteps?: number | null
  warmupRatio?: number | null
  /** Cosine only: floor as a fraction of the peak (default 0, transformers' behaviour). */
  minLrRatio?: number
  /** Cosine only: number of cosine cycles (default 0.5, a single decay). */
  cycles?: number
}

export function warmupStepsFor(totalSteps: number, warmupSteps?: number | null, warmupRatio?: number | null): number {
  if (warmupSteps != null && warmupSteps > 0) return warmupSteps
  if (warmupRatio != null && warmupRatio > 0) return Math.ceil(totalSteps * warmupRatio)
  return 0
}

/** The multiplier f(step) of the peak learning rate. */
export function lrMultiplier(options: ScheduleOptions, step: number): number {
  const { kind, totalSteps } = options
  if (!Number.isInteger(step) || step < 0)
    throw new RecodeError('ERR_INVALID_ARG', `lrMultiplier: step must be a non-negative integer, got ${step}`)
  if (!Number.isInteger(totalSteps) || totalSteps < 1)
    throw new RecodeError('ERR_INVALID_ARG', `lrMultiplier: totalSteps must be a positive integer, got ${totalSteps}`)
  if (kind !== 'constant' && kind !== 'linear' && kind !== 'cosine') {
    throw new RecodeError('ERR_INVALID_ARG', `lrMultiplier: unknown schedule ${JSON.stringify(kind)} (constant, linear or cosine)`)
  }
  const warmup = warmupStepsFor(totalSteps, options.warmupSteps, options.warmupRatio)
  if (step < warmup) return step / Math.max(1, warmup)
  switch (kind) {
    case 'constant':
      return 1
    case 'linear':
      return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmup))
    default: {
      // cosine
      const minRatio = options.minLrRatio ?? 0
      const cycles = options.cycles ?? 0.5
      const progress = (step - warmup) / Math.max(1, totalSteps - warmup)
      const c = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 2 * cycles * progress)))
      return minRatio + (1 - minRatio) * c
    }
  }
}

/** Learning rate for the update that follows `step` completed updates. */
export function learningRateAt(options: ScheduleOptions, step: number): number {
  return options.learningRate * lrMultiplier(options, step)
}
