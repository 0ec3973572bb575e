/**
 * JSON-lines reading shared by every loader: plain or gzip-compressed files, one JSON value per line,
 * blank lines skipped. Every error names the file and the 1-based line.
 */
import * as fs from 'fs'
import * as zlib from 'zlib'
import { RecodeError } from '../errors'

export interface JsonlRecord {
  /** 1-based line number in the (decompressed) file. */
  line: number
  value: unknown
}

/** Reads a whole file as text, gunzipping when it is gzip (by magic bytes, whatever its name). */
export function readTextFile(file: string): string {
  let bytes: Buffer
  try {
    bytes = fs.readFileSync(file)
  } catch (err) {
    throw new RecodeError('ERR_DATA', `${file}: cannot read: ${(err as Error).message}`, { cause: err })
  }
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = zlib.gunzipSync(bytes)
    } catch (err) {
      throw new RecodeError('ERR_DATA', `${file}: corrupt gzip data: ${(err as Error).message}`, { cause: err })
    }
  }
  return decodeUtf8(bytes, file)
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * UTF-8 bytes as text, refusing invalid sequences (which Buffer.toString would turn into U+FFFD without a
 * word, changing the data). The error names the file, the 1-based line and the byte offset. A leading BOM is
 * dropped, as JSON readers do.
 */
export function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    const off = firstInvalidUtf8(bytes)
    let line = 1
    for (let k = bytes.indexOf(0x0a); k >= 0 && k < off; k = bytes.indexOf(0x0a, k + 1)) line++
    const what =
      off < bytes.length ? `byte 0x${bytes[off].toString(16).padStart(2, '0')} at offset ${off}` : 'truncated sequence at the end'
    throw new RecodeError('ERR_DATA', `${file}:${line}: invalid UTF-8 (${what}); the file must be UTF-8 text`)
  }
}

/** Offset of the first byte that starts or continues an invalid UTF-8 sequence (RFC 3629), or bytes.length. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0
  while (i < bytes.length) {
    const b = bytes[i]
    const n = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0
    if (n === 0) return i
    for (let k = 1; k < n; k++) {
      if (i + k >= bytes.length) return i
      const c = bytes[i + k]
      // The second byte's range excludes overlong forms, surrogates and code points above U+10FFFF.
      const lo = k === 1 && b === 0xe0 ? 0xa0 : k === 1 && b === 0xf0 ? 0x90 : 0x80
      const hi = k === 1 && b === 0xed ? 0x9f : k === 1 && b === 0xf4 ? 0x8f : 0xbf
      if (c < lo || c > hi) return i
    }
    i += n
  }
  return bytes.length
}

/** Parses JSON lines; a line that is not valid JSON is an ERR_DATA error naming file and line. */
export function parseJsonl(text: string, file: string): JsonlRecord[] {
  const out: JsonlRecord[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i]
    if (raw.trim() === '') continue
    let value: unknown
    try {
      value = JSON.parse(raw)
    } catch (err) {
      throw new RecodeError('ERR_DATA', `${file}:${i + 1}: not valid JSON: ${(err as Error).message}`, { cause: err })
    }
    out.push({ line: i + 1, value })
  }
  return out
}

export function readJsonl(file: string): JsonlRecord[] {
  return parseJsonl(readTextFile(file), file)
}

/** Checks that a record is an object; returns it typed. */
export function expectObject(rec: JsonlRecord, file: string): Record<string, unknown> {
  const v = rec.value
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new RecodeError(
      'ERR_DATA',
      `${file}:${rec.line}: expected a JSON object, got ${Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v}`
    )
  }
  return v as Record<string, unknown>
}

/** A required string field (null allowed only when `nullable`). */
export function stringField(obj: Record<string, unknown>, key: string, where: string, nullable = false): string | null {
  const v = obj[key]
  if (v === undefined) throw new RecodeError('ERR_DATA', `${where}: missing field '${key}'`)
  if (v === null) {
    if (nullable) return null
    throw new RecodeError('ERR_DATA', `${where}: field '${key}' is null`)
  }
  if (typeof v !== 'string')
    throw new RecodeError('ERR_DATA', `${where}: field '${key}' must be a string, got ${Array.isArray(v) ? 'an array' : typeof v}`)
  return v
}

export { writeFileAtomic } from '../atomicFile'
