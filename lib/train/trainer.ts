/**
 * `train(config)`: ReCode end to end (recode.md §4) with the project's own kernels. One run folder holds
 * everything: the resolved config, the base model (for the built-in tiny one), checkpoints, metrics.jsonl, the
 * report page, the trained model and summary.json ({ before, afterWarmStart?, after } held-out scores).
 *
 * A run is: held-out evaluation of the base model -> optional SFT warm start -> `steps` steps of the chosen
 * algorithm -> held-out evaluation -> final checkpoint and model. One RL step is a rollout (rollout.ts: sample,
 * score, group-relative advantages) and then the policy update on it (policyUpdate.ts: clipped loss, backward,
 * clip + AdamW). Every random choice is a function of (seed, step), and a checkpoint holds the weights,
 * the AdamW moments and the data cursor, so a resumed run on CPU reproduces the uninterrupted one exactly.
 *
 * The KL term's reference policy is the frozen base: its weights are kept once (as the checkpoint's
 * base-model file on disk and one in-memory copy of the trained tensors) and swapped in for the reference
 * forward, so there is never a second model.
 */
import * as fs from 'fs'
import * as path from 'path'
import { RecodeError, abortError, optionsArg } from '../errors'
import { loadModel, type Model } from '../model/index'
import { systemInfo } from '../device'
import { refuseUnfittingCudaRun } from './memoryPlan'
import { initModel } from '../model/init'
import { demoBaseDir } from '../demo/models'
import { PYTHON_CORPUS } from '../model/bpe'
import { ModelTrainer, type TrainerState } from '../model/train'
import { buildMessages, RECODE_TRAIN_PROMPT } from '../prompts'
import { loadMigrationData, splitMigrationData } from '../data/recode'
import { readSafetensors, tensorToFloat32, writeSafetensors, type TensorData } from '../safetensors'
import { toBf16 } from '../dtype'
import { makeDir, writeFileAtomic } from '../atomicFile'
import { saveCheckpoint, latestCheckpoint, loadCheckpoint } from './checkpoint'
import { parseModelConfig, readJsonFile } from '../model/config'
import { probePython } from '../eval/python'
import { closePythonWorkers, pythonCommand } from '../reward'
import { validateTrainConfig, configHash, type TrainConfig } from './config'
import { type evaluateHeldOut, migrationPrompts, rowFields, type HeldOutScores } from './heldout'
import {
  evaluateHeldOutDetailed,
  oldCodeScores,
  pickExamples,
  type EvaluationPoint,
  type HeldOutAnswer,
  type HeldOutExample
} from './heldout'
export type { EvaluationPoint, HeldOutExample } from './heldout'
import { MetricsWriter, readMetrics, type StepMetrics } from './metrics'
import { policyUpdate } from './policyUpdate'
import { writeReport } from './report'
import { learningRateAt } from './schedule'
import { rollout, type PromptSource, type RewardFunction, type Sequence } from './rollout'
import { syntheticTasks, type UpdateTaskRow } from './synthetic'
import { currentWorld, distInfo, ncclIdOfWorld, type World } from '../dist'
import type { DataParallel } from './policyUpdate'

export type TrainStage = 'warm-start' | 'sft' | 'grpo' | 'dapo'

export type TrainEvent =
  | { type: 'start'; runDir: string; config: TrainConfig; totalSteps: number; resumedFrom: number | null }
  | { type: 'eval'; label: 'before' | 'after-warm-start' | 'after' | 'periodic'; step: number; scores: HeldOutScores }
  | { type: 'progress'; what: string; done: number; total: number }
  | { type: 'step'; stage: TrainStage; step: number; totalSteps: number; metrics: StepMetrics }
  | { type: 'checkpoint'; step: number; dir: string }
  | { type: 'log'; message: string }

export interface TrainOptions {
  /** Aborting stops at the next safe point, writes a checkpoint of the last finished step and rejects with ABORT_ERR (the error's `checkpoint` names it). */
  signal?: AbortSignal
  onEvent?: (event: TrainEvent) => void
  /** A run folder to continue from its newest checkpoint (its config.json is used; `config` may be omitted). */
  resume?: string
  /** The run folder (default: <outputDir>/<algorithm>-<time>). */
  runDir?: string
  /** Replaces the configured reward: one number per completion (completions and their rows in order). */
  rewardFunction?: RewardFunction
  /** Python for the reward's syntax check (default RECODE_PYTHON or python3). */
  python?: string
  /** Stop after this many steps of the run (the checkpoint and summary are written as at the end); for tests and `--max-steps`. */
  stopAfterStep?: number
}

export interface TrainSummary {
  before: HeldOutScores
  afterWarmStart?: HeldOutScores
  after: HeldOutScores
  steps: number
  algorithm: string
  heldOutTasks: number
  seconds: number
  runDir: string
  /** The trained model as a Hugging Face folder (adapters: merged into the base). */
  modelDir: string
  /** Adapters: the PEFT adapter folder (adapter_config.json + adapter_model.safetensors). */
  adapterDir?: string
  /** The held-out tasks answered with their old code unchanged: the reference ES* is read against (oldCodeScores). */
  oldCode?: HeldOutScores
  /** Every held-out evaluation of the run in step order: before (step 0), after the warm start, every evalEvery steps, after. */
  evaluations?: EvaluationPoint[]
  /** A few held-out tasks with the answers of the base, the warm-started and the trained model (pickExamples). */
  examples?: HeldOutExample[]
}

/** Held-out tasks the report and summary.json show side by side. */
const EXAMPLE_TASKS = 4

export interface TrainResult {
  runDir: string
  summary: TrainSummary
  /** The newest checkpoint folder. */
  checkpoint: string
  /** The trained model as a Hugging Face folder. */
  modelDir: string
}

/** The completion an SFT step teaches (and the warm start): short reasoning, then the new code in the answer format. */
export function sftCompletion(row: UpdateTaskRow): string {
  return ` ${row.update_info.trim()}</think>\n<answer>\n\`\`\`python\n${row.new_code}\n\`\`\`\n</answer>`
}

// ---- data ---------------------------------------------------------------------------------------------

interface Dataset {
  train: UpdateTaskRow[]
  heldOut: UpdateTaskRow[]
  source: string
}

async function loadDataset(config: TrainConfig): Promise<Dataset> {
  if (config.data === 'synthetic') {
    const { train, heldOut } = syntheticTasks({
      seed: config.synthetic.seed,
      train: config.synthetic.train,
      heldOut: config.synthetic.heldOut
    })
    return { train, heldOut, source: `synthetic (seed ${config.synthetic.seed})` }
  }
  const data = await loadMigrationData(config.data, { dropNullFields: true, dropOldEqualsNew: true })
  const { train, test } = splitMigrationData(data.examples, { seed: config.seed, testFraction: 0.1 })
  const toRow = (e: (typeof data.examples)[number]): UpdateTaskRow => ({
    dependency: e.dependency,
    new_version: e.newVersion ?? e.version,
    description: e.description ?? '',
    update_info: e.updateInfo ?? '',
    old_code: e.oldCode ?? '',
    new_code: e.newCode ?? ''
  })
  return { train: train.map(toRow), heldOut: test.slice(0, config.synthetic.heldOut).map(toRow), source: config.data }
}

/** Tokenizer corpus of the built-in tiny model: Python code plus ReCode prompts of tasks from an unrelated generator seed. */
function tinyTokenizerCorpus(): string {
  const { train } = syntheticTasks({ seed: 0x7e57, train: 400, heldOut: 0 })
  const texts = train.map(
    (r) =>
      buildMessages(RECODE_TRAIN_PROMPT, rowFields(r))
        .map((m) => m.content)
        .join('\n') + sftCompletion(r)
  )
  return PYTHON_CORPUS + '\n' + texts.join('\n')
}

/** Deterministic permutation of [0, n) for an epoch (xorshift-seeded Fisher-Yates). */
function permutation(n: number, seed: number, epoch: number): Uint32Array {
  const p = new Uint32Array(n)
  for (let i = 0; i < n; i++) p[i] = i
  let s = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(epoch + 1, 0xc2b2ae35)) >>> 0 || 1
  for (let i = n - 1; i > 0; i--) {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    const j = s % (i + 1)
    const t = p[i]
    p[i] = p[j]
    p[j] = t
  }
  return p
}

/** Position in the endless shuffled stream of training rows (what a checkpoint saves). */
class DataCursor {
  constructor(
    readonly size: number,
    readonly seed: number,
    public consumed = 0
  ) {}
  private epoch = -1
  private order: Uint32Array = new Uint32Array(0)
  next(count: number): number[] {
    const out: number[] = []
    for (let k = 0; k < count; k++) {
      const e = Math.floor(this.consumed / this.size)
      if (e !== this.epoch) {
        this.epoch = e
        this.order = permutation(this.size, this.seed, e)
      }
      out.push(this.order[this.consumed % this.size])
      this.consumed++
    }
    return out
  }
}

// ---- helpers ------------------------------------------------------------------------------------------

/**
 * The Python that the held-out scores and the ES* reward's syntax check run (both parse completions), probed
 * once up front so that a missing or broken interpreter is an ERR_PYTHON before any work rather than at the
 * first evaluation.
 */
function checkPython(python: string | undefined): void {
  const { command, from } = pythonCommand({ python })
  const info = probePython(command)
  if (info.error !== undefined)
    throw new RecodeError(
      'ERR_PYTHON',
      `${command} (${from}) is not a usable Python (${info.error || 'no reason given'}); the reward's syntax check and the held-out scores need one: set --python or RECODE_PYTHON`
    )
}

/** What is not finite about a step's loss and gradient norm, or null when both are finite (or absent: a skipped step). */
function nonFiniteOf(record: StepMetrics): string | null {
  const bad: string[] = []
  if (record.loss !== undefined && !Number.isFinite(record.loss)) bad.push(`the loss is ${record.loss}`)
  if (record.gradNorm !== undefined && !Number.isFinite(record.gradNorm)) bad.push(`the gradient norm is ${record.gradNorm}`)
  return bad.length > 0 ? bad.join(' and ') : null
}

/** The run has diverged: ERR_DIVERGED naming the step and stage, with the last good checkpoint (if any) attached. */
function divergedError(
  step: number,
  stage: TrainStage,
  what: string,
  checkpoint: string,
  streak: number,
  patience: number,
  cause?: unknown
): RecodeError {
  const e = new RecodeError(
    'ERR_DIVERGED',
    `training diverged at step ${step} (${stage}): ${what}${streak > 1 ? ` (${streak} non-finite steps in a row; config.divergencePatience is ${patience})` : ''}; ` +
      (checkpoint !== '' ? `the last good checkpoint is ${checkpoint}` : 'no checkpoint had been written'),
    { cause }
  ) as RecodeError & { step: number; stage: TrainStage; checkpoint?: string }
  e.step = step
  e.stage = stage
  if (checkpoint !== '') e.checkpoint = checkpoint
  return e
}

/** Whether every trained tensor is finite (asked only after a step failed, to tell a diverged model from other faults). */
async function weightsFinite(trainer: ModelTrainer): Promise<boolean> {
  for (const t of await trainer.parameters()) for (let i = 0; i < t.data.length; i++) if (!Number.isFinite(t.data[i])) return false
  return true
}

function abortWith(checkpoint: string | undefined): RecodeError {
  const e = abortError() as RecodeError & { checkpoint?: string }
  if (checkpoint !== undefined) {
    e.checkpoint = checkpoint
    e.message += ` (checkpoint ${checkpoint})`
  }
  return e
}

type Weights = Array<{ name: string; shape: number[]; data: Float32Array }>

/** Weights (and, from a full state, the AdamW moments as `<name>.exp_avg` / `<name>.exp_avg_sq`) as safetensors tensors. */
function tensorsOf(weights: Weights | TrainerState['tensors']): Record<string, TensorData> {
  const out: Record<string, TensorData> = {}
  for (const t of weights) {
    out[t.name] = { dtype: 'F32', shape: t.shape, data: t.data }
    if ('expAvg' in t) {
      out[`${t.name}.exp_avg`] = { dtype: 'F32', shape: t.shape, data: t.expAvg }
      out[`${t.name}.exp_avg_sq`] = { dtype: 'F32', shape: t.shape, data: t.expAvgSq }
    }
  }
  return out
}

/**
 * Copies a model folder's non-weight files and writes model.safetensors (atomically, folder by folder): the given
 * weights (full fine-tuning: every tensor), or with `overBase` the base folder's tensors with the given ones
 * replaced (adapters: the merged projections, stored in the base tensor's dtype).
 */
function writeModelFolder(baseDir: string, outDir: string, weights: Weights, options: { overBase?: boolean } = {}): void {
  const tmp = `${outDir}.tmp`
  fs.rmSync(tmp, { recursive: true, force: true })
  fs.mkdirSync(tmp, { recursive: true })
  const tensors: Record<string, TensorData> = {}
  for (const f of fs.readdirSync(baseDir)) {
    const src = path.join(baseDir, f)
    if (f.endsWith('.safetensors')) {
      if (options.overBase)
        for (const [name, t] of Object.entries(readSafetensors(src).tensors))
          tensors[name] = { dtype: t.dtype, shape: t.shape, data: t.bytes }
      continue
    }
    if (f === 'model.safetensors.index.json') continue
    if (fs.statSync(src).isFile()) fs.copyFileSync(src, path.join(tmp, f))
  }
  for (const w of weights) {
    const base = tensors[w.name]
    if (options.overBase && base === undefined)
      throw new RecodeError('ERR_MODEL', `${baseDir}: the base model has no tensor ${w.name} to replace`)
    tensors[w.name] =
      base?.dtype === 'BF16' ? { dtype: 'BF16', shape: w.shape, data: toBf16(w.data) } : { dtype: 'F32', shape: w.shape, data: w.data }
  }
  writeSafetensors(path.join(tmp, 'model.safetensors'), tensors, { format: 'pt' })
  fs.rmSync(outDir, { recursive: true, force: true })
  fs.renameSync(tmp, outDir)
}

// ---- the run --------------------------------------------------------------------------------------------

export async function train(rawConfig: unknown = {}, options: TrainOptions = {}): Promise<TrainResult> {
  options = optionsArg(options, 'train')
  // Data parallelism (mpirun): every rank runs this function; only rank 0 reports and writes files.
  const world = currentWorld()
  const emit = (e: TrainEvent): void => {
    if (world.isRoot) options.onEvent?.(e)
  }
  const signal = options.signal
  if (signal?.aborted) throw abortError()

  // Configuration: validated (and, on resume, taken from the run folder) before any work starts.
  let runDir: string
  let config: TrainConfig
  if (options.resume !== undefined) {
    runDir = path.resolve(options.resume)
    const file = path.join(runDir, 'config.json')
    if (!fs.existsSync(file)) throw new RecodeError('ERR_CONFIG', `resume: ${file} does not exist (not a run folder)`)
    let saved: unknown
    try {
      saved = JSON.parse(fs.readFileSync(file, 'utf8'))
    } catch (err) {
      throw new RecodeError('ERR_CONFIG', `${file}: ${(err as Error).message}`)
    }
    config = validateTrainConfig(saved)
  } else {
    config = validateTrainConfig(rawConfig)
    runDir = path.resolve(
      options.runDir ?? path.join(config.outputDir, `${config.algorithm}-${new Date().toISOString().replace(/[:.]/g, '-')}`)
    )
  }
  // torchrun / Slurm without MPI: the world's collectives join NCCL on the training device (the id over the rendezvous)
  await world.join(config.device)
  if (world.size > 1) {
    runDir = agreeOn(world, runDir)
    if (config.gradAccumulation % world.size !== 0) {
      throw new RecodeError(
        'ERR_CONFIG',
        `config.gradAccumulation (${config.gradAccumulation}) must be a multiple of the number of ranks (${world.size}): each rank trains gradAccumulation / ranks micro-batches of the step (e.g. --gradAccumulation ${world.size})`
      )
    }
    if (config.device === 'cuda' || config.device === 'emulated') checkCudaDataParallel(config, world)
  }
  if (config.activationRecomputation && (config.device === 'cuda' || config.device === 'emulated')) {
    throw new RecodeError(
      'ERR_UNSUPPORTED',
      `config.activationRecomputation on config.device '${config.device}': the CUDA trainer keeps every layer's activations; recomputation runs on the cpu device`
    )
  }
  const hash = configHash(config)
  const started = Date.now()

  // Everything the inputs can fail on is checked before the run folder exists: a run that cannot start leaves
  // nothing behind (the data read and validated, the model's config.json parsed, the Python of the reward probed).
  const data = await loadDataset(config)
  if (data.train.length === 0) throw new RecodeError('ERR_CONFIG', `config.data: ${data.source} gives no training rows`)
  if (config.model !== 'tiny' && config.model !== 'nova-base') {
    const file = path.join(config.model, 'config.json')
    parseModelConfig(readJsonFile(file), file)
  }
  checkPython(options.python)
  if (world.isRoot) makeDir(runDir, 'train')
  if (options.resume === undefined && world.isRoot)
    writeFileAtomic(path.join(runDir, 'config.json'), JSON.stringify(config, null, 2) + '\n')

  // Model: the built-in tiny one is written into the run folder once (same seed, same files on resume).
  let baseDir = config.model === 'nova-base' ? demoBaseDir() : config.model
  if (config.model === 'tiny') {
    baseDir = path.join(runDir, 'base-model')
    if (world.isRoot && !fs.existsSync(path.join(baseDir, 'model.safetensors'))) {
      const tmp = `${baseDir}.tmp`
      fs.rmSync(tmp, { recursive: true, force: true })
      initModel({ preset: 'tiny', arch: 'qwen2', out: tmp, seed: config.seed, tokenizerCorpus: tinyTokenizerCorpus(), merges: 800 })
      fs.rmSync(baseDir, { recursive: true, force: true })
      fs.renameSync(tmp, baseDir)
    }
    world.barrier() // the other ranks load what rank 0 wrote
  }
  const context = config.maxPromptTokens + config.maxCompletionTokens
  const slots = Math.min(64, config.promptsPerStep * config.samplesPerPrompt)
  // 'cuda' / 'emulated': the CUDA backend and its trainer (src/model/cuda_train_step.cpp); 'auto' stays on the cpu
  const device = config.device === 'cuda' || config.device === 'emulated' ? config.device : 'cpu'
  const dtype = config.computeDtype === 'bf16' ? 'bf16' : 'f32'
  if (device === 'cuda') {
    const gpu = systemInfo().cuda.devices[0]
    if (gpu !== undefined) refuseUnfittingCudaRun(baseDir, config, gpu.memoryBytes)
  }
  const model = await loadModel(baseDir, { device, dtype, maxBatch: slots, maxContext: context })
  let trainer: ModelTrainer | undefined
  try {
    const a = config.adapter
    trainer = new ModelTrainer(model, {
      ...(a.type === 'none'
        ? {}
        : { adapter: { type: a.type, r: a.r, alpha: a.alpha, dropout: a.dropout, targetModules: a.targetModules, seed: config.seed } }),
      activationRecomputation: config.activationRecomputation
    })
    // Several ranks stop together at a step boundary (see runTraining), never inside a phase: one rank leaving a
    // collective early would leave the others waiting in it.
    // ZeRO-1 before any state is loaded (a resume then keeps only this rank's shard of the moments)
    // the CUDA trainer sums its gradients (and shards ZeRO-1) through NCCL; rank 0's unique id reaches the others over MPI
    if (world.size > 1 && device !== 'cpu') await trainer.initNccl(ncclIdOfWorld(world), world.rank, world.size)
    if (world.size > 1 && (config.zero1 ?? config.adapter.type === 'none')) await trainer.setZero1(true)
    if (world.size > 1)
      emit({
        type: 'log',
        message: `data parallel: ${world.size} ranks (${world.launcher}), ${config.gradAccumulation / world.size} micro-batch(es) each, ZeRO-1 ${trainer.zero1 ? 'on' : 'off'}${device === 'cpu' ? '' : ', gradients through NCCL'}`
      })
    return await runTraining({
      config,
      hash,
      runDir,
      baseDir,
      data,
      model,
      trainer,
      emit,
      signal: world.size > 1 ? undefined : signal,
      options,
      started,
      world
    })
  } finally {
    trainer?.dispose()
    model.dispose()
    closePythonWorkers()
  }
}

interface RunContext {
  config: TrainConfig
  hash: string
  runDir: string
  baseDir: string
  data: Dataset
  model: Model
  trainer: ModelTrainer
  emit: (e: TrainEvent) => void
  signal?: AbortSignal
  options: TrainOptions
  started: number
  world: World
}

/** What the CUDA trainer needs to run on several ranks: NCCL. */
function checkCudaDataParallel(config: TrainConfig, world: World): void {
  const nccl = distInfo().nccl
  if (!nccl.loaded)
    throw new RecodeError(
      'ERR_NCCL_UNAVAILABLE',
      `config.device '${config.device}' with ${world.size} ranks: the CUDA trainer sums gradients through NCCL, which is unavailable: ${nccl.error}`
    )
}

/** Rank 0's string, on every rank. */
function agreeOn(world: World, text: string): string {
  const bytes = Buffer.from(text, 'utf8')
  const len = world.broadcast(Float64Array.of(bytes.length))[0]
  const buf = new Uint8Array(len)
  if (world.isRoot) buf.set(bytes)
  return Buffer.from(world.broadcast(buf)).toString('utf8')
}

/** The update's hooks into the process group (undefined in a world of one). */
function dataParallel(world: World, trainer: ModelTrainer): DataParallel | undefined {
  if (world.size === 1) return undefined
  return {
    rank: world.rank,
    size: world.size,
    allreduce: (a) => world.allreduce(a),
    reduceGradients: async () => {
      if (trainer.zero1) return // applyAdamW reduce-scatters them itself
      await trainer.sumGradientsOverRanks()
      world.traffic.calls++
    }
  }
}

async function runTraining(ctx: RunContext): Promise<TrainResult> {
  const { config, hash, runDir, baseDir, data, model, trainer, emit, signal, options } = ctx
  const ckptRoot = path.join(runDir, 'checkpoints')
  const tokenizer = model.tokenizer
  const eosId = tokenizer.tokenToId('<|im_end|>') ?? tokenizer.encode('<|im_end|>')[0]

  // Prompts: rendered once; rows whose prompt is over maxPromptTokens are left out (as verl's filter does).
  const promptText = migrationPrompts(model, data.train)
  const promptIds = promptText.map((p) => tokenizer.encode(p))
  const usable = data.train.map((_, i) => i).filter((i) => promptIds[i].length <= config.maxPromptTokens)
  if (usable.length === 0)
    throw new RecodeError('ERR_CONFIG', `config.maxPromptTokens: every training prompt is longer than ${config.maxPromptTokens} tokens`)
  if (usable.length < data.train.length)
    emit({
      type: 'log',
      message: `${data.train.length - usable.length} of ${data.train.length} training rows have prompts over ${config.maxPromptTokens} tokens and are left out`
    })
  const heldOut = data.heldOut.filter((r) => tokenizer.encode(migrationPrompts(model, [r])[0]).length <= config.maxPromptTokens)

  const warmSteps = config.algorithm === 'sft' ? 0 : config.warmStartSteps
  const totalSteps = warmSteps + config.steps
  const rlStage: TrainStage = config.algorithm === 'sft' ? 'sft' : config.algorithm
  const evalOptions = (seed: number): Parameters<typeof evaluateHeldOut>[2] => ({
    maxNewTokens: config.maxCompletionTokens,
    temperature: config.evalTemperature,
    seed,
    python: options.python,
    signal,
    onProgress: (p) => emit({ type: 'progress', what: 'evaluating', done: p.done, total: p.total })
  })

  // Resume: weights, moments, step and data cursor from the newest checkpoint of this configuration.
  let step = 0
  const cursor = new DataCursor(usable.length, config.seed)
  let summaryBefore: HeldOutScores | undefined
  let summaryWarm: HeldOutScores | undefined
  // Each task's answer before training and after the warm start (kept in checkpoints for the examples of the summary).
  const heldOutAnswers: Partial<Record<'before' | 'afterWarmStart' | 'after', HeldOutAnswer[]>> = {}
  // A newer checkpoint that fails its checksums is skipped (said in a log event) for the one before it; it stays
  // in place until this run saves that step again.
  const resumeFrom =
    options.resume !== undefined
      ? latestCheckpoint(ckptRoot, {
          expectConfigHash: hash,
          onSkip: (dir, err) =>
            emit({ type: 'log', message: `checkpoint ${dir} is unusable (${err.message}); falling back to the previous checkpoint` })
        })
      : undefined
  if (options.resume !== undefined && resumeFrom === undefined)
    throw new RecodeError('ERR_CONFIG', `resume: ${ckptRoot} holds no complete checkpoint of this configuration`)
  if (resumeFrom !== undefined) {
    const ck = loadCheckpoint(resumeFrom.dir, { verify: false }) // latestCheckpoint has just checksummed it
    const tensors = ck.tensors['trainer.safetensors']
    const names = (await trainer.parameters()).map((t) => t.name)
    await trainer.setState({
      stepsTaken: (ck.json['trainer.json'] as { stepsTaken: number }).stepsTaken,
      tensors: names.map((name) => {
        for (const k of [name, `${name}.exp_avg`, `${name}.exp_avg_sq`])
          if (tensors[k] === undefined) throw new RecodeError('ERR_DATA', `${resumeFrom.dir}: trainer.safetensors lacks ${k}`)
        return {
          name,
          data: tensorToFloat32(tensors[name]),
          expAvg: tensorToFloat32(tensors[`${name}.exp_avg`]),
          expAvgSq: tensorToFloat32(tensors[`${name}.exp_avg_sq`])
        }
      })
    })
    step = resumeFrom.manifest.step
    cursor.consumed = (resumeFrom.manifest.dataCursor as { consumed: number }).consumed
    const extra = resumeFrom.manifest.extra as
      | { before?: HeldOutScores; afterWarmStart?: HeldOutScores; heldOutAnswers?: typeof heldOutAnswers }
      | undefined
    summaryBefore = extra?.before
    summaryWarm = extra?.afterWarmStart
    Object.assign(heldOutAnswers, extra?.heldOutAnswers ?? {})
  }
  emit({ type: 'start', runDir, config, totalSteps, resumedFrom: resumeFrom ? step : null })
  const world = ctx.world
  const metrics = world.isRoot
    ? new MetricsWriter(path.join(runDir, 'metrics.jsonl'), { resumeFromStep: resumeFrom ? step : 0 })
    : undefined
  // Held-out evaluations run on rank 0 only (they change no training state); the other ranks see placeholders.
  const evaluate = async (seed: number, keep?: 'before' | 'afterWarmStart'): Promise<HeldOutScores> => {
    if (!world.isRoot) return { formatRate: 0, esStar: 0, exactMatch: 0 } as unknown as HeldOutScores
    const d = await evaluateHeldOutDetailed(model, heldOut, evalOptions(seed))
    if (keep !== undefined) heldOutAnswers[keep] = d.answers
    return d.scores
  }

  // The frozen base for the KL reference: with adapters, the same weights with the adapters switched off; with full
  // fine-tuning, a copy of the base weights swapped in for the reference forward.
  let baseWeights: Weights | undefined
  if (config.klCoef > 0 && config.algorithm !== 'sft' && trainer.adapter === undefined) {
    const baseModel = await loadModel(baseDir, {
      device: 'cpu',
      dtype: config.computeDtype === 'bf16' ? 'bf16' : 'f32',
      maxBatch: 1,
      maxContext: 2
    })
    const t = new ModelTrainer(baseModel)
    try {
      baseWeights = await t.parameters()
    } finally {
      t.dispose()
      baseModel.dispose()
    }
  }

  const prompts: PromptSource = { rows: data.train, text: promptText, ids: promptIds, usable, cursor }
  let lastCheckpoint = resumeFrom?.dir ?? ''
  let stage: TrainStage = warmSteps > 0 && step < warmSteps ? 'warm-start' : rlStage
  const checkpoint = async (): Promise<string> => {
    if (!world.isRoot) {
      if (trainer.zero1) await trainer.state() // rank 0 gathers the sharded moments: every rank takes part
      return lastCheckpoint // rank 0 writes the single-process checkpoint
    }
    const state = await trainer.state()
    const save = (input: Parameters<typeof saveCheckpoint>[1]): string => {
      try {
        return saveCheckpoint(ckptRoot, input)
      } catch (err) {
        // non-finite weights: the model diverged without a non-finite loss showing it yet
        if ((err as RecodeError).code === 'ERR_DIVERGED')
          throw divergedError(step, stage, 'the weights hold a non-finite value', lastCheckpoint, 1, config.divergencePatience, err)
        throw err
      }
    }
    const dir = save({
      step,
      configHash: hash,
      rng: { seed: config.seed },
      dataCursor: { consumed: cursor.consumed },
      tensors: { 'trainer.safetensors': tensorsOf(state.tensors) },
      json: { 'trainer.json': { stepsTaken: state.stepsTaken } },
      extra: { before: summaryBefore, afterWarmStart: summaryWarm, heldOutAnswers },
      keep: config.keepCheckpoints
    })
    lastCheckpoint = dir
    emit({ type: 'checkpoint', step, dir })
    return dir
  }

  let nonFinite = 0 // non-finite steps in a row (config.divergencePatience of them are tolerated)
  try {
    if (summaryBefore === undefined) {
      summaryBefore = await evaluate(config.seed, 'before')
      emit({ type: 'eval', label: 'before', step: 0, scores: summaryBefore })
    }
    const stopAt = Math.min(totalSteps, options.stopAfterStep ?? totalSteps)
    while (step < stopAt) {
      if (world.size > 1 ? world.allreduce(Float64Array.of(options.signal?.aborted === true ? 1 : 0))[0] > 0 : signal?.aborted)
        throw abortError()
      stage = step < warmSteps ? 'warm-start' : rlStage
      let record: StepMetrics
      try {
        record =
          stage === 'warm-start' || stage === 'sft'
            ? await sftStep(
                ctx,
                stage,
                step,
                stage === 'warm-start' ? warmSteps : config.steps,
                stage === 'warm-start' ? step : step - warmSteps,
                cursor,
                usable,
                promptIds,
                eosId
              )
            : await rlStep(ctx, step - warmSteps, prompts, baseWeights)
      } catch (err) {
        const code = (err as RecodeError).code
        if (code === 'ABORT_ERR') throw err
        // A step that failed on a model gone non-finite (sampling NaN logits, the loss kernel refusing NaN
        // log-probabilities) is a divergence at this step, not an argument error.
        if (code !== 'ERR_DIVERGED' && (await weightsFinite(trainer))) throw err
        await trainer.zeroGrad()
        throw divergedError(
          step + 1,
          stage,
          code === 'ERR_DIVERGED' ? (err as Error).message : `the weights hold a non-finite value (${(err as Error).message})`,
          lastCheckpoint,
          nonFinite + 1,
          config.divergencePatience,
          err
        )
      }
      step++
      record.step = step
      record.stage = stage
      record.time = Date.now()
      const bad = nonFiniteOf(record)
      if (bad !== null) {
        // Counted, recorded, never checkpointed or evaluated: the last good checkpoint stays the newest.
        nonFinite++
        metrics?.append(record)
        emit({ type: 'step', stage, step, totalSteps, metrics: record })
        if (nonFinite > config.divergencePatience)
          throw divergedError(step, stage, bad, lastCheckpoint, nonFinite, config.divergencePatience)
        emit({
          type: 'log',
          message: `step ${step} (${stage}): ${bad}; tolerated (${nonFinite} of config.divergencePatience ${config.divergencePatience})`
        })
        continue
      }
      nonFinite = 0
      if (step === warmSteps && warmSteps > 0 && summaryWarm === undefined) {
        summaryWarm = await evaluate(config.seed, 'afterWarmStart')
        record.eval = { formatRate: summaryWarm.formatRate, esStar: summaryWarm.esStar, exactMatch: summaryWarm.exactMatch }
        emit({ type: 'eval', label: 'after-warm-start', step, scores: summaryWarm })
      } else if (config.evalEvery > 0 && step % config.evalEvery === 0 && step < totalSteps) {
        const s = await evaluate(config.seed)
        record.eval = { formatRate: s.formatRate, esStar: s.esStar, exactMatch: s.exactMatch }
        emit({ type: 'eval', label: 'periodic', step, scores: s })
      }
      metrics?.append(record)
      emit({ type: 'step', stage, step, totalSteps, metrics: record })
      if (config.checkpointEvery > 0 && step % config.checkpointEvery === 0 && step < stopAt) await checkpoint()
    }
    // A run does not finish on a non-finite step: patience covers a streak that a finite step ends.
    if (nonFinite > 0)
      throw divergedError(step, stage, 'the run ended on a non-finite step', lastCheckpoint, nonFinite, config.divergencePatience)
  } catch (err) {
    metrics?.close()
    if ((err as RecodeError).code === 'ABORT_ERR') {
      // The interrupted step left nothing behind (gradients are zeroed); save the last finished one (unless it
      // was a non-finite one: then the last good checkpoint stands).
      await trainer.zeroGrad()
      const dir = step > 0 && !lastCheckpoint.endsWith(`step-${step}`) && nonFinite === 0 ? await checkpoint() : lastCheckpoint || undefined
      throw abortWith(dir)
    }
    throw err
  }
  metrics?.close()
  const ckDir = lastCheckpoint.endsWith(`step-${step}`) ? lastCheckpoint : await checkpoint()
  if (!world.isRoot) {
    // the model, summary and report are rank 0's; this rank's weights are the same
    const modelDir = path.join(runDir, 'model')
    return {
      runDir,
      checkpoint: ckDir,
      modelDir,
      summary: {
        before: summaryBefore,
        after: summaryBefore,
        steps: step,
        algorithm: config.algorithm,
        heldOutTasks: heldOut.length,
        seconds: (Date.now() - ctx.started) / 1000,
        runDir,
        modelDir
      }
    }
  }

  const afterDetail = await evaluateHeldOutDetailed(model, heldOut, evalOptions(config.seed))
  const after = afterDetail.scores
  heldOutAnswers.after = afterDetail.answers
  emit({ type: 'eval', label: 'after', step, scores: after })
  const { records } = readMetrics(path.join(runDir, 'metrics.jsonl'))
  const evaluations = evaluationPoints(records, summaryBefore, after, step, warmSteps)
  const examples = heldOutAnswers.before !== undefined ? pickExamples(heldOut, heldOutAnswers, EXAMPLE_TASKS) : undefined
  const oldCode = await oldCodeScores(heldOut, { python: options.python, signal })
  const modelDir = path.join(runDir, 'model')
  let adapterDir: string | undefined
  if (trainer.adapter === undefined) {
    writeModelFolder(baseDir, modelDir, await trainer.parameters())
  } else {
    // the adapter as PEFT saves it, and the merged model (PEFT's merge_and_unload) as a plain folder
    adapterDir = path.join(runDir, 'adapter')
    await trainer.saveAdapter(adapterDir, { baseModel: config.model === 'tiny' || config.model === 'nova-base' ? baseDir : config.model })
    writeModelFolder(baseDir, modelDir, await trainer.mergedWeights(), { overBase: true })
  }
  const summary: TrainSummary = {
    before: summaryBefore,
    ...(summaryWarm ? { afterWarmStart: summaryWarm } : {}),
    after,
    steps: step,
    algorithm: config.algorithm,
    heldOutTasks: heldOut.length,
    seconds: (Date.now() - ctx.started) / 1000,
    runDir,
    modelDir,
    ...(adapterDir !== undefined ? { adapterDir } : {}),
    oldCode,
    evaluations,
    ...(examples !== undefined ? { examples } : {})
  }
  writeFileAtomic(path.join(runDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n')
  writeReport(path.join(runDir, 'report.html'), records, {
    config,
    evaluations,
    scores: { oldCode, before: summaryBefore, ...(summaryWarm ? { afterWarmStart: summaryWarm } : {}), after },
    examples,
    title: `recode ${config.algorithm} run`,
    facts: {
      algorithm: config.algorithm,
      data: data.source,
      steps: step,
      'held-out before (ES*)': summaryBefore.esStar.toFixed(3),
      'held-out after (ES*)': after.esStar.toFixed(3)
    }
  })
  return { runDir, summary, checkpoint: ckDir, modelDir }
}

/** The run's held-out evaluations in step order: before, those recorded in the metrics, after. */
function evaluationPoints(
  records: StepMetrics[],
  before: HeldOutScores,
  after: HeldOutScores,
  lastStep: number,
  warmSteps: number
): EvaluationPoint[] {
  const point = (
    step: number,
    label: EvaluationPoint['label'],
    s: { formatRate?: number; esStar?: number; exactMatch?: number }
  ): EvaluationPoint => ({
    step,
    label,
    formatRate: s.formatRate ?? NaN,
    esStar: s.esStar ?? NaN,
    exactMatch: s.exactMatch ?? NaN
  })
  const out = [point(0, 'before', before)]
  for (const r of records)
    if (r.eval !== undefined && r.step < lastStep)
      out.push(point(r.step, r.step === warmSteps && warmSteps > 0 ? 'after-warm-start' : 'periodic', r.eval))
  out.push(point(lastStep, 'after', after))
  return out
}

// ---- SFT ----------------------------------------------------------------------------------------------

async function sftStep(
  ctx: RunContext,
  stage: TrainStage,
  step: number,
  stageSteps: number,
  stageStep: number,
  cursor: DataCursor,
  usable: number[],
  promptIds: number[][],
  eosId: number
): Promise<StepMetrics> {
  const { config, model, trainer, signal } = ctx
  const t0 = performance.now()
  const rows = cursor.next(config.promptsPerStep).map((k) => usable[k])
  const seqs: Sequence[] = rows.map((i) => {
    const completion = model.tokenizer.encode(sftCompletion(ctx.data.train[i])).slice(0, config.maxCompletionTokens - 1)
    return { tokens: [...promptIds[i], ...completion, eosId], promptLength: promptIds[i].length }
  })
  const targetTokens = seqs.reduce((a, s) => a + s.tokens.length - s.promptLength, 0)
  const micro = Math.max(1, Math.floor(config.promptsPerStep / config.gradAccumulation)) // RL configs may accumulate finer than a prompt
  const dp = dataParallel(ctx.world, trainer)
  // one loss per micro-batch, summed in order whichever rank computed it
  const losses = new Float64Array(Math.ceil(seqs.length / micro))
  for (let m = 0; m < seqs.length; m += micro) {
    if (dp !== undefined && Math.floor(((m / micro) * dp.size) / config.gradAccumulation) !== dp.rank) continue
    const batch = seqs.slice(m, m + micro).map((s) => {
      const w = new Float32Array(s.tokens.length)
      for (let t = s.promptLength; t < s.tokens.length; t++) w[t] = 1 / targetTokens // mean NLL over every target token of the step
      return { tokens: s.tokens, weights: w }
    })
    if (dp !== undefined) await trainer.setForwardIndex(m / micro)
    losses[m / micro] = (await trainer.step(batch, { signal })).loss
  }
  dp?.allreduce(losses)
  let loss = 0
  for (const l of losses) loss += l
  await dp?.reduceGradients()
  const t1 = performance.now()
  const lr = learningRateAt(
    {
      kind: stage === 'warm-start' ? 'constant' : config.schedule,
      learningRate: stage === 'warm-start' ? (config.warmStartLearningRate ?? config.learningRate) : config.learningRate,
      totalSteps: stageSteps,
      warmupSteps: stage === 'warm-start' ? Math.min(10, stageSteps - 1) : config.warmupSteps,
      warmupRatio: stage === 'warm-start' ? null : config.warmupRatio,
      minLrRatio: config.minLrRatio
    },
    stageStep
  )
  const gradNorm = await trainer.applyAdamW({
    lr,
    beta1: config.adamBeta1,
    beta2: config.adamBeta2,
    eps: config.adamEps,
    weightDecay: config.weightDecay,
    maxGradNorm: config.gradClip
  })
  const t2 = performance.now()
  const tokens = seqs.reduce((a, s) => a + s.tokens.length, 0)
  return {
    step,
    lr,
    loss,
    gradNorm,
    tokensPerSecond: tokens / ((t2 - t0) / 1000),
    responseLength: targetTokens / seqs.length,
    phaseSeconds: { backward: (t1 - t0) / 1000, optimizer: (t2 - t1) / 1000 }
  }
}

// ---- GRPO / DAPO --------------------------------------------------------------------------------------

/** One RL step: rollouts (rollout.ts), then the policy update on them (policyUpdate.ts). */
async function rlStep(ctx: RunContext, step: number, prompts: PromptSource, baseWeights: Weights | undefined): Promise<StepMetrics> {
  const { config, model, trainer, signal, options, emit } = ctx
  const tStart = performance.now()
  const batch = await rollout(model, config, step, prompts, {
    ...(ctx.world.size > 1 ? { world: ctx.world } : {}),
    rewardFunction: options.rewardFunction,
    python: options.python,
    signal,
    onProgress: (p) => emit({ type: 'progress', what: 'generating', done: p.done, total: p.total })
  })
  const record: StepMetrics = { step, ...batch.metrics }
  const lr = learningRateAt(
    {
      kind: config.schedule,
      learningRate: config.learningRate,
      totalSteps: config.steps,
      warmupSteps: config.warmupSteps,
      warmupRatio: config.warmupRatio,
      minLrRatio: config.minLrRatio
    },
    step
  )
  record.lr = lr
  if (batch.sequences.length === 0) {
    // Every group had equal rewards in every draw: no gradient this step.
    record.skipped = true
    record.phaseSeconds = { ...batch.seconds, logprobs: 0, backward: 0, optimizer: 0 }
    return record
  }
  const { seconds, ...update } = await policyUpdate(trainer, config, batch, {
    lr,
    baseWeights,
    signal,
    dataParallel: dataParallel(ctx.world, trainer)
  })
  Object.assign(record, update, { stepSeconds: (performance.now() - tStart) / 1000, phaseSeconds: { ...batch.seconds, ...seconds } })
  return record
}
