// The process-wide CPU thread pool: resizing it between jobs must neither hang nor change results. The jobs run
// in a child process with a deadline, so a lost wake-up fails here with a message instead of stalling the suite.
import t from 'tap'
import { spawnSync } from 'child_process'
import { root, rng } from './helpers.mjs'

t.test('resizing the pool between jobs neither hangs nor changes results', async (t) => {
  const r = rng(t)
  const script = `
    const addon = require(${JSON.stringify(root + '/dist/cjs/native.js')}).native()
    const { editDistanceSync } = require(${JSON.stringify(root + '/dist/cjs/index.js')})
    let seed = ${r.seed}
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296)
    const word = () => Array.from({ length: 1 + Math.floor(rand() * 300) }, () => 'abcde'[Math.floor(rand() * 5)]).join('')
    const a = Array.from({ length: 257 }, word), b = Array.from({ length: 257 }, word)
    addon.setNumThreads(1)
    const expected = Buffer.from(editDistanceSync(a, b, { device: 'cpu' }).buffer).toString('hex')
    let bad = 0
    for (let i = 0; i < 300; i++) {
      addon.setNumThreads(1 + (i % 5))
      for (let j = 0; j < 3; j++) if (Buffer.from(editDistanceSync(a, b, { device: 'cpu' }).buffer).toString('hex') !== expected) bad++
    }
    console.log(JSON.stringify({ bad }))
  `
  const out = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', timeout: 120_000, killSignal: 'SIGKILL' })
  t.equal(out.signal, null, `finished within 120 s (signal ${out.signal}; stderr ${out.stderr.slice(-400)})`)
  t.equal(out.status, 0, out.stderr.slice(-400))
  t.same(JSON.parse(out.stdout.trim().split('\n').pop() || '{}'), { bad: 0 }, '900 jobs over 1-5 threads equal the 1-thread result')
})
