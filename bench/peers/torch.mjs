// Runs the eager PyTorch peer (bench/peers/qwen2_torch.py, Debian's python3-torch) and checks it against recode
// before anything is timed: the bench and test/bench-peers.test.mjs both call checkPeerLogits.
import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { fileURLToPath } from 'url'

export const PYTHON = process.env.RECODE_TORCH_PYTHON || '/usr/bin/python3'
const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'qwen2_torch.py')

/** undefined when the peer can run, else why not. */
export function torchUnavailable() {
  const r = spawnSync(PYTHON, ['-c', 'import torch, numpy; print(torch.__version__)'], { encoding: 'utf8' })
  return r.status === 0 ? undefined : `${PYTHON} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').pop()})`
}

/** Runs one job of the peer script (see its docstring) and returns its JSON answer. */
export function runPeer(job) {
  const r = spawnSync(PYTHON, [SCRIPT], {
    input: JSON.stringify(job),
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    env: { ...process.env, OMP_NUM_THREADS: String(job.threads ?? 2) }
  })
  if (r.status !== 0) throw new Error(`qwen2_torch.py failed (${r.status}): ${(r.stderr || r.error?.message || '').trim()}`)
  return JSON.parse(r.stdout)
}

const U = 2 ** -24 // unit roundoff of fp32

/**
 * Logits of recode and of the peer on the same weights and token ids, compared against the peer's float64 run.
 * Tolerance: the a-priori fp32 bound for a chain of (2 L + 2) products of length <= Kmax (residual blocks + head),
 * u sqrt(Kmax) (2 L + 2) max|logit|, or 4x the error the eager fp32 peer itself shows against float64, whichever
 * is larger, so two correct fp32 programs pass and a wrong rotary layout, norm or mask (errors of order 1) fails.
 * Returns { ok, tolerance, maxAbsLogit, recodeVsTorch32, recodeVsTorch64, torch32VsTorch64, torch }.
 */
export async function checkPeerLogits(model, dir, ids, threads = 2) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-peer-check-'))
  try {
    const out32 = path.join(tmp, 'l32')
    const out64 = path.join(tmp, 'l64')
    const peer = runPeer({ dir, threads, tasks: [{ op: 'logits', ids, out32, out64 }] })
    const t32 = new Float32Array(fs.readFileSync(out32).buffer.slice(0))
    const t64 = new Float64Array(fs.readFileSync(out64).buffer.slice(0))
    const ours = await model.logits(ids)
    const n = ids.reduce((s, x) => s + x.length, 0) * model.config.vocab
    if (t32.length !== n || t64.length !== n) throw new Error(`peer wrote ${t32.length} logits, expected ${n}`)
    let maxAbs = 0
    let e32 = 0
    let eR64 = 0
    let eR32 = 0
    let o = 0
    for (const row of ours) {
      for (let i = 0; i < row.length; i++, o++) {
        maxAbs = Math.max(maxAbs, Math.abs(t64[o]))
        e32 = Math.max(e32, Math.abs(t32[o] - t64[o]))
        eR64 = Math.max(eR64, Math.abs(row[i] - t64[o]))
        eR32 = Math.max(eR32, Math.abs(row[i] - t32[o]))
      }
    }
    const c = model.config
    const kmax = Math.max(c.hidden, c.intermediate, c.heads * c.headDim)
    const apriori = U * Math.sqrt(kmax) * (2 * c.layers + 2) * Math.max(1, maxAbs)
    const tolerance = Math.max(apriori, 4 * e32)
    return {
      ok: eR32 <= tolerance && eR64 <= tolerance,
      tolerance,
      aprioriBound: apriori,
      maxAbsLogit: maxAbs,
      recodeVsTorch32: eR32,
      recodeVsTorch64: eR64,
      torch32VsTorch64: e32,
      torch: peer.torch
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}
