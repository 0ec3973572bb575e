import * as path from 'path'
import { RecodeError } from '../errors'
import { loadTrainConfigFile, trainFlagsToConfig, validateTrainConfig } from '../train/config'
import { train } from '../train/trainer'
import { oldCodeLine } from '../train/heldout'
import { progressPrinter, scoreLine } from './progress'
import type { Command } from './types'
import { spawn } from 'child_process'
import { currentWorld, launchEnvironment } from '../dist'

/**
 * `recode train`: with no arguments, the embedded default (the demo preset: GRPO from the shipped demo base model on
 * synthetic API-update tasks, held-out tasks of unseen updates scored before, during and after; five minutes on two
 * cores). `--config FILE` and flags set any
 * field of the configuration; `--resume RUN_DIR` continues a run. Ctrl-C or SIGTERM saves a checkpoint and exits
 * (130 / 143).
 */
export const trainCommand: Command = {
  name: 'train',
  summary: 'train with GRPO, DAPO or SFT (no arguments: the embedded default on synthetic tasks)',
  usage:
    'recode train [--nproc N] [--config FILE] [--preset demo|tiny|grpo-paper|dapo-paper] [--<field> VALUE ...] [--run-dir DIR] [--resume RUN_DIR] [--max-steps N]\n' +
    '  --reward es*|es|em*|em|format   format + ES* (ReCode), + plain similarity, + EM*, + plain exact match (1/0), or format alone',
  async run(argv) {
    let configFile: string | undefined
    let resume: string | undefined
    let runDir: string | undefined
    let maxSteps: number | undefined
    let nproc: number | undefined
    const rest: string[] = []
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]
      const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
      const value = (): string => {
        const v = inline ?? argv[++i]
        if (v === undefined) throw new RecodeError('ERR_CONFIG', `recode train: ${flag} needs a value`)
        return v
      }
      if (flag === '--config') configFile = value()
      else if (flag === '--resume') resume = value()
      else if (flag === '--run-dir') runDir = value()
      else if (flag === '--nproc') {
        nproc = Number(value())
        if (!Number.isInteger(nproc) || nproc < 1) throw new RecodeError('ERR_CONFIG', '--nproc must be a positive integer')
      } else if (flag === '--max-steps') {
        maxSteps = Number(value())
        if (!Number.isInteger(maxSteps) || maxSteps < 1) throw new RecodeError('ERR_CONFIG', '--max-steps must be a positive integer')
      } else rest.push(a)
    }
    if (nproc !== undefined && nproc > 1) return await launchRanks(nproc, argv)
    const overrides = trainFlagsToConfig(rest)
    let config: unknown
    if (resume !== undefined) {
      if (configFile !== undefined || rest.length > 0)
        throw new RecodeError(
          'ERR_CONFIG',
          'recode train --resume continues a run with its saved config.json; give no --config or field flags with it'
        )
    } else {
      // no file and no preset: the embedded default, the demo preset (the library's own default stays 'tiny')
      config = configFile !== undefined ? loadTrainConfigFile(configFile, overrides) : validateTrainConfig({ preset: 'demo', ...overrides })
    }
    // SIGTERM (schedulers, `docker stop`) is handled as Ctrl-C: a checkpoint of the last finished step, then the
    // conventional status of the first signal (130 / 143).
    const controller = new AbortController()
    let first: NodeJS.Signals | undefined
    const statusOf = (sig: NodeJS.Signals): number => (sig === 'SIGTERM' ? 143 : 130)
    const onSignal = (sig: NodeJS.Signals): void => {
      if (first === undefined) {
        first = sig
        if (currentWorld().isRoot)
          process.stderr.write(
            `\ninterrupted (${sig}): finishing the current phase and saving a checkpoint (Ctrl-C again to quit at once)\n`
          )
        controller.abort()
      } else process.exit(statusOf(first))
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    const world = currentWorld()
    // mpirun forwards SIGUSR1 to every rank: `--nproc` (or `kill -USR1 <mpirun pid>`) asks for a checkpoint and a stop
    if (world.size > 1) process.on('SIGUSR1', onSignal)
    const progress = progressPrinter()
    try {
      const result = await train(config, { resume, runDir, signal: controller.signal, onEvent: progress.onEvent, stopAfterStep: maxSteps })
      progress.finish()
      const s = result.summary
      console.log('')
      console.log(`before:  ${scoreLine(s.before)}`)
      if (s.afterWarmStart) console.log(`warm:    ${scoreLine(s.afterWarmStart)}  (after the SFT warm start)`)
      console.log(`after:   ${scoreLine(s.after)}`)
      if (s.oldCode) console.log(oldCodeLine(s.oldCode))
      console.log(
        `run folder: ${result.runDir} (summary.json, metrics.jsonl, report.html, model/, ${s.adapterDir !== undefined ? 'adapter/, ' : ''}checkpoints/) in ${s.seconds.toFixed(0)} s`
      )
      return 0
    } catch (err) {
      progress.finish()
      const e = err as RecodeError & { checkpoint?: string }
      if (e.code === 'ABORT_ERR') {
        if (!world.isRoot) return 130 // rank 0 says where its checkpoint is
        console.log(
          e.checkpoint !== undefined
            ? `stopped; checkpoint ${e.checkpoint}\ncontinue with: recode train --resume ${path.dirname(path.dirname(e.checkpoint))}`
            : 'stopped before the first step finished; nothing to resume'
        )
        return statusOf(first ?? 'SIGINT')
      }
      if (world.size > 1) {
        // one rank failing must not leave the others waiting in a collective: name it and end them all
        process.stderr.write(`recode train: rank ${world.rank} of ${world.size} failed: ${(err as Error).message}\n`)
        world.abort(1)
      }
      throw err
    } finally {
      process.removeListener('SIGINT', onSignal)
      process.removeListener('SIGTERM', onSignal)
      process.removeListener('SIGUSR1', onSignal)
      if (world.size > 1) world.finalize()
    }
  }
}

/**
 * `--nproc N`: this machine's N ranks through mpirun, each running `recode train` with the other arguments.
 */
async function launchRanks(nproc: number, argv: string[]): Promise<number> {
  if (launchEnvironment().launcher !== 'none')
    throw new RecodeError('ERR_CONFIG', '--nproc starts mpirun itself; it cannot be given to a process that a launcher started')
  const args: string[] = []
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--nproc') {
      i++
      continue
    }
    if (argv[i].startsWith('--nproc=')) continue
    args.push(argv[i])
  }
  const mpirun = process.env.RECODE_MPIRUN ?? 'mpirun'
  const launcherArgs = ['-np', String(nproc), '--oversubscribe', '--bind-to', 'none']
  if (process.getuid?.() === 0) launcherArgs.push('--allow-run-as-root')
  // mpirun in a process group of its own: a terminal's Ctrl-C reaches only this launcher, which turns the first one
  // into SIGUSR1 (mpirun forwards it to the ranks: they stop at the next step and rank 0 saves a checkpoint) and a
  // second one into SIGINT (mpirun ends the job at once).
  const child = spawn(mpirun, [...launcherArgs, process.execPath, require.resolve('../cli'), 'train', ...args], {
    stdio: 'inherit',
    detached: true
  })
  let interrupts = 0
  const forward = (): void => {
    interrupts++
    if (interrupts === 1)
      process.stderr.write('\ninterrupted: the ranks finish the current step and save a checkpoint (Ctrl-C again to quit at once)\n')
    child.kill(interrupts === 1 ? 'SIGUSR1' : 'SIGINT')
  }
  const terminate = (): void => {
    child.kill('SIGTERM')
  }
  process.on('SIGINT', forward)
  process.on('SIGTERM', terminate)
  try {
    return await new Promise<number>((resolve, reject) => {
      child.on('error', (err) =>
        reject(new RecodeError('ERR_DIST', `--nproc: could not start ${mpirun} (${err.message}); install Open MPI (openmpi-bin) or MPICH`))
      )
      child.on('exit', (code, signal) => resolve(code ?? (signal !== null ? 128 + 2 : 1)))
    })
  } finally {
    process.removeListener('SIGINT', forward)
    process.removeListener('SIGTERM', terminate)
  }
}
