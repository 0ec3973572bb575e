// The formatter and the linter are part of the tests: clang-format for C++/CUDA (.clang-format), Biome for
// TypeScript and JavaScript (biome.json). `npm run format` rewrites the tree to pass.
import t from 'tap'
import * as fs from 'fs'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { root } from './helpers.mjs'

const bin = (name) => path.join(root, 'node_modules', '.bin', name)

function nativeSources() {
  const out = []
  const walk = (dir) => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name)
      if (e.isDirectory()) walk(rel)
      else if (/\.(cpp|h|cu|cuh)$/.test(e.name)) out.push(rel)
    }
  }
  walk('src')
  walk('cuda')
  return out.sort()
}

t.test('C++ and CUDA sources are clang-formatted', async (t) => {
  const files = nativeSources()
  t.ok(files.length > 50, `${files.length} files`)
  const probe = spawnSync(bin('clang-format'), ['--version'], { encoding: 'utf8' })
  if (probe.status !== 0) {
    t.comment(`skipped: the clang-format package has no binary for ${process.platform}-${process.arch}`)
    t.pass('no clang-format binary')
    return
  }
  const r = spawnSync(bin('clang-format'), ['--dry-run', '--Werror', ...files], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 })
  const offenders = [...new Set([...r.stderr.matchAll(/^([^\s:]+):\d+:\d+: error/gm)].map((m) => m[1]))]
  t.same(offenders, [], 'run `npm run format` to fix')
  t.equal(r.status, 0, r.stderr.slice(0, 2000))
})

t.test('TypeScript and JavaScript pass Biome (format and lint)', async (t) => {
  const r = spawnSync(bin('biome'), ['ci', '--max-diagnostics=50', '--colors=off'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 })
  t.equal(r.status, 0, (r.stdout + r.stderr).slice(-4000))
})
