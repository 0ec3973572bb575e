/**
 * Code from model output, the way ReCode's prompt asks for it: reasoning in <think>...</think>, then
 * <answer> holding a ```python fenced block. Looser outputs are accepted in this order: the answer's first
 * python fence, any fence in the answer, the answer's text; outside an answer, the first python fence,
 * then any fence; text with no tags and no fences is taken as bare code (completions made elsewhere).
 */
export type ExtractionMethod = 'answer-fence' | 'answer' | 'fence' | 'bare' | 'none'

export interface ExtractedCode {
  /** null when nothing usable was found (scored as "no code"). */
  code: string | null
  method: ExtractionMethod
}

const PYTHON_FENCE = /```[ \t]*(?:python3?|py)[ \t]*\r?\n([\s\S]*?)```/i
const ANY_FENCE = /```[^\n`]*\r?\n([\s\S]*?)```/

function fenced(text: string): string | null {
  const m = PYTHON_FENCE.exec(text) ?? ANY_FENCE.exec(text)
  return m === null ? null : trimBlank(m[1])
}

/** Removes blank lines at both ends, keeping the indentation of the first code line. */
function trimBlank(code: string): string {
  return code.replace(/^(?:[ \t]*\r?\n)+/, '').replace(/\s+$/, '') + '\n'
}

export function extractCode(output: string): ExtractedCode {
  if (typeof output !== 'string') return { code: null, method: 'none' }
  // Only look after the reasoning: a model may quote tags while thinking.
  const thinkEnd = output.lastIndexOf('</think>')
  const region = thinkEnd >= 0 ? output.slice(thinkEnd + '</think>'.length) : output
  const open = region.indexOf('<answer>')
  if (open >= 0) {
    const start = open + '<answer>'.length
    const close = region.indexOf('</answer>', start)
    const answer = close >= 0 ? region.slice(start, close) : region.slice(start)
    const code = fenced(answer)
    if (code !== null && code.trim() !== '') return { code, method: 'answer-fence' }
    if (answer.trim() !== '' && !answer.includes('```')) return { code: trimBlank(answer), method: 'answer' }
    return { code: null, method: 'none' }
  }
  const code = fenced(region)
  if (code !== null && code.trim() !== '') return { code, method: 'fence' }
  if (/<\/?think>|<\/?answer>/.test(output) || output.includes('```')) return { code: null, method: 'none' }
  if (output.trim() === '') return { code: null, method: 'none' }
  return { code: output, method: 'bare' }
}
