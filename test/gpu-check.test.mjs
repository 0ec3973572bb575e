// bench/gpu-check.mjs, the one script a lent GPU runs, checked here through the emulation: `--device emulated`
// finishes, runs its test files and the planned-versus-measured memory check (which must agree to the byte), and
// writes the summary and the bench results marked emulated (into a temporary folder: RECODE_BENCH_RESULTS).
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { root } from './helpers.mjs'

t.test('gpu-check --device emulated writes its results, every check passing', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-gpu-check-test-'))
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }))
  const r = spawnSync(process.execPath, [path.join(root, 'bench', 'gpu-check.mjs'), '--device', 'emulated'], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, RECODE_BENCH_RESULTS: out },
    timeout: 900000
  })
  if (r.status !== 0) t.comment(`${r.stdout.slice(-3000)}${r.stderr.slice(-3000)}`)
  t.equal(r.status, 0, 'exit 0')
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'gpu-check.json'), 'utf8'))
  t.equal(summary.emulated, true, 'marked emulated')
  t.equal(summary.ok, true, 'every check passed')
  t.ok(summary.tests.length >= 2 && summary.tests.every((x) => x.status === 0), `${summary.tests.length} test files ran and passed`)
  t.ok(
    summary.memory.length === 4 && summary.memory.every((m) => m.agree && m.measured.training > 0),
    'planned = measured peak for full / DoRA, with and without recomputation'
  )
  t.ok(
    summary.skipped.some((s) => s.what === 'bench/train-cuda'),
    'what an emulated run leaves to a GPU is listed as skipped, with why'
  )
  const cudaops = JSON.parse(fs.readFileSync(path.join(out, 'cudaops.json'), 'utf8'))
  t.equal(cudaops.emulated, true, 'the kernel bench result is marked emulated')
  t.notOk(fs.existsSync(path.join(out, 'gpu-check.json.tmp')), 'no temporary file left')
})
