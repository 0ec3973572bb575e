/**
 * safetensors, read and written in one place. TypeScript writes what training saves (checkpoints, adapters,
 * model folders) and reads those files back; model weights are read by the native reader, which memory-maps
 * the file and validates every field (ERR_MODEL naming the file and tensor): readSafetensorsHeader.
 *
 * Format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}` padded with spaces
 * to a multiple of 8, then the tensor bytes (little-endian, row-major), offsets relative to the data start.
 * Tensors are written in name order, each one streamed to the file (no copy of the whole payload).
 */
import * as fs from 'fs'
import { fromBf16, fromF16, toBf16 } from './dtype'
import { RecodeError, optionsArg } from './errors'
import { writeFileAtomicWith } from './atomicFile'
import { native } from './native'

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL'

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1
}

export interface TensorData {
  dtype: SafetensorsDtype
  shape: number[]
  /** Raw little-endian bytes of the tensor (a typed array of any kind is taken as its bytes). */
  data: ArrayBufferView
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
}

function checkTensor(name: string, t: TensorData): void {
  if (t === null || typeof t !== 'object')
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `safetensors: tensor ${name} must be an object { dtype, shape, data }, got ${t === null ? 'null' : typeof t}`
    )
  if (!(t.dtype in DTYPE_BYTES))
    throw new RecodeError('ERR_INVALID_ARG', `safetensors: tensor ${name} has unknown dtype ${JSON.stringify(t.dtype)}`)
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new RecodeError('ERR_INVALID_ARG', `safetensors: tensor ${name} has an invalid shape ${JSON.stringify(t.shape)}`)
  }
  const count = t.shape.reduce((a, b) => a * b, 1)
  const want = count * DTYPE_BYTES[t.dtype]
  if (!ArrayBuffer.isView(t.data) || t.data.byteLength !== want) {
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `safetensors: tensor ${name} (${t.dtype} ${JSON.stringify(t.shape)}) needs ${want} bytes, got ${ArrayBuffer.isView(t.data) ? t.data.byteLength : typeof t.data}`
    )
  }
}

/** Builds the padded header for `tensors` (name order) and returns it with the order used. */
function buildHeader(tensors: Record<string, TensorData>, metadata?: Record<string, string>): { header: Buffer; names: string[] } {
  if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors))
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `safetensors: tensors must be an object of name -> { dtype, shape, data }, got ${tensors === null ? 'null' : Array.isArray(tensors) ? 'an array' : typeof tensors}`
    )
  if (metadata != null && (typeof metadata !== 'object' || Array.isArray(metadata)))
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `safetensors: metadata must be an object of strings or undefined, got ${Array.isArray(metadata) ? 'an array' : typeof metadata}`
    )
  const names = Object.keys(tensors).sort()
  const json: Record<string, unknown> = {}
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new RecodeError('ERR_INVALID_ARG', `safetensors: metadata value for ${k} must be a string`)
    }
    json.__metadata__ = metadata
  }
  let offset = 0
  for (const name of names) {
    if (name === '__metadata__') throw new RecodeError('ERR_INVALID_ARG', 'safetensors: "__metadata__" is not a valid tensor name')
    const t = tensors[name]
    checkTensor(name, t)
    json[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] }
    offset += t.data.byteLength
  }
  let text = JSON.stringify(json)
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8)
  const body = Buffer.from(text, 'utf8')
  const header = Buffer.alloc(8 + body.length)
  header.writeBigUInt64LE(BigInt(body.length), 0)
  body.copy(header, 8)
  return { header, names }
}

/** The whole file in memory (small tensors, tests). */
export function encodeSafetensors(tensors: Record<string, TensorData>, metadata?: Record<string, string>): Buffer {
  const { header, names } = buildHeader(tensors, metadata)
  return Buffer.concat([header, ...names.map((n) => bytesOf(tensors[n].data))])
}

export interface WriteSafetensorsOptions {
  /** Sees every chunk as it is written, in file order (checkpoints hash the bytes here, without a second pass). */
  onBytes?: (bytes: Uint8Array) => void
}

/**
 * Writes `file` durably: streamed to a temporary name, fsync'd, renamed over `file`. Returns the byte size.
 */
export function writeSafetensors(
  file: string,
  tensors: Record<string, TensorData>,
  metadata?: Record<string, string>,
  options: WriteSafetensorsOptions = {}
): number {
  if (typeof file !== 'string' || file === '')
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `writeSafetensors: file must be a non-empty string, got ${file === null ? 'null' : typeof file}`
    )
  const { header, names } = buildHeader(tensors, metadata)
  const onBytes = optionsArg(options, 'writeSafetensors').onBytes
  let size = 0
  writeFileAtomicWith(file, (fd) => {
    const writeAll = (bytes: Uint8Array): void => {
      let done = 0
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done)
      size += bytes.length
      onBytes?.(bytes)
    }
    writeAll(header)
    for (const n of names) writeAll(bytesOf(tensors[n].data))
  })
  return size
}

export interface ReadTensor {
  dtype: SafetensorsDtype
  shape: number[]
  /** The tensor's bytes (a view into the file's buffer). */
  bytes: Uint8Array
}

/** Reads a safetensors file (errors name the file). */
export function readSafetensors(file: string): { tensors: Record<string, ReadTensor>; metadata: Record<string, string> } {
  let buf: Buffer
  try {
    buf = fs.readFileSync(file)
  } catch (err) {
    throw new RecodeError('ERR_DATA', `${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  return decodeSafetensors(buf, file)
}

export function decodeSafetensors(
  buf: Buffer,
  file = '<buffer>'
): { tensors: Record<string, ReadTensor>; metadata: Record<string, string> } {
  const bad = (what: string): never => {
    throw new RecodeError('ERR_DATA', `${file}: not a valid safetensors file (${what})`)
  }
  if (buf.length < 8) bad('shorter than its 8-byte header length')
  const n = Number(buf.readBigUInt64LE(0))
  if (n > buf.length - 8) bad(`header length ${n} exceeds the file size ${buf.length}`)
  let header: Record<string, any>
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'))
  } catch (err) {
    return bad(`header is not JSON: ${(err as Error).message}`)
  }
  const dataStart = 8 + n
  const tensors: Record<string, ReadTensor> = {}
  let metadata: Record<string, string> = {}
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = info as Record<string, string>
      continue
    }
    const dtype = info?.dtype as SafetensorsDtype
    if (!(dtype in DTYPE_BYTES)) bad(`tensor ${name} has unknown dtype ${JSON.stringify(info?.dtype)}`)
    const shape = info.shape as number[]
    const [b, e] = info.data_offsets as [number, number]
    const count = shape.reduce((x, y) => x * y, 1)
    if (!(Number.isInteger(b) && Number.isInteger(e) && b >= 0 && e >= b && dataStart + e <= buf.length))
      bad(`tensor ${name} has offsets [${b}, ${e}] outside the file`)
    if (e - b !== count * DTYPE_BYTES[dtype]) bad(`tensor ${name} has ${e - b} bytes for ${dtype} ${JSON.stringify(shape)}`)
    tensors[name] = { dtype, shape, bytes: buf.subarray(dataStart + b, dataStart + e) }
  }
  return { tensors, metadata }
}

/** Converts an F32, BF16 or F16 tensor to a fresh Float32Array. */
export function tensorToFloat32(t: ReadTensor): Float32Array {
  // Copy first: the tensor's bytes may sit at an odd offset of the file buffer.
  const bytes = new Uint8Array(t.bytes)
  if (t.dtype === 'F32') return new Float32Array(bytes.buffer)
  if (t.dtype === 'BF16') return fromBf16(new Uint16Array(bytes.buffer))
  if (t.dtype === 'F16') return fromF16(new Uint16Array(bytes.buffer))
  throw new RecodeError('ERR_INVALID_ARG', `tensorToFloat32: dtype ${t.dtype} is not a floating-point type`)
}

// ---- model folders ------------------------------------------------------------------------------------

export interface TensorHeader {
  name: string
  dtype: 'BF16' | 'F16' | 'F32'
  shape: number[]
  /** Byte offsets within the data section. */
  begin: number
  end: number
}

/** The validated header of a safetensors file, through the native reader (the data stays on disk). */
export function readSafetensorsHeader(file: string): TensorHeader[] {
  return native().safetensorsHeader(file) as TensorHeader[]
}

export interface TensorToWrite {
  name: string
  shape: number[]
  /** float32 values, converted to `dtype` on write. */
  data: Float32Array
}

/**
 * Writes float32 tensors as `dtype` to `file` atomically (init-model's random weights): writeSafetensors with
 * each tensor converted. `metadata` goes to `__metadata__`.
 */
export function writeFloat32Safetensors(
  file: string,
  tensors: TensorToWrite[],
  dtype: 'F32' | 'BF16',
  metadata: Record<string, string> = { format: 'pt' }
): void {
  const data: Record<string, TensorData> = {}
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1)
    if (n !== t.data.length)
      throw new Error(`writeFloat32Safetensors: ${t.name} has ${t.data.length} values for shape [${t.shape.join(', ')}]`)
    data[t.name] = { dtype, shape: t.shape, data: dtype === 'F32' ? t.data : toBf16(t.data) }
  }
  writeSafetensors(file, data, metadata)
}
