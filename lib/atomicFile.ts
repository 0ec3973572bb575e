/**
 * Durable file writes: write to a temporary name in the same folder, fsync, rename over the target, fsync the
 * folder. A crash leaves either the old file or the new one, never a torn one.
 */
import * as fs from 'fs'
import * as path from 'path'
import { RecodeError } from './errors'

let counter = 0

/** A temporary name beside `file` that no other writer in this or another process uses. */
export function tempNameFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${Date.now().toString(36)}-${counter++}`)
}

/** fsync a folder so that a rename or a new entry in it survives a crash (no-op where folders cannot be opened). */
export function fsyncDir(dir: string): void {
  let fd: number | undefined
  try {
    fd = fs.openSync(dir, 'r')
    fs.fsyncSync(fd)
  } catch {
    // Some platforms and file systems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
  }
}

/**
 * Creates `file` through `write(fd)` on a temporary name, then fsync, rename over `file` and fsync the folder.
 * On any error the temporary file is removed and `file` is untouched.
 */
export function writeFileAtomicWith(file: string, write: (fd: number) => void): void {
  const tmp = tempNameFor(file)
  const fd = fs.openSync(tmp, 'w')
  try {
    write(fd)
    fs.fsyncSync(fd)
  } catch (err) {
    fs.closeSync(fd)
    fs.rmSync(tmp, { force: true })
    throw err
  }
  fs.closeSync(fd)
  try {
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
  fsyncDir(path.dirname(file))
}

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  writeFileAtomicWith(file, (fd) => {
    fs.writeFileSync(fd, data)
  })
}

/**
 * mkdir -p that fails fast. fs.mkdirSync(dir, { recursive: true }) retries forever (ignoring Ctrl-C) where
 * the kernel answers ENOENT for a parent that exists, as under /proc; here each missing folder is created
 * once, top down, and the first refusal is an ERR_OUTPUT naming the folder.
 */
export function makeDir(dir: string, what = 'mkdir'): void {
  const missing: string[] = []
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    let st: fs.Stats | undefined
    try {
      st = fs.statSync(p)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw outputError(what, p, err)
    }
    if (st !== undefined) {
      if (!st.isDirectory()) throw new RecodeError('ERR_OUTPUT', `${what}: cannot create ${dir}: ${p} is not a folder`)
      break
    }
    missing.push(p)
    if (path.dirname(p) === p) break
  }
  for (let i = missing.length - 1; i >= 0; i--) {
    try {
      fs.mkdirSync(missing[i])
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw outputError(what, missing[i], err)
    }
  }
}

function outputError(what: string, p: string, err: unknown): RecodeError {
  const e = err as NodeJS.ErrnoException
  return new RecodeError('ERR_OUTPUT', `${what}: cannot create ${p} (${e.code ?? e.message})`, { cause: err })
}
