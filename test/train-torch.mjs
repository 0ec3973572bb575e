// Runs a reference script of test/reference with Debian's python3-torch (/usr/bin/python3), or says why not.
import { spawnSync } from 'child_process'
import * as path from 'path'
import { root } from './helpers.mjs'

const PYTHON = process.env.RECODE_TORCH_PYTHON || '/usr/bin/python3'

let availability
/** undefined when torch can be used, else the reason it cannot. */
export function torchUnavailable() {
  if (availability === undefined) {
    const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' })
    availability = r.status === 0 ? '' : `${PYTHON} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').pop()})`
  }
  return availability || undefined
}

/** Sends a list of jobs to test/reference/<script> and returns its list of results. */
export function runTorch(script, jobs) {
  const r = spawnSync(PYTHON, [path.join(root, 'test', 'reference', script)], {
    input: JSON.stringify(jobs),
    encoding: 'utf8',
    maxBuffer: 1 << 28
  })
  if (r.status !== 0) throw new Error(`${script} failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}
