/**
 * Runs untrusted Python: one fresh interpreter per program, with a wall-clock timeout that kills the whole
 * process tree, and resource limits (address space, processes, file size, CPU, no core dumps) set by a
 * small launcher before the program runs.
 *
 * The full sandbox (kind 'bwrap'), as measured by a probe program on each machine:
 * - never uid 0, no capabilities: as root, bubblewrap builds the filesystem view and namespaces, then
 *   setpriv drops to uid/gid 65534 (no groups, empty bounding set, no_new_privs) and unshare puts the
 *   program in its own user namespace mapping 65534 to itself. The host uid is 65534, not 0, so
 *   RLIMIT_NPROC holds (the kernel exempts host root from it), counted per sandbox (per user namespace).
 *   Not as root, bubblewrap makes the user namespace itself.
 * - only what the program needs: /usr, /bin, /lib*, a few files of /etc (no shadow), the interpreter's
 *   installation read-only at its own path (with nothing else of the folders above it: a python under
 *   /root works, /root stays hidden), private /proc and /dev; no host /tmp, /run, home or project.
 * - /tmp (also the working directory and HOME) and /dev/shm are private tmpfs, each memoryBytes/8; the
 *   address space limit is the rest (3/4), so files and memory together stay within memoryBytes.
 * - no network (own network namespace, so no abstract Unix sockets either), own pid, ipc, uts namespaces.
 * Anything less (no bubblewrap, no user namespaces, or a protection that did not hold) is refused with
 * ERR_SANDBOX_WEAK unless `allowWeakIsolation`; uid 0 or a held capability is never accepted (ERR_SANDBOX).
 *
 * A pass is not the exit status: the parent gives the launcher a random token on stdin (read, then stdin
 * is replaced by /dev/null, before the program starts), and the launcher writes it to fd 3 only after
 * the program returned normally. os._exit(0), sys.exit(0), a killed interpreter or a printed marker give
 * no token. A program that digs the token out of its own interpreter's memory could still forge one: the
 * harness shares the process with the code it checks.
 */
import { spawn, spawnSync } from 'child_process'
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { RecodeError, abortError, optionsArg } from '../errors'
import { exitReason, resolvePython } from './python'

export type IsolationKind = 'bwrap' | 'unshare' | 'rlimits'

export interface SandboxOptions {
  /** Interpreter (default: RECODE_PYTHON, else python3). It needs the packages programs import. */
  python?: string
  /** Wall-clock limit per program in ms (default 15000, as the CodeUpdateArena harness); at most 2^31-1. */
  timeoutMs?: number
  /** Memory per program in bytes, private /tmp and /dev/shm included (default 4 GiB; at least 64 MiB). */
  memoryBytes?: number
  /** Process/thread limit inside the sandbox (RLIMIT_NPROC; default 256). */
  maxProcesses?: number
  /** Largest file a program may write, bytes (RLIMIT_FSIZE; default 64 MiB; 0 forbids writing). */
  maxFileBytes?: number
  /** Bytes of stdout and of stderr kept (the tail; default 64 KiB). */
  maxOutputBytes?: number
  /** 'auto' (default) takes the full sandbox; naming a kind insists on it. */
  isolation?: 'auto' | IsolationKind
  /**
   * Run even where isolation is weaker than the full sandbox (IsolationInfo.missing says how); default
   * false, which refuses with ERR_SANDBOX_WEAK. Programs never run as uid 0 or with capabilities either way.
   */
  allowWeakIsolation?: boolean
  /** Extra environment variables for the program. */
  env?: Record<string, string>
  /**
   * Modules imported before the program runs (a missing one is skipped). The original harnesses exec
   * programs inside a warm interpreter, so modules such as `tokenize` were already loaded there; a
   * program that deletes a library attribute (a rename update) and only then imports a module that needs
   * it behaves the same only if that module was imported first.
   */
  preimport?: string[]
}

/** What the probe program measured inside the sandbox. */
export interface Protections {
  /** uid programs run as (inside their user namespace, if any). */
  uid: number
  /** The uid that maps to on the host, when a user namespace tells it; null when it does not. */
  hostUid: number | null
  /** Capability sets (permitted, effective, inheritable, ambient) are all empty. */
  noCapabilities: boolean
  noNewPrivileges: boolean
  /** Only a loopback interface, and connecting out fails. */
  networkIsolated: boolean
  /** Own pid namespace (the host's processes are not visible). */
  pidNamespace: boolean
  /** Host /tmp, /etc/shadow, other files of /root and of the working folder are not visible. */
  minimalFilesystem: boolean
  /** Writing to / fails. */
  readOnlyRoot: boolean
  /** Size of the private /tmp and /dev/shm (tmpfs), bytes; null where the host's are shared. */
  tmpBytes: number | null
  shmBytes: number | null
  /** Forking past RLIMIT_NPROC failed. */
  processLimit: boolean
  /** RLIMIT_AS is set. */
  memoryLimit: boolean
}

export interface IsolationInfo {
  kind: IsolationKind
  /** Interpreter path the sandbox runs (sys.executable). */
  python: string
  network: 'isolated' | 'host'
  /** One phrase about the filesystem view. */
  filesystem: string
  /** Whether RLIMIT_NPROC held in the probe. */
  processLimit: boolean
  /** uid programs run as. */
  uid: number
  protections: Protections
  /** Protections of the full sandbox that did not hold here (empty: full isolation). */
  missing: string[]
  full: boolean
  /** One line for humans, with the default limits. */
  summary: string
  /** Why better isolation was not used. */
  fallbacks: string[]
}

export interface RunResult {
  /**
   * ok: exit status 0 and the program ran to its end (`completed`); error: anything else that ended
   * before the limit; timeout: killed at the wall-clock limit.
   */
  status: 'ok' | 'error' | 'timeout'
  /** The launcher reported (with this run's token) that the program returned normally. */
  completed: boolean
  exitCode: number | null
  signal: string | null
  stdout: string
  stderr: string
  durationMs: number
}

export const DEFAULT_TIMEOUT_MS = 15000
const MAX_TIMEOUT_MS = 2 ** 31 - 1 // setTimeout's limit: larger values fire at once
const DEFAULT_MEMORY = 4 * 2 ** 30
const MIN_MEMORY = 64 * 2 ** 20
const DEFAULT_NPROC = 256
const DEFAULT_FSIZE = 64 * 2 ** 20
const DEFAULT_OUTPUT = 64 * 1024
const NOBODY = 65534
const PROBE_NPROC = 8
const SYSTEM_ROOTS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']
const ETC_FILES = [
  'passwd',
  'group',
  'hosts',
  'nsswitch.conf',
  'host.conf',
  'ld.so.cache',
  'ld.so.conf',
  'ld.so.conf.d',
  'localtime',
  'timezone',
  'alternatives',
  'mime.types',
  'protocols',
  'services',
  'os-release',
  'debian_version',
  'matplotlibrc',
  'fonts',
  'gai.conf',
  'locale.alias'
]

// Stdin carries one JSON line (token, limits, modules to preimport) and then the program, which the
// launcher writes to program.py in its working folder. The token is written to fd 3 only after the
// program returned; stdin is /dev/null by then and every other inherited descriptor is closed.
const LAUNCHER = [
  'def _recode_launch():',
  '    import json, os, resource, runpy, sys',
  '    data = bytearray()',
  '    while True:',
  '        b = os.read(0, 1 << 20)',
  '        if not b:',
  '            break',
  '        data += b',
  '    null = os.open(os.devnull, os.O_RDONLY)',
  '    os.dup2(null, 0)',
  '    os.close(null)',
  '    os.closerange(4, 1 << 16)',
  '    head, _, source = bytes(data).partition(b"\\n")',
  '    del data',
  '    cfg = json.loads(head)',
  '    with open("program.py", "wb") as f:',
  '        f.write(source)',
  '    del source, head',
  '    a, p, s, c = cfg["limits"]',
  '    resource.setrlimit(resource.RLIMIT_AS, (a, a))',
  '    resource.setrlimit(resource.RLIMIT_NPROC, (p, p))',
  '    resource.setrlimit(resource.RLIMIT_FSIZE, (s, s))',
  '    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))',
  '    resource.setrlimit(resource.RLIMIT_CPU, (c, c + 1))',
  '    for m in cfg["preimport"]:',
  '        try:',
  '            __import__(m)',
  '        except Exception:',
  '            pass',
  '    token = cfg.pop("token").encode()',
  '    write = os.write',
  '    del cfg',
  '    sys.argv = ["program.py"]',
  '    runpy.run_path("program.py", run_name="__main__")',
  '    write(3, token)',
  '_recode_launch()'
].join('\n')

/** Run-time limits, checked. */
interface Limits {
  timeoutMs: number
  memory: number
  nproc: number
  fsize: number
  output: number
}

interface Plan {
  kind: IsolationKind
  /** argv before the interpreter, given the limits and (weak kinds) the private host folder. */
  prefix: (limits: Limits, dir: string | null) => string[]
  /** Weak kinds run in a host folder; the full sandbox in its private /tmp. */
  hostDir: boolean
  /** Owner of the host folder (root drops to 65534). */
  dirOwner: number | null
  python: string
  info: IsolationInfo
}

const plans = new Map<string, Plan>()

function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(path.delimiter)) {
    if (dir === '') continue
    const p = path.join(dir, cmd)
    try {
      fs.accessSync(p, fs.constants.X_OK)
      return p
    } catch {}
  }
  for (const dir of ['/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    const p = path.join(dir, cmd)
    if (fs.existsSync(p)) return p
  }
  return null
}

function isUnder(p: string, root: string): boolean {
  return p === root || p.startsWith(root === '/' ? '/' : root + '/')
}

function checkInt(name: string, v: unknown, min: number, max: number, integer = true): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `sandbox option ${name} must be a${integer ? 'n integer' : ' number'} from ${min} to ${max}, got ${String(v)}`
    )
  }
  return v
}

/** The limits of one run, range-checked (a bad value never switches a limit off). */
function limitsOf(options: SandboxOptions): Limits {
  return {
    timeoutMs: checkInt('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 1, MAX_TIMEOUT_MS, false),
    memory: checkInt('memoryBytes', options.memoryBytes ?? DEFAULT_MEMORY, MIN_MEMORY, Number.MAX_SAFE_INTEGER),
    nproc: checkInt('maxProcesses', options.maxProcesses ?? DEFAULT_NPROC, 1, 2 ** 31 - 1),
    fsize: checkInt('maxFileBytes', options.maxFileBytes ?? DEFAULT_FSIZE, 0, Number.MAX_SAFE_INTEGER),
    output: checkInt('maxOutputBytes', options.maxOutputBytes ?? DEFAULT_OUTPUT, 1, 2 ** 30)
  }
}

/** Bytes of each private tmpfs (/tmp, /dev/shm): an eighth of the memory budget, whole pages. */
function tmpfsBytes(memory: number): number {
  return Math.max(4096, Math.floor(memory / 8 / 4096) * 4096)
}

/** RLIMIT_AS: what is left of the memory budget after both tmpfs. */
function addressSpace(memory: number, full: boolean): number {
  return full ? memory - 2 * tmpfsBytes(memory) : memory
}

// ---------------------------------------------------------------------------------------------------
// The interpreter's installation: what must be visible for it to start and import its packages.

interface Installation {
  executable: string
  /** Folders (or files) bound read-only at their own path. */
  binds: string[]
}

const INSTALL_PROBE = [
  'import json, os, sys, sysconfig',
  'maps = set()',
  'for line in open("/proc/self/maps"):',
  '    parts = line.split(None, 5)',
  '    if len(parts) == 6 and parts[5].startswith("/"):',
  '        maps.add(parts[5].strip())',
  'print(json.dumps({"executable": sys.executable, "prefixes": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],',
  '    "path": sys.path, "paths": [v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")], "maps": sorted(maps)}))'
].join('\n')

function describeExit(res: ReturnType<typeof spawnSync>): string {
  if (res.error !== undefined) return res.error.message
  return exitReason(res.status, res.signal, String(res.stderr ?? ''))
}

function findInstallation(python: string): Installation {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-probe-'))
  let res
  try {
    // The caller's environment (a launcher such as a pyenv shim may need it) with the sandbox's HOME,
    // so the user site folder is left out as it is inside.
    res = spawnSync(python, ['-c', INSTALL_PROBE], { cwd: home, env: { ...process.env, HOME: home }, encoding: 'utf8', timeout: 30000 })
  } finally {
    removeDir(home)
  }
  let parsed: { executable: string; prefixes: string[]; path: string[]; paths: string[]; maps: string[] } | undefined
  if (res.error === undefined && res.status === 0) {
    try {
      parsed = JSON.parse(res.stdout.trim().split('\n').pop() ?? '')
    } catch {}
  }
  if (parsed === undefined || typeof parsed.executable !== 'string') {
    const why = res.error === undefined && res.status === 0 ? `it printed ${JSON.stringify(res.stdout.slice(0, 200))}` : describeExit(res)
    throw new RecodeError('ERR_PYTHON', `cannot run the Python interpreter '${python}': ${why}`)
  }
  const executable = parsed.executable !== '' ? parsed.executable : python
  // Folders too broad to show whole (they hold more than the installation): their parts are bound instead.
  const broad = (p: string): boolean =>
    p === '/' ||
    p === '/tmp' ||
    p === os.homedir() ||
    isUnder(process.cwd(), p) ||
    isUnder(p, '/proc') ||
    isUnder(p, '/dev') ||
    isUnder(p, '/sys') ||
    isUnder(p, '/run') ||
    isUnder(p, '/etc')
  const visible = (p: string): boolean => SYSTEM_ROOTS.some((r) => isUnder(p, r))
  const prefixes = [...new Set(parsed.prefixes.filter((p) => typeof p === 'string' && path.isAbsolute(p) && !broad(p)))]
  const wanted = new Set<string>(prefixes)
  // Every hop of the executable's symlink chain.
  let hop = path.resolve(executable)
  for (let i = 0; i < 40; i++) {
    wanted.add(path.dirname(hop))
    let target: string
    try {
      target = fs.readlinkSync(hop)
    } catch {
      break
    }
    hop = path.resolve(path.dirname(hop), target)
  }
  wanted.add(path.dirname(fs.realpathSync(executable)))
  // Library folders: package folders from sys.path (not project folders that PYTHONPATH or .pth files add).
  for (const p of [...parsed.paths, ...parsed.path]) {
    if (typeof p !== 'string' || !path.isAbsolute(p) || prefixes.some((pre) => isUnder(p, pre))) continue
    if (/(?:site|dist)-packages$|\/lib-dynload$|\/python3[.\d]*$/.test(p) && !broad(p)) wanted.add(p)
  }
  for (const f of parsed.maps) {
    if (!fs.existsSync(f)) continue
    const d = path.dirname(f)
    if (!broad(d)) wanted.add(d)
  }
  const binds = [...wanted].filter((p) => fs.existsSync(p) && !visible(p) && !broad(p)).sort()
  const minimal = binds.filter((p) => !binds.some((q) => q !== p && isUnder(p, q)))
  return { executable, binds: minimal }
}

// ---------------------------------------------------------------------------------------------------
// Plans: how to start the interpreter for each kind of isolation.

function bwrapPlanArgs(
  bwrap: string,
  inst: Installation,
  asRoot: { setpriv: string; unshare: string } | null
): (limits: Limits) => string[] {
  const fixed: string[] = []
  for (const name of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    const p = '/' + name
    let st
    try {
      st = fs.lstatSync(p)
    } catch {
      continue
    }
    if (st.isSymbolicLink()) fixed.push('--symlink', fs.readlinkSync(p), p)
    else if (st.isDirectory()) fixed.push('--ro-bind', p, p)
  }
  fixed.push('--ro-bind', '/usr', '/usr', '--perms', '0755', '--dir', '/etc')
  const etc = [...ETC_FILES]
  try {
    for (const e of fs.readdirSync('/etc')) if (/^python3/.test(e)) etc.push(e)
  } catch {}
  for (const e of etc) fixed.push('--ro-bind-try', `/etc/${e}`, `/etc/${e}`)
  fixed.push('--proc', '/proc', '--dev', '/dev', '--ro-bind-try', '/sys/devices/system/cpu', '/sys/devices/system/cpu')
  // The installation at its own path, after the private /tmp (an interpreter may live under /tmp); the
  // folders above it exist but are otherwise empty.
  const install: string[] = []
  const made = new Set<string>(['/', '/tmp'])
  for (const b of inst.binds) {
    const parts = b.split('/').filter((x) => x !== '')
    for (let i = 1; i < parts.length; i++) {
      const a = '/' + parts.slice(0, i).join('/')
      if (made.has(a) || a === '/etc' || SYSTEM_ROOTS.some((r) => isUnder(a, r))) continue
      made.add(a)
      install.push('--perms', '0755', '--dir', a)
    }
    install.push('--ro-bind', b, b)
  }
  const namespaces =
    asRoot === null
      ? ['--unshare-all', '--unshare-user', '--disable-userns']
      : ['--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts', '--unshare-cgroup-try']
  const tail =
    asRoot === null
      ? []
      : [
          asRoot.setpriv,
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          '--clear-groups',
          '--bounding-set=-all',
          '--inh-caps=-all',
          '--no-new-privs',
          '--',
          asRoot.unshare,
          '--user',
          `--map-user=${NOBODY}`,
          `--map-group=${NOBODY}`,
          '--'
        ]
  return (limits) => {
    const size = String(tmpfsBytes(limits.memory))
    return [
      bwrap,
      ...namespaces,
      '--die-with-parent',
      '--new-session',
      ...fixed,
      '--perms',
      '1777',
      '--size',
      size,
      '--tmpfs',
      '/tmp',
      '--perms',
      '1777',
      '--size',
      size,
      '--tmpfs',
      '/dev/shm',
      ...install,
      '--remount-ro',
      '/',
      '--chdir',
      '/tmp',
      '--',
      ...tail
    ]
  }
}

function dropArgs(setpriv: string): string[] {
  return [
    setpriv,
    `--reuid=${NOBODY}`,
    `--regid=${NOBODY}`,
    '--clear-groups',
    '--bounding-set=-all',
    '--inh-caps=-all',
    '--no-new-privs',
    '--'
  ]
}

const PROBE_SOURCE = (hidden: string[]): string => `
import json, os, resource, socket
r = {"uid": os.getuid(), "euid": os.geteuid(), "pid": os.getpid()}
st = {}
for line in open("/proc/self/status"):
    k, _, v = line.partition(":")
    st[k] = v.strip()
r["caps"] = [st.get(k, "?") for k in ("CapPrm", "CapEff", "CapInh", "CapAmb")]
r["nnp"] = st.get("NoNewPrivs")
try:
    r["uidMap"] = open("/proc/self/uid_map").read().split()
except OSError:
    r["uidMap"] = None
r["procs"] = sum(1 for d in os.listdir("/proc") if d.isdigit())
r["ifaces"] = [n for _, n in socket.if_nameindex()]
s = socket.socket()
s.settimeout(2)
try:
    r["connect"] = s.connect_ex(("192.0.2.1", 9))
except OSError as e:
    r["connect"] = e.errno or -1
r["visible"] = [p for p in ${JSON.stringify(hidden)} if os.path.lexists(p)]
try:
    open("/recode-probe-root", "w").close()
    r["rootWritable"] = True
except OSError:
    r["rootWritable"] = False
def size(p):
    try:
        v = os.statvfs(p)
        return v.f_blocks * v.f_frsize
    except OSError:
        return None
r["tmp"] = size("/tmp")
r["shm"] = size("/dev/shm")
r["as"] = resource.getrlimit(resource.RLIMIT_AS)[0]
rd, wr = os.pipe()
kids = []
for i in range(${PROBE_NPROC + 4}):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.close(wr)
        os.read(rd, 1)
        os._exit(0)
    kids.append(pid)
os.close(wr)
for pid in kids:
    os.waitpid(pid, 0)
r["forks"] = len(kids)
print(json.dumps(r))
`

/** Host paths the program must not see: a fresh file in the host's temp folder, shadow, root's and the working folder's files. */
function hiddenPaths(inst: Installation, marker: string): string[] {
  const out = [marker, '/etc/shadow', '/run', '/var']
  const exposed = (p: string): boolean => inst.binds.some((b) => isUnder(b, p) || isUnder(p, b))
  for (const dir of [os.homedir(), process.cwd()]) {
    try {
      const entry = fs
        .readdirSync(dir)
        .map((e) => path.join(dir, e))
        .find((p) => !exposed(p))
      if (entry !== undefined) out.push(entry)
    } catch {}
  }
  return out.filter((p) => p === marker || fs.existsSync(p))
}

/** Runs the probe under a plan; the measured protections, or why the plan does not work here. */
function tryPlan(plan: Plan, inst: Installation): { protections: Protections } | { failure: string } {
  const marker = path.join(os.tmpdir(), `recode-probe-${process.pid}-${crypto.randomBytes(6).toString('hex')}`)
  fs.writeFileSync(marker, '')
  const dir = plan.hostDir ? makePrivateDir(plan.dirOwner) : null
  try {
    const limits = { ...limitsOf({}), nproc: PROBE_NPROC }
    const token = crypto.randomBytes(24).toString('hex')
    const input = launcherInput(token, limits, [], PROBE_SOURCE(hiddenPaths(inst, marker)), plan.kind === 'bwrap')
    const argv = [...plan.prefix(limits, dir), plan.python, '-B', '-c', LAUNCHER]
    const res = spawnSync(argv[0], argv.slice(1), {
      cwd: dir ?? '/',
      env: baseEnv(dir, {}, plan),
      input,
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      encoding: 'utf8',
      timeout: 60000
    })
    if (res.error !== undefined) return { failure: res.error.message }
    const completed = String(res.output[3] ?? '') === token
    if (res.status !== 0 || !completed) {
      const out = (String(res.stdout).trim() + ' ' + String(res.stderr).trim()).trim().split('\n').slice(-2).join(' ').slice(0, 300)
      return { failure: out !== '' ? out : `exit status ${String(res.status)}${completed ? '' : ', no completion token'}` }
    }
    let r: any
    try {
      r = JSON.parse(String(res.stdout).trim().split('\n').pop() ?? '')
    } catch {
      return { failure: `unreadable probe output ${JSON.stringify(String(res.stdout).slice(0, 200))}` }
    }
    // uid_map names the uid in the parent namespace. As root that is the host (setpriv, then one user
    // namespace); otherwise bwrap may nest namespaces, but an unprivileged caller can only map itself.
    const map = Array.isArray(r.uidMap) && r.uidMap.length === 3 ? r.uidMap.map(Number) : null
    const outside = map !== null && r.uid >= map[0] && r.uid < map[0] + map[2] ? map[1] + r.uid - map[0] : null
    const caller = typeof process.getuid === 'function' ? process.getuid() : null
    const hostUid = caller === 0 ? outside : caller
    const tmpfs = (v: unknown): number | null =>
      typeof v === 'number' && plan.kind === 'bwrap' && v > 0 && v <= tmpfsBytes(limits.memory) + 8192 ? v : null
    return {
      protections: {
        uid: r.uid,
        hostUid,
        noCapabilities: r.caps.every((c: string) => /^0+$/.test(c)),
        noNewPrivileges: r.nnp === '1',
        networkIsolated: r.ifaces.every((n: string) => n === 'lo') && r.connect !== 0,
        pidNamespace: r.pid <= 3 && r.procs < 20,
        minimalFilesystem: r.visible.length === 0,
        readOnlyRoot: r.rootWritable === false,
        tmpBytes: tmpfs(r.tmp),
        shmBytes: tmpfs(r.shm),
        processLimit: r.forks < PROBE_NPROC,
        memoryLimit: r.as === addressSpace(limits.memory, plan.kind === 'bwrap')
      }
    }
  } finally {
    fs.rmSync(marker, { force: true })
    if (dir !== null) removeDir(dir)
  }
}

/** The protections of the full sandbox that `p` lacks, in words. */
function missingOf(p: Protections): string[] {
  const m: string[] = []
  if (p.hostUid === null || p.hostUid === 0) m.push('an unprivileged host uid')
  if (!p.noNewPrivileges) m.push('no_new_privs')
  if (!p.networkIsolated) m.push('network isolation')
  if (!p.pidNamespace) m.push('a pid namespace')
  if (!p.minimalFilesystem) m.push('a minimal filesystem view (host files are visible)')
  if (!p.readOnlyRoot) m.push('a read-only /')
  if (p.tmpBytes === null) m.push('a private size-limited /tmp')
  if (p.shmBytes === null) m.push('a private size-limited /dev/shm')
  if (!p.processLimit) m.push('the process limit')
  if (!p.memoryLimit) m.push('the memory limit')
  return m
}

function mib(b: number): string {
  return b >= 2 ** 30 && b % 2 ** 30 === 0 ? `${b / 2 ** 30} GiB` : `${Math.round(b / 2 ** 20)} MiB`
}

/** One line: which protections hold for this isolation with these options' limits. */
export function describeIsolation(info: IsolationInfo, options: SandboxOptions = {}): string {
  options = optionsArg(options, 'describeIsolation')
  const l = limitsOf(options)
  const p = info.protections
  const full = info.kind === 'bwrap'
  const parts = [
    `${info.kind}${info.full ? ' (full isolation)' : ' (WEAK isolation)'}`,
    `uid ${p.uid}${p.hostUid !== null ? ` (host uid ${p.hostUid})` : ''}`,
    p.noCapabilities ? 'no capabilities' : 'CAPABILITIES HELD',
    p.noNewPrivileges ? 'no_new_privs' : 'privileges can be gained',
    p.networkIsolated ? 'network isolated' : 'network NOT isolated',
    p.pidNamespace ? 'own pid namespace' : 'host pids visible',
    p.minimalFilesystem ? 'filesystem: system folders, minimal /etc and the interpreter, read-only' : 'host filesystem visible',
    p.tmpBytes !== null && p.shmBytes !== null
      ? `private /tmp and /dev/shm of ${mib(tmpfsBytes(l.memory))} each`
      : 'host /tmp and /dev/shm shared, not size-limited',
    `address space ${mib(addressSpace(l.memory, full))}${full ? ` (${mib(l.memory)} in all)` : ''}${p.memoryLimit ? '' : ' NOT enforced'}`,
    `${l.nproc} processes${p.processLimit ? '' : ' (NOT enforced)'}`,
    `files up to ${mib(l.fsize)}`,
    `timeout ${l.timeoutMs / 1000} s kills the process tree`
  ]
  return parts.join('; ')
}

/**
 * Finds the isolation for this interpreter (cached): the full sandbox, or with `allowWeakIsolation`
 * the best that works here. Throws ERR_SANDBOX_WEAK when only weaker isolation works and it was not
 * allowed, ERR_SANDBOX when nothing works without uid 0 or capabilities, ERR_PYTHON when the
 * interpreter does not start.
 */
export function probeIsolation(python?: string, requested: 'auto' | IsolationKind = 'auto', allowWeakIsolation = false): IsolationInfo {
  return planFor(python, requested, allowWeakIsolation).info
}

function planFor(python: string | undefined, requested: 'auto' | IsolationKind, allowWeak: boolean): Plan {
  if (!['auto', 'bwrap', 'unshare', 'rlimits'].includes(requested))
    throw new RecodeError('ERR_INVALID_ARG', `sandbox option isolation must be auto, bwrap, unshare or rlimits, got '${String(requested)}'`)
  const exe = resolvePython(python)
  const key = `${exe}\0${requested}\0${allowWeak ? 1 : 0}`
  const cached = plans.get(key)
  if (cached !== undefined) return cached
  const inst = findInstallation(exe)
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  const bwrap = which('bwrap')
  const unshare = which('unshare')
  const setpriv = which('setpriv')
  const fallbacks: string[] = []
  const candidates: Array<{ kind: IsolationKind; prefix: Plan['prefix']; hostDir: boolean }> = []
  const want = (k: IsolationKind): boolean => requested === 'auto' || requested === k
  if (want('bwrap')) {
    if (bwrap === null) fallbacks.push('bwrap not found on PATH')
    else if (isRoot && (setpriv === null || unshare === null))
      fallbacks.push('running as root, bwrap needs setpriv and unshare (util-linux) to drop to uid 65534')
    else {
      const args = bwrapPlanArgs(bwrap, inst, isRoot ? { setpriv: setpriv as string, unshare: unshare as string } : null)
      candidates.push({ kind: 'bwrap', prefix: (l) => args(l), hostDir: false })
    }
  }
  const drop = isRoot && setpriv !== null ? dropArgs(setpriv) : []
  if (isRoot && setpriv === null && (want('unshare') || want('rlimits')))
    fallbacks.push('running as root and setpriv not found: cannot drop to an unprivileged uid')
  const uid = isRoot ? NOBODY : typeof process.getuid === 'function' ? process.getuid() : 0
  const gid = isRoot ? NOBODY : typeof process.getgid === 'function' ? process.getgid() : 0
  if (want('unshare') && (!isRoot || setpriv !== null)) {
    if (unshare === null) fallbacks.push('unshare not found on PATH')
    else
      candidates.push({
        kind: 'unshare',
        prefix: () => [
          ...drop,
          unshare,
          '--user',
          `--map-user=${uid}`,
          `--map-group=${gid}`,
          '--net',
          '--pid',
          '--fork',
          '--kill-child',
          '--'
        ],
        hostDir: true
      })
  }
  if (want('rlimits') && (!isRoot || setpriv !== null)) candidates.push({ kind: 'rlimits', prefix: () => drop, hostDir: true })

  let weakest: string | null = null
  for (const c of candidates) {
    const plan: Plan = {
      kind: c.kind,
      prefix: c.prefix,
      hostDir: c.hostDir,
      dirOwner: isRoot ? NOBODY : null,
      python: inst.executable,
      info: undefined as unknown as IsolationInfo
    }
    const res = tryPlan(plan, inst)
    if ('failure' in res) {
      fallbacks.push(`${c.kind} does not work here: ${res.failure}`)
      continue
    }
    const p = res.protections
    if (p.uid === 0 || !p.noCapabilities) {
      fallbacks.push(`${c.kind} would run programs ${p.uid === 0 ? 'as uid 0' : 'with capabilities'}: never used`)
      continue
    }
    const missing = missingOf(p)
    plan.info = {
      kind: c.kind,
      python: inst.executable,
      network: p.networkIsolated ? 'isolated' : 'host',
      filesystem: p.minimalFilesystem
        ? 'minimal read-only view; private /tmp and /dev/shm'
        : 'host filesystem, writable where the uid may write',
      processLimit: p.processLimit,
      uid: p.uid,
      protections: p,
      missing,
      full: missing.length === 0,
      summary: '',
      fallbacks
    }
    plan.info.summary = describeIsolation(plan.info) + (missing.length > 0 ? `; missing: ${missing.join(', ')}` : '')
    if (missing.length > 0 && !allowWeak) {
      fallbacks.push(`${c.kind} lacks ${missing.join(', ')}`)
      weakest ??= c.kind
      continue
    }
    plans.set(key, plan)
    return plan
  }
  if (weakest !== null) {
    throw new RecodeError(
      'ERR_SANDBOX_WEAK',
      `the sandbox for ${inst.executable} would be weaker than full isolation here (${fallbacks.join('; ')}); ` +
        'pass allowWeakIsolation (recode eval --allow-weak-isolation) to run programs anyway'
    )
  }
  throw new RecodeError(
    'ERR_SANDBOX',
    `no usable sandbox for ${inst.executable}${requested !== 'auto' ? ` with isolation '${requested}'` : ''}: ${fallbacks.join('; ')}`
  )
}

/** Environment of a sandboxed program: nothing of the caller's but PYTHONPATH, and `extra`. */
function baseEnv(dir: string | null, extra: Record<string, string>, plan: Plan | null): NodeJS.ProcessEnv {
  const home = plan !== null && !plan.hostDir ? '/tmp' : (dir ?? '/tmp')
  const env: NodeJS.ProcessEnv = {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: home,
    TMPDIR: home,
    USER: 'nobody',
    LOGNAME: 'nobody',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONUNBUFFERED: '1',
    PYTHONIOENCODING: 'utf-8',
    // One thread per math library: programs run in parallel across cores already.
    OMP_NUM_THREADS: '1',
    OPENBLAS_NUM_THREADS: '1',
    MKL_NUM_THREADS: '1',
    NUMEXPR_NUM_THREADS: '1',
    MPLBACKEND: 'Agg',
    MPLCONFIGDIR: home
  }
  if (plan !== null) env.PATH = `${path.dirname(plan.python)}:${env.PATH as string}`
  if (process.env.PYTHONPATH !== undefined) env.PYTHONPATH = process.env.PYTHONPATH
  return { ...env, ...extra }
}

function launcherInput(token: string, l: Limits, preimport: string[], source: string, full: boolean): Buffer {
  const head = JSON.stringify({
    token,
    limits: [addressSpace(l.memory, full), l.nproc, l.fsize, Math.ceil(l.timeoutMs / 1000) + 1],
    preimport
  })
  return Buffer.concat([Buffer.from(head + '\n'), Buffer.from(source, 'utf8')])
}

function makePrivateDir(owner: number | null): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-sandbox-'))
  if (owner !== null) fs.chownSync(dir, owner, owner)
  return dir
}

function removeDir(dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  } catch {}
}

/** Keeps the last `limit` bytes of a stream. */
class Tail {
  private chunks: Buffer[] = []
  private size = 0
  constructor(private readonly limit: number) {}
  push(b: Buffer): void {
    this.chunks.push(b)
    this.size += b.length
    while (this.size - this.chunks[0].length >= this.limit) this.size -= (this.chunks.shift() as Buffer).length
  }

  text(): string {
    const all = Buffer.concat(this.chunks)
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8')
  }
}

/** Runs one program (Python source) in a fresh sandboxed interpreter. */
export function runPython(source: string, options: SandboxOptions = {}, signal?: AbortSignal): Promise<RunResult> {
  if (typeof source !== 'string') return Promise.reject(new RecodeError('ERR_INVALID_ARG', 'program source must be a string'))
  if (signal?.aborted === true) return Promise.reject(abortError())
  let plan: Plan
  let limits: Limits
  try {
    options = optionsArg(options, 'runPython')
    limits = limitsOf(options)
    plan = planFor(options.python, options.isolation ?? 'auto', options.allowWeakIsolation === true)
  } catch (err) {
    return Promise.reject(err)
  }
  const preimport = options.preimport ?? []
  for (const m of preimport)
    if (typeof m !== 'string' || !/^[A-Za-z_][A-Za-z0-9_.]*$/.test(m))
      return Promise.reject(new RecodeError('ERR_INVALID_ARG', `preimport: '${String(m)}' is not a module name`))
  const dir = plan.hostDir ? makePrivateDir(plan.dirOwner) : null
  const token = crypto.randomBytes(24).toString('hex')
  const argv = [...plan.prefix(limits, dir), plan.python, '-B', '-c', LAUNCHER]
  const started = process.hrtime.bigint()
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      cwd: dir ?? '/',
      env: baseEnv(dir, options.env ?? {}, plan),
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      detached: true
    })
    const stdout = new Tail(limits.output)
    const stderr = new Tail(limits.output)
    let report = Buffer.alloc(0)
    let timedOut = false
    let aborted = false
    // The child leads its own process group: killing the group takes every descendant that stayed in it;
    // with namespaces, the pid namespace dies with its first process, taking the rest.
    const killTree = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
      } catch {}
      try {
        child.kill('SIGKILL')
      } catch {}
    }
    const timer = setTimeout(() => {
      timedOut = true
      killTree()
    }, limits.timeoutMs)
    const onAbort = (): void => {
      aborted = true
      killTree()
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    child.stdout?.on('data', (b: Buffer) => stdout.push(b))
    child.stderr?.on('data', (b: Buffer) => stderr.push(b))
    const channel = child.stdio[3] as NodeJS.ReadableStream | null
    // Only the token counts; a program that writes more there can only fail its own run.
    channel?.on('data', (b: Buffer) => {
      if (report.length <= 256) report = Buffer.concat([report, b])
    })
    channel?.on('error', () => {})
    child.stdin?.on('error', () => {}) // a sandbox that failed to start; the exit status reports it
    child.stdin?.end(launcherInput(token, limits, preimport, source, plan.kind === 'bwrap'))
    const finish = (exitCode: number | null, sig: NodeJS.Signals | null, spawnError?: Error): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      killTree() // leftovers that outlived the main process (background children) go too
      if (dir !== null) removeDir(dir)
      if (spawnError !== undefined) {
        reject(new RecodeError('ERR_SANDBOX', `cannot start the sandbox (${argv[0]}): ${spawnError.message}`, { cause: spawnError }))
        return
      }
      if (aborted) {
        reject(abortError())
        return
      }
      const completed = !timedOut && report.toString('latin1') === token
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6
      resolve({
        status: timedOut ? 'timeout' : exitCode === 0 && completed ? 'ok' : 'error',
        completed,
        exitCode,
        signal: sig,
        stdout: stdout.text(),
        stderr: stderr.text(),
        durationMs
      })
    }
    let done = false
    child.on('error', (err) => {
      if (!done) {
        done = true
        finish(null, null, err)
      }
    })
    child.on('close', (code, sig) => {
      if (!done) {
        done = true
        finish(code, sig)
      }
    })
  })
}

export interface RunManyOptions extends SandboxOptions {
  /** Programs run at once (default: the number of CPU cores). */
  concurrency?: number
  signal?: AbortSignal
  onProgress?: (p: { done: number; total: number }) => void
}

/** Runs many programs, `concurrency` at a time; results in input order. */
export async function runPrograms(sources: string[], options: RunManyOptions = {}): Promise<RunResult[]> {
  if (!Array.isArray(sources))
    throw new RecodeError(
      'ERR_INVALID_ARG',
      `runPrograms: sources must be an array of program sources, got ${sources === null ? 'null' : typeof sources}`
    )
  options = optionsArg(options, 'runPrograms')
  const concurrency = checkInt('concurrency', options.concurrency ?? defaultConcurrency(), 1, 4096)
  limitsOf(options)
  const results: RunResult[] = new Array(sources.length)
  let next = 0
  let done = 0
  const worker = async (): Promise<void> => {
    while (next < sources.length) {
      if (options.signal?.aborted === true) throw abortError()
      const i = next++
      results[i] = await runPython(sources[i], options, options.signal)
      done++
      options.onProgress?.({ done, total: sources.length })
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, sources.length) }, worker))
  return results
}

export function defaultConcurrency(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
}

/**
 * The line `recode doctor` prints about program isolation: what holds here, and whether evaluation
 * would refuse to run without allowWeakIsolation.
 */
export function isolationSummary(python?: string): string {
  try {
    const info = probeIsolation(python, 'auto', true)
    if (info.full) return info.summary
    return `${info.summary}. Evaluation refuses this without --allow-weak-isolation (${info.fallbacks.join('; ')})`
  } catch (err) {
    return `unavailable: ${(err as Error).message}`
  }
}
