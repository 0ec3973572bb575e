import { RecodeError } from '../errors'
import { trainFlagsToConfig, validateTrainConfig } from '../train/config'
import { formatPlan, planMemory, readModelConfigFor } from '../train/memoryPlan'
import type { Command } from './types'

/**
 * `recode plan --model DIR_OR_CONFIG_JSON`: the peak device memory of a CUDA training run (generation and
 * training, part by part) and whether it fits, from config.json alone.
 */
export const planCommand: Command = {
  name: 'plan',
  summary: "plan the GPU memory of a training run from the model's config.json (no weights needed)",
  usage: 'recode plan --model DIR_OR_CONFIG_JSON [--preset P] [--<field> VALUE ...] [--gpu-memory GiB] [--nproc N] [--json]',
  async run(argv) {
    let model: string | undefined
    let gpuMemoryGiB: number | undefined
    let nproc: number | undefined
    let json = false
    const rest: string[] = []
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]
      const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
      const value = (): string => {
        const v = inline ?? argv[++i]
        if (v === undefined) throw new RecodeError('ERR_CONFIG', `recode plan: ${flag} needs a value`)
        return v
      }
      if (flag === '--model') model = value()
      else if (flag === '--gpu-memory') gpuMemoryGiB = Number(value())
      else if (flag === '--nproc') nproc = Number(value())
      else if (flag === '--json') json = true
      else rest.push(a)
    }
    if (model === undefined) throw new RecodeError('ERR_CONFIG', 'recode plan: --model DIR_OR_CONFIG_JSON is required')
    const overrides = trainFlagsToConfig(rest)
    const config = validateTrainConfig({ ...overrides, model, data: overrides.data ?? 'synthetic' }, { checkPaths: false })
    const plan = planMemory(readModelConfigFor(model), config, { gpuMemoryGiB, nproc })
    console.log(json ? JSON.stringify(plan, null, 2) : formatPlan(plan))
    return 0
  }
}
