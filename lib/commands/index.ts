import type { Command } from './types'
import { doctor } from './doctor'
import { reward } from './reward'

/** Every `recode` subcommand, in the order `recode --help` lists them. */
export const commands: Command[] = [
  doctor,
  reward,
]
