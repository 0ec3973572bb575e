/**
 * The training configuration: its type, the presets that reproduce the paper's two settings (recode.md §4)
 * plus the demo preset of the embedded default and the tiny preset of the tests, and validation that checks every field before any work
 * starts, throwing RecodeError ERR_CONFIG with the field's name (`config.weightDecay must be a number in
 * [0, 1000], got -1`) and a did-you-mean for unknown fields.
 *
 * A raw configuration (a JSON file, CLI flags, a `train()` argument) names a `preset` (default 'tiny') and
 * overrides any of its fields; validateTrainConfig returns the complete, checked configuration.
 *
 * By concern: schema.ts (the type), presets.ts, validate.ts (field and cross-field checks), file.ts (JSON files,
 * the configuration hash), flags.ts (command-line flags).
 */
export type {
  Algorithm,
  ScheduleName,
  KlEstimator,
  LossAggregation,
  AdvantageScaling,
  RewardName,
  AdapterType,
  DeviceName,
  ComputeDtype,
  PresetName,
  AdapterConfig,
  SyntheticDataConfig,
  TrainConfig
} from './schema'
export { trainPresets, trainPreset } from './presets'
export { validateTrainConfig, didYouMean } from './validate'
export type { ValidateOptions } from './validate'
export { loadTrainConfigFile, jsonErrorOffset, canonicalJson, configHash } from './file'
export { trainFlagsToConfig } from './flags'
