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
export function readTextFile (file: string): string {
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
  return bytes.toString('utf8')
}

/** Parses JSON lines; a line that is not valid JSON is an ERR_DATA error naming file and line. */
export function parseJsonl (text: string, file: string): JsonlRecord[] {
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

export function readJsonl (file: string): JsonlRecord[] {
  return parseJsonl(readTextFile(file), file)
}

/** Checks that a record is an object; returns it typed. */
export function expectObject (rec: JsonlRecord, file: string): Record<string, unknown> {
  const v = rec.value
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new RecodeError('ERR_DATA', `${file}:${rec.line}: expected a JSON object, got ${Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v}`)
  }
  return v as Record<string, unknown>
}

/** A required string field (null allowed only when `nullable`). */
export function stringField (obj: Record<string, unknown>, key: string, where: string, nullable = false): string | null {
  const v = obj[key]
  if (v === undefined) throw new RecodeError('ERR_DATA', `${where}: missing field '${key}'`)
  if (v === null) {
    if (nullable) return null
    throw new RecodeError('ERR_DATA', `${where}: field '${key}' is null`)
  }
  if (typeof v !== 'string') throw new RecodeError('ERR_DATA', `${where}: field '${key}' must be a string, got ${Array.isArray(v) ? 'an array' : typeof v}`)
  return v
}

export { writeFileAtomic } from '../atomicFile'
