/**
 * `npm run demo-base [-- --out DIR --steps N --force]`: rebuilds the demo base model (lib/demo/base.ts). The shipped
 * models/nova-base was made by this script with its defaults; it prints one progress line per 50 steps.
 */
import { makeDemoBase, DEMO_BASE_DEFAULTS } from './base'
import { RecodeError } from '../errors'

async function main(argv: string[]): Promise<void> {
  let out = 'models/nova-base'
  let force = false
  let initFrom: string | undefined
  const opts: Record<string, number> = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--out') out = argv[++i]
    else if (a === '--initFrom') initFrom = argv[++i]
    else if (a === '--force') force = true
    else if (a.startsWith('--') && (a.slice(2) in DEMO_BASE_DEFAULTS || a === '--snapshotEvery' || a === '--fromStage')) {
      const v = Number(argv[++i])
      if (!Number.isFinite(v)) throw new RecodeError('ERR_INVALID_ARG', `demo-base: ${a} needs a number, got ${argv[i]}`)
      opts[a.slice(2)] = v
    } else
      throw new RecodeError(
        'ERR_INVALID_ARG',
        `demo-base: unknown argument ${a} (--out DIR, --force, ${Object.keys(DEMO_BASE_DEFAULTS)
          .map((k) => `--${k}`)
          .join(', ')})`
      )
  }
  const ac = new AbortController()
  const stop = (): void => ac.abort()
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  let lossEma = NaN
  const r = await makeDemoBase({
    ...opts,
    out,
    force,
    initFrom,
    signal: ac.signal,
    onProgress: (p) => {
      lossEma = Number.isNaN(lossEma) ? p.loss : 0.98 * lossEma + 0.02 * p.loss
      if (p.step % 50 === 0 || p.step === p.steps)
        console.log(
          `stage ${p.stage} step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} (avg ${lossEma.toFixed(4)}) lr ${p.lr.toExponential(2)} ${p.tokensPerSecond.toFixed(0)} tok/s`
        )
    }
  })
  console.log(`wrote ${r.dir}: ${r.parameters} parameters, weights sha256 ${r.digest}, ${(r.seconds / 60).toFixed(1)} minutes`)
}

main(process.argv.slice(2)).catch((err: Error & { code?: string }) => {
  console.error(`demo-base: ${err.code ?? 'error'}: ${err.message}`)
  process.exit(err.name === 'AbortError' ? 130 : 1)
})
