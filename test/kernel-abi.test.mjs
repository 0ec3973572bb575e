// The CUDA kernel ABI is checked by the compiler: every entry point is declared once, in the family header its
// .cu file includes (cuda/recode_abi.h), and the kernel table (src/device/kernels.h) is generated from the same
// lists. Here: the lists and the definitions name the same entry points, nothing in src/ declares an entry point
// by hand, and a definition whose parameters drift from its declaration does not compile (host compiler through
// the emulation for every kernel file; nvcc too when it is installed).
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { root } from './helpers.mjs'

const cudaDir = path.join(root, 'cuda')
const kernelFiles = fs
  .readdirSync(cudaDir)
  .filter((f) => f.endsWith('.cu'))
  .sort()
const read = (f) => fs.readFileSync(f, 'utf8')

/** Entry points defined with RECODE_API(name) in each .cu file. */
function definitions() {
  const out = new Map()
  for (const f of kernelFiles) {
    for (const m of read(path.join(cudaDir, f)).matchAll(/^RECODE_API\((\w+)\)/gm)) out.set(m[1], f)
  }
  return out
}

/** Entry points listed in the family headers' X-macros (X(name, (params))). */
function declarations() {
  const out = new Set()
  for (const h of fs.readdirSync(cudaDir).filter((f) => /^recode_\w+\.h$/.test(f))) {
    const text = read(path.join(cudaDir, h)).replace(/\/\*[\s\S]*?\*\//g, '')
    for (const m of text.matchAll(/\bX\((\w+),[\s\\]*\(/g)) out.add(m[1])
  }
  return out
}

t.test('every RECODE_API definition is declared in a family header, and every declaration is defined', async (t) => {
  const defs = definitions()
  const decls = declarations()
  t.ok(defs.size >= 40, `found ${defs.size} definitions`)
  for (const [name, file] of defs) t.ok(decls.has(name), `${name} (cuda/${file}) is declared in a cuda/recode_*.h list`)
  for (const name of decls) t.ok(defs.has(name), `${name} is defined in some cuda/*.cu`)
  const kernelsH = read(path.join(root, 'src', 'device', 'kernels.h'))
  t.match(kernelsH, /RECODE_KERNEL_OPS\(RECODE_KERNEL_POINTER\)/, 'the kernel table is generated from the lists')
  const umbrella = read(path.join(cudaDir, 'recode_kernels.h'))
  for (const h of fs.readdirSync(cudaDir).filter((f) => /^recode_\w+\.h$/.test(f))) {
    if (['recode_abi.h', 'recode_kernels.h', 'recode_device.h'].includes(h)) continue
    t.match(umbrella, `#include "${h}"`, `recode_kernels.h takes ${h}'s list`)
  }
})

t.test('each kernel file includes the header that declares its entry points', async (t) => {
  const defs = definitions()
  for (const f of kernelFiles) {
    const names = [...defs].filter(([, file]) => file === f).map(([n]) => n)
    if (names.length === 0) continue
    const text = read(path.join(cudaDir, f))
    const includes = [...text.matchAll(/#include "(recode_\w+\.h)"/g)].map((m) => m[1])
    t.ok(includes.length > 0, `cuda/${f} includes a family header`)
    const declared = new Set()
    for (const h of includes) {
      for (const m of read(path.join(cudaDir, h)).matchAll(/\bX\((\w+),[\s\\]*\(/g)) declared.add(m[1])
    }
    for (const n of names) t.ok(declared.has(n), `cuda/${f}: ${n} is declared by a header it includes`)
  }
})

t.test('no entry point is declared by hand outside cuda/', async (t) => {
  const found = []
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name)
      if (e.isDirectory()) walk(p)
      else if (/\.(cpp|h)$/.test(e.name) && /extern\s+"C"[^;{]*\brecode_(cuda|emu)_\w+\s*\(/.test(read(p)))
        found.push(path.relative(root, p))
    }
  }
  walk(path.join(root, 'src'))
  t.same(found, [], 'src/ reaches the kernels only through src/device/kernels.h')
})

/** Copies cuda/<file> into a temporary folder with one entry point's parameter list changed (an extra leading
 * int), so its definition no longer matches the declaration in the family header. */
function mutated(file, name) {
  const text = read(path.join(cudaDir, file))
  const needle = `RECODE_API(${name})(`
  if (!text.includes(needle)) throw new Error(`${needle} not in ${file}`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-abi-'))
  fs.writeFileSync(path.join(dir, file), text.replace(needle, `${needle}int abi_probe, `))
  return dir
}

function compilerFor(cmd) {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8' })
  return r.status === 0 ? cmd : null
}

t.test('a definition that disagrees with its declaration does not compile (host compiler, emulation)', async (t) => {
  const cxx = compilerFor(process.env.CXX || 'c++') || compilerFor('g++')
  if (!cxx) {
    t.comment('skipped: no C++ compiler on PATH (set CXX); the native build needs one, so this machine did not build from source')
    t.pass('no compiler')
    return
  }
  const defs = definitions()
  // one entry point per kernel file, so every family header is exercised
  const perFile = new Map()
  for (const [name, file] of defs) if (!perFile.has(file)) perFile.set(file, name)
  for (const [file, name] of perFile) {
    const dir = mutated(file, name)
    try {
      const twin = path.join(dir, 'twin.cpp')
      fs.writeFileSync(twin, `#define RECODE_SIMT_EMULATION 1\n#include "${file}"\n`)
      const r = spawnSync(cxx, ['-std=c++20', '-fsyntax-only', `-I${path.join(root, 'src')}`, `-I${cudaDir}`, twin], { encoding: 'utf8' })
      t.not(r.status, 0, `cuda/${file} with a drifted ${name} fails to compile`)
      t.match(r.stderr, new RegExp(`conflicting declaration of C function[^\\n]*recode_emu_${name}`), `the error names recode_emu_${name}`)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
})

t.test('a definition that disagrees with its declaration does not compile (nvcc)', async (t) => {
  const nvcc = compilerFor('nvcc') || compilerFor('/usr/local/cuda/bin/nvcc')
  if (!nvcc) {
    t.comment('skipped: nvcc is not installed here, so librecode_cuda.so is not built on this machine either')
    t.pass('no nvcc')
    return
  }
  // one small file keeps this quick; the header mechanism is the same for every file
  const dir = mutated('editdist.cu', 'edit_distance')
  try {
    const r = spawnSync(
      nvcc,
      ['-std=c++17', '-arch=sm_80', `-I${cudaDir}`, '-c', path.join(dir, 'editdist.cu'), '-o', path.join(dir, 'x.o')],
      { encoding: 'utf8' }
    )
    t.not(r.status, 0, 'nvcc rejects the drifted definition')
    t.match(r.stdout + r.stderr, /recode_cuda_edit_distance/, 'the error names recode_cuda_edit_distance')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
