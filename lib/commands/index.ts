import type { Command } from './types'
import { doctor } from './doctor'
import { initModelCommand } from './init-model'

/** Every `recode` subcommand, in the order `recode --help` lists them. */
export const commands: Command[] = [doctor, initModelCommand]
