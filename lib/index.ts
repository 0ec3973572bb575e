/**
 * recode: ReCode (rule-based RL for code update) for Node.js.
 * Public entry point; everything exported here is importable from both CommonJS and ESM.
 */
export { RecodeError } from './errors'
export { systemInfo, cudaAvailable, setNumThreads, setSimdLevel } from './device'
export type { Device, ConcreteDevice, SystemInfo, CudaStatus } from './device'
export { toBf16, fromBf16, toF16, fromF16 } from './dtype'
export { syntheticTasks, syntheticUpdates, UPDATE_KINDS } from './train/synthetic'
export type { SyntheticTask, SyntheticOptions, UpdateKind, UpdateTaskRow } from './train/synthetic'
export { validateTrainConfig, loadTrainConfigFile, trainFlagsToConfig, trainPreset, trainPresets, configHash } from './train/config'
export type { TrainConfig, AdapterConfig, PresetName } from './train/config'
export { learningRateAt, lrMultiplier } from './train/schedule'
export type { ScheduleOptions, ScheduleKind } from './train/schedule'
export { MetricsWriter, readMetrics } from './train/metrics'
export type { StepMetrics } from './train/metrics'
export { writeReport, renderReport } from './train/report'
export { saveCheckpoint, latestCheckpoint, loadCheckpoint, saveAdapter, loadAdapter } from './train/checkpoint'
export type { CheckpointManifest, AdapterSpec, AdapterLayerWeights } from './train/checkpoint'
export { writeSafetensors, readSafetensors } from './safetensorsWriter'
export { adamwStep, adamwStepAsync, clipGradNorm, gradNorm } from './train/optim'
export { adapterForward, adapterBackward, doraWeightNorm, mergeAdapter } from './train/adapters'
