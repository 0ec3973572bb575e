/**
 * safetensors for model folders: writing float32 weights as F32 or BF16 (init-model's random weights) and
 * reading headers through the native reader, which memory-maps the file and validates every
 * field (ERR_MODEL naming the file and tensor).
 */
import { toBf16 } from '../dtype'
import { native } from '../native'
import { writeSafetensors as writeTensorFile, type TensorData } from '../safetensorsWriter'

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

/**
 * Writes float32 tensors as `dtype` to `file` atomically, through the one safetensors writer
 * (lib/safetensorsWriter: tensors in name order, header padded to 8 bytes). `metadata` goes to `__metadata__`.
 */
export function writeSafetensors (file: string, tensors: TensorToWrite[], dtype: 'F32' | 'BF16', metadata: Record<string, string> = { format: 'pt' }): void {
  const data: Record<string, TensorData> = {}
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1)
    if (n !== t.data.length) throw new Error(`writeSafetensors: ${t.name} has ${t.data.length} values for shape [${t.shape.join(', ')}]`)
    data[t.name] = { dtype, shape: t.shape, data: dtype === 'F32' ? t.data : toBf16(t.data) }
  }
  writeTensorFile(file, data, metadata)
}
