"""Reference for recode's reward tests, written from the patterns documented in recode.md section 3.

It uses Python's own `re` and `ast`, so the TypeScript scanners are held to the real regex semantics.
Input: JSON lines {"completion": str, "target": str} on stdin. Output: one JSON line per input with
format, es_star, em_star, the normalised code (null without a block), the normalised target, whether the
code parses, and the edit distance. Deliberate choices, as in recode's own definition:
- any exception from ast.parse counts as invalid (the original caught SyntaxError only, so a ValueError,
  RecursionError or MemoryError would have stopped its training run);
- sim = 1 when both normalised strings are empty (the original divides by zero).
"""
import ast
import json
import re
import sys

FORMAT = re.compile(r"^<think>([^<]*(?:<(?!/?think>)[^<]*)*)</think>\s*<answer>([\s\S]*?)</answer>\s*$", re.DOTALL)
FENCE = re.compile(r"```python\n(.*?)\n```", re.DOTALL)
STRINGS = re.compile(r"('''(.*?)'''|\"\"\"(.*?)\"\"\"|'(.*?)'|\"(.*?)\")", re.DOTALL)
COMMENTS = re.compile(r"#.*?$|\"\"\"(.*?)\"\"\"|'''(.*?)'''", re.MULTILINE | re.DOTALL)
BLANK_RUNS = re.compile(r"\n\s*\n")
WHITESPACE_LINES = re.compile(r"^\s*$\n", re.MULTILINE)


def format_reward(completion):
    return 1.0 if FORMAT.search("<think>" + completion) else -1.0


def normalize(code):
    literals = []

    def to_placeholder(match):
        literals.append(match.group(0))
        return "STRING_PLACEHOLDER_%d" % (len(literals) - 1)

    code = STRINGS.sub(to_placeholder, code)
    code = COMMENTS.sub("", code)
    for i, literal in enumerate(literals):
        code = code.replace("STRING_PLACEHOLDER_%d" % i, literal)
    code = BLANK_RUNS.sub("\n", code)
    return WHITESPACE_LINES.sub("", code.strip())


def parses(code):
    try:
        ast.parse(code)
        return True
    except Exception:
        return False


def levenshtein(a, b):
    """Unit-cost edit distance over str characters (code points), one row at a time."""
    # A common prefix or suffix never changes the distance; dropping it keeps this loop affordable.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def score(completion, target):
    fmt = format_reward(completion)
    target_code = normalize(target)
    match = FENCE.search(completion)
    if match is None:
        return {"format": fmt, "es_star": -2.0, "em_star": -2.0, "code": None, "target_code": target_code, "valid": False, "distance": None}
    code = normalize(match.group(1).strip())
    if not parses(code):
        return {"format": fmt, "es_star": -2.0, "em_star": -2.0, "code": code, "target_code": target_code, "valid": False, "distance": None}
    distance = levenshtein(code, target_code)
    longest = max(len(code), len(target_code))
    sim = 1.0 if longest == 0 else 1 - distance / longest
    return {"format": fmt, "es_star": sim * 3.5 - 1.5, "em_star": 2.0 if code == target_code else -1.5,
            "code": code, "target_code": target_code, "valid": True, "distance": distance}


def main():
    for line in sys.stdin.buffer:
        row = json.loads(line)
        sys.stdout.write(json.dumps(score(row["completion"], row["target"])) + "\n")


if __name__ == "__main__":
    main()
