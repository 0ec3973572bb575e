/**
 * Backends. 'cpu' runs the CPU kernels; 'cuda' the CUDA library on a GPU; 'emulated' the CUDA kernels
 * through the SIMT emulation on the CPU (slow: for tests and for checking kernels without a GPU);
 * 'auto' is 'cuda' when a usable GPU is present, else 'cpu'.
 */
import { RecodeError } from './errors'
import { native } from './native'

export type Device = 'auto' | 'cpu' | 'cuda' | 'emulated'
export type ConcreteDevice = Exclude<Device, 'auto'>

export interface CudaStatus {
  libraryLoaded: boolean
  libraryPath: string
  available: boolean
  deviceCount: number
  /** Why CUDA cannot be used ('' when it can). */
  reason: string
  driverVersion?: number
  runtimeVersion?: number
  devices: Array<{ index: number; name: string; computeCapability: string; memoryBytes: number; multiprocessors: number }>
}

export interface SystemInfo {
  cpuModel: string
  hardwareThreads: number
  threads: number
  simdDetected: string
  simdActive: string
  compiler?: string
  cuda: CudaStatus
}

export function systemInfo(): SystemInfo {
  const raw = native().systemInfo()
  let details: any = { devices: [] }
  try {
    if (raw.cuda.infoJson) details = JSON.parse(raw.cuda.infoJson)
  } catch {
    /* keep defaults */
  }
  const { infoJson, ...cuda } = raw.cuda
  return { ...raw, cuda: { ...cuda, ...details, devices: details.devices ?? [] } }
}

export function cudaAvailable(): boolean {
  return native().systemInfo().cuda.available as boolean
}

export function resolveDevice(device: Device | undefined, what: string): ConcreteDevice {
  const d = device ?? 'auto'
  if (d === 'auto') return cudaAvailable() ? 'cuda' : 'cpu'
  if (d !== 'cpu' && d !== 'cuda' && d !== 'emulated') {
    throw new RecodeError('ERR_INVALID_ARG', `${what}: device must be 'auto', 'cpu', 'cuda' or 'emulated', got ${JSON.stringify(device)}`)
  }
  return d
}

/** Threads the CPU kernels use (default: all hardware threads, or RECODE_NUM_THREADS). */
export function setNumThreads(n: number): number {
  return native().setNumThreads(n) as number
}

/** Highest SIMD level CPU kernels may use: 'baseline' forces the portable paths (tests cover both). */
export function setSimdLevel(level: 'baseline' | 'avx2' | 'auto'): string {
  return native().setSimdLevel(level) as string
}
