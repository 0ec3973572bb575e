// The sandbox's protections, checked from inside with hostile programs (CI runs this as root, the case
// where a weak sandbox is most dangerous): nothing the program does appears on the host, it holds no
// capability and is not uid 0, the fork and memory limits hold (/tmp and /dev/shm included), leaving
// early is not a pass, an interpreter only root can reach still works without root, and bad limits are
// refused instead of switching a limit off.
import t from 'tap'
import * as fs from 'fs'
import * as net from 'net'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { root } from './helpers.mjs'
import { pickPython } from './fixtures/shared.mjs'

const s = await import(path.join(root, 'dist/cjs/eval/sandbox.js'))
const m = await import(path.join(root, 'dist/cjs/eval/metrics.js'))
const e = await import(path.join(root, 'dist/cjs/eval/evaluate.js'))
const { probePython } = await import(path.join(root, 'dist/cjs/eval/python.js'))
const cli = path.join(root, 'dist', 'cjs', 'cli.js')
const isRoot = process.getuid() === 0
const picked = pickPython(probePython, [])

/** Runs one program and parses the JSON it prints last. */
async function report(source, options = {}) {
  const r = await s.runPython(source, { python, timeoutMs: 20000, ...options })
  let parsed = null
  try {
    parsed = JSON.parse(r.stdout.trim().split('\n').pop())
  } catch {}
  return { r, out: parsed }
}

let python = null
let info = null
let why = null
if (picked.python === null) {
  why = `no usable python3 (${picked.why})`
} else {
  python = picked.python
  try {
    info = s.probeIsolation(python)
  } catch (err) {
    why = `full isolation unavailable here: ${err.code}: ${err.message}`
    t.match(err.code, /^ERR_SANDBOX(_WEAK)?$/, 'where full isolation is missing, the sandbox refuses instead of running weaker')
  }
}
if (info === null) {
  t.comment(`sandbox isolation tests skipped: ${why}`)
  t.pass('nothing more to check here')
} else {
  t.comment(`running as uid ${process.getuid()}; ${info.summary}`)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-isolation-test-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

  t.test('the probe measured full isolation', async (t) => {
    t.equal(info.kind, 'bwrap')
    t.ok(info.full, info.summary)
    t.same(info.missing, [])
    t.not(info.uid, 0)
    t.not(info.protections.hostUid, 0)
    t.ok(info.protections.noCapabilities)
    t.match(info.summary, /full isolation/)
  })

  t.test('no capability, not uid 0, not root on the host', async (t) => {
    const { r, out } = await report(`
import json, os
st = dict(l.split(":", 1) for l in open("/proc/self/status"))
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
  "caps": {k: st[k].strip() for k in ("CapPrm", "CapEff", "CapInh", "CapAmb")}, "nnp": st["NoNewPrivs"].strip(),
  "map": open("/proc/self/uid_map").read().split()}))
`)
    t.equal(r.status, 'ok', r.stderr)
    t.not(out.uid, 0)
    t.not(out.euid, 0)
    t.not(out.gid, 0)
    t.notOk(out.groups.includes(0), 'not in group 0')
    for (const [k, v] of Object.entries(out.caps)) t.match(v, /^0+$/, `${k} is empty`)
    t.equal(out.nnp, '1', 'no_new_privs')
    const [inside, outside] = out.map.map(Number)
    t.equal(inside, out.uid)
    // As root the namespace's parent is the host's; otherwise bwrap may nest one more (and cannot map root).
    if (isRoot) t.not(outside, 0, `maps to host uid ${outside}, not root`)
  })

  t.test('nothing the program does reaches the host', async (t) => {
    const mark = `recode-escape-${process.pid}-${Date.now()}`
    const hostTmpFile = path.join(os.tmpdir(), mark)
    const repoFile = path.join(root, mark)
    const homeFile = path.join(os.homedir(), mark)
    const secret = path.join(tmp, 'secret.txt')
    fs.writeFileSync(secret, 'do not read')
    // A host Unix socket (path and abstract) that must not be reachable.
    let connections = 0
    const sockPath = path.join(tmp, 'host.sock')
    const servers = [
      net.createServer((c) => {
        connections++
        c.destroy()
      }),
      net.createServer((c) => {
        connections++
        c.destroy()
      })
    ]
    await new Promise((resolve) => servers[0].listen(sockPath, resolve))
    await new Promise((resolve) => servers[1].listen(`\0${mark}`, resolve))
    t.teardown(() => servers.forEach((srv) => srv.close()))
    const { r, out } = await report(`
import ctypes, json, os, socket, subprocess
res = {}
def attempt(name, fn):
    try:
        v = fn()
        res[name] = "ok" if v is None else v
    except BaseException as e:
        res[name] = "failed: %s" % type(e).__name__
def write(p):
    with open(p, "w") as f:
        f.write("escaped")
attempt("root", lambda: write("/${mark}"))
attempt("hostTmp", lambda: write(${JSON.stringify(hostTmpFile)}))
attempt("repo", lambda: write(${JSON.stringify(repoFile)}))
attempt("home", lambda: write(${JSON.stringify(homeFile)}))
attempt("secret", lambda: open(${JSON.stringify(secret)}).read())
attempt("shadow", lambda: open("/etc/shadow").read())
attempt("rootList", lambda: sorted(os.listdir("/root")))
attempt("run", lambda: os.listdir("/run"))
def remount():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"none", b"/", None, 32, None) != 0:  # MS_REMOUNT without MS_RDONLY: read-write
        raise OSError(ctypes.get_errno(), "mount")
    write("/${mark}")
attempt("remount", remount)
def remount_cli():
    p = subprocess.run(["mount", "-o", "remount,rw", "/"], capture_output=True)
    if p.returncode != 0:
        raise OSError(p.returncode, "mount")
    write("/${mark}")
attempt("remountCli", remount_cli)
def nested():
    # A nested user namespace gives capabilities over new namespaces only, not over the host's files.
    p = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -o remount,rw / && echo x > /${mark}"], capture_output=True)
    if p.returncode != 0:
        raise OSError(p.returncode, p.stderr.decode()[-200:])
attempt("nested", nested)
def unix(addr):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(addr)
attempt("socket", lambda: unix(${JSON.stringify(sockPath)}))
attempt("abstract", lambda: unix("\\0${mark}"))
print(json.dumps(res))
`)
    t.equal(r.status, 'ok', r.stderr)
    t.comment(JSON.stringify(out))
    // hostTmp lands in the sandbox's own /tmp (allowed there); the host check below shows it stayed there.
    for (const k of ['root', 'repo', 'home', 'secret', 'shadow', 'run', 'remount', 'remountCli', 'socket', 'abstract']) {
      t.match(out[k], /^failed/, `${k}: ${out[k]}`)
    }
    if (Array.isArray(out.rootList))
      t.ok(
        out.rootList.every((x) => info.python.startsWith(`/root/${x}/`)),
        `/root shows only the way to the interpreter: ${JSON.stringify(out.rootList)}`
      )
    else t.match(out.rootList, /^failed/, '/root is not there at all')
    if (out.nested !== 'ok') t.match(out.nested, /^failed/)
    for (const f of [hostTmpFile, repoFile, homeFile, `/${mark}`]) t.notOk(fs.existsSync(f), `${f} does not exist on the host`)
    t.equal(connections, 0, 'no connection reached the host sockets')
    t.notMatch(r.stdout + r.stderr, /do not read/, 'the secret did not leak into the output')
  })

  t.test('the fork limit holds for the program (not root), quickly', async (t) => {
    const { r, out } = await report(
      `
import json, os
rd, wr = os.pipe()
n = 0
for i in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.close(wr)
        os.read(rd, 1)
        os._exit(0)
    n += 1
os.close(wr)
for i in range(n):
    os.wait()
print(json.dumps({"forks": n}))
`,
      { maxProcesses: 16 }
    )
    t.equal(r.status, 'ok', r.stderr)
    t.ok(out.forks < 16, `forking stopped at ${out.forks} children under a limit of 16 processes`)
    t.ok(out.forks >= 8, 'forks below the limit work')
  })

  t.test('memory: /tmp, /dev/shm and the heap together stay within memoryBytes', async (t) => {
    const memoryBytes = 256 * 2 ** 20
    const { r, out } = await report(
      `
import json, os
res = {}
chunk = b"x" * (1 << 20)
for d in ("/tmp", "/dev/shm"):
    n = 0
    try:
        with open(os.path.join(d, "fill"), "wb") as f:
            for i in range(4096):
                f.write(chunk)
                f.flush()
                n += 1
    except OSError as e:
        res[d + " error"] = type(e).__name__
    res[d] = n
    os.unlink(os.path.join(d, "fill"))
    # many small files meet the same limit
    k = 0
    try:
        for i in range(100000):
            with open(os.path.join(d, "s%d" % i), "wb") as f:
                f.write(chunk)
            k += 1
    except OSError:
        pass
    res[d + " files"] = k
    v = os.statvfs(d)
    res[d + " size"] = v.f_blocks * v.f_frsize
blocks = []
try:
    while True:
        blocks.append(bytearray(16 << 20))
except MemoryError:
    pass
res["heap"] = len(blocks) * 16
print(json.dumps(res))
`,
      { memoryBytes, maxFileBytes: 2 ** 30 }
    )
    t.equal(r.status, 'ok', r.stderr)
    t.comment(JSON.stringify(out))
    const tmpfs = memoryBytes / 8
    for (const d of ['/tmp', '/dev/shm']) {
      t.equal(out[`${d} size`], tmpfs, `${d} is a private tmpfs of memoryBytes/8`)
      t.ok(out[d] <= tmpfs / 2 ** 20, `${d}: one file stopped at ${out[d]} MiB`)
      t.ok(out[`${d} files`] <= tmpfs / 2 ** 20 && out[`${d} files`] >= 8, `${d}: small files stopped at ${out[`${d} files`]} MiB too`)
      t.equal(out[`${d} error`], 'OSError', `${d}: the write failed with ENOSPC`)
      t.ok(out[d] >= 8, `${d} is usable (${out[d]} MiB)`)
    }
    t.ok(out.heap < (memoryBytes / 2 ** 20) * 0.75, `heap stopped at ${out.heap} MiB`)
    t.ok(out.heap + (2 * tmpfs) / 2 ** 20 <= memoryBytes / 2 ** 20, 'heap and both tmpfs within memoryBytes')
  })

  t.test('a file larger than maxFileBytes cannot be written', async (t) => {
    const { r } = await report('open("big", "wb").write(b"x" * (2 << 20))\n', { maxFileBytes: 2 ** 20 })
    t.equal(r.status, 'error')
    t.match(m.classifyRun(r), { category: 'exception', errorType: /OSError/ })
  })

  t.test('only a program that runs to its end passes; leaving early or forging does not', async (t) => {
    const cases = {
      osExit: 'import os\nos._exit(0)\n',
      sysExit: 'import sys\nsys.exit(0)\n',
      systemExit: 'raise SystemExit(0)\n',
      exitBuiltin: 'exit()\n',
      marker: 'import os\nprint("ok")\nprint("PASSED")\nos._exit(0)\n',
      forgedFd: 'import os\nos.write(3, b"0" * 48)\nos._exit(0)\n',
      fdThenEnd: 'import os\nos.write(3, b"0" * 48)\n',
      closedFd: 'import os\nos.close(3)\n',
      thread: 'import os, threading\nthreading.Thread(target=lambda: os._exit(0)).start()\nimport time\ntime.sleep(5)\n',
      atexit: 'import atexit, os\natexit.register(lambda: os._exit(0))\nraise ValueError("test failed")\n',
      stdin: 'import sys\nprint(repr(sys.stdin.read()))\n',
      patched: 'import os\nos.write = lambda fd, b: len(b)\nprint("done")\n',
      complete: 'x = sum(range(10))\nassert x == 45\n'
    }
    const names = Object.keys(cases)
    const results = await s.runPrograms(
      names.map((n) => cases[n]),
      { python, timeoutMs: 20000, concurrency: 2 }
    )
    const r = Object.fromEntries(names.map((n, i) => [n, results[i]]))
    for (const n of names)
      t.comment(`${n}: ${r[n].status}, exit ${r[n].exitCode}, completed ${r[n].completed}: ${JSON.stringify(m.classifyRun(r[n]))}`)
    for (const n of ['osExit', 'sysExit', 'systemExit', 'exitBuiltin', 'marker', 'forgedFd', 'thread']) {
      t.equal(r[n].exitCode, 0, `${n} exits with status 0`)
      t.equal(r[n].status, 'error', `${n} is not a pass`)
      t.match(m.classifyRun(r[n]), { category: 'exception', errorType: 'incomplete' })
    }
    t.equal(r.fdThenEnd.status, 'error', 'writing to the result channel spoils the token')
    t.equal(r.closedFd.status, 'error', 'closing the result channel is a failure')
    t.equal(r.atexit.status, 'error')
    t.match(m.classifyRun(r.atexit), { errorType: 'ValueError' })
    t.equal(r.stdin.status, 'ok')
    t.equal(r.stdin.stdout, "''\n", 'stdin is empty: the token is gone before the program starts')
    t.equal(r.patched.status, 'ok', 'patching os.write does not stop the harness')
    t.equal(r.complete.status, 'ok')
    t.equal(r.complete.completed, true)

    // Through evaluate: a HumanEval completion that exits early scores 0.
    const problem = {
      taskId: 'T/0',
      prompt: 'def add(a, b):\n',
      entryPoint: 'add',
      canonicalSolution: '    return a + b\n',
      test: 'def check(f):\n    assert f(1, 2) == 3\n',
      source: { file: 'x', line: 1 }
    }
    const ev = await e.evaluate({
      benchmark: 'humaneval',
      data: [problem],
      completions: [
        { id: 'T/0', completion: '    import os\n    os._exit(0)\n' },
        { id: 'T/0', completion: '    return a + b\n' },
        { id: 'T/0', completion: '    pass\nimport sys\nsys.exit(0)\n' }
      ],
      k: [1],
      sandbox: { python, concurrency: 2 }
    })
    t.same(
      ev.records[0].samples.map((x) => x.passed),
      [false, true, false],
      'only the real solution passes'
    )
    t.equal(ev.records[0].samples[2].errorType, 'incomplete')
    t.match(e.formatEvaluation(ev), /sandbox: bwrap \(full isolation\); uid \d+/, 'the summary states the protections')
  })

  t.test(
    'an interpreter only root can reach works, without running as root',
    { skip: isRoot ? false : 'needs root (a folder only root can enter)' },
    async (t) => {
      const exe = JSON.parse(
        spawnSync(python, ['-c', 'import json, os, sys; print(json.dumps(os.path.realpath(sys.executable)))'], { encoding: 'utf8' }).stdout
      )
      const home = fs.mkdtempSync(path.join(os.homedir(), '.recode-isolation-test-'))
      t.teardown(() => fs.rmSync(home, { recursive: true, force: true }))
      fs.chmodSync(home, 0o700)
      const secret = path.join(home, 'secret.txt')
      fs.writeFileSync(secret, 'root only')
      const copy = path.join(home, 'bin', 'python3')
      fs.mkdirSync(path.dirname(copy))
      fs.copyFileSync(exe, copy)
      fs.chmodSync(copy, 0o755)
      // A venv on top of it too, where the venv module is there.
      const venv = path.join(home, 'venv')
      const made = spawnSync(copy, ['-m', 'venv', '--without-pip', venv], { encoding: 'utf8' })
      const interpreters = [copy, ...(made.status === 0 ? [path.join(venv, 'bin', 'python3')] : [])]
      if (made.status !== 0) t.comment(`no venv checked: ${made.stderr.trim().split('\n').pop()}`)
      for (const py of interpreters) {
        // The finding: uid 65534 cannot even start it on the host.
        const asNobody = spawnSync(py, ['-c', 'pass'], { uid: 65534, gid: 65534, encoding: 'utf8' })
        t.ok(
          asNobody.error !== undefined || asNobody.status !== 0,
          `uid 65534 cannot run ${py} on the host (${asNobody.error?.code ?? asNobody.status})`
        )
        const { r, out } = await report(
          `import json, os, sys
print(json.dumps({"uid": os.getuid(), "exe": sys.executable, "prefixes": [sys.prefix, sys.base_prefix],
  "root": sorted(os.listdir("/root")), "secret": os.path.exists(${JSON.stringify(secret)})}))
`,
          { python: py }
        )
        t.equal(r.status, 'ok', r.stderr)
        t.not(out.uid, 0, `${py} ran as uid ${out.uid}`)
        t.equal(out.exe, py)
        const ways = [out.exe, ...out.prefixes].filter((p) => p.startsWith('/root/')).map((p) => p.split('/')[2])
        t.ok(
          out.root.every((x) => ways.includes(x)),
          `/root shows only folders leading to the interpreter: ${JSON.stringify(out.root)}`
        )
        t.equal(out.secret, false, 'a file next to the interpreter is not visible')
      }
    }
  )

  t.test('limits are range-checked, never switched off', async (t) => {
    const bad = [
      [{ memoryBytes: -5 * 2 ** 20 }, /memoryBytes/],
      [{ memoryBytes: 1024 }, /memoryBytes/],
      [{ maxFileBytes: -1 }, /maxFileBytes/],
      [{ timeoutMs: 1e12 }, /timeoutMs/],
      [{ timeoutMs: Infinity }, /timeoutMs/],
      [{ timeoutMs: NaN }, /timeoutMs/],
      [{ timeoutMs: 0 }, /timeoutMs/],
      [{ maxProcesses: 0 }, /maxProcesses/],
      [{ maxProcesses: 2.5 }, /maxProcesses/],
      [{ maxOutputBytes: -1 }, /maxOutputBytes/],
      [{ isolation: 'none' }, /isolation/]
    ]
    for (const [opt, re] of bad) {
      const err = await s.runPython('pass\n', { python, ...opt }).catch((x) => x)
      t.equal(
        err.code,
        'ERR_INVALID_ARG',
        JSON.stringify(opt, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))
      )
      t.match(err.message, re)
    }
    await t.rejects(s.runPrograms(['pass\n'], { python, concurrency: 0 }), { code: 'ERR_INVALID_ARG', message: /concurrency/ })
    const big = await s.runPython('print("fine")\n', { python, timeoutMs: 2 ** 31 - 1 })
    t.equal(big.status, 'ok', 'the largest timeout does not fire early')

    const data = path.join(tmp, 'he.jsonl')
    fs.writeFileSync(
      data,
      JSON.stringify({
        task_id: 'T/0',
        prompt: 'def f():\n',
        entry_point: 'f',
        canonical_solution: '    return 1\n',
        test: 'def check(c):\n    assert c() == 1\n'
      }) + '\n'
    )
    const comp = path.join(tmp, 'c.jsonl')
    fs.writeFileSync(comp, JSON.stringify({ id: 'T/0', completion: '    return 1\n' }) + '\n')
    const evalCli = (...extra) =>
      spawnSync(
        process.execPath,
        [cli, 'eval', 'humaneval', '--data', data, '--completions', comp, '--quiet', '--python', python, ...extra],
        { encoding: 'utf8' }
      )
    for (const [flag, value] of [
      ['--memory-mb', '-5'],
      ['--timeout', '1e12'],
      ['--timeout', 'Infinity'],
      ['--timeout', '0'],
      ['--concurrency', '0']
    ]) {
      const res = evalCli(`${flag}=${value}`)
      t.equal(res.status, 1, `${flag} ${value} is refused`)
      t.match(res.stderr, new RegExp(`${flag}.*\\[ERR_INVALID_ARG\\]`))
    }
    const falsePython = spawnSync(
      process.execPath,
      [cli, 'eval', 'humaneval', '--data', data, '--completions', comp, '--quiet', '--python', '/bin/false'],
      { encoding: 'utf8' }
    )
    t.equal(falsePython.status, 1)
    t.match(falsePython.stderr, /\/bin\/false': exited with status 1, no message \[ERR_PYTHON\]/, 'a reason, not an empty string')
    const ok = evalCli('--timeout', '30', '--memory-mb', '512')
    t.equal(ok.status, 0, ok.stderr)
    t.match(
      ok.stdout,
      /sandbox: bwrap \(full isolation\).*private \/tmp and \/dev\/shm of 64 MiB each; address space 384 MiB \(512 MiB in all\)/
    )
  })

  t.test('weaker isolation is refused unless allowed, and then stated', async (t) => {
    const reachable = ['/usr/bin/python3'].find((p) => fs.existsSync(p)) ?? python
    const refused = (() => {
      try {
        s.probeIsolation(reachable, 'rlimits')
      } catch (err) {
        return err
      }
    })()
    t.equal(refused?.code, 'ERR_SANDBOX_WEAK')
    t.match(refused?.message, /allowWeakIsolation/)
    await t.rejects(
      e.evaluate({
        benchmark: 'humaneval',
        data: [
          {
            taskId: 'T/0',
            prompt: 'def f():\n',
            entryPoint: 'f',
            canonicalSolution: '',
            test: 'def check(c):\n    pass\n',
            source: { file: 'x', line: 1 }
          }
        ],
        completions: [{ id: 'T/0', completion: '    return 1\n' }],
        sandbox: { python: reachable, isolation: 'rlimits' }
      }),
      { code: 'ERR_SANDBOX_WEAK' }
    )
    let weak
    try {
      weak = s.probeIsolation(reachable, 'rlimits', true)
    } catch (err) {
      t.equal(err.code, 'ERR_SANDBOX', `rlimits cannot run ${reachable} here: ${err.message}`)
      return
    }
    t.equal(weak.full, false)
    t.not(weak.uid, 0, 'even weak isolation never runs programs as uid 0')
    t.ok(weak.protections.noCapabilities)
    t.ok(weak.missing.includes('network isolation'))
    t.match(weak.summary, /WEAK isolation.*missing: .*network isolation/)
    const r = await s.runPython('import os\nprint(os.getuid())\n', { python: reachable, isolation: 'rlimits', allowWeakIsolation: true })
    t.equal(r.status, 'ok', r.stderr)
    t.not(r.stdout.trim(), '0')
  })

  t.test('recode doctor states which protections hold', async (t) => {
    const res = spawnSync(process.execPath, [cli, 'doctor', '--json'], { encoding: 'utf8', env: { ...process.env, RECODE_PYTHON: python } })
    t.equal(res.status, 0, res.stderr)
    const rep = JSON.parse(res.stdout)
    t.match(
      rep.sandbox,
      /bwrap \(full isolation\); uid \d+ \(host uid \d+\); no capabilities; no_new_privs; network isolated; own pid namespace/
    )
    t.match(rep.sandboxProtections, {
      kind: 'bwrap',
      full: true,
      missing: [],
      noCapabilities: true,
      networkIsolated: true,
      processLimit: true,
      memoryLimit: true
    })
    t.not(rep.sandboxProtections.uid, 0)
  })
}
