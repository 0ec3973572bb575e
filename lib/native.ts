/**
 * Loads the native addon (a prebuilt binary from prebuilds/, or build/Release from a source build) once,
 * and turns a failed load into one clear error with the fixes, instead of a bare dlopen message.
 */
import * as path from 'path'
import { RecodeError } from './errors'

/** Root of the installed package (dist/cjs/native.js lives two levels below it). */
export const packageRoot = path.join(__dirname, '..', '..')

// The addon's functions are typed by the modules that use them (see e.g. editdist.ts).
export type NativeAddon = Record<string, (...args: any[]) => any>

let addon: NativeAddon | undefined
let loadError: RecodeError | undefined

export function native(): NativeAddon {
  if (addon) return addon
  if (loadError) throw loadError
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const load = require('node-gyp-build') as (dir: string) => NativeAddon
    addon = process.env.RECODE_ADDON ? require(path.resolve(process.env.RECODE_ADDON)) : load(packageRoot)
    return addon as NativeAddon
  } catch (err) {
    loadError = new RecodeError(
      'ERR_NATIVE_LOAD',
      `recode: the native addon could not be loaded (${(err as Error).message.split('\n')[0]}).\n` +
        `Fixes: run \`npm rebuild recode\` (or \`npm install\` in a checkout) with a C++20 compiler and CMake or\n` +
        `python3 + make installed; or install on linux-x64, which has prebuilt binaries. \`npx recode doctor\`\n` +
        `shows what was found.`,
      { cause: err }
    )
    throw loadError
  }
}

/** Where the loaded addon came from (for `recode doctor`). */
export function addonPath(): string {
  if (process.env.RECODE_ADDON) return path.resolve(process.env.RECODE_ADDON)
  try {
    return require('node-gyp-build').path(packageRoot) as string
  } catch (err) {
    return `not found (${(err as Error).message.split('\n')[0]})`
  }
}
