// Inputs for the reward tests: hand-written tricky completions, random token soups, and completions built
// from the ReCode data rows. Each case is { name, completion, target }.

/** Wraps code the way the training prompt asks for it (the completion continues after '<think>'). */
export function wrap(code, { think = 'I will update the call.', before = '\n<answer>\n', after = '\n</answer>' } = {}) {
  return `${think}</think>${before}\`\`\`python\n${code}\n\`\`\`${after}`
}

const manyStrings = Array.from({ length: 13 }, (_, i) => `s${i} = 'v${i}'`).join('\n')

export const handWritten = [
  { name: 'plain good answer', completion: wrap('x = 1\ny = 2'), target: 'x = 1\ny = 2' },
  { name: 'no fence at all', completion: 'I think</think>\n<answer>\nx = 1\n</answer>', target: 'x = 1' },
  { name: 'fence without newline before closing', completion: 'a</think><answer>```python\nx = 1```</answer>', target: 'x = 1' },
  { name: 'fence opened with ```py only', completion: 'a</think><answer>```py\nx = 1\n```</answer>', target: 'x = 1' },
  { name: 'two fences: the first counts', completion: wrap('a = 1\n```\nand then\n```python\nb = 2'), target: 'b = 2' },
  {
    name: 'fence outside <answer> (inside the think)',
    completion: 'draft:\n```python\nz = 3\n```\n</think>\n<answer>no code</answer>',
    target: 'z = 3'
  },
  { name: 'empty fence body', completion: 'a</think><answer>```python\n\n```</answer>', target: '' },
  { name: 'empty fence body, non-empty target', completion: 'a</think><answer>```python\n\n```</answer>', target: 'x = 1' },
  { name: 'comment-only code vs comment-only target', completion: wrap('# nothing here'), target: '# nor here\n' },
  {
    name: 'apostrophes in comments start a "string"',
    completion: wrap("x = 1  # don't do this\ny = 2  # it's fine\nz = 3"),
    target: 'x = 1\ny = 2\nz = 3'
  },
  { name: 'single apostrophe in a comment, nothing to close it', completion: wrap("x = 1  # don't\ny = 2"), target: 'x = 1\ny = 2' },
  { name: 'double quote in a comment', completion: wrap('x = 1  # the "a\ny = "b"'), target: 'x = 1\ny = "b"' },
  {
    name: 'triple-quoted strings keep their # and blank lines',
    completion: wrap('s = """a # not a comment\n\n\n   \nb"""\nt = \'\'\'x\n# y\'\'\'\n'),
    target: 's = """a # not a comment\nb"""'
  },
  {
    name: 'docstrings stay',
    completion: wrap('def f():\n    """Return one.\n\n    It\'s documented.\n    """\n    return 1  # one'),
    target: 'def f():\n    """Return one."""\n    return 1'
  },
  {
    name: '# inside strings',
    completion: wrap('s = "a # b"\nt = \'c # d\'  # real comment\nu = 1'),
    target: 's = "a # b"\nt = \'c # d\'\nu = 1'
  },
  { name: 'unclosed triple quote falls back to empty string', completion: wrap("x = '''abc\ny = 1"), target: 'y = 1' },
  { name: 'four quotes', completion: wrap("x = ''''\ny = 1 # '"), target: 'y = 1' },
  { name: 'CRLF inside the code', completion: wrap('x = 1\r\n\r\n\r\ny = 2  # c\r\nz = 3\r'), target: 'x = 1\ny = 2\nz = 3' },
  {
    name: 'CRLF everywhere: no fence matches',
    completion: 'a</think>\r\n<answer>\r\n```python\r\nx = 1\r\n```\r\n</answer>\r\n',
    target: 'x = 1'
  },
  { name: 'lone CR: a comment runs to the next \\n', completion: wrap('x = 1  # c\ry = 2\nz = 3'), target: 'x = 1\nz = 3' },
  { name: 'U+2028 is not a line break for #', completion: wrap('x = 1  # c\u2028y = 2\nz = 3'), target: 'x = 1\nz = 3' },
  { name: 'U+2028 in code', completion: wrap('x = 1\u2028y = 2'), target: 'x = 1\ny = 2' },
  { name: 'U+2028 on a blank line', completion: wrap('x = 1\n\u2028\ny = 2'), target: 'x = 1\ny = 2' },
  { name: '\\x1c on a blank line (Python whitespace)', completion: wrap('x = 1\n\x1c\ny = 2'), target: 'x = 1\ny = 2' },
  { name: '\\x1f and \\x85 around the code (stripped)', completion: wrap('\x1f\x85x = 1\x1e\x1d'), target: 'x = 1' },
  { name: '\\ufeff is not Python whitespace', completion: wrap('\ufeff\nx = 1\n\ufeff\ny = 2\ufeff'), target: 'x = 1\ny = 2' },
  { name: 'U+3000 and U+00A0 blank lines', completion: wrap('x = 1\n\u3000\u00a0\ny = 2\n\u2029\n'), target: 'x = 1\ny = 2' },
  { name: 'vertical tab and form feed lines', completion: wrap('x = 1\n\v\f\ny = 2'), target: 'x = 1\ny = 2' },
  {
    name: 'tabs and blank lines with spaces',
    completion: wrap('def f():\n\tif x:\n\t\treturn 1\n   \n\t\n\treturn 2'),
    target: 'def f():\n\tif x:\n\t\treturn 1\n\treturn 2'
  },
  { name: 'indentation differs (not canonicalised)', completion: wrap('if x:\n  y = 1'), target: 'if x:\n    y = 1' },
  { name: 'emoji count as one character each', completion: wrap("s = '😀😀'"), target: "s = '😀'" },
  { name: 'astral characters in identifiers and comments', completion: wrap('𝔵 = 1  # 𝔶 😀\n𝔶 = 2'), target: '𝔵 = 1\n𝔶 = 3' },
  { name: 'invalid Python', completion: wrap('def f(:\n    pass'), target: 'def f():\n    pass' },
  { name: 'valid only after comment removal', completion: wrap('x = (1,  # )\n 2)'), target: 'x = (1, 2)' },
  { name: 'made invalid by the apostrophe quirk', completion: wrap("x = 1  # it's\ny = 2\nz = 'q'"), target: 'x = 1' },
  { name: 'NUL byte', completion: wrap('x = 1\0'), target: 'x = 1' },
  { name: 'NUL byte inside a string', completion: wrap("x = '\0'"), target: "x = '\0'" },
  { name: 'lone surrogate', completion: wrap("x = '\ud800'"), target: "x = '\ud800'" },
  {
    name: 'deep parentheses (SyntaxError: too many nested)',
    completion: wrap('x = ' + '('.repeat(250) + '1' + ')'.repeat(250)),
    target: 'x = 1'
  },
  { name: 'deep unary minus (MemoryError in the parser)', completion: wrap('x = ' + '-'.repeat(100000) + '1'), target: 'x = 1' },
  { name: 'long + chain (RecursionError building the AST)', completion: wrap('x = ' + Array(200000).fill('1').join('+')), target: 'x = 1' },
  { name: 'nesting that still parses', completion: wrap('x = ' + '['.repeat(50) + ']'.repeat(50)), target: 'x = [[]]' },
  {
    name: 'identical code, identical target',
    completion: wrap('import numpy as np\nnp.sum([1, 2])'),
    target: 'import numpy as np\nnp.sum([1, 2])'
  },
  {
    name: 'identical after normalisation (EM* +2)',
    completion: wrap('# numpy\nimport numpy as np\n\n\nnp.sum([1, 2])\n    # sum'),
    target: 'import numpy as np\nnp.sum([1, 2])\n'
  },
  {
    name: 'comments leave trailing spaces (EM* -1.5)',
    completion: wrap('import numpy as np  # numpy\nnp.sum([1, 2])'),
    target: 'import numpy as np\nnp.sum([1, 2])'
  },
  { name: 'eleven and more strings: placeholder 1 prefixes placeholder 10', completion: wrap(manyStrings), target: manyStrings },
  {
    name: 'placeholder-like text in code',
    completion: wrap("a = 'x'\nb = 'y'\nSTRING_PLACEHOLDER_1 = 3\nSTRING_PLACEHOLDER_ = 4"),
    target: 'STRING_PLACEHOLDER_1 = 3'
  },
  {
    name: 'placeholder-like text inside a literal',
    completion: wrap("a = 'STRING_PLACEHOLDER_1'\nb = 'zz'\nc = STRING_PLACEHOLDER_0"),
    target: "a = 'zz'"
  },
  { name: 'literal with $& and $1 (no replacement patterns)', completion: wrap("a = '$&$1$$'\nb = \"$'\""), target: "a = '$&$1$$'" },
  { name: 'comment between triple quotes after placeholders', completion: wrap('x = 1 # """\ny = 2 # """'), target: 'x = 1\ny = 2' },
  {
    name: '<think> inside the think',
    completion: 'first <think> again</think>\n<answer>\n```python\nx = 1\n```\n</answer>',
    target: 'x = 1'
  },
  { name: '</think> twice', completion: 'a</think> b </think><answer>```python\nx = 1\n```</answer>', target: 'x = 1' },
  {
    name: '<thinking> is fine in the think',
    completion: 'a <thinking> <b></think><answer>```python\nx = 1\n```</answer>',
    target: 'x = 1'
  },
  { name: 'missing </answer>', completion: 'a</think>\n<answer>\n```python\nx = 1\n```\n', target: 'x = 1' },
  { name: 'missing </think>', completion: 'a\n<answer>\n```python\nx = 1\n```\n</answer>', target: 'x = 1' },
  { name: 'text before <answer>', completion: 'a</think>\nSo:\n<answer>```python\nx = 1\n```</answer>', target: 'x = 1' },
  {
    name: 'trailing whitespace after </answer>',
    completion: 'a</think> \n\t<answer>```python\nx = 1\n```</answer> \n\t\r\n\x1c\x85\u3000',
    target: 'x = 1'
  },
  { name: 'trailing \\ufeff after </answer>', completion: 'a</think><answer>```python\nx = 1\n```</answer>\ufeff', target: 'x = 1' },
  { name: 'text after </answer>', completion: 'a</think><answer>```python\nx = 1\n```</answer>\nThanks', target: 'x = 1' },
  { name: 'two answers, last one closes', completion: 'a</think><answer>x</answer> then <answer>y</answer>\n', target: 'x = 1' },
  {
    name: 'whitespace \\u2028 between </think> and <answer>',
    completion: 'a</think>\u2028\x1c<answer>```python\nx = 1\n```</answer>',
    target: 'x = 1'
  },
  { name: '<answer></answer> empty', completion: 'a</think><answer></answer>', target: 'x = 1' },
  { name: 'overlapping <answer></answer>', completion: 'a</think><answer></answer', target: 'x = 1' },
  { name: 'empty completion', completion: '', target: 'x = 1' },
  { name: 'empty everything', completion: '', target: '' },
  { name: 'target with its own quirks', completion: wrap('x = 1\ny = 2'), target: "x = 1  # it's\ny = 2  # isn't" }
]

// Pieces for random completions: every token the scanners treat specially, plus filler.
const tokens = [
  "'",
  '"',
  "'''",
  '"""',
  '#',
  '\n',
  '\n',
  '\r\n',
  '\r',
  ' ',
  '  ',
  '\t',
  '\x1c',
  '\x85',
  '\u2028',
  '\u2029',
  '\ufeff',
  '\u3000',
  'x',
  'y = 1',
  '=',
  '(',
  ')',
  '1',
  '0',
  'STRING_PLACEHOLDER_',
  'STRING_PLACEHOLDER_1',
  '😀',
  'é',
  '<think>',
  '</think>',
  '<answer>',
  '</answer>',
  '```python\n',
  '\n```',
  '```',
  'python',
  '\\',
  '$&',
  '\n\n',
  ' \n '
]

export function randomText(r, maxTokens) {
  const n = r.int(0, maxTokens)
  let s = ''
  for (let i = 0; i < n; i++) s += r.pick(tokens)
  return s
}

/** Random completions: soups of tokens, some wrapped in the answer format so that the code paths run. */
export function randomCases(r, count) {
  const cases = []
  for (let i = 0; i < count; i++) {
    const code = randomText(r, 30)
    const target = randomText(r, 20)
    const kind = r.int(0, 2)
    const completion =
      kind === 0 ? randomText(r, 40) : kind === 1 ? wrap(code) : randomText(r, 8) + '```python\n' + code + '\n```' + randomText(r, 8)
    cases.push({ name: `random ${i}`, completion, target })
  }
  return cases
}

/** Small edits of a code string: the kinds of differences a model makes. */
export function perturb(r, code) {
  const lines = code.split('\n')
  switch (r.int(0, 6)) {
    case 0:
      lines.splice(r.int(0, lines.length - 1), 1)
      return lines.join('\n')
    case 1: {
      const i = r.int(0, lines.length - 1)
      lines[i] = lines[i] + "  # here's the change"
      return lines.join('\n')
    }
    case 2:
      return lines.join('\r\n')
    case 3: {
      const i = r.int(0, code.length)
      return code.slice(0, i) + r.pick(['x', "'", '"', '#', '\n\n  \n', '😀', ')']) + code.slice(i)
    }
    case 4: {
      const i = r.int(0, lines.length - 1)
      lines.splice(i, 0, '    ', '# a note', '')
      return lines.join('\n')
    }
    case 5:
      return lines.map((l) => l.replace(/^ {4}/, '\t')).join('\n')
    default: {
      const i = r.int(0, code.length - 1)
      return code.slice(0, i) + code.slice(i + 1)
    }
  }
}
