/**
 * The demo base model shipped with the package (models/nova-base, made by lib/demo/base.ts): `config.model` names
 * it 'nova-base'. `npm start` trains it with the demo preset.
 */
export { DEMO_BASE_MODEL, demoBaseDir } from './models'
export { makeDemoBase, weightsDigest, DEMO_BASE_DEFAULTS, type DemoBaseOptions } from './base'
export { EDIT_PROMPT, editPrompt, editAnswer, generalTasks, heldOutNewNames, corpusContext, corpusDocument, type EditTask } from './corpus'
export { evaluateEdits } from './evaluate'
