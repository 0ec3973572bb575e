'use strict'
// Native build at `npm install` (plain JavaScript: it runs before TypeScript is compiled, and on users'
// machines that have no TypeScript). Order: a prebuilt binary that loads -> cmake-js (addon + CUDA library
// when nvcc is found) -> node-gyp with binding.gyp (CPU addon only) when CMake is missing.
// Flags: --force builds from source even when a prebuild loads. Env: RECODE_BUILD_FROM_SOURCE=1 (same),
// RECODE_CUDA=0 (skip the CUDA library), RECODE_CUDA_ARCHS="90-real;90-virtual" (architecture list).
const { spawnSync } = require('child_process')
const path = require('path')
const fs = require('fs')

const root = path.join(__dirname, '..', '..')
const force =
  process.argv.includes('--force') || process.env.RECODE_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true'

function run(cmd, args) {
  console.error(`[recode] ${cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' })
  return r.status === 0
}

function have(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0
}

function prebuildLoads() {
  try {
    const p = require('node-gyp-build').path(root)
    if (!p.includes(`${path.sep}prebuilds${path.sep}`)) return false
    require(p)
    return true
  } catch {
    return false
  }
}

if (!force && prebuildLoads()) {
  console.error('[recode] using the prebuilt binary in prebuilds/')
  process.exit(0)
}

const bin = (name) => path.join(root, 'node_modules', '.bin', name)
if (have('cmake') && fs.existsSync(bin('cmake-js'))) {
  const args = ['compile', '--out', 'build']
  if (process.env.RECODE_CUDA === '0') args.push('--CDRECODE_CUDA=OFF')
  if (process.env.RECODE_CUDA_ARCHS) args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.RECODE_CUDA_ARCHS}`)
  if (run(bin('cmake-js'), args)) process.exit(0)
  console.error('[recode] cmake-js build failed; trying node-gyp (CPU only)')
}
const gyp = fs.existsSync(bin('node-gyp')) ? bin('node-gyp') : 'node-gyp'
process.exit(run(gyp, ['rebuild']) ? 0 : 1)
