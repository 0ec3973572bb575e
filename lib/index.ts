/**
 * recode: ReCode (rule-based RL for code update) for Node.js.
 * Public entry point; everything exported here is importable from both CommonJS and ESM.
 */
export { RecodeError } from './errors'
export { systemInfo, cudaAvailable, setNumThreads, setSimdLevel } from './device'
export type { Device, ConcreteDevice, SystemInfo, CudaStatus } from './device'
export * from './rl'
export { loadChatTemplate, renderChatTemplate } from './chat'
export type { RenderChatOptions } from './chat'
export { loadModel, Model } from './model/index'
export type { LoadModelOptions, ModelMemory, StepEntry } from './model/index'
export { initModel } from './model/init'
export type { InitModelOptions, Preset } from './model/init'
export type { ChatMessage, GenerateOptions, Generation, LanguageModel } from './model/types'
