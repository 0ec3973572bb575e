/** RL kernels: sampling, token log-probabilities, GRPO/DAPO advantages and the policy loss. */
export { sample, philox4x32 } from './sampling'
export type { SampleOptions, SampleResult, PerRow } from './sampling'
export { grpoAdvantages, dapoDynamicMask, overlongPenalty, policyLoss } from './loss'
export type {
  AdvantageOptions,
  OverlongOptions,
  LossAggregation,
  PolicyLossInputs,
  PolicyLossOptions,
  PolicyLossMetrics,
  PolicyLossResult
} from './loss'
export { tokenLogprobs, tokenLogprobsBackward } from './logprob'
export type { LogitsInput, HiddenInput, TokenLogprobOptions, TokenLogprobResult, TokenLogprobGrads } from './logprob'
