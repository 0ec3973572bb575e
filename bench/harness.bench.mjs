// Execution harness throughput: HumanEval canonical-solution programs (prompt + solution + tests +
// check) executed per second with 2 programs at a time, under each isolation that works on this machine
// (bwrap, unshare, rlimits only), against the floor of a bare `python3 program.py` spawn with no sandbox.
// Each figure is the median of 3 timed batches of 32 programs (after a warm-up batch).
import { spawn } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { root, shared, median } from './lib.mjs'

const BATCH = 32
const REPEATS = 3
const CONCURRENCY = 2

function sharedData() {
  for (const d of [process.env.RECODE_SHARED_DATA, path.join(shared, 'data'), '/work/shared/data'].filter(Boolean)) {
    if (fs.existsSync(path.join(d, 'humaneval', 'HumanEval.jsonl.gz'))) return d
  }
  throw new Error('HumanEval.jsonl.gz not found (set RECODE_SHARED_DATA)')
}

/** The floor: spawn the interpreter on the program file, nothing else. */
function bareRun(python, source) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-bench-'))
  fs.writeFileSync(path.join(dir, 'p.py'), source)
  return new Promise((resolve, reject) => {
    const c = spawn(python, ['-B', 'p.py'], { cwd: dir, stdio: 'ignore' })
    c.on('error', reject)
    c.on('close', (code) => {
      fs.rmSync(dir, { recursive: true, force: true })
      code === 0 ? resolve() : reject(new Error(`exit ${code}`))
    })
  })
}

async function pool(items, fn) {
  let next = 0
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < items.length) await fn(items[next++])
    })
  )
}

export default async function () {
  const { loadHumanEval } = await import(path.join(root, 'dist/cjs/data/humaneval.js'))
  const { humanEvalProgram } = await import(path.join(root, 'dist/cjs/eval/programs.js'))
  const { extractCode } = await import(path.join(root, 'dist/cjs/eval/extract.js'))
  const sandbox = await import(path.join(root, 'dist/cjs/eval/sandbox.js'))
  const python = process.env.RECODE_PYTHON ?? (fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3')
  const problems = loadHumanEval(path.join(sharedData(), 'humaneval', 'HumanEval.jsonl.gz'))
  const programs = problems.map((p) => humanEvalProgram(p, p.canonicalSolution, extractCode(p.canonicalSolution)))
  const batches = Array.from({ length: REPEATS + 1 }, (_, i) =>
    Array.from({ length: BATCH }, (_, j) => programs[(i * BATCH + j) % programs.length])
  )

  const results = []
  const measure = async (name, runBatch, detail) => {
    await runBatch(batches[0])
    const rates = []
    for (let i = 1; i <= REPEATS; i++) {
      const t0 = process.hrtime.bigint()
      await runBatch(batches[i])
      rates.push(BATCH / (Number(process.hrtime.bigint() - t0) / 1e9))
    }
    results.push({ name, programsPerSecond: +median(rates).toFixed(2), samples: rates.map((r) => +r.toFixed(2)), detail })
  }

  await measure('bare python3 (no sandbox)', (b) => pool(b, (src) => bareRun(python, src)), `${python} program.py, no limits`)
  const skipped = []
  for (const kind of ['bwrap', 'unshare', 'rlimits']) {
    let info
    try {
      info = sandbox.probeIsolation(python, kind)
    } catch (err) {
      skipped.push(`${kind}: ${err.message}`)
      continue
    }
    await measure(
      `sandbox ${kind}`,
      async (b) => {
        const rs = await sandbox.runPrograms(b, { python, concurrency: CONCURRENCY })
        const bad = rs.find((r) => r.status !== 'ok')
        if (bad) throw new Error(`a canonical solution failed under ${kind}: ${bad.stderr.slice(-300)}`)
      },
      info.summary
    )
  }
  const floor = results[0].programsPerSecond
  for (const r of results) r.ratioToBare = +(r.programsPerSecond / floor).toFixed(3)
  const summary = [
    `HumanEval canonical programs per second, ${CONCURRENCY} at a time, ${os.cpus().length} cores, load average ${os.loadavg()[0].toFixed(1)} (median of ${REPEATS} x ${BATCH}):`,
    ...results.map((r) => `  ${r.name.padEnd(28)} ${String(r.programsPerSecond).padStart(7)} /s  (${r.ratioToBare}x bare)`),
    ...skipped.map((s) => `  skipped ${s}`)
  ].join('\n')
  return { name: 'harness', results, skipped, summary }
}
