'use strict'
// `npm run prebuild`: builds the addon and, when nvcc is found, the CUDA library for the full architecture
// list, and places them as prebuilds/<platform>-<arch>/node.napi.node + librecode_cuda.so — the layout and
// file naming prebuildify uses, so node-gyp-build loads them. (prebuildify itself drives node-gyp only and
// would fetch Node headers; cmake-js takes them from node-api-headers and also builds the CUDA library.)
const { spawnSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const root = path.join(__dirname, '..', '..')
const out = path.join(root, 'build-prebuild')
const dest = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)

const args = ['compile', '--out', 'build-prebuild']
if (process.env.RECODE_CUDA === '0') args.push('--CDRECODE_CUDA=OFF')
const r = spawnSync(path.join(root, 'node_modules', '.bin', 'cmake-js'), args, { cwd: root, stdio: 'inherit' })
if (r.status !== 0) process.exit(r.status ?? 1)

fs.mkdirSync(dest, { recursive: true })
function place(from, name) {
  const tmp = path.join(dest, `.${name}.tmp`)
  fs.copyFileSync(from, tmp)
  spawnSync('strip', ['--strip-unneeded', tmp], { stdio: 'inherit' })
  fs.renameSync(tmp, path.join(dest, name))
  console.log(
    `[recode] ${path.relative(root, path.join(dest, name))} (${(fs.statSync(path.join(dest, name)).size / 2 ** 20).toFixed(1)} MiB)`
  )
}
place(path.join(out, 'Release', 'recode.node'), 'node.napi.node')
const cudaLib = path.join(out, 'Release', 'librecode_cuda.so')
if (fs.existsSync(cudaLib)) place(cudaLib, 'librecode_cuda.so')
else {
  fs.rmSync(path.join(dest, 'librecode_cuda.so'), { force: true })
  console.log('[recode] no CUDA library built (nvcc not found or RECODE_CUDA=0): the prebuild is CPU-only')
}
