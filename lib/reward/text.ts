/**
 * The text side of the ReCode reward: the format check, the ```python fence, and the comment/blank-line
 * normalisation, reproducing the reference's Python `re` behaviour exactly, quirks included
 * (see docs: recode.md section 3). The reference patterns are:
 *   format    ^<think>([^<]*(?:<(?!/?think>)[^<]*)*)</think>\s*<answer>([\s\S]*?)</answer>\s*$   (search)
 *   fence     ```python\n(.*?)\n```                                               DOTALL, first match
 *   strings   ('''(.*?)'''|"""(.*?)"""|'(.*?)'|"(.*?)")                           DOTALL -> placeholders
 *   comments  #.*?$|"""(.*?)"""|'''(.*?)'''                                       MULTILINE|DOTALL -> ''
 *   then placeholders restored by str.replace in insertion order, \n\s*\n -> \n, str.strip(),
 *   ^\s*$\n -> '' (MULTILINE).
 *
 * Why hand-written scanners instead of JavaScript regular expressions:
 * - Python's `\s` (str patterns) and str.strip() use str.isspace(): it includes \x1c-\x1f and \x85 and
 *   excludes \ufeff; JavaScript's `\s` includes \ufeff and excludes \x1c-\x1f and \x85.
 * - Python MULTILINE `^`/`$` break lines only at \n; JavaScript's `m` flag also breaks at \r, \u2028 and
 *   \u2029.
 * - String.prototype.replace with a string replacement expands `$&`, `$1`... found in the restored text.
 * Each scanner below states the regex behaviour it reproduces. All the characters they look for are
 * ASCII or BMP, so scanning UTF-16 units finds the same matches as Python does over code points.
 */

/** str.isspace(): exactly the characters Python's `\s` matches in a str pattern and str.strip() removes. */
export function isPythonSpace(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)
  if (c < 0x85) return false
  return (
    c === 0x85 ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  )
}

/** Python's str.strip() with no argument. */
export function pythonStrip(s: string): string {
  let start = 0
  let end = s.length
  while (start < end && isPythonSpace(s.charCodeAt(start))) start++
  while (end > start && isPythonSpace(s.charCodeAt(end - 1))) end--
  return start === 0 && end === s.length ? s : s.slice(start, end)
}

/**
 * The format reward's test, on '<think>' + completion. The think group `[^<]*(?:<(?!/?think>)[^<]*)*` can
 * cross every `<` except one that starts `<think>` or `</think>`, so it ends at the first of those in the
 * completion, which must be `</think>`. Then `\s*<answer>`. `[\s\S]*?</answer>\s*$` holds iff the text,
 * with trailing whitespace removed, ends with `</answer>` after the `<answer>` (`$` may also match before
 * a final \n, but `\s*` already reaches the end).
 */
export function formatOk(completion: string): boolean {
  const close = completion.indexOf('</think>')
  if (close < 0) return false
  const open = completion.indexOf('<think>')
  if (open >= 0 && open < close) return false
  const n = completion.length
  let k = close + 8
  while (k < n && isPythonSpace(completion.charCodeAt(k))) k++
  if (!completion.startsWith('<answer>', k)) return false
  let end = n
  while (end > k && isPythonSpace(completion.charCodeAt(end - 1))) end--
  return end - 9 >= k + 8 && completion.startsWith('</answer>', end - 9)
}

const FENCE_OPEN = '```python\n'
const FENCE_CLOSE = '\n```'

/**
 * The body of the first ```` ```python\n(.*?)\n``` ```` match (DOTALL), or null when there is none. The
 * leftmost match starts at the first opening; if that opening has no closing after it, no later one has.
 * The body may be empty, so the closing is searched from the body's first character.
 */
export function extractFence(completion: string): string | null {
  const open = completion.indexOf(FENCE_OPEN)
  if (open < 0) return null
  const bodyStart = open + FENCE_OPEN.length
  const close = completion.indexOf(FENCE_CLOSE, bodyStart)
  if (close < 0) return null
  return completion.slice(bodyStart, close)
}

export const PLACEHOLDER = 'STRING_PLACEHOLDER_'

/**
 * re.sub(('''(.*?)'''|"""(.*?)"""|'(.*?)'|"(.*?)"), placeholder, code, DOTALL): at each position the four
 * alternatives are tried in order, each ending at the first closing quote(s) after it (non-greedy); the
 * scan resumes after a match, or one character further when nothing matched there. A `'''` without a
 * closing `'''` falls through to `'(.*?)'`, which matches the empty string literal `''`.
 */
export function replaceStrings(code: string): { text: string; literals: string[] } {
  const literals: string[] = []
  let text = ''
  let copied = 0
  // Once a search for a closing delimiter fails from some position, it fails from every later one.
  let noTripleSingle = false
  let noTripleDouble = false
  // Only quotes can start a match: jump from one to the next with indexOf (which scans fast).
  let nextSingle = code.indexOf("'")
  let nextDouble = code.indexOf('"')
  while (nextSingle >= 0 || nextDouble >= 0) {
    const single = nextDouble < 0 || (nextSingle >= 0 && nextSingle < nextDouble)
    const i = single ? nextSingle : nextDouble
    let end = -1
    if (single && !noTripleSingle && code.startsWith("'''", i)) {
      const k = code.indexOf("'''", i + 3)
      if (k >= 0) end = k + 3
      else noTripleSingle = true
    } else if (!single && !noTripleDouble && code.startsWith('"""', i)) {
      const k = code.indexOf('"""', i + 3)
      if (k >= 0) end = k + 3
      else noTripleDouble = true
    }
    if (end < 0) {
      const k = code.indexOf(single ? "'" : '"', i + 1)
      if (k >= 0) end = k + 1
    }
    if (end < 0) {
      // No closing quote of this kind anywhere after i: this one starts nothing, and neither does a
      // later one of the same kind.
      if (single) nextSingle = -1
      else nextDouble = -1
      continue
    }
    text += code.slice(copied, i) + PLACEHOLDER + String(literals.length)
    literals.push(code.slice(i, end))
    copied = end
    if (nextSingle >= 0 && nextSingle < end) nextSingle = code.indexOf("'", end)
    if (nextDouble >= 0 && nextDouble < end) nextDouble = code.indexOf('"', end)
  }
  return { text: copied === 0 ? code : text + code.slice(copied), literals }
}

/**
 * re.sub(#.*?$|"""(.*?)"""|'''(.*?)''', '', text, MULTILINE|DOTALL): a `#` removes everything up to (not
 * including) the next \n or the end (MULTILINE `$` is before \n only, never \r or \u2028); a `"""` or
 * `'''` with a closing triple after it removes the whole span (after replaceStrings this can only happen
 * in contrived input, but it is reproduced anyway).
 */
export function removeComments(text: string): string {
  let out = ''
  let copied = 0
  const n = text.length
  // The next position where each alternative could start (-1: nowhere from here on).
  let nextHash = text.indexOf('#')
  let nextTripleDouble = text.indexOf('"""')
  let nextTripleSingle = text.indexOf("'''")
  while (nextHash >= 0 || nextTripleDouble >= 0 || nextTripleSingle >= 0) {
    let i = n
    if (nextHash >= 0) i = nextHash
    if (nextTripleDouble >= 0 && nextTripleDouble < i) i = nextTripleDouble
    if (nextTripleSingle >= 0 && nextTripleSingle < i) i = nextTripleSingle
    let end: number
    if (i === nextHash) {
      end = text.indexOf('\n', i)
      if (end < 0) end = n
    } else {
      const triple = i === nextTripleDouble ? '"""' : "'''"
      const k = text.indexOf(triple, i + 3)
      if (k < 0) {
        // No closing triple after i, hence none after any later opening either.
        if (triple === '"""') nextTripleDouble = -1
        else nextTripleSingle = -1
        continue
      }
      end = k + 3
    }
    out += text.slice(copied, i)
    copied = end
    if (nextHash >= 0 && nextHash < end) nextHash = text.indexOf('#', end)
    if (nextTripleDouble >= 0 && nextTripleDouble < end) nextTripleDouble = text.indexOf('"""', end)
    if (nextTripleSingle >= 0 && nextTripleSingle < end) nextTripleSingle = text.indexOf("'''", end)
  }
  return copied === 0 ? text : out + text.slice(copied)
}

/**
 * for i, literal in enumerate(literals): text = text.replace('STRING_PLACEHOLDER_' + str(i), literal)
 *
 * Quirk: with 11 or more literals, replacing placeholder 1 also rewrites the first 20 characters of
 * placeholders 10-19 (leaving their last digit behind), so literal 10 comes back as literal 1 + '0'.
 * Generally, when no literal contains 'STRING_PLACEHOLDER_', each occurrence of it followed by a digit
 * d < len(literals) is replaced by literal d (str(d) is the first, shortest number tried that prefixes
 * the digits), and no replacement creates a new occurrence (literals start and end with a quote, which
 * the placeholder text never contains). That gives the one-pass loop below; when a literal does contain
 * the placeholder text, the sequential replacement is done literally.
 */
export function restoreStrings(text: string, literals: string[]): string {
  if (literals.length === 0) return text
  for (const literal of literals) {
    if (literal.includes(PLACEHOLDER)) return restoreStringsSequentially(text, literals)
  }
  let out = ''
  let copied = 0
  let i = text.indexOf(PLACEHOLDER)
  while (i >= 0) {
    const digitAt = i + PLACEHOLDER.length
    const d = text.charCodeAt(digitAt) - 0x30
    if (d >= 0 && d <= 9 && d < literals.length) {
      out += text.slice(copied, i) + literals[d]
      copied = digitAt + 1
      i = text.indexOf(PLACEHOLDER, copied)
    } else {
      i = text.indexOf(PLACEHOLDER, digitAt)
    }
  }
  return copied === 0 ? text : out + text.slice(copied)
}

/** The reference's loop as written: str.replace (all occurrences, no `$` expansion) per placeholder. */
export function restoreStringsSequentially(text: string, literals: string[]): string {
  for (let i = 0; i < literals.length; i++) text = text.split(PLACEHOLDER + String(i)).join(literals[i])
  return text
}

/**
 * re.sub(\n\s*\n, \n, s): from a \n, greedy `\s*` takes the whole whitespace run after it and backs off
 * to the last \n in that run; the match (first \n to last \n) becomes one \n. No second \n: no match.
 */
export function collapseBlankLines(s: string): string {
  let out = ''
  let copied = 0
  const n = s.length
  let i = s.indexOf('\n')
  while (i >= 0) {
    let lastNewline = -1
    let j = i + 1
    for (; j < n; j++) {
      const c = s.charCodeAt(j)
      if (!isPythonSpace(c)) break
      if (c === 0x0a) lastNewline = j
    }
    if (lastNewline >= 0) {
      out += s.slice(copied, i) + '\n'
      copied = lastNewline + 1
    }
    i = s.indexOf('\n', j)
  }
  return copied === 0 ? s : out + s.slice(copied)
}

/**
 * re.sub(^\s*$\n, '', s, MULTILINE): at a line start (position 0 or after \n; only \n starts lines), greedy
 * `\s*` takes the whitespace run and backs off to its last \n, where `$\n` matches; the run up to and
 * including that \n is removed. The scan resumes after it, which is again a line start.
 */
export function dropWhitespaceLines(s: string): string {
  let out = ''
  let copied = 0
  const n = s.length
  let p = 0
  while (p < n) {
    let lastNewline = -1
    let j = p
    for (; j < n; j++) {
      const c = s.charCodeAt(j)
      if (!isPythonSpace(c)) break
      if (c === 0x0a) lastNewline = j
    }
    if (lastNewline >= 0) {
      out += s.slice(copied, p)
      copied = p = lastNewline + 1
      continue
    }
    const newline = s.indexOf('\n', j)
    if (newline < 0) break
    p = newline + 1
  }
  return copied === 0 ? s : out + s.slice(copied)
}

/** The reference's comment and blank-line normalisation of a code string. */
export function normalizeCode(code: string): string {
  const { text, literals } = replaceStrings(code)
  const restored = restoreStrings(removeComments(text), literals)
  return dropWhitespaceLines(pythonStrip(collapseBlankLines(restored)))
}

/** The completion's code as the reward sees it: the first fence's body, stripped, normalised; null if none. */
export function completionCode(completion: string): string | null {
  const body = extractFence(completion)
  return body === null ? null : normalizeCode(pythonStrip(body))
}
