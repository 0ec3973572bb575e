#!/usr/bin/env node
/** The `recode` command line: `recode <command> [options]`; `recode --help` lists the commands. */
import { commands } from './commands'
import { RecodeError } from './errors'

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log('usage: recode <command> [options]\n\ncommands:')
    for (const c of commands) console.log(`  ${c.name.padEnd(12)} ${c.summary}`)
    console.log("\n`recode <command> --help` shows a command's options.")
    return name === undefined ? 1 : 0
  }
  if (name === '--version' || name === '-v') {
    console.log(require('../../package.json').version)
    return 0
  }
  const cmd = commands.find((c) => c.name === name)
  if (!cmd) {
    console.error(`recode: unknown command '${name}'; try 'recode --help'`)
    return 2
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`usage: ${cmd.usage}\n\n${cmd.summary}`)
    return 0
  }
  return await cmd.run(rest)
}

/**
 * The reader of stdout went away (`recode reward ... | head`): stop quietly, as a program killed by SIGPIPE
 * would, with its status 141, instead of an unhandled 'error' event's stack trace. Nothing is lost that the
 * reader wanted; files being written elsewhere are temporary names until renamed.
 */
function isEpipe(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'EPIPE'
}
process.stdout.on('error', (err) => {
  if (isEpipe(err)) process.exit(141)
  throw err
})

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err) => {
    if (isEpipe(err)) process.exit(141)
    if (err instanceof RecodeError || (err && typeof err.code === 'string')) {
      console.error(`recode: ${err.message} [${err.code}]`)
    } else {
      console.error(err)
    }
    process.exitCode = 1
  }
)
