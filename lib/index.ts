/**
 * recode: ReCode (rule-based RL for code update) for Node.js.
 * Public entry point; everything exported here is importable from both CommonJS and ESM.
 */
export { RecodeError } from './errors'
export { systemInfo, cudaAvailable, setNumThreads, setSimdLevel } from './device'
export type { Device, ConcreteDevice, SystemInfo, CudaStatus } from './device'
export { toBf16, fromBf16, toF16, fromF16 } from './dtype'
export { editDistance, editDistanceSync, similarity, similarities, codePointLength } from './editdist'
export type { EditDistanceOptions, EditDistanceSyncOptions } from './editdist'
export {
  rewards,
  score as rewardComponents,
  trainingReward,
  TRAINING_REWARDS,
  formatOk,
  extractFence,
  normalizeCode,
  completionCode,
  pythonParses,
  startPythonWorkers,
  closePythonWorkers
} from './reward'
export type { RewardOptions, RewardComponents, TrainingRewardName } from './reward'
export * from './rl'
export { syntheticTasks, syntheticUpdates, UPDATE_KINDS } from './train/synthetic'
export type { SyntheticTask, SyntheticOptions, UpdateKind, UpdateTaskRow } from './train/synthetic'
export { validateTrainConfig, loadTrainConfigFile, trainFlagsToConfig, trainPreset, trainPresets, configHash } from './train/config'
export type { TrainConfig, AdapterConfig, PresetName } from './train/config'
export { learningRateAt, lrMultiplier } from './train/schedule'
export type { ScheduleOptions, ScheduleKind } from './train/schedule'
export { MetricsWriter, readMetrics } from './train/metrics'
export {
  distInfo,
  probeEngine,
  launchEnvironment,
  currentWorld,
  World,
  rendezvous,
  rendezvousPort,
  ncclUniqueId,
  ncclIdOfWorld
} from './dist'
export type { DistInfo, EngineStatus, LaunchEnvironment, RendezvousOptions } from './dist'
export type { StepMetrics } from './train/metrics'
export { writeReport, renderReport } from './train/report'
export type { ReportOptions, ReportConfig } from './train/report'
export { saveCheckpoint, latestCheckpoint, loadCheckpoint, saveAdapter, loadAdapter } from './train/checkpoint'
export type { CheckpointManifest, AdapterSpec, AdapterLayerWeights } from './train/checkpoint'
export { writeSafetensors, readSafetensors } from './safetensors'
export { adamwStep, adamwStepAsync, clipGradNorm, gradNorm } from './train/optim'
export { adapterForward, adapterBackward, doraWeightNorm, mergeAdapter } from './train/adapters'
export { loadChatTemplate, renderChatTemplate } from './chat'
export type { RenderChatOptions } from './chat'
export { loadModel, Model } from './model/index'
export type { LoadModelOptions, ModelMemory, StepEntry } from './model/index'
export { initModel } from './model/init'
export type { InitModelOptions, Preset } from './model/init'
export type { ChatMessage, GenerateOptions, Generation, LanguageModel } from './model/types'
export {
  evaluateHeldOut,
  evaluateHeldOutDetailed,
  oldCodeScores,
  pickExamples,
  examplesText,
  migrationPrompts,
  rowFields
} from './train/heldout'
export type { HeldOutScores, HeldOutOptions, HeldOutAnswer, HeldOutDetail, HeldOutExample, EvaluationPoint } from './train/heldout'
export { demoBaseDir, makeDemoBase, evaluateEdits, generalTasks, editPrompt, heldOutNewNames, EDIT_PROMPT } from './demo/index'
export type { EditTask, DemoBaseOptions } from './demo/index'
export { loadMigrationData, readMigrationRows, normalizeVersion, splitMigrationData, loadCodeUpdateArena, loadHumanEval } from './data'
export type {
  MigrationExample,
  MigrationQualityReport,
  LoadMigrationOptions,
  MigrationData,
  SplitOptions,
  CodeUpdateArenaProblem,
  CodeUpdateArenaUpdate,
  CodeUpdateArenaData,
  HumanEvalProblem
} from './data'
export {
  promptPresets,
  RECODE_TRAIN_PROMPT,
  RECODE_CODEUPDATEARENA_PROMPT,
  HUMANEVAL_PROMPT,
  RECODE_PREFILL,
  RECODE_CHATML_TEMPLATE,
  migrationPrompt,
  codeUpdateArenaPrompt,
  humanEvalPrompt,
  renderPrompt,
  buildMessages,
  fillTemplate
} from './prompts'
export type { PromptTemplate } from './prompts'
export { evaluate, formatEvaluation, loadCompletions } from './eval/evaluate'
export type { EvaluateOptions, EvaluationResult, ProblemRecord, SampleRecord, Completion, Benchmark } from './eval/evaluate'
export { passAtK, meanPassAtK, classifyRun } from './eval/metrics'
export type { FailureCategory } from './eval/metrics'
export { extractCode } from './eval/extract'
export { runPython, runPrograms, probeIsolation, describeIsolation } from './eval/sandbox'
export type { SandboxOptions, RunResult, IsolationInfo, Protections } from './eval/sandbox'
export { codeUpdateArenaPrograms, humanEvalProgram, updateInstallStatements } from './eval/programs'
export { ModelTrainer, FullFineTuner, applyAdamW } from './model/train'
export type { TrainSequence, TrainStepResult, AdamWOptions as FullAdamWOptions, ParameterGradient } from './model/train'
export { train, sftCompletion } from './train/trainer'
export type { TrainOptions, TrainEvent, TrainResult, TrainSummary, TrainStage } from './train/trainer'
export type { TrainerState, TrainerAdapterOptions } from './model/train'
