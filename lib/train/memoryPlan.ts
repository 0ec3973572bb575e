/**
 * The device memory of a training run on a CUDA GPU, planned from the model's config.json alone (`recode plan`,
 * and `recode train` on 'cuda' before it loads anything). The figures come from running the native backend's and
 * trainer's own allocation code on the counting device (src/device/memory_count.h: fake addresses, nothing
 * computed), with the workload lib/train runs: the model with its KV cache, the trainer, a generation step that
 * prefills every slot at once, and one policy update on a micro-batch of the longest sequences.
 */
import * as fs from 'fs'
import * as path from 'path'
import { RecodeError } from '../errors'
import { native } from '../native'
import { parseModelConfig, readJsonFile, type NativeModelConfig } from '../model/config'
import type { TrainConfig } from './config'

/** Bytes by category: what each part of the run holds on the device at the phase's peak. */
export interface MemoryParts {
  /** The model's weights (the inference backend's arrays). */
  weights: number
  /** Trained tensors and their gradients (adapters: A, B, m, their compute copies and DoRA's row norms). */
  trainable: number
  /** AdamW moments (and the fp32 masters of a bf16 model under full fine-tuning); divided by nproc under ZeRO-1. */
  optimizer: number
  kvCache: number
  /** The inference backend's per-step buffers (activations of a prefill step, logits; an adapter trainer's scratch for running the adapters in generation). */
  generation: number
  /** The trainer's activations kept for the backward. */
  activations: number
  /** The log-prob head's chunked workspace. */
  logprob: number
  /** Backward scratch and the rest. */
  scratch: number
}

export interface PhasePlan {
  peakBytes: number
  parts: MemoryParts
}

export interface MemoryPlan {
  /** The larger of the two phases' peaks, per GPU. */
  peakBytes: number
  fits: boolean
  gpuMemoryBytes: number
  nproc: number
  /** The phase whose peak is peakBytes. */
  peakPhase: 'generation' | 'training'
  /** The parts at peakBytes. */
  parts: MemoryParts
  generation: PhasePlan
  /** Training includes what generation leaves allocated (the backend keeps its buffers). */
  training: PhasePlan
  /** The shapes planned for. */
  workload: {
    dtype: 'bf16' | 'f32'
    slots: number
    context: number
    prefillChunk: number
    promptTokens: number
    completionTokens: number
    microRows: number
    referencePass: boolean
    activationRecomputation: boolean
    adapter: string
  }
  notes: string[]
}

export interface PlanOptions {
  /** Device memory per GPU in GiB (default 80). */
  gpuMemoryGiB?: number
  /** Processes (GPUs) of a data-parallel run: the optimizer state is planned as sharded over them (ZeRO-1). */
  nproc?: number
  /** Prefill chunk of generation (lib/model loadModel's default 512). */
  prefillChunk?: number
}

/** config.json of a model folder, or a config.json file itself. */
export function readModelConfigFor(model: string): NativeModelConfig {
  let file = model
  try {
    if (fs.statSync(model).isDirectory()) file = path.join(model, 'config.json')
  } catch {
    throw new RecodeError('ERR_CONFIG', `plan: --model ${JSON.stringify(model)} is neither a model folder nor a config.json file`)
  }
  return parseModelConfig(readJsonFile(file), file)
}

/** The native workload options for a run of `config` (the shapes lib/train/trainer.ts loads the model with). */
export function planWorkload(config: TrainConfig, prefillChunk = 512): MemoryPlan['workload'] {
  return {
    dtype: config.computeDtype === 'bf16' ? 'bf16' : 'f32',
    slots: Math.min(64, config.promptsPerStep * config.samplesPerPrompt),
    context: config.maxPromptTokens + config.maxCompletionTokens,
    prefillChunk,
    promptTokens: config.maxPromptTokens,
    completionTokens: config.maxCompletionTokens,
    microRows: (config.promptsPerStep * config.samplesPerPrompt) / config.gradAccumulation,
    referencePass: config.klCoef > 0,
    activationRecomputation: config.activationRecomputation,
    adapter:
      config.adapter.type === 'none' ? 'none' : `${config.adapter.type} r=${config.adapter.r} on ${config.adapter.targetModules.join(',')}`
  }
}

const PART_NAMES: Array<keyof MemoryParts> = [
  'weights',
  'trainable',
  'optimizer',
  'kvCache',
  'generation',
  'activations',
  'logprob',
  'scratch'
]

/** Plans `config`'s run of the model `modelConfig` on `options.nproc` GPUs of `options.gpuMemoryGiB` each. */
export function planMemory(modelConfig: NativeModelConfig, config: TrainConfig, options: PlanOptions = {}): MemoryPlan {
  const gib = options.gpuMemoryGiB ?? 80
  if (!(gib > 0 && Number.isFinite(gib)))
    throw new RecodeError('ERR_CONFIG', `plan: --gpu-memory must be a positive number of GiB, got ${String(options.gpuMemoryGiB)}`)
  const nproc = options.nproc ?? 1
  if (!Number.isInteger(nproc) || nproc < 1)
    throw new RecodeError('ERR_CONFIG', `plan: --nproc must be a positive integer, got ${String(options.nproc)}`)
  const workload = planWorkload(config, options.prefillChunk)
  const a = config.adapter
  let raw: { generation: PhasePlan; training: PhasePlan }
  try {
    raw = native().memoryPlan(modelConfig, {
      device: 'counting',
      bf16: workload.dtype === 'bf16',
      slots: workload.slots,
      context: workload.context,
      prefillChunk: workload.prefillChunk,
      promptTokens: workload.promptTokens,
      completionTokens: workload.completionTokens,
      microRows: workload.microRows,
      referencePass: workload.referencePass,
      activationRecomputation: workload.activationRecomputation,
      ...(a.type === 'none'
        ? {}
        : { adapter: { type: a.type, r: a.r, alpha: a.alpha, dropout: a.dropout, targetModules: a.targetModules, seed: config.seed } })
    })
  } catch (err) {
    const e = err as RecodeError
    throw new RecodeError(e.code ?? 'ERR_UNSUPPORTED', `plan: the CUDA trainer cannot run this configuration: ${e.message}`)
  }
  // ZeRO-1: each process keeps 1/nproc of the optimizer state (the rest of the plan is per process as it is)
  const shard = (p: PhasePlan): PhasePlan => {
    const parts = { ...p.parts }
    const kept = Math.ceil(parts.optimizer / nproc)
    const peakBytes = p.peakBytes - parts.optimizer + kept
    parts.optimizer = kept
    return { peakBytes, parts }
  }
  const generation = shard(raw.generation)
  const training = shard(raw.training)
  const peakPhase = training.peakBytes >= generation.peakBytes ? 'training' : 'generation'
  const top = peakPhase === 'training' ? training : generation
  const gpuMemoryBytes = Math.round(gib * 2 ** 30)
  const notes = [
    'Counted: every allocation of the CUDA backend and trainer (requested sizes); not counted: the CUDA context and allocator rounding (about 0.5-1 GiB on a GPU).'
  ]
  if (nproc > 1) notes.push(`ZeRO-1 over ${nproc} processes: the optimizer state is planned as its bytes / ${nproc} per process.`)
  return {
    peakBytes: top.peakBytes,
    fits: top.peakBytes <= gpuMemoryBytes,
    gpuMemoryBytes,
    nproc,
    peakPhase,
    parts: top.parts,
    generation,
    training,
    workload,
    notes
  }
}

const gb = (b: number): string => `${(b / 2 ** 30).toFixed(2)} GiB`

/** The plan as the lines `recode plan` prints. */
export function formatPlan(plan: MemoryPlan): string {
  const w = plan.workload
  const lines = [
    `workload: ${w.dtype}, ${w.slots} slots x ${w.context} tokens, prefill chunk ${w.prefillChunk}, training micro-batch ${w.microRows} x ${w.promptTokens + w.completionTokens} tokens` +
      `${w.referencePass ? ', KL reference pass' : ''}${w.activationRecomputation ? ', activation recomputation' : ''}, adapter ${w.adapter}`,
    `${'part'.padEnd(12)} ${'generation'.padStart(12)} ${'training'.padStart(12)}`
  ]
  for (const k of PART_NAMES)
    lines.push(`${k.padEnd(12)} ${gb(plan.generation.parts[k]).padStart(12)} ${gb(plan.training.parts[k]).padStart(12)}`)
  lines.push(`${'peak'.padEnd(12)} ${gb(plan.generation.peakBytes).padStart(12)} ${gb(plan.training.peakBytes).padStart(12)}`)
  lines.push(
    `peak ${gb(plan.peakBytes)} (${plan.peakPhase}) per GPU of ${gb(plan.gpuMemoryBytes)}${plan.nproc > 1 ? ` x ${plan.nproc}` : ''}: ${plan.fits ? 'fits' : 'DOES NOT FIT'}`
  )
  for (const n of plan.notes) lines.push(n)
  return lines.join('\n')
}

/**
 * `recode train` on 'cuda', before loading anything: plans the run for the first GPU's memory and refuses one
 * that cannot fit (ERR_OUT_OF_MEMORY, with the plan), rather than failing in cudaMalloc an hour into the run.
 */
export function refuseUnfittingCudaRun(modelDir: string, config: TrainConfig, gpuMemoryBytes: number): void {
  const plan = planMemory(readModelConfigFor(modelDir), config, { gpuMemoryGiB: gpuMemoryBytes / 2 ** 30 })
  if (!plan.fits) {
    throw new RecodeError(
      'ERR_OUT_OF_MEMORY',
      `this run needs ${gb(plan.peakBytes)} of device memory at its peak; the GPU has ${gb(gpuMemoryBytes)}. ` +
        `Lower maxPromptTokens / maxCompletionTokens / promptsPerStep, raise gradAccumulation, or use adapters.\n${formatPlan(plan)}`
    )
  }
}
