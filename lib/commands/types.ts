/** A `recode` subcommand: `run` gets the arguments after the subcommand name and returns an exit code. */
export interface Command {
  name: string
  summary: string
  usage: string
  run: (argv: string[]) => Promise<number>
}
