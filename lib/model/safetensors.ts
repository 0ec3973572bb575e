/**
 * safetensors on the TypeScript side: writing (init-model's random weights; written to a temp name, then
 * renamed) and reading headers through the native reader, which memory-maps the file and validates every
 * field (ERR_MODEL naming the file and tensor).
 */
import * as fs from 'fs'
import { native } from '../native'

export type SafetensorsDtype = 'BF16' | 'F16' | 'F32'

export interface TensorHeader {
  name: string
  dtype: SafetensorsDtype
  shape: number[]
  /** Byte offsets within the data section. */
  begin: number
  end: number
}

/** The validated header of a safetensors file (the data stays on disk). */
export function readSafetensorsHeader (file: string): TensorHeader[] {
  return native().safetensorsHeader(file) as TensorHeader[]
}

export interface TensorToWrite {
  name: string
  shape: number[]
  /** float32 values, converted to `dtype` on write. */
  data: Float32Array
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** float32 -> bfloat16 bits, round to nearest even (NaN kept quiet). */
export function toBf16Bits (x: number): number {
  f32[0] = x
  const u = u32[0]
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}

export function fromBf16Bits (b: number): number {
  u32[0] = (b & 0xffff) << 16
  return f32[0]
}

/**
 * Writes tensors in the order given, data aligned to 8 bytes after the header, to `file` atomically
 * (temp name + rename). `metadata` goes to `__metadata__` (string values).
 */
export function writeSafetensors (file: string, tensors: TensorToWrite[], dtype: 'F32' | 'BF16', metadata: Record<string, string> = { format: 'pt' }): void {
  const size = dtype === 'F32' ? 4 : 2
  const header: Record<string, unknown> = { __metadata__: metadata }
  let offset = 0
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1)
    if (n !== t.data.length) throw new Error(`writeSafetensors: ${t.name} has ${t.data.length} values for shape [${t.shape.join(', ')}]`)
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + n * size] }
    offset += n * size
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8)
  const headerBytes = Buffer.from(json, 'utf8')
  const tmp = `${file}.tmp-${process.pid}`
  const fd = fs.openSync(tmp, 'w')
  try {
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(headerBytes.length))
    fs.writeSync(fd, len)
    fs.writeSync(fd, headerBytes)
    for (const t of tensors) {
      if (dtype === 'F32') {
        fs.writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))
      } else {
        // round to nearest even on the raw bits, in place over a view of the float32 data
        const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length)
        const out = new Uint16Array(t.data.length)
        for (let i = 0; i < bits.length; i++) {
          const u = bits[i]
          out[i] = (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) | 0x40) : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16)
        }
        fs.writeSync(fd, new Uint8Array(out.buffer))
      }
    }
    fs.fsyncSync(fd)
  } catch (err) {
    fs.closeSync(fd)
    fs.rmSync(tmp, { force: true })
    throw err
  }
  fs.closeSync(fd)
  fs.renameSync(tmp, file)
}
