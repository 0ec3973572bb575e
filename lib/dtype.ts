/**
 * 16-bit floating-point storage in JavaScript: a Uint16Array holding raw bf16 or fp16 bits. Conversions from
 * float32 round to nearest even (as CUDA's __float2bfloat16_rn / __float2half_rn); NaN stays NaN.
 */
import { native } from './native'

export function toBf16(values: Float32Array): Uint16Array {
  return native().f32ToBf16(values)
}
export function fromBf16(bits: Uint16Array): Float32Array {
  return native().bf16ToF32(bits)
}
export function toF16(values: Float32Array): Uint16Array {
  return native().f32ToF16(values)
}
export function fromF16(bits: Uint16Array): Float32Array {
  return native().f16ToF32(bits)
}
