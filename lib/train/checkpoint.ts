/**
 * Checkpoints and the PEFT adapter folder.
 *
 * A checkpoint is a folder `<root>/step-<N>` holding safetensors files (weights, optimizer moments), JSON
 * files, and `manifest.json` (step, config hash, RNG state, data cursor, the list of files with their sizes and
 * sha256). It is written as `step-<N>.tmp`, every file fsync'd, the manifest last, the folder fsync'd, then
 * renamed to `step-<N>`: a crash at any point leaves the previous checkpoints intact and at most a `.tmp` folder
 * that the next save removes. Tensors with a NaN or Inf are refused before anything is written (ERR_DIVERGED),
 * and every file is read back and checksummed before the rename: only then are older checkpoints pruned to the
 * newest `keep`. `latestCheckpoint` returns the newest folder whose files all match their manifest (size and
 * checksum), reporting each newer one it skips, so a corrupt newest checkpoint falls back to the one before.
 *
 * The adapter folder follows PEFT's on-disk format so that `PeftModel.from_pretrained` (and vLLM's LoRA
 * loader) read it: `adapter_config.json` + `adapter_model.safetensors`. Tensor names, as PEFT's
 * `get_peft_model_state_dict` (src/peft/utils/save_and_load.py) produces them: the module path inside
 * PeftModel (`base_model.model.` + the transformers name, e.g. `model.layers.3.self_attn.q_proj`), then
 * `lora_A.weight` [r, in] and `lora_B.weight` [out, r] with the adapter name ("default") removed; for DoRA
 * the magnitude is `lora_magnitude_vector` [out]: PEFT stores it as `lora_magnitude_vector.default.weight`
 * (a DoraLinearLayer's `weight`) and strips `.weight` and the adapter name on save to keep the older format.
 */
import { createHash } from 'crypto'
import * as fs from 'fs'
import * as path from 'path'
import { toBf16 } from '../dtype'
import { RecodeError } from '../errors'
import { fsyncDir, makeDir, writeFileAtomic } from '../atomicFile'
import { DECODER_PROJECTION_PARENT } from '../model/projections'
import { decodeSafetensors, readSafetensors, writeSafetensors, type ReadTensor, type TensorData } from '../safetensors'

export const CHECKPOINT_FORMAT = 'recode-checkpoint'
/** 2: files carry a sha256 (version 1 manifests, sizes only, are still read). */
export const CHECKPOINT_VERSION = 2

export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT
  version: number
  step: number
  configHash: string
  /** Generator state(s) to restore for an exact resume (opaque JSON). */
  rng: unknown
  /** Position in the data stream (opaque JSON: epoch, index, permutation seed, ...). */
  dataCursor: unknown
  createdAt: string
  /** sha256: hex digest of the file's bytes (absent in version 1 manifests). */
  files: Array<{ name: string; bytes: number; sha256?: string }>
  /** Anything else the trainer wants back (opaque JSON). */
  extra?: unknown
}

export interface SaveCheckpointInput {
  step: number
  configHash: string
  rng: unknown
  dataCursor: unknown
  /** safetensors files to write: file name -> tensors. */
  tensors?: Record<string, Record<string, TensorData>>
  /** JSON files to write: file name -> value. */
  json?: Record<string, unknown>
  extra?: unknown
  /**
   * Writes further files into the checkpoint folder before the manifest (e.g. `saveAdapter(path.join(dir,
   * 'adapter'), ...)` for a PEFT copy, or the model's own writer). Every file it leaves is listed in the manifest.
   */
  write?: (dir: string) => void
  /** Keep this many newest complete checkpoints (default 3). */
  keep?: number
}

const STEP_DIR = /^step-(\d+)$/

function checkFileName(name: string): void {
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || name === 'manifest.json' || name.startsWith('.')) {
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `saveCheckpoint: invalid file name ${JSON.stringify(name)} (letters, digits, _ . -; not manifest.json)`
    )
  }
}

function writeDurable(file: string, data: string | Uint8Array): number {
  const fd = fs.openSync(file, 'w')
  try {
    fs.writeFileSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength
}

const HASH_CHUNK = 4 << 20

/** sha256 of a file, read in 4 MiB chunks (checkpoints of large models do not fit in one Buffer). */
export function fileSha256(file: string): string {
  const h = createHash('sha256')
  const buf = Buffer.allocUnsafe(HASH_CHUNK)
  const fd = fs.openSync(file, 'r')
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, HASH_CHUNK, null)) > 0; ) h.update(buf.subarray(0, n))
  } finally {
    fs.closeSync(fd)
  }
  return h.digest('hex')
}

/**
 * Index of the first NaN or infinite value of a floating-point tensor, or -1 (also for integer dtypes). Reads
 * the exponent bits, so it costs one pass over memory that is about to be written anyway.
 */
export function firstNonFinite(t: TensorData): number {
  const v = t.data
  // Element views need an aligned offset; a misaligned one (a slice of a file buffer) is copied first.
  const elems = <T>(Ctor: new (b: ArrayBufferLike, o?: number, n?: number) => T, k: number): T =>
    v.byteOffset % k === 0
      ? new Ctor(v.buffer, v.byteOffset, Math.floor(v.byteLength / k))
      : new Ctor(new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice().buffer, 0, Math.floor(v.byteLength / k))
  if (t.dtype === 'F32') {
    const a = elems(Uint32Array, 4)
    for (let i = 0; i < a.length; i++) if ((a[i] & 0x7f800000) === 0x7f800000) return i
  } else if (t.dtype === 'BF16' || t.dtype === 'F16') {
    const mask = t.dtype === 'BF16' ? 0x7f80 : 0x7c00
    const a = elems(Uint16Array, 2)
    for (let i = 0; i < a.length; i++) if ((a[i] & mask) === mask) return i
  } else if (t.dtype === 'F64') {
    const a = elems(Float64Array, 8)
    for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i
  }
  return -1
}

/**
 * Writes checkpoint `step` under `root` atomically, verifies it (every file read back and checksummed), and
 * only then prunes old ones; returns the folder. A tensor holding NaN or Inf is an ERR_DIVERGED error and
 * nothing is written or pruned.
 */
export function saveCheckpoint(root: string, input: SaveCheckpointInput): string {
  if (typeof root !== 'string' || root === '')
    throw new RecodeError('ERR_INVALID_ARG', `saveCheckpoint: root must be a non-empty string, got ${root === null ? 'null' : typeof root}`)
  if (input === null || typeof input !== 'object')
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `saveCheckpoint: input must be an object { step, configHash, ... }, got ${input === null ? 'null' : typeof input}`
    )
  if (!Number.isInteger(input.step) || input.step < 0)
    throw new RecodeError('ERR_INVALID_ARG', `saveCheckpoint: step must be a non-negative integer, got ${input.step}`)
  const keep = input.keep ?? 3
  if (!Number.isInteger(keep) || keep < 1)
    throw new RecodeError('ERR_INVALID_ARG', `saveCheckpoint: keep must be a positive integer, got ${keep}`)
  for (const [what, v] of [
    ['tensors', input.tensors],
    ['json', input.json]
  ] as const) {
    if (v !== undefined && (v === null || typeof v !== 'object' || Array.isArray(v)))
      throw new RecodeError(
        'ERR_INVALID_ARG',
        `saveCheckpoint: ${what} must be an object of file name -> contents, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`
      )
  }
  // Non-finite values are refused before the folder exists: a NaN checkpoint must never replace a good one.
  for (const [name, tensors] of Object.entries(input.tensors ?? {})) {
    checkFileName(name)
    if (tensors === null || typeof tensors !== 'object')
      throw new RecodeError('ERR_INVALID_ARG', `saveCheckpoint: tensors[${JSON.stringify(name)}] must be an object of tensors`)
    for (const [tname, t] of Object.entries(tensors)) {
      const i = t !== null && typeof t === 'object' && ArrayBuffer.isView(t.data) ? firstNonFinite(t) : -1
      if (i >= 0)
        throw new RecodeError(
          'ERR_DIVERGED',
          `saveCheckpoint: step ${input.step}: ${name} tensor ${tname} holds a non-finite value at index ${i}; the checkpoint was not written and no older one was removed`
        )
    }
  }
  makeDir(root, 'saveCheckpoint')
  const final = path.join(root, `step-${input.step}`)
  const tmp = `${final}.tmp`
  fs.rmSync(tmp, { recursive: true, force: true })
  fs.mkdirSync(tmp)
  try {
    const files: CheckpointManifest['files'] = []
    for (const [name, tensors] of Object.entries(input.tensors ?? {})) {
      // writeSafetensors renames its own temp file into place inside tmp/ (and fsyncs it); the hash sees the bytes as written.
      const h = createHash('sha256')
      const bytes = writeSafetensors(path.join(tmp, name), tensors, undefined, {
        onBytes: (b) => {
          h.update(b)
        }
      })
      files.push({ name, bytes, sha256: h.digest('hex') })
    }
    for (const [name, value] of Object.entries(input.json ?? {})) {
      checkFileName(name)
      const text = JSON.stringify(value, null, 2) + '\n'
      files.push({ name, bytes: writeDurable(path.join(tmp, name), text), sha256: createHash('sha256').update(text).digest('hex') })
    }
    if (input.write) {
      input.write(tmp)
      const listed = new Set(files.map((f) => f.name))
      for (const name of walkFiles(tmp)) {
        if (listed.has(name) || name === 'manifest.json') continue
        const file = path.join(tmp, name)
        const fd = fs.openSync(file, 'r+')
        try {
          fs.fsyncSync(fd)
        } finally {
          fs.closeSync(fd)
        }
        files.push({ name, bytes: fs.statSync(file).size, sha256: fileSha256(file) })
      }
      for (const d of walkDirs(tmp)) fsyncDir(d)
    }
    const manifest: CheckpointManifest = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      step: input.step,
      configHash: input.configHash,
      rng: input.rng ?? null,
      dataCursor: input.dataCursor ?? null,
      createdAt: new Date().toISOString(),
      files,
      ...(input.extra !== undefined ? { extra: input.extra } : {})
    }
    writeDurable(path.join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n')
    fsyncDir(tmp)
    // Read back what the disk holds before anything older may go (a renamed folder keeps its contents).
    try {
      verifyCheckpoint(tmp)
    } catch (err) {
      throw new RecodeError(
        'ERR_DATA',
        `saveCheckpoint: step ${input.step} did not read back as written (${(err as Error).message}); it was not kept and no older checkpoint was removed`
      )
    }
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true })
    throw err
  }
  // Re-saving a step (e.g. the final save after a resume at that step): move the old one aside first.
  if (fs.existsSync(final)) {
    const old = `${final}.old`
    fs.rmSync(old, { recursive: true, force: true })
    fs.renameSync(final, old)
    fs.renameSync(tmp, final)
    fs.rmSync(old, { recursive: true, force: true })
  } else {
    fs.renameSync(tmp, final)
  }
  fsyncDir(root)
  pruneCheckpoints(root, keep, input.step)
  return final
}

/** Files under dir, as '/'-separated relative paths, sorted. */
function walkFiles(dir: string, prefix = ''): string[] {
  const out: string[] = []
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (e.isDirectory()) out.push(...walkFiles(path.join(dir, e.name), `${prefix}${e.name}/`))
    else if (e.isFile()) out.push(`${prefix}${e.name}`)
  }
  return out
}

function walkDirs(dir: string): string[] {
  const out = [dir]
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...walkDirs(path.join(dir, e.name)))
  return out
}

/** Complete checkpoint folders under root, newest first. */
export function listCheckpoints(root: string): Array<{ step: number; dir: string }> {
  let entries: fs.Dirent[]
  try {
    entries = fs.readdirSync(root, { withFileTypes: true })
  } catch {
    return []
  }
  return entries
    .filter((e) => e.isDirectory() && STEP_DIR.test(e.name))
    .map((e) => ({ step: Number(STEP_DIR.exec(e.name)![1]), dir: path.join(root, e.name) }))
    .sort((a, b) => b.step - a.step)
}

/**
 * Removes all but the newest `keep` checkpoints, and stray `.tmp` / `.old` folders of interrupted saves. With
 * `upTo` (the step just saved), only checkpoints at or before it count: newer folders belong to a run that was
 * resumed from an older checkpoint (a corrupt newest one) and are left for that step's next save to replace.
 */
export function pruneCheckpoints(root: string, keep: number, upTo = Infinity): void {
  const all = listCheckpoints(root).filter((c) => c.step <= upTo)
  for (const c of all.slice(keep)) fs.rmSync(c.dir, { recursive: true, force: true })
  for (const e of fs.readdirSync(root, { withFileTypes: true })) {
    if (e.isDirectory() && /^step-\d+\.(tmp|old)$/.test(e.name)) fs.rmSync(path.join(root, e.name), { recursive: true, force: true })
  }
}

/** Reads and checks a checkpoint's manifest and file sizes; throws ERR_DATA naming the folder and file when it is incomplete. */
export function readCheckpointManifest(dir: string): CheckpointManifest {
  const file = path.join(dir, 'manifest.json')
  let m: CheckpointManifest
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (err) {
    throw new RecodeError('ERR_DATA', `${file}: missing or unreadable checkpoint manifest (${(err as Error).message})`)
  }
  if (m?.format !== CHECKPOINT_FORMAT || !Number.isInteger(m.step) || !Array.isArray(m.files)) {
    throw new RecodeError('ERR_DATA', `${file}: not a recode checkpoint manifest`)
  }
  if (m.version > CHECKPOINT_VERSION)
    throw new RecodeError('ERR_DATA', `${file}: checkpoint version ${m.version} is newer than this recode (${CHECKPOINT_VERSION})`)
  for (const f of m.files) {
    if (
      f === null ||
      typeof f !== 'object' ||
      typeof f.name !== 'string' ||
      !Number.isInteger(f.bytes) ||
      (f.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(f.sha256)) ||
      f.name.split('/').some((p) => p === '..' || p === '')
    ) {
      throw new RecodeError('ERR_DATA', `${file}: malformed file entry ${JSON.stringify(f)?.slice(0, 120)}`)
    }
    if (m.version >= 2 && f.sha256 === undefined) throw new RecodeError('ERR_DATA', `${file}: file entry ${f.name} has no sha256`)
    let size: number
    try {
      size = fs.statSync(path.join(dir, f.name)).size
    } catch {
      throw new RecodeError('ERR_DATA', `${path.join(dir, f.name)}: checkpoint file is missing`)
    }
    if (size !== f.bytes)
      throw new RecodeError('ERR_DATA', `${path.join(dir, f.name)}: checkpoint file has ${size} bytes, the manifest says ${f.bytes}`)
  }
  return m
}

/**
 * readCheckpointManifest, then every file's sha256 against the manifest (streamed): throws ERR_DATA naming the
 * first file whose bytes changed (a same-size corruption that the sizes alone do not show).
 */
export function verifyCheckpoint(dir: string): CheckpointManifest {
  const m = readCheckpointManifest(dir)
  for (const f of m.files) {
    if (f.sha256 === undefined) continue
    const file = path.join(dir, f.name)
    const got = fileSha256(file)
    if (got !== f.sha256)
      throw new RecodeError(
        'ERR_DATA',
        `${file}: checkpoint file is corrupt (sha256 ${got.slice(0, 12)}..., the manifest says ${f.sha256.slice(0, 12)}...)`
      )
  }
  return m
}

export interface LatestCheckpointOptions {
  /** A checkpoint written under another configuration is an ERR_CONFIG error (resuming it would silently continue a different run). */
  expectConfigHash?: string
  /** Called for each newer folder that is skipped (incomplete, corrupt: the error names the file) before the one returned. */
  onSkip?: (dir: string, error: RecodeError) => void
}

/**
 * The newest checkpoint under root whose files all match their manifest (sizes and checksums), or undefined
 * when root holds no checkpoint folder. Newer folders that fail the check are skipped (reported through
 * `onSkip`); when every folder fails, an ERR_DATA error lists each one's reason.
 */
export function latestCheckpoint(
  root: string,
  options: LatestCheckpointOptions = {}
): { dir: string; manifest: CheckpointManifest } | undefined {
  const all = listCheckpoints(root)
  const reasons: string[] = []
  for (const c of all) {
    let manifest: CheckpointManifest
    try {
      manifest = verifyCheckpoint(c.dir)
      if (manifest.step !== c.step)
        throw new RecodeError('ERR_DATA', `${path.join(c.dir, 'manifest.json')}: the manifest is for step ${manifest.step}, not ${c.step}`)
    } catch (err) {
      if (!(err instanceof RecodeError)) throw err
      reasons.push(err.message)
      options.onSkip?.(c.dir, err)
      continue // try the next older one
    }
    if (options.expectConfigHash !== undefined && manifest.configHash !== options.expectConfigHash) {
      throw new RecodeError(
        'ERR_CONFIG',
        `${c.dir}: this checkpoint was written with a different training configuration (hash ${String(manifest.configHash).slice(0, 12)}, now ${options.expectConfigHash.slice(0, 12)}); use a new output folder or the original configuration`
      )
    }
    return { dir: c.dir, manifest }
  }
  if (all.length > 0) throw new RecodeError('ERR_DATA', `${root}: no usable checkpoint (${reasons.join('; ')})`)
  return undefined
}

/**
 * Loads a checkpoint: its manifest, each safetensors file's tensors and each JSON file's value. Each file's
 * bytes are checked against the manifest's sha256 as they are read (`verify: false` skips that, for a folder
 * that latestCheckpoint has just verified).
 */
export function loadCheckpoint(
  dir: string,
  options: { verify?: boolean } = {}
): { manifest: CheckpointManifest; tensors: Record<string, Record<string, ReadTensor>>; json: Record<string, unknown> } {
  const manifest = readCheckpointManifest(dir)
  const verify = options?.verify !== false
  const tensors: Record<string, Record<string, ReadTensor>> = {}
  const json: Record<string, unknown> = {}
  for (const f of manifest.files) {
    const file = path.join(dir, f.name)
    if (!f.name.endsWith('.safetensors') && !f.name.endsWith('.json')) continue
    let buf: Buffer
    try {
      buf = fs.readFileSync(file)
    } catch (err) {
      throw new RecodeError('ERR_DATA', `${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    }
    if (verify && f.sha256 !== undefined && createHash('sha256').update(buf).digest('hex') !== f.sha256) {
      throw new RecodeError('ERR_DATA', `${file}: checkpoint file is corrupt (its sha256 differs from the manifest's)`)
    }
    if (f.name.endsWith('.safetensors')) tensors[f.name] = decodeSafetensors(buf, file).tensors
    else {
      try {
        json[f.name] = JSON.parse(buf.toString('utf8'))
      } catch (err) {
        throw new RecodeError('ERR_DATA', `${file}: ${(err as Error).message}`)
      }
    }
  }
  return { manifest, tensors, json }
}

// ---- PEFT adapter folder ------------------------------------------------------------------------------------

export interface AdapterSpec {
  type: 'lora' | 'dora'
  r: number
  alpha: number
  dropout: number
  targetModules: string[]
  /** Where the base model came from (a hub id or a folder), written as base_model_name_or_path. */
  baseModel: string
}

/** One adapted linear layer: transformers module path (e.g. `model.layers.0.self_attn.q_proj`) and weights. */
export interface AdapterLayerWeights {
  module: string
  inFeatures: number
  outFeatures: number
  /** [r, in] row-major. */
  loraA: Float32Array
  /** [out, r] row-major. */
  loraB: Float32Array
  /** DoRA only: [out]. */
  magnitude?: Float32Array
}

export { DECODER_PROJECTION_PARENT }

/** transformers module path of a projection in decoder layer i (Qwen2 / Llama naming). */
export function decoderModulePath(layer: number, projection: string): string {
  const parent = DECODER_PROJECTION_PARENT[projection]
  if (!parent)
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `decoderModulePath: unknown projection ${JSON.stringify(projection)} (${Object.keys(DECODER_PROJECTION_PARENT).join(', ')})`
    )
  return `model.layers.${layer}.${parent}.${projection}`
}

/** PEFT's saved tensor names for one adapted module. */
export function peftTensorNames(module: string): { loraA: string; loraB: string; magnitude: string } {
  const base = `base_model.model.${module}`
  return { loraA: `${base}.lora_A.weight`, loraB: `${base}.lora_B.weight`, magnitude: `${base}.lora_magnitude_vector` }
}

/** adapter_config.json as PEFT writes it for a LoRA / DoRA adapter on a causal LM. */
export function peftAdapterConfig(spec: AdapterSpec): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: spec.baseModel,
    r: spec.r,
    lora_alpha: spec.alpha,
    lora_dropout: spec.dropout,
    target_modules: [...spec.targetModules],
    use_dora: spec.type === 'dora',
    use_rslora: false,
    fan_in_fan_out: false,
    bias: 'none',
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null
  }
}

/**
 * Writes a PEFT adapter folder (adapter_config.json + adapter_model.safetensors), each file atomically.
 * `dtype` 'F32' (default) or 'BF16' for the stored tensors.
 */
export function saveAdapter(dir: string, spec: AdapterSpec, layers: AdapterLayerWeights[], dtype: 'F32' | 'BF16' = 'F32'): void {
  if (typeof dir !== 'string' || dir === '')
    throw new RecodeError('ERR_INVALID_ARG', `saveAdapter: dir must be a non-empty string, got ${dir === null ? 'null' : typeof dir}`)
  if (spec === null || typeof spec !== 'object')
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `saveAdapter: spec must be an object { type, r, alpha, dropout, targetModules, baseModel }, got ${spec === null ? 'null' : typeof spec}`
    )
  if (!Array.isArray(layers) || !layers.every((l) => l !== null && typeof l === 'object'))
    throw new RecodeError(
      'ERR_INVALID_ARG',
      'saveAdapter: layers must be an array of { module, inFeatures, outFeatures, loraA, loraB } objects'
    )
  if (dtype !== 'F32' && dtype !== 'BF16')
    throw new RecodeError('ERR_INVALID_ARG', `saveAdapter: dtype must be 'F32' or 'BF16', got ${String(dtype)}`)
  const tensors: Record<string, TensorData> = {}
  const store = (v: Float32Array, shape: number[]): TensorData =>
    dtype === 'BF16' ? { dtype: 'BF16', shape, data: toBf16(v) } : { dtype: 'F32', shape, data: v }
  for (const l of layers) {
    const n = peftTensorNames(l.module)
    if (l.loraA.length !== spec.r * l.inFeatures)
      throw new RecodeError(
        'ERR_INVALID_ARG',
        `saveAdapter: ${l.module} lora_A must have r*in = ${spec.r * l.inFeatures} values, got ${l.loraA.length}`
      )
    if (l.loraB.length !== l.outFeatures * spec.r)
      throw new RecodeError(
        'ERR_INVALID_ARG',
        `saveAdapter: ${l.module} lora_B must have out*r = ${l.outFeatures * spec.r} values, got ${l.loraB.length}`
      )
    tensors[n.loraA] = store(l.loraA, [spec.r, l.inFeatures])
    tensors[n.loraB] = store(l.loraB, [l.outFeatures, spec.r])
    if (spec.type === 'dora') {
      if (!l.magnitude || l.magnitude.length !== l.outFeatures)
        throw new RecodeError('ERR_INVALID_ARG', `saveAdapter: ${l.module} needs a DoRA magnitude of ${l.outFeatures} values`)
      tensors[n.magnitude] = store(l.magnitude, [l.outFeatures])
    }
  }
  makeDir(dir, 'saveAdapter')
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' })
  writeFileAtomic(path.join(dir, 'adapter_config.json'), JSON.stringify(peftAdapterConfig(spec), null, 2) + '\n')
}

/** Reads a PEFT LoRA/DoRA adapter folder back (errors name the file). */
export function loadAdapter(dir: string): { spec: AdapterSpec; tensors: Record<string, ReadTensor> } {
  const cfgFile = path.join(dir, 'adapter_config.json')
  let cfg: any
  try {
    cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'))
  } catch (err) {
    throw new RecodeError('ERR_MODEL', `${cfgFile}: ${(err as Error).message}`)
  }
  if (cfg.peft_type !== 'LORA')
    throw new RecodeError('ERR_MODEL', `${cfgFile}: peft_type must be "LORA", got ${JSON.stringify(cfg.peft_type)}`)
  if (cfg.use_rslora) throw new RecodeError('ERR_MODEL', `${cfgFile}: use_rslora adapters are not supported (scaling alpha/sqrt(r))`)
  const targets = Array.isArray(cfg.target_modules)
    ? cfg.target_modules
    : typeof cfg.target_modules === 'string'
      ? [cfg.target_modules]
      : []
  const spec: AdapterSpec = {
    type: cfg.use_dora ? 'dora' : 'lora',
    r: cfg.r,
    alpha: cfg.lora_alpha,
    dropout: cfg.lora_dropout ?? 0,
    targetModules: targets,
    baseModel: cfg.base_model_name_or_path ?? ''
  }
  const { tensors } = readSafetensors(path.join(dir, 'adapter_model.safetensors'))
  return { spec, tensors }
}
