/**
 * Training of a CPU model (src/model/train_step.cpp): the native side keeps float32 master weights, gradients
 * and AdamW moments for every parameter (full fine-tuning) or for LoRA / DoRA adapters over a frozen base. A step is ONE native async job: forward with every
 * layer's activations kept, next-token log-probabilities, backward through all layers and the embedding,
 * gradients added into the native buffers. `applyAdamW` clips by global norm, updates the weights in place
 * (re-packing the inference GEMM's weights) and zeroes the gradients.
 *
 * The loss is caller-weighted: loss = -sum_t weights[t] * logp[t], so the weights are minus the gradient with
 * respect to each target token's log-probability (SFT: 1/N on the target tokens; RL losses supply theirs).
 * logp and weights are aligned with the tokens: entry t is token t predicted from tokens 0..t-1; entry 0 of
 * every sequence has no prediction (logp 0, weight must be 0).
 *
 * After an update the model's KV-cache slots hold keys/values of the old weights: generation resets the slots
 * it uses, but a caller driving `step()` slots by hand should reset them.
 */
import { cancelFlag, throwIfAborted } from '../abort'
import * as fs from 'fs'
import { RecodeError, invalidArg, optionsArg } from '../errors'
import { native } from '../native'
import { tensorToFloat32 } from '../safetensors'
import { loadAdapter, saveAdapter, type AdapterLayerWeights } from '../train/checkpoint'
import type { Model } from './index'

export interface TrainSequence {
  tokens: ArrayLike<number>
  /** One weight per token (weights[0] must be 0); loss = -sum weights[t] * logp[t]. */
  weights: ArrayLike<number>
}

export interface TrainStepResult {
  /** Per sequence, log p(token t | tokens < t) for t >= 1 (entry 0 is 0). */
  logp: Float32Array[]
  loss: number
}

export interface AdamWOptions {
  lr: number
  beta1?: number
  beta2?: number
  eps?: number
  weightDecay?: number
  /** Clip the global gradient norm to this (omit, 0 or Infinity: no clipping). */
  maxGradNorm?: number
}

export interface ParameterGradient {
  name: string
  shape: number[]
  grad: Float32Array
}

export interface TrainerState {
  stepsTaken: number
  tensors: Array<{ name: string; shape: number[]; data: Float32Array; expAvg: Float32Array; expAvgSq: Float32Array; decay: boolean }>
}

/**
 * LoRA / DoRA adapters on the given projections of every decoder layer (PEFT's formulas, src/train/adapters.h): the base
 * weights, norms and embeddings are frozen and the trainable tensors are the adapters', under PEFT's saved names
 * (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, `...lora_B.weight`,
 * `...lora_magnitude_vector`). A starts as PEFT's kaiming-uniform draw (from `seed`), B = 0, m = ||W|| per row,
 * so a fresh adapter leaves the model unchanged. Generation runs the merged weights.
 */
export interface TrainerAdapterOptions {
  type: 'lora' | 'dora'
  r: number
  alpha: number
  /** Dropout on the adapter's input in training forwards (default 0). */
  dropout?: number
  /** Initialisation and dropout stream (default 0). */
  seed?: number
  targetModules: string[]
}

/** Trains a model: every parameter (full fine-tuning) or LoRA / DoRA adapters over the frozen base. */
export class ModelTrainer {
  private handle: unknown
  private lock: Promise<void> = Promise.resolve()
  private pendingCounts: number[] | undefined
  /** The adapter this trainer trains, or undefined for full fine-tuning. */
  readonly adapter: TrainerAdapterOptions | undefined

  /**
   * The model must be loaded on the cpu device. Without `adapter` every parameter is trained. With
   * `activationRecomputation` forwards keep only each layer's input and the backward recomputes one layer at a time
   * (the same gradients, bit for bit, for about one more forward of compute).
   */
  constructor(model: Model, options: { adapter?: TrainerAdapterOptions; activationRecomputation?: boolean } = {}) {
    // the model's native handle (private to Model; the trainer shares its backend)
    if (model === null || typeof model !== 'object')
      throw invalidArg(`ModelTrainer: model must be a loaded Model, got ${model === null ? 'null' : typeof model}`)
    options = optionsArg(options, 'ModelTrainer')
    const modelHandle = (model as unknown as { handle: unknown }).handle
    if (modelHandle === undefined) throw invalidArg('ModelTrainer: the model was disposed')
    const adapter = options.adapter
    if (adapter !== undefined && (adapter === null || typeof adapter !== 'object' || !Array.isArray(adapter.targetModules)))
      throw invalidArg('ModelTrainer: options.adapter must be an object { type, r, alpha, targetModules: string[] }')
    this.adapter = adapter === undefined ? undefined : { dropout: 0, seed: 0, ...adapter, targetModules: [...adapter.targetModules] }
    this.handle = native().trainerCreate(modelHandle, {
      ...(this.adapter === undefined ? {} : { adapter: this.adapter }),
      activationRecomputation: options.activationRecomputation ?? false
    })
  }

  /**
   * Adapters off: forwards and generation compute the frozen base model (the KL reference policy, without a
   * second copy of the weights); on again: the adapted model. Drops a pending forward. No effect without adapters.
   */
  async setAdaptersEnabled(enabled: boolean): Promise<void> {
    await this.exclusive(() => {
      this.pendingCounts = undefined
      native().trainerSetAdaptersEnabled(this.live(), enabled)
    })
  }

  /**
   * The adapted projections merged into their base weights (Hugging Face names, [out, in]), as PEFT's
   * merge_and_unload computes them: with the rest of the base model they make a plain model folder.
   */
  async mergedWeights(): Promise<Array<{ name: string; shape: number[]; data: Float32Array }>> {
    return await this.exclusive(() => {
      const out: Array<{ name: string; shape: number[]; data: Float32Array }> = []
      for (let i = 0; ; i++) {
        const w = native().trainerMergedWeight(this.live(), i) as { name: string; shape: number[]; data: Float32Array } | undefined
        if (w === undefined) return out
        out.push(w)
      }
    })
  }

  private live(): unknown {
    if (this.handle === undefined) throw invalidArg('ModelTrainer: the trainer was disposed')
    return this.handle
  }

  private async exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const prev = this.lock
    let release!: () => void
    this.lock = new Promise<void>((resolve) => {
      release = resolve
    })
    await prev
    try {
      return await fn()
    } finally {
      release()
    }
  }

  /**
   * Writes the adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors, PEFT's names), to a
   * temporary name then renamed. `baseModel` becomes base_model_name_or_path.
   */
  async saveAdapter(dir: string, options: { baseModel?: string } = {}): Promise<void> {
    if (typeof dir !== 'string' || dir === '')
      throw invalidArg(`ModelTrainer.saveAdapter: dir must be a non-empty string, got ${dir === null ? 'null' : typeof dir}`)
    options = optionsArg(options, 'ModelTrainer.saveAdapter')
    const a = this.adapter
    if (a === undefined) throw invalidArg('ModelTrainer.saveAdapter: this trainer has no adapter (full fine-tuning)')
    const layers = new Map<string, AdapterLayerWeights>()
    for (const p of await this.parameters()) {
      const m = /^base_model\.model\.(.+)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$/.exec(p.name)
      if (m === null) throw new RecodeError('ERR_INVALID_ARG', `adapter tensor ${p.name} does not have a PEFT name`)
      const l = layers.get(m[1]) ?? { module: m[1], inFeatures: 0, outFeatures: 0, loraA: new Float32Array(0), loraB: new Float32Array(0) }
      if (m[2] === 'lora_A.weight') {
        l.loraA = p.data
        l.inFeatures = p.shape[1]
      } else if (m[2] === 'lora_B.weight') {
        l.loraB = p.data
        l.outFeatures = p.shape[0]
      } else l.magnitude = p.data
      layers.set(m[1], l)
    }
    const tmp = `${dir}.tmp`
    fs.rmSync(tmp, { recursive: true, force: true })
    saveAdapter(
      tmp,
      { type: a.type, r: a.r, alpha: a.alpha, dropout: a.dropout ?? 0, targetModules: a.targetModules, baseModel: options.baseModel ?? '' },
      [...layers.values()]
    )
    fs.rmSync(dir, { recursive: true, force: true })
    fs.renameSync(tmp, dir)
  }

  /**
   * Loads a PEFT adapter folder into this trainer's adapter (to continue training it or to evaluate it): its type,
   * rank, alpha and target modules must be this trainer's, and it must hold exactly this trainer's tensors.
   * Errors name the folder and the field; nothing changes unless everything matches.
   */
  async loadAdapter(dir: string): Promise<void> {
    const a = this.adapter
    if (a === undefined) throw invalidArg('ModelTrainer.loadAdapter: this trainer has no adapter (full fine-tuning)')
    const { spec, tensors } = loadAdapter(dir)
    const mismatch = (field: string, got: unknown, want: unknown): never => {
      throw new RecodeError(
        'ERR_MODEL',
        `${dir}: adapter_config.json ${field} is ${JSON.stringify(got)}, this trainer's adapter has ${JSON.stringify(want)}`
      )
    }
    if (spec.type !== a.type) mismatch('use_dora', spec.type === 'dora', a.type === 'dora')
    if (spec.r !== a.r) mismatch('r', spec.r, a.r)
    if (spec.alpha !== a.alpha) mismatch('lora_alpha', spec.alpha, a.alpha)
    if ([...spec.targetModules].sort().join() !== [...a.targetModules].sort().join())
      mismatch('target_modules', spec.targetModules, a.targetModules)
    const names = (await this.parameters()).map((p) => p.name)
    const extra = Object.keys(tensors).filter((k) => !names.includes(k))
    if (extra.length > 0)
      throw new RecodeError(
        'ERR_MODEL',
        `${dir}: adapter_model.safetensors holds ${extra[0]}, which is not a tensor of this trainer's adapter`
      )
    const missing = names.find((n) => tensors[n] === undefined)
    if (missing !== undefined) throw new RecodeError('ERR_MODEL', `${dir}: adapter_model.safetensors lacks ${missing}`)
    await this.setState({ tensors: names.map((name) => ({ name, data: tensorToFloat32(tensors[name]) })) })
  }

  /** Forward + backward over a batch, adding into the gradients. Honours `signal` between layers: an abort
   * during the forward leaves the gradients as they were; one during the backward zeroes them. */
  async step(batch: TrainSequence[], options: { signal?: AbortSignal } = {}): Promise<TrainStepResult> {
    if (!Array.isArray(batch) || batch.length === 0) throw invalidArg('ModelTrainer.step: batch must be a non-empty array')
    let total = 0
    for (const [i, s] of batch.entries()) {
      if (s == null || s.tokens == null || s.tokens.length === 0)
        throw invalidArg(`ModelTrainer.step: batch[${i}].tokens must be a non-empty array`)
      if (s.weights == null || s.weights.length !== s.tokens.length)
        throw invalidArg(`ModelTrainer.step: batch[${i}].weights must have one entry per token (${s.tokens.length})`)
      total += s.tokens.length
    }
    const counts = Int32Array.from(batch.map((s) => s.tokens.length))
    const tokens = new Int32Array(total)
    const weights = new Float32Array(total)
    let o = 0
    for (const [i, s] of batch.entries()) {
      for (let t = 0; t < s.tokens.length; t++) {
        const id = s.tokens[t]
        if (!Number.isInteger(id)) throw invalidArg(`ModelTrainer.step: batch[${i}].tokens[${t}] must be an integer, got ${id}`)
        tokens[o + t] = id
        weights[o + t] = s.weights[t]
      }
      o += s.tokens.length
    }
    return await this.exclusive(async () => {
      throwIfAborted(options.signal)
      const cancel = cancelFlag(options.signal)
      try {
        this.pendingCounts = undefined
        const r = (await native().trainerStep(this.live(), counts, tokens, weights, cancel.flag)) as { logp: Float32Array; loss: number }
        const logp: Float32Array[] = []
        let off = 0
        for (const n of counts) {
          logp.push(r.logp.slice(off, off + n))
          off += n
        }
        return { logp, loss: r.loss }
      } finally {
        cancel.dispose()
      }
    })
  }

  /**
   * The step in two calls, for losses whose weights depend on the current logp (PPO-style ratios over
   * several policy updates): forward() returns logp per sequence and keeps the activations (replacing any
   * pending forward); backward() takes one weight array per sequence, adds the gradients and returns the loss.
   * applyAdamW drops a pending forward (its activations belong to the old weights).
   */
  async forward(sequences: Array<ArrayLike<number>>, options: { signal?: AbortSignal } = {}): Promise<Float32Array[]> {
    if (!Array.isArray(sequences) || sequences.length === 0) throw invalidArg('ModelTrainer.forward: sequences must be a non-empty array')
    const counts = Int32Array.from(
      sequences.map((s, i) => {
        if (s == null || s.length === 0) throw invalidArg(`ModelTrainer.forward: sequences[${i}] must be a non-empty array`)
        return s.length
      })
    )
    const tokens = new Int32Array(counts.reduce((a, b) => a + b, 0))
    let o = 0
    for (const [i, s] of sequences.entries()) {
      for (let t = 0; t < s.length; t++) {
        if (!Number.isInteger(s[t])) throw invalidArg(`ModelTrainer.forward: sequences[${i}][${t}] must be an integer, got ${s[t]}`)
        tokens[o++] = s[t]
      }
    }
    return await this.exclusive(async () => {
      this.pendingCounts = undefined // a forward replaces (or, failing, drops) the pending one
      const cancel = cancelFlag(options.signal)
      try {
        const flat = (await native().trainerForward(this.live(), counts, tokens, cancel.flag)) as Float32Array
        this.pendingCounts = Array.from(counts)
        const out: Float32Array[] = []
        let off = 0
        for (const n of counts) {
          out.push(flat.slice(off, off + n))
          off += n
        }
        return out
      } finally {
        cancel.dispose()
      }
    })
  }

  async backward(weights: Array<ArrayLike<number>>, options: { signal?: AbortSignal } = {}): Promise<number> {
    return await this.exclusive(async () => {
      const counts = this.pendingCounts
      if (counts === undefined)
        throw invalidArg('ModelTrainer.backward: no pending forward (call forward first; each forward takes one backward)')
      if (!Array.isArray(weights) || weights.length !== counts.length)
        throw invalidArg(`ModelTrainer.backward: weights must hold one array per sequence of the forward (${counts.length})`)
      const flat = new Float32Array(counts.reduce((a, b) => a + b, 0))
      let o = 0
      for (const [i, w] of weights.entries()) {
        if (w == null || w.length !== counts[i])
          throw invalidArg(`ModelTrainer.backward: weights[${i}] must have one entry per token (${counts[i]})`)
        for (let t = 0; t < w.length; t++) flat[o++] = w[t]
      }
      const cancel = cancelFlag(options.signal)
      this.pendingCounts = undefined // the native side consumes the pending forward
      try {
        return (await native().trainerBackward(this.live(), flat, cancel.flag)) as number
      } finally {
        cancel.dispose()
      }
    })
  }

  /** Clip + AdamW + re-pack + zero the gradients; returns the gradient norm before clipping (a non-finite
   * norm skips the update). */
  async applyAdamW(options: AdamWOptions): Promise<number> {
    if (options == null || typeof options.lr !== 'number') throw invalidArg('applyAdamW: options.lr must be a number')
    const opts = {
      lr: options.lr,
      beta1: options.beta1 ?? 0.9,
      beta2: options.beta2 ?? 0.999,
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0,
      maxGradNorm: options.maxGradNorm ?? 0
    }
    return await this.exclusive(async () => {
      this.pendingCounts = undefined
      return (await native().trainerApplyAdamW(this.live(), opts)) as number
    })
  }

  /** Copies of the accumulated gradients of every parameter, by Hugging Face tensor name. */
  async gradients(): Promise<ParameterGradient[]> {
    return await this.exclusive(() => native().trainerGradients(this.live()) as ParameterGradient[])
  }

  /** Copies of the float32 master weights (Hugging Face names and shapes; `decay`: AdamW weight decay applies). */
  async parameters(): Promise<Array<{ name: string; shape: number[]; data: Float32Array; decay: boolean }>> {
    return await this.exclusive(
      () => native().trainerParameters(this.live()) as Array<{ name: string; shape: number[]; data: Float32Array; decay: boolean }>
    )
  }

  /** Copies of everything an exact resume needs: master weights, AdamW moments and the update count. */
  async state(): Promise<TrainerState> {
    return await this.exclusive(() => native().trainerState(this.live()) as TrainerState)
  }

  /**
   * Replaces master weights and/or moments of the named tensors (omitted arrays are kept) and the update count,
   * then re-packs the inference weights once. Every name and size is checked before anything changes.
   */
  async setState(state: {
    stepsTaken?: number
    tensors: Array<{ name: string; data?: Float32Array; expAvg?: Float32Array; expAvgSq?: Float32Array }>
  }): Promise<void> {
    await this.exclusive(() => {
      this.pendingCounts = undefined
      native().trainerSetState(this.live(), state)
    })
  }

  /**
   * Data parallelism: sums the accumulated gradients over the ranks in place, the same bits on every rank (cpu: over
   * MPI, reduce-scatter + all-gather; cuda / emulated: ncclAllReduce on the device, after initNccl). Blocks the main
   * thread; every rank must call it once per update.
   */
  async sumGradientsOverRanks(): Promise<void> {
    await this.exclusive(() => {
      native().trainerReduceGradients(this.live())
    })
  }

  /**
   * Data parallelism on the CUDA trainer: joins the NCCL communicator of `size` ranks named by rank 0's unique id
   * (lib/dist ncclUniqueId, shared by the launcher's bootstrap); sumGradientsOverRanks then sums the device gradients
   * with ncclAllReduce. Every rank calls it; it returns once all have joined.
   */
  async initNccl(uniqueId: Uint8Array, rank: number, size: number): Promise<void> {
    await this.exclusive(() => {
      native().trainerInitNccl(this.live(), uniqueId, rank, size)
    })
  }

  /**
   * Data parallelism: the next training forward draws adapter-dropout stream `index` of this update, the stream
   * the index-th forward of one process would draw (a rank starts at its first micro-batch's index).
   */
  async setForwardIndex(index: number): Promise<void> {
    await this.exclusive(() => {
      native().trainerSetForwardIndex(this.live(), index)
    })
  }

  /**
   * ZeRO-1 over the MPI ranks (full fine-tuning or adapters): each rank keeps the AdamW moments of its shard, and
   * applyAdamW reduce-scatters the gradients itself (do not also call sumGradientsOverRanks), updates the shard and
   * all-gathers the parameters -- the same bits as without it. state() then gathers the moments: every rank must call
   * it. Off gathers them back.
   */
  async setZero1(on: boolean): Promise<void> {
    await this.exclusive(() => {
      native().trainerSetZero1(this.live(), on)
    })
    this.zero1 = on
  }

  /** Whether ZeRO-1 shards this trainer's moments (setZero1). */
  zero1 = false

  async zeroGrad(): Promise<void> {
    await this.exclusive(() => {
      native().trainerZeroGrad(this.live())
    })
  }

  dispose(): void {
    if (this.handle !== undefined) native().trainerDispose(this.handle)
    this.handle = undefined
  }
}

/** Functional form: one AdamW update of the trainer's model (see ModelTrainer.applyAdamW). */
export async function applyAdamW(trainer: ModelTrainer, options: AdamWOptions): Promise<number> {
  return await trainer.applyAdamW(options)
}

/** @deprecated The former name of ModelTrainer (it trains adapters too, not only full models). */
export const FullFineTuner = ModelTrainer
/** @deprecated The former name of ModelTrainer. */
export type FullFineTuner = ModelTrainer
