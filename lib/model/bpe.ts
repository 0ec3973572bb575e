/**
 * A small byte-level BPE tokenizer built programmatically (for `recode init-model`): the 256 byte tokens
 * in GPT-2's byte-to-unicode spelling, merges learned greedily from an embedded corpus of Python code, and
 * the ChatML special tokens. The result is a tokenizer.json that @huggingface/tokenizers (and the Rust
 * library) load, and that round-trips any text, since every byte has a token.
 */

/** GPT-2's reversible byte -> printable character map (bytes that are printable map to themselves). */
export function bytesToUnicode(): string[] {
  const printable: number[] = []
  for (let b = 33; b <= 126; b++) printable.push(b)
  for (let b = 161; b <= 172; b++) printable.push(b)
  for (let b = 174; b <= 255; b++) printable.push(b)
  const map: string[] = new Array(256)
  let extra = 0
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++)
  }
  return map
}

/** The pre-tokenisation GPT-2's ByteLevel pre-tokenizer applies (use_regex: true). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']

/** Learns `numMerges` merges (most frequent adjacent pair first, ties broken by first occurrence). */
export function learnMerges(corpus: string, numMerges: number): Array<[string, string]> {
  const byteMap = bytesToUnicode()
  const enc = new TextEncoder()
  const counts = new Map<string, number>()
  for (const m of corpus.matchAll(GPT2_SPLIT)) {
    const word = Array.from(enc.encode(m[0]), (b) => byteMap[b]).join('\u0000')
    counts.set(word, (counts.get(word) ?? 0) + 1)
  }
  let words = [...counts.entries()].map(([w, c]) => ({ syms: w.split('\u0000'), count: c }))
  const merges: Array<[string, string]> = []
  while (merges.length < numMerges) {
    const pairs = new Map<string, number>()
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const key = w.syms[i] + '\u0000' + w.syms[i + 1]
        pairs.set(key, (pairs.get(key) ?? 0) + w.count)
      }
    }
    let best = ''
    let bestCount = 1 // a pair seen once is not worth a token
    for (const [k, c] of pairs)
      if (c > bestCount) {
        best = k
        bestCount = c
      }
    if (best === '') break
    const [a, b] = best.split('\u0000')
    merges.push([a, b])
    words = words.map((w) => {
      const out: string[] = []
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(a + b)
          i++
        } else out.push(w.syms[i])
      }
      return { syms: out, count: w.count }
    })
  }
  return merges
}

export interface BuiltTokenizer {
  tokenizerJson: Record<string, unknown>
  vocabSize: number
  specialIds: Record<string, number>
}

export function buildByteLevelBpe(corpus: string, numMerges: number): BuiltTokenizer {
  const byteMap = bytesToUnicode()
  const vocab: Record<string, number> = {}
  byteMap.forEach((ch, b) => {
    vocab[ch] = b
  })
  const merges = learnMerges(corpus, numMerges)
  for (const [a, b] of merges) if (vocab[a + b] === undefined) vocab[a + b] = Object.keys(vocab).length
  let next = Object.keys(vocab).length
  const specialIds: Record<string, number> = {}
  const added = SPECIAL_TOKENS.map((content) => {
    specialIds[content] = next
    return { id: next++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }
  })
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true }
  return {
    vocabSize: next,
    specialIds,
    tokenizerJson: {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: byteLevel,
      post_processor: { ...byteLevel, use_regex: false },
      decoder: { ...byteLevel, use_regex: false },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: '',
        end_of_word_suffix: '',
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges: merges.map(([a, b]) => `${a} ${b}`)
      }
    }
  }
}

/** Python code the merges are learned from (written for this purpose). */
export const PYTHON_CORPUS = `import os
import re
import json
from typing import List, Dict, Optional


def read_lines(path: str) -> List[str]:
    """Return the lines of a text file without trailing newlines."""
    with open(path, "r", encoding="utf-8") as handle:
        return [line.rstrip("\\n") for line in handle]


def count_words(lines: List[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for line in lines:
        for word in re.findall(r"\\w+", line.lower()):
            counts[word] = counts.get(word, 0) + 1
    return counts


class Stack:
    def __init__(self) -> None:
        self.items = []

    def push(self, value):
        self.items.append(value)

    def pop(self):
        if not self.items:
            raise IndexError("pop from an empty stack")
        return self.items.pop()

    def __len__(self) -> int:
        return len(self.items)


def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def load_config(path: str, default: Optional[dict] = None) -> dict:
    if not os.path.exists(path):
        return dict(default or {})
    with open(path) as f:
        return json.load(f)


def binary_search(values: List[int], target: int) -> int:
    lo, hi = 0, len(values) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if values[mid] == target:
            return mid
        elif values[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


if __name__ == "__main__":
    import sys
    lines = read_lines(sys.argv[1])
    for word, count in sorted(count_words(lines).items(), key=lambda kv: -kv[1])[:10]:
        print(f"{word}: {count}")
    print([fibonacci(i) for i in range(10)])
    print([n for n in range(50) if is_prime(n)])
`
