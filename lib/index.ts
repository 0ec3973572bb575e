/**
 * recode: ReCode (rule-based RL for code update) for Node.js.
 * Public entry point; everything exported here is importable from both CommonJS and ESM.
 */
export { RecodeError } from './errors'
export { systemInfo, cudaAvailable, setNumThreads, setSimdLevel } from './device'
export type { Device, ConcreteDevice, SystemInfo, CudaStatus } from './device'
export { toBf16, fromBf16, toF16, fromF16 } from './dtype'
export { editDistance, editDistanceSync, similarity, similarities, codePointLength } from './editDistance'
export type { EditDistanceOptions, EditDistanceSyncOptions } from './editDistance'
export { rewards, score as rewardComponents, formatOk, extractFence, normalizeCode, completionCode, pythonParses, startPythonWorkers, closePythonWorkers } from './reward'
export type { RewardOptions, RewardComponents } from './reward'
export * from './rl'
