// The sandbox: hostile programs (network access, writes outside the private directory, a fork bomb,
// unbounded allocation, sleeping forever, a background process that tries to outlive the run) are
// contained and reported, and the batch carries on to the next program. Cancellation stops a batch. These
// adapt to the isolation this machine has (allowWeakIsolation); test/sandbox-isolation.test.mjs insists on
// the full sandbox.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { root } from './helpers.mjs'
import { pickPython } from './fixtures/shared.mjs'

const s = await import(path.join(root, 'dist/cjs/eval/sandbox.js'))
const m = await import(path.join(root, 'dist/cjs/eval/metrics.js'))
const { probePython } = await import(path.join(root, 'dist/cjs/eval/python.js'))
const picked = pickPython(probePython, [])
if (picked.python === null) {
  t.comment(`sandbox tests skipped: no usable python3 (${picked.why})`)
  t.pass('nothing to run without python3')
} else {
  const python = picked.python
  const info = s.probeIsolation(python, 'auto', true)
  t.comment(`interpreter ${picked.why}`)
  t.comment(`isolation: ${info.summary}${info.fallbacks.length ? ' — fallbacks: ' + info.fallbacks.join('; ') : ''}`)
  const marker = `recode-sandbox-test-${process.pid}-${Date.now()}`
  const escapeTarget = path.join(os.tmpdir(), `${marker}-escaped`)
  const repoTarget = path.join(root, `${marker}-escaped`)

  /** Host processes still carrying our marker in their environment. */
  const survivors = () => {
    const found = []
    for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        if (fs.readFileSync(`/proc/${pid}/environ`, 'latin1').includes(marker)) found.push(pid)
      } catch {}
    }
    return found
  }
  /** Survivors after giving the kernel up to 30 s to finish killing (a loaded machine is slow to reap; it returns at once when none is left). */
  const lastSurvivors = async () => {
    let left = survivors()
    for (let i = 0; i < 150 && left.length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 200))
      left = survivors()
    }
    return left
  }

  t.test('isolation probe', async (t) => {
    t.ok(['bwrap', 'unshare', 'rlimits'].includes(info.kind))
    t.equal(typeof info.summary, 'string')
    t.match(s.isolationSummary(python), info.kind)
    if (fs.existsSync('/usr/bin/bwrap') && info.kind !== 'bwrap')
      t.comment(`bwrap is installed but not in force: ${info.fallbacks.join('; ')}`)
  })

  t.test('hostile programs are contained and reported; the batch keeps going', async (t) => {
    const programs = {
      socket: "import socket\ns = socket.socket()\ns.settimeout(3)\ns.connect(('1.1.1.1', 80))\nprint('connected')\n",
      dns: "import socket\nprint(socket.getaddrinfo('example.com', 80))\n",
      writeRepo: `open(${JSON.stringify(repoTarget)}, 'w').write('escaped')\n`,
      writeTmp: `open(${JSON.stringify(escapeTarget)}, 'w').write('escaped')\nprint('wrote inside the sandbox view')\n`,
      writeOwnDir:
        "import os\nopen('out.txt', 'w').write('fine')\nopen(os.path.join(os.environ['HOME'], 'h.txt'), 'w').write('fine')\nprint(open('out.txt').read())\n",
      allocate: 'blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))\n',
      sleep: 'import time\ntime.sleep(10**6)\n',
      background: "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(10**6)\nprint('parent done')\n",
      benign: 'print(sum(range(10)))\n'
    }
    const names = Object.keys(programs)
    const started = Date.now()
    const results = await s.runPrograms(
      names.map((n) => programs[n]),
      { python, allowWeakIsolation: true, timeoutMs: 10000, memoryBytes: 512 * 2 ** 20, concurrency: 2, env: { RECODE_TEST_MARK: marker } }
    )
    const r = Object.fromEntries(names.map((n, i) => [n, results[i]]))
    for (const n of names)
      t.comment(
        `${n}: ${r[n].status}, exit ${r[n].exitCode}${r[n].signal ? ' ' + r[n].signal : ''}, ${Math.round(r[n].durationMs)} ms: ${JSON.stringify(m.classifyRun(r[n]))}`
      )
    if (info.network === 'isolated') {
      t.equal(r.socket.status, 'error', 'socket connect fails')
      t.match(m.classifyRun(r.socket), { category: 'exception', errorType: /OSError|TimeoutError|gaierror/ })
      t.equal(r.dns.status, 'error', 'name lookups fail')
    } else {
      t.comment(`network containment not checked: isolation '${info.kind}' leaves the network reachable (${info.fallbacks.join('; ')})`)
    }
    t.equal(r.writeRepo.status, 'error', 'writing into the repository fails')
    // read-only (PermissionError/OSError), or absent when the checkout lives under /tmp, which the sandbox replaces
    t.match(m.classifyRun(r.writeRepo), { category: 'exception', errorType: /OSError|PermissionError|FileNotFoundError/ })
    t.notOk(fs.existsSync(repoTarget), 'nothing written into the repository')
    if (info.kind === 'bwrap') t.notOk(fs.existsSync(escapeTarget), "a write to /tmp stays inside the sandbox's own /tmp")
    else
      t.comment(
        `host /tmp is shared under isolation '${info.kind}'; escape file ${fs.existsSync(escapeTarget) ? 'was' : 'was not'} written`
      )
    fs.rmSync(escapeTarget, { force: true })
    t.equal(r.writeOwnDir.status, 'ok', 'the private directory and HOME are writable')
    t.equal(r.writeOwnDir.stdout.trim(), 'fine')
    t.equal(r.allocate.status, 'error', 'unbounded allocation stops at the memory limit')
    t.match(m.classifyRun(r.allocate), { category: 'exception', errorType: /MemoryError|SIGKILL/ })
    t.equal(r.sleep.status, 'timeout')
    t.ok(r.sleep.durationMs >= 9900 && r.sleep.durationMs < 30000, `killed at the 10 s limit (${Math.round(r.sleep.durationMs)} ms)`)
    t.same(m.classifyRun(r.sleep).category, 'timeout')
    t.equal(r.background.status, 'ok')
    t.equal(r.benign.status, 'ok', 'the harness keeps going after the hostile programs')
    t.equal(r.benign.stdout, '45\n')
    t.same(await lastSurvivors(), [], 'no process outlives its program (background child included)')
    t.ok(Date.now() - started < 120000, 'the hostile programs do not hold the harness')
  })

  t.test('fork bomb', { skip: info.processLimit ? false : `process limit not enforceable here (${info.summary})` }, async (t) => {
    const bomb = 'import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n'
    const [r, after] = await s.runPrograms([bomb, 'print("after")\n'], {
      python,
      allowWeakIsolation: true,
      timeoutMs: 2000,
      maxProcesses: 64,
      concurrency: 1,
      env: { RECODE_TEST_MARK: marker }
    })
    t.comment(`fork bomb: ${r.status} after ${Math.round(r.durationMs)} ms`)
    t.equal(r.status, 'timeout', 'forks are capped by RLIMIT_NPROC and the tree is killed at the limit')
    t.equal(after.status, 'ok')
    t.same(await lastSurvivors(), [], 'every forked process is gone')
  })

  t.test('failure categories from real tracebacks', async (t) => {
    const [syntax, assertion, exc, exit, ok] = await s.runPrograms(
      ['def f(:\n    pass\n', 'assert 1 == 2, "nope"\n', '1 / 0\n', 'import os\nos._exit(3)\n', 'pass\n'],
      { python, allowWeakIsolation: true, timeoutMs: 10000, concurrency: 2 }
    )
    t.match(m.classifyRun(syntax), { category: 'syntax_error', errorType: 'SyntaxError' })
    t.match(m.classifyRun(assertion), { category: 'assertion', errorType: 'AssertionError', message: /nope/ })
    t.match(m.classifyRun(exc), { category: 'exception', errorType: 'ZeroDivisionError' })
    t.match(m.classifyRun(exit), { category: 'exception', errorType: 'exit status 3' })
    t.equal(m.classifyRun(ok), null)
  })

  t.test('preimport: modules loaded before the program, as in a warm harness interpreter', async (t) => {
    const prog = 'import itertools\ndel itertools.product\nimport tokenize\nprint("ok")\n'
    const [cold, warm] = await Promise.all([
      s.runPython(prog, { python, allowWeakIsolation: true }),
      s.runPython(prog, { python, allowWeakIsolation: true, preimport: ['tokenize', 'no_such_module_xyz'] })
    ])
    t.match(m.classifyRun(cold), { category: 'exception', errorType: 'AttributeError' }, 'tokenize needs itertools.product at import')
    t.equal(warm.status, 'ok', 'already imported: the deletion does not matter; a missing module is skipped')
    await t.rejects(s.runPython('pass', { python, allowWeakIsolation: true, preimport: ['os; import evil'] }), { code: 'ERR_INVALID_ARG' })
  })

  t.test('cancellation kills running programs', async (t) => {
    const ac = new AbortController()
    const started = Date.now()
    setTimeout(() => ac.abort(), 300)
    await t.rejects(
      s.runPrograms(['import time\ntime.sleep(100)\n', 'import time\ntime.sleep(100)\n', 'pass\n'], {
        python,
        allowWeakIsolation: true,
        timeoutMs: 60000,
        concurrency: 2,
        signal: ac.signal,
        env: { RECODE_TEST_MARK: marker }
      }),
      { code: 'ABORT_ERR' }
    )
    t.ok(Date.now() - started < 10000, 'stopped promptly')
    t.same(await lastSurvivors(), [], 'the killed programs are gone')
    await t.rejects(s.runPython('pass', { python, allowWeakIsolation: true, timeoutMs: 0 }), { code: 'ERR_INVALID_ARG' })
  })
}
