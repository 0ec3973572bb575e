'use strict'
// The one rule for which C++ files make the addon, shared by binding.gyp (which calls this script) and
// mirrored by CMakeLists.txt's globs: every src/*.cpp and src/*/*.cpp; files ending in _avx2.cpp form the
// AVX2 group compiled with AVX2 flags. Usage: node lib/tools/sources.cjs [base|avx2|all]
const fs = require('fs')
const path = require('path')

function listSources(root) {
  const src = path.join(root, 'src')
  const out = []
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    if (entry.isFile() && entry.name.endsWith('.cpp')) out.push(`src/${entry.name}`)
    if (entry.isDirectory()) {
      for (const f of fs.readdirSync(path.join(src, entry.name))) {
        if (f.endsWith('.cpp')) out.push(`src/${entry.name}/${f}`)
      }
    }
  }
  return out.sort()
}

module.exports = { listSources }

if (require.main === module) {
  const group = process.argv[2] || 'all'
  const all = listSources(path.join(__dirname, '..', '..'))
  const pick =
    group === 'avx2' ? all.filter((f) => f.endsWith('_avx2.cpp')) : group === 'base' ? all.filter((f) => !f.endsWith('_avx2.cpp')) : all
  process.stdout.write(pick.join(' '))
}
