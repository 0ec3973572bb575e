import type { Command } from './types'
import { doctor } from './doctor'
import { reward } from './reward'
import { data } from './data'
import { evalCommand } from './eval'
import { initModelCommand } from './init-model'
import { demo } from './demo'
import { trainCommand } from './train'
import { planCommand } from './plan'

/** Every `recode` subcommand, in the order `recode --help` lists them. */
export const commands: Command[] = [trainCommand, planCommand, doctor, reward, data, evalCommand, initModelCommand, demo]
