/**
 * The demo base model: a small Qwen2-architecture code model pre-trained here, deterministically, on the corpus of
 * lib/demo/corpus.ts (nova's old API, plain Python, code-editing instructions; no update notes, none of the held-out
 * updates' new names). It stands for the paper's starting point: a code model that can copy and edit code and knows
 * the library as it was. The package ships the result (`models/nova-base`, bf16); `npm run demo-base` rebuilds it.
 *
 * Determinism: the documents, the tokenizer, the initial weights and the batches follow from the options; the CPU
 * trainer's sums do not depend on the thread count (src/model: fixed reduction order), so a given build of the
 * addon gives the same weights. `digest` hashes the weights, which a test compares after the first steps.
 */
import { createHash } from 'crypto'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { makeDir } from '../atomicFile'
import { fromBf16, toBf16 } from '../dtype'
import { throwIfAborted } from '../abort'
import { RecodeError } from '../errors'
import { loadModel } from '../model/index'
import { initModel } from '../model/init'
import { ModelTrainer } from '../model/train'
import { buildMessages, RECODE_TRAIN_PROMPT, renderPrompt } from '../prompts'
import { CHATML_TEMPLATE } from '../model/init'
import { writeSafetensors, type TensorData } from '../safetensors'
import { learningRateAt } from '../train/schedule'
import { corpusContext, corpusDocument, namePieces, tokenStrings, type CorpusDocument } from './corpus'

export interface DemoBaseOptions {
  /** Output folder (must be empty unless force). */
  out: string
  force?: boolean
  /** Stage 1: optimizer steps and peak learning rate (cosine), on the corpus mix with 60% editing tasks. */
  steps?: number
  learningRate?: number
  /** Stage 2 (0 steps: none): more steps on a mix richer in editing tasks, from stage 1's weights rounded to bf16
   * with a fresh optimizer (so that stage 2 can also start from a stage-1 folder: fromStage 2, initFrom DIR). */
  stage2Steps?: number
  stage2LearningRate?: number
  stage2EditShare?: number
  /** Stage 3 (0 steps: none): a mix with API edits of nova calls (corpus.ts apiEditTask: each update kind's change,
   * new names made up, asked for in words that are not an update note's), from stage 2 rounded to bf16 with a fresh
   * optimizer. */
  stage3Steps?: number
  stage3LearningRate?: number
  /** Stage 4 (0 steps: none): stage 3's mix again from stage 3's first document, at a lower rate (a second pass
   * that settles the API edits), from stage 3 rounded to bf16 with a fresh optimizer. */
  stage4Steps?: number
  stage4LearningRate?: number
  /** Stage 5 (0 steps: none): copying drills (corpus.ts copyDocument: repeat a list of names made of the
   * tokenizer's pieces), from stage 4 rounded to bf16 with a fresh optimizer. `stage5CopyShare` below 1 mixes in
   * stage 7's kind of documents. Copying a name never seen is what a held-out rename takes; mixed in at 30-50% from the start
   * it did not appear in 900-1,200 steps, on drills alone it does, at the cost of the editing skill (stage 6). */
  stage5Steps?: number
  stage5LearningRate?: number
  stage5CopyShare?: number
  /** Stage 6 (0 steps: none): stage 3's mix of API edits with copying drills mixed in (`stage6CopyShare` of the
   * documents), from stage 5 rounded to bf16 with a fresh optimizer: the editing skill relearned with copying kept. */
  stage6Steps?: number
  stage6LearningRate?: number
  stage6CopyShare?: number
  /** Stage 7 (0 steps: none): API edits named from the tokenizer's pieces, also asked for as changelog entries but
   * never as a note of the data, renamed variables, varied prompt wording (corpusDocument 'varied'), with
   * `stage7CopyShare` drills, from stage 6 rounded to bf16 with a fresh optimizer. */
  stage7Steps?: number
  stage7LearningRate?: number
  stage7CopyShare?: number
  /** Stage 8 (0 steps: none): stage 7's mix with `stage8NewNameShare` of its API edits of the kinds that write a new
   * name (renamed functions and arguments, moved modules, replacements), from stage 7 rounded to bf16 with a fresh
   * optimizer: copying a name from the request into the code, the skill those held-out kinds need. */
  stage8Steps?: number
  stage8LearningRate?: number
  stage8CopyShare?: number
  stage8NewNameShare?: number
  /** Documents per step. */
  batch?: number
  /** Start at this stage (1 to 8) from the folder `initFrom` (the previous stage's output). */
  fromStage?: number
  initFrom?: string
  seed?: number
  /** Model shape (defaults: hidden 192, 4 layers, intermediate 512, 1500 BPE merges). */
  hidden?: number
  layers?: number
  intermediate?: number
  merges?: number
  /** Longest document in tokens (longer ones are cut). */
  maxTokens?: number
  /** Also write the model every this many steps to `<out>.step-<n>` (to look at a run before it ends). */
  snapshotEvery?: number
  /** Stop after this many steps of the schedule and write nothing (the determinism test): returns the digest only. */
  stopAfter?: number
  signal?: AbortSignal
  onProgress?: (p: { stage: number; step: number; steps: number; loss: number; lr: number; tokensPerSecond: number }) => void
}

export const DEMO_BASE_DEFAULTS = {
  steps: 1100,
  learningRate: 3e-3,
  stage2Steps: 1000,
  stage2LearningRate: 1.5e-3,
  stage2EditShare: 0.9,
  // README (The demo base model) has what each stage does to the held-out migrations and to copying.
  stage3Steps: 600,
  stage3LearningRate: 5e-4,
  stage4Steps: 1500,
  stage4LearningRate: 4e-4,
  stage5Steps: 1000,
  stage5LearningRate: 1.5e-3,
  stage5CopyShare: 1,
  stage6Steps: 800,
  stage6LearningRate: 5e-4,
  stage6CopyShare: 0.2,
  stage7Steps: 600,
  stage7LearningRate: 5e-4,
  stage7CopyShare: 0.2,
  stage8Steps: 1000,
  stage8LearningRate: 5e-4,
  stage8CopyShare: 0.2,
  stage8NewNameShare: 0.6,
  batch: 16,
  seed: 7,
  hidden: 192,
  layers: 4,
  intermediate: 512,
  merges: 1500,
  maxTokens: 384
}

/** Text the tokenizer's merges are learned from: corpus documents plus ReCode's fixed prompt text (no notes). */
function tokenizerCorpus(docs: CorpusDocument[]): string {
  const template = renderPrompt(
    buildMessages(RECODE_TRAIN_PROMPT, { dependency: 'nova', version: '2.0.0', update_info: '', old_code: '' }),
    CHATML_TEMPLATE
  )
  return [template, template, ...docs.map((d) => d.text)].join('\n')
}

/** sha256 of the weights (names, shapes and float32 bits, in order). */
export function weightsDigest(weights: Array<{ name: string; shape: number[]; data: Float32Array }>): string {
  const h = createHash('sha256')
  for (const w of weights) {
    h.update(`${w.name}:${w.shape.join('x')};`)
    h.update(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength))
  }
  return h.digest('hex')
}

function recipeOf(o: DemoBaseOptions & typeof DEMO_BASE_DEFAULTS): Record<string, unknown> {
  const {
    out: _out,
    signal: _signal,
    onProgress: _onProgress,
    force: _force,
    stopAfter: _stop,
    snapshotEvery: _snap,
    fromStage: _from,
    initFrom: _init,
    ...recipe
  } = o
  return recipe
}

/** A Hugging Face folder: initModel's config and tokenizer files, the weights in bf16, the recipe in the metadata. */
function writeFolder(
  initDir: string,
  out: string,
  weights: Array<{ name: string; shape: number[]; data: Float32Array }>,
  recipe: Record<string, unknown>
): void {
  const tmpOut = `${out}.tmp`
  fs.rmSync(tmpOut, { recursive: true, force: true })
  makeDir(tmpOut, 'demo base')
  for (const f of fs.readdirSync(initDir)) if (!f.endsWith('.safetensors')) fs.copyFileSync(path.join(initDir, f), path.join(tmpOut, f))
  const cfgPath = path.join(tmpOut, 'config.json')
  const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8')) as Record<string, unknown>
  cfg.torch_dtype = 'bfloat16'
  fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 2) + '\n')
  const tensors: Record<string, TensorData> = {}
  for (const w of weights) tensors[w.name] = { dtype: 'BF16', shape: w.shape, data: toBf16(w.data) }
  writeSafetensors(path.join(tmpOut, 'model.safetensors'), tensors, { format: 'pt', recode_demo_base: JSON.stringify(recipe) })
  fs.rmSync(out, { recursive: true, force: true })
  fs.renameSync(tmpOut, out)
}

export async function makeDemoBase(
  options: DemoBaseOptions
): Promise<{ dir: string; digest: string; parameters: number; seconds: number }> {
  const o = { ...DEMO_BASE_DEFAULTS, ...options }
  for (const k of ['steps', 'batch', 'hidden', 'layers', 'intermediate', 'merges', 'maxTokens'] as const)
    if (!Number.isInteger(o[k]) || o[k] < 1)
      throw new RecodeError('ERR_INVALID_ARG', `demo base: ${k} must be a positive integer, got ${String(o[k])}`)
  for (const k of ['stage2Steps', 'stage3Steps', 'stage4Steps', 'stage5Steps', 'stage6Steps', 'stage7Steps', 'stage8Steps'] as const)
    if (!Number.isInteger(o[k]) || o[k] < 0)
      throw new RecodeError('ERR_INVALID_ARG', `demo base: ${k} must be a non-negative integer, got ${String(o[k])}`)
  for (const k of [
    'learningRate',
    'stage2LearningRate',
    'stage3LearningRate',
    'stage4LearningRate',
    'stage5LearningRate',
    'stage6LearningRate',
    'stage7LearningRate',
    'stage8LearningRate'
  ] as const)
    if (!(o[k] > 0)) throw new RecodeError('ERR_INVALID_ARG', `demo base: ${k} must be positive, got ${String(o[k])}`)
  for (const k of [
    'stage2EditShare',
    'stage5CopyShare',
    'stage6CopyShare',
    'stage7CopyShare',
    'stage8CopyShare',
    'stage8NewNameShare'
  ] as const)
    if (!(o[k] >= 0 && o[k] <= 1)) throw new RecodeError('ERR_INVALID_ARG', `demo base: ${k} must be in [0, 1], got ${String(o[k])}`)
  const fromStage = o.fromStage ?? 1
  if (![1, 2, 3, 4, 5, 6, 7, 8].includes(fromStage))
    throw new RecodeError('ERR_INVALID_ARG', `demo base: fromStage must be 1 to 8, got ${String(fromStage)}`)
  if (fromStage > 1 && o.initFrom === undefined)
    throw new RecodeError('ERR_INVALID_ARG', `demo base: fromStage ${fromStage} needs initFrom (the previous stage's folder)`)
  const started = performance.now()
  if (o.stopAfter === undefined && fs.existsSync(o.out) && fs.readdirSync(o.out).length > 0 && !o.force)
    throw new RecodeError('ERR_OUTPUT_EXISTS', `demo base: ${o.out} is not empty; pass --force to overwrite`)
  const ctx = corpusContext({ seed: o.seed })
  // Each stage's documents follow the previous stages' (stage 4 repeats stage 3's from its first one), so that a
  // run started at a later stage from a folder sees the documents a full run would.
  const stages: Array<{
    stage: number
    steps: number
    learningRate: number
    editShare: number
    warmupSteps: number
    apiEdits?: boolean | 'varied'
    copyShare?: number
    newNameShare?: number
    firstDoc: number
  }> = []
  let nextDoc = 0
  let stage3First = 0
  for (const st of [
    { stage: 1, steps: o.steps, learningRate: o.learningRate, editShare: 0.6, warmupSteps: 200 },
    { stage: 2, steps: o.stage2Steps, learningRate: o.stage2LearningRate, editShare: o.stage2EditShare, warmupSteps: 50 },
    { stage: 3, steps: o.stage3Steps, learningRate: o.stage3LearningRate, editShare: 0.9, warmupSteps: 50, apiEdits: true },
    { stage: 4, steps: o.stage4Steps, learningRate: o.stage4LearningRate, editShare: 0.9, warmupSteps: 50, apiEdits: true },
    {
      stage: 5,
      steps: o.stage5Steps,
      learningRate: o.stage5LearningRate,
      editShare: 0.9,
      warmupSteps: 50,
      apiEdits: 'varied' as const,
      copyShare: o.stage5CopyShare
    },
    {
      stage: 6,
      steps: o.stage6Steps,
      learningRate: o.stage6LearningRate,
      editShare: 0.9,
      warmupSteps: 50,
      apiEdits: true,
      copyShare: o.stage6CopyShare
    },
    {
      stage: 7,
      steps: o.stage7Steps,
      learningRate: o.stage7LearningRate,
      editShare: 0.9,
      warmupSteps: 50,
      apiEdits: 'varied' as const,
      copyShare: o.stage7CopyShare
    },
    {
      stage: 8,
      steps: o.stage8Steps,
      learningRate: o.stage8LearningRate,
      editShare: 0.9,
      warmupSteps: 50,
      apiEdits: 'varied' as const,
      copyShare: o.stage8CopyShare,
      newNameShare: o.stage8NewNameShare
    }
  ]) {
    const firstDoc = st.stage === 4 ? stage3First : nextDoc
    if (st.stage === 3) stage3First = firstDoc
    nextDoc = Math.max(nextDoc, firstDoc + st.steps * o.batch)
    if (st.steps > 0) stages.push({ ...st, firstDoc })
  }
  const tmpInit = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-demo-base-'))
  try {
    let parameters: number
    if (o.initFrom !== undefined) {
      for (const f of fs.readdirSync(o.initFrom)) fs.copyFileSync(path.join(o.initFrom, f), path.join(tmpInit, f))
      parameters = 0
    } else {
      const tokDocs: CorpusDocument[] = []
      for (let i = 0; i < 4000; i++) tokDocs.push(corpusDocument(1_000_000 + i, ctx))
      parameters = initModel({
        preset: 'small',
        arch: 'qwen2',
        out: tmpInit,
        force: true,
        seed: o.seed,
        tokenizerCorpus: tokenizerCorpus(tokDocs),
        merges: o.merges,
        hidden: o.hidden,
        layers: o.layers,
        intermediate: o.intermediate
      }).parameters
    }
    const model = await loadModel(tmpInit, { device: 'cpu', maxBatch: 1, maxContext: 2 })
    ctx.pieces = namePieces(tokenStrings(model.tokenizer))
    const trainer = new ModelTrainer(model)
    try {
      const params = await trainer.parameters()
      if (o.initFrom === undefined) {
        // initModel's weights have unit-variance embeddings and fan-in scaled projections; scale the output
        // projections down with depth (as GPT-2 does) so the residual stream starts small and the first steps are stable.
        await trainer.setState({
          stepsTaken: 0,
          tensors: params.map((p) => {
            const data = Float32Array.from(p.data)
            let s = 1
            if (p.name === 'model.embed_tokens.weight') s = 0.05
            else if (/o_proj\.weight|down_proj\.weight/.test(p.name)) s = 1 / Math.sqrt(2 * o.layers)
            else if (/proj\.bias$/.test(p.name)) s = 0
            else if (/norm\.weight$/.test(p.name)) {
              data.fill(1)
              s = 1
            }
            for (let i = 0; i < data.length; i++) data[i] *= s
            return { name: p.name, data, expAvg: new Float32Array(data.length), expAvgSq: new Float32Array(data.length) }
          })
        })
      }
      parameters ||= params.reduce((a, p) => a + p.data.length, 0)
      const tok = model.tokenizer
      let stepsRun = 0
      let previous: number | undefined // the stage trained before this one in this run
      const budget = o.stopAfter ?? Infinity
      for (const st of stages) {
        if (st.stage < fromStage) continue
        let docIndex = st.firstDoc
        if (previous !== undefined) {
          // stage boundary: the weights as a bf16 folder would hold them, a fresh optimizer
          const w = await trainer.parameters()
          await trainer.setState({
            stepsTaken: 0,
            tensors: w.map((p) => ({
              name: p.name,
              data: fromBf16(toBf16(p.data)),
              expAvg: new Float32Array(p.data.length),
              expAvgSq: new Float32Array(p.data.length)
            }))
          })
          if (o.snapshotEvery !== undefined)
            writeFolder(tmpInit, `${o.out}.stage-${previous}`, w, { ...recipeOf(o), stage: previous, digest: weightsDigest(w) })
        }
        previous = st.stage
        for (let step = 0; step < st.steps && stepsRun < budget; step++, stepsRun++) {
          throwIfAborted(o.signal)
          const t0 = performance.now()
          const batch = []
          let lossTokens = 0
          for (let b = 0; b < o.batch; b++) {
            const d = corpusDocument(docIndex++, ctx, st.editShare, st.apiEdits ?? false, st.copyShare, st.newNameShare)
            const head = tok.encode(d.text.slice(0, d.lossFrom))
            const ids = [...head, ...tok.encode(d.text.slice(d.lossFrom))].slice(0, o.maxTokens)
            const from = Math.max(1, d.lossFrom === 0 ? 1 : head.length)
            batch.push({ ids, from })
            lossTokens += Math.max(0, ids.length - from)
          }
          // mean next-token loss over the step's loss tokens (answers of editing tasks, every token of programs)
          const seqs = batch.map(({ ids, from }) => {
            const w = new Float32Array(ids.length)
            for (let t = from; t < ids.length; t++) w[t] = 1 / lossTokens
            return { tokens: ids, weights: w }
          })
          const { loss } = await trainer.step(seqs, { signal: o.signal })
          const lr = learningRateAt(
            {
              kind: 'cosine',
              learningRate: st.learningRate,
              totalSteps: st.steps,
              warmupSteps: Math.min(st.warmupSteps, st.steps - 1),
              warmupRatio: null,
              minLrRatio: 0.05
            },
            step
          )
          await trainer.applyAdamW({ lr, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1.0 })
          const tokens = seqs.reduce((a, q) => a + q.tokens.length, 0)
          if (o.snapshotEvery !== undefined && (step + 1) % o.snapshotEvery === 0 && step + 1 < st.steps) {
            const w = await trainer.parameters()
            writeFolder(tmpInit, `${o.out}.stage-${st.stage}-step-${step + 1}`, w, {
              ...recipeOf(o),
              stage: st.stage,
              step: step + 1,
              digest: weightsDigest(w)
            })
          }
          o.onProgress?.({
            stage: st.stage,
            step: step + 1,
            steps: st.steps,
            loss,
            lr,
            tokensPerSecond: tokens / ((performance.now() - t0) / 1000)
          })
        }
      }
      const weights = await trainer.parameters()
      const digest = weightsDigest(weights)
      if (o.stopAfter !== undefined) return { dir: '', digest, parameters, seconds: (performance.now() - started) / 1000 }
      writeFolder(tmpInit, o.out, weights, { ...recipeOf(o), digest })
      return { dir: o.out, digest, parameters, seconds: (performance.now() - started) / 1000 }
    } finally {
      trainer.dispose()
      model.dispose()
    }
  } finally {
    fs.rmSync(tmpInit, { recursive: true, force: true })
  }
}
