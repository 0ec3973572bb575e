/** Data loaders: ReCode migration pairs, CodeUpdateArena (both layouts), HumanEval-format files. */
export { readJsonl, readTextFile, parseJsonl, writeFileAtomic } from './jsonl'
export type { JsonlRecord } from './jsonl'
export { loadMigrationData, readMigrationRows, normalizeVersion, splitMigrationData, MIGRATION_FIELDS } from './recode'
export type {
  MigrationExample,
  MigrationQualityReport,
  LoadMigrationOptions,
  MigrationData,
  SplitOptions,
  MigrationIssueKind
} from './recode'
export { loadCodeUpdateArena, parseUnitTests, testFunctionName } from './codeupdatearena'
export type { CodeUpdateArenaProblem, CodeUpdateArenaUpdate, CodeUpdateArenaData } from './codeupdatearena'
export { loadHumanEval } from './humaneval'
export type { HumanEvalProblem } from './humaneval'
