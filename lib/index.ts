/**
 * recode: ReCode (rule-based RL for code update) for Node.js.
 * Public entry point; everything exported here is importable from both CommonJS and ESM.
 */
export { RecodeError } from './errors'
export { systemInfo, cudaAvailable, setNumThreads, setSimdLevel } from './device'
export type { Device, ConcreteDevice, SystemInfo, CudaStatus } from './device'
export { loadChatTemplate, renderChatTemplate } from './chat'
export type { RenderChatOptions } from './chat'
export { loadMigrationData, readMigrationRows, normalizeVersion, splitMigrationData, loadCodeUpdateArena, loadHumanEval } from './data'
export type { MigrationExample, MigrationQualityReport, LoadMigrationOptions, MigrationData, SplitOptions, CodeUpdateArenaProblem, CodeUpdateArenaUpdate, CodeUpdateArenaData, HumanEvalProblem } from './data'
export { promptPresets, RECODE_TRAIN_PROMPT, RECODE_CODEUPDATEARENA_PROMPT, HUMANEVAL_PROMPT, RECODE_PREFILL, RECODE_CHATML_TEMPLATE, migrationPrompt, codeUpdateArenaPrompt, humanEvalPrompt, renderPrompt, buildMessages, fillTemplate } from './prompts'
export type { PromptTemplate } from './prompts'
export { evaluate, formatEvaluation, loadCompletions } from './eval/evaluate'
export type { EvaluateOptions, EvaluationResult, ProblemRecord, SampleRecord, Completion, Benchmark } from './eval/evaluate'
export { passAtK, meanPassAtK, classifyRun } from './eval/metrics'
export type { FailureCategory } from './eval/metrics'
export { extractCode } from './eval/extract'
export { runPython, runPrograms, probeIsolation } from './eval/sandbox'
export type { SandboxOptions, RunResult, IsolationInfo } from './eval/sandbox'
export { codeUpdateArenaPrograms, humanEvalProgram, updateInstallStatements } from './eval/programs'
