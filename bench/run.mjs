// `npm run bench [name ...]`: runs bench/<name>.bench.mjs (all when none named). Each module's default
// export is an async function returning { name, results, summary }; results go to bench/results/<name>.json.
import * as fs from 'fs'
import * as path from 'path'
import { benchDir, writeResult } from './lib.mjs'

const wanted = process.argv.slice(2)
const files = fs
  .readdirSync(benchDir)
  .filter((f) => f.endsWith('.bench.mjs'))
  .sort()
  .filter((f) => wanted.length === 0 || wanted.includes(f.replace('.bench.mjs', '')))
if (files.length === 0) {
  console.error(`no benchmark matches ${wanted.join(', ')}`)
  process.exit(1)
}
for (const f of files) {
  const mod = await import(path.join(benchDir, f))
  if (mod.explicitOnly && wanted.length === 0) {
    console.log(`\n== ${f}: skipped (long; run it by name: npm run bench ${f.replace('.bench.mjs', '')})`)
    continue
  }
  console.log(`\n== ${f}`)
  const out = await mod.default()
  const file = writeResult(out.name ?? f.replace('.bench.mjs', ''), out)
  if (out.summary) console.log(out.summary)
  console.log(`-> ${path.relative(process.cwd(), file)}`)
}
