/**
 * Where the shipped demo base model lives (models/nova-base, made by lib/demo/base.ts): `config.model` names it
 * 'nova-base'. Kept apart from the script so that configuration checks do not load the corpus and trainer modules.
 */
import * as path from 'path'
import { packageRoot } from '../native'

export const DEMO_BASE_MODEL = 'nova-base'

/** The shipped demo base model's folder. */
export function demoBaseDir(): string {
  return path.join(packageRoot, 'models', DEMO_BASE_MODEL)
}
