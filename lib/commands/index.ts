import type { Command } from './types'
import { doctor } from './doctor'
import { data } from './data'
import { evalCommand } from './eval'

/** Every `recode` subcommand, in the order `recode --help` lists them. */
export const commands: Command[] = [doctor, data, evalCommand]
