/** RL kernels: sampling, token log-probabilities, GRPO/DAPO advantages and the policy loss. */
export { sample, philox4x32 } from './sampling'
export type { SampleOptions, SampleResult, PerRow } from './sampling'
