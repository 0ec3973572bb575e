// The two builds (cmake-js and node-gyp) must compile the same sources, and the CUDA kernels each need an
// emulated twin so CI runs them.
import t from 'tap'
import * as fs from 'fs'
import * as path from 'path'
import { execFileSync } from 'child_process'
import { root, require } from './helpers.mjs'

const { listSources } = require('../lib/tools/sources.cjs')

t.test('binding.gyp and CMakeLists.txt take the same source list', async (t) => {
  const gyp = execFileSync('node', ['lib/tools/sources.cjs', 'all'], { cwd: root, encoding: 'utf8' }).split(' ').filter(Boolean)
  const cmake = [
    ...fs
      .readdirSync(path.join(root, 'src'))
      .filter((f) => f.endsWith('.cpp'))
      .map((f) => `src/${f}`)
  ]
  for (const d of fs.readdirSync(path.join(root, 'src'), { withFileTypes: true })) {
    if (d.isDirectory())
      cmake.push(
        ...fs
          .readdirSync(path.join(root, 'src', d.name))
          .filter((f) => f.endsWith('.cpp'))
          .map((f) => `src/${d.name}/${f}`)
      )
  }
  t.same(gyp, cmake.sort(), 'glob rules agree')
  t.same(listSources(root), gyp)
  const cmakeText = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8')
  t.match(
    cmakeText,
    /file\(GLOB RECODE_SOURCES CONFIGURE_DEPENDS \$\{CMAKE_SOURCE_DIR\}\/src\/\*\.cpp \$\{CMAKE_SOURCE_DIR\}\/src\/\*\/\*\.cpp\)/
  )
  t.notMatch(cmakeText + fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8'), /march=native|mtune=native/, 'no CPU-specific flags')
})

t.test('every CUDA kernel file has an emulated twin in src/emu', async (t) => {
  const hostOnly = new Set(['device.cu']) // runtime queries, no kernels
  for (const f of fs.readdirSync(path.join(root, 'cuda')).filter((f) => f.endsWith('.cu'))) {
    if (hostOnly.has(f)) continue
    const twin = path.join(root, 'src', 'emu', f.replace(/\.cu$/, '.cpp'))
    t.ok(fs.existsSync(twin), `src/emu/${path.basename(twin)} emulates cuda/${f}`)
    if (fs.existsSync(twin)) t.match(fs.readFileSync(twin, 'utf8'), new RegExp(`#include "${f.replace('.', '\\.')}"`))
  }
})
