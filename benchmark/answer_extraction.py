"""Pull the answer out of a model's free-text reply: an MMLU letter or a GSM8K number.

Pure functions, no I/O, so that every rule can be tested on a table of real-looking replies.

MMLU (:func:`extract_choice`) tries rules from the most to the least explicit and stops at
the first that decides:

1. an explicit statement: "The answer is (B)", "Answer: b", "correct option is C",
   "\\boxed{D}", "B is correct". If such statements name different letters ("The answer is
   (B, C)") the reply is ambiguous (None) rather than a guess;
2. the whole reply is a letter: "B", "(B)", "**B.**";
3. the reply starts with an option label: "B) 42", "C. Mitochondria" (unless more lines
   start with other labels: a model that lists the options has not chosen one);
4. the reply (or what follows "the answer is") is exactly one option's text;
5. standalone capital letters ("I think it's C"): exactly one distinct letter wins, two or
   more ("A or C") are ambiguous. A sentence-initial "A" followed by a lowercase word is the
   article ("A good question ..."), not option A.

GSM8K (:func:`extract_number`) prefers, in order: "#### 42", "The answer is 42" (the last
such statement), "\\boxed{42}", then the last number in the text. Numbers lose thousands
separators, currency and unit signs; :func:`numbers_match` compares them with a tolerance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

LETTERS = "ABCD"

# ---- MMLU ------------------------------------------------------------------------------------

# What comes right after the letter: end, punctuation, a closing bracket, or a space. A
# lowercase "a" is only a letter when punctuation or the end follows (else it is the article).
_AFTER_LETTER = r"(?=$|[\s.,:;!?)\]}*'\"])"
_UPPER_AFTER_ANSWER = r"\(?\[?\b([A-D])\b\)?\]?" + _AFTER_LETTER
_LOWER_AFTER_ANSWER = r"\(?\[?\b(a(?=$|[.,:;!?)\]])|[bcd]" + _AFTER_LETTER + r")"

_ANSWER_LEAD = (
    r"(?:(?:final|correct|right|best)\s+)?(?:answer|option|choice)"  # "the correct answer", "option"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be))?"
    r"(?:\s*(?:is|:|-|=|would be))?\s*(?:option\s+|choice\s+|letter\s+)?"
)
_EXPLICIT = [
    re.compile(_ANSWER_LEAD + r"(?-i:" + _UPPER_AFTER_ANSWER + r")", re.IGNORECASE),
    re.compile(_ANSWER_LEAD + r"(?-i:" + _LOWER_AFTER_ANSWER + r")", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*\(?([A-Da-d])\)?\s*\}"),
    re.compile(r"\b(?:i\s+(?:would\s+)?(?:choose|pick|select|go\s+with)|i'd\s+(?:choose|pick|go\s+with))\s+"
               r"(?:option\s+)?(?-i:" + _UPPER_AFTER_ANSWER + r")", re.IGNORECASE),
    # "B is correct", "(C) is the right answer" (capital only: "a is correct" is too vague).
    re.compile(r"(?<![\w'])\(?([A-D])\)?\s+is\s+(?:the\s+)?(?:correct|right)\b"),
]
_WHOLE = re.compile(r"^\s*(?:option\s+)?[(\[]?([A-Da-d])[)\]]?[.:]?\s*$", re.IGNORECASE)
_LEADING = re.compile(r"^\s*(?:\(([A-D])\)|([A-D])[).:](?=\s|$))")
_LINE_LABEL = re.compile(r"^\s*(?:\(([A-D])\)|([A-D])[).:](?=\s|$))", re.MULTILINE)
# Letters chained onto an explicit answer: "(B, C or D)", "B/C", "B and D".
_MORE_SPAN = re.compile(r"(?:\)?\s*(?:,|/|&|\bor\b|\band\b)\s*\(?[A-D]\b(?!\)?\s+(?:is|was|are)\b))*")
_MORE_LETTERS = re.compile(r"\b([A-D])\b")
_LONE = re.compile(r"(?<![\w'’-])\(?([A-D])\)?(?![\w'’+-])")
_ARTICLE_NEXT = re.compile(r"\s+(?!or\b|and\b|nor\b)[a-z]")
_SENTENCE_START = re.compile(r"(?:^|[.!?:\n]\s*|\*\*)$")
_MARKUP = re.compile(r"[*_`#]+")


def extract_choice(reply: str, choices: Sequence[str] | None = None) -> str | None:
    """The option letter (``"A"``-``"D"``) that ``reply`` gives, or None if absent or ambiguous.

    ``choices`` (the four option texts) lets a reply that restates an option be scored.
    """
    if not reply or not reply.strip():
        return None
    text = _MARKUP.sub("", reply).strip()

    explicit = set()
    for pattern in _EXPLICIT:
        for m in pattern.finditer(text):
            explicit.add(m.group(1).upper())
            # "The answer is (B, C or D)" names several letters: all of them count.
            span = _MORE_SPAN.match(text, m.end())
            explicit.update(_MORE_LETTERS.findall(span.group(0) if span else ""))
    if len(explicit) == 1:
        return explicit.pop()
    if len(explicit) > 1:
        return None  # "the answer is A ... the answer is C": do not guess

    if whole := _WHOLE.match(text):
        return whole.group(1).upper()
    # A reply that starts with "B) ..." picks B, unless it goes on to list other options too.
    leading = _LEADING.match(text)
    if leading and len({a or b for a, b in _LINE_LABEL.findall(text)}) <= 1:
        return leading.group(1) or leading.group(2)

    if choices:
        by_text = _match_choice_text(text, choices)
        if by_text:
            return by_text

    lone = set()
    for m in _LONE.finditer(text):
        letter = m.group(1)
        if letter == "A" and _looks_like_article(text, m.start(), m.end()):
            continue
        lone.add(letter)
    return lone.pop() if len(lone) == 1 else None


def _looks_like_article(text: str, start: int, end: int) -> bool:
    """A capital "A" that starts a sentence and is followed by a lowercase word."""
    return bool(_SENTENCE_START.search(text[:start]) and _ARTICLE_NEXT.match(text, end))


def _norm(s: str) -> str:
    return " ".join(s.strip().strip(".").lower().split())


def _match_choice_text(text: str, choices: Sequence[str]) -> str | None:
    """The letter of the option whose text is the reply, or what follows "the answer is"."""
    candidates = [text]
    tail = re.search(r"answer\s*(?:is|:)\s*:?\s*(.+?)\s*$", text, re.IGNORECASE | re.DOTALL)
    if tail:
        candidates.append(tail.group(1))
    normed = [_norm(c) for c in choices]
    for candidate in candidates:
        hits = [LETTERS[i] for i, c in enumerate(normed) if c and c == _norm(candidate)]
        if len(hits) == 1:
            return hits[0]
    return None


# ---- GSM8K -----------------------------------------------------------------------------------

# A number: a simple fraction ("3/4"), a number with thousands groups ("1,234.5"), plain digits
# with optional decimals, or bare decimals (".5"). A sign must not follow a word character, so
# "5-3" yields 3, not -3.
_NUMBER = "|".join([
    r"(?<![\w.,/])[-−]?\d+/\d+(?![\d/]|\.\d)",
    r"(?<![\w.])[-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?",
    r"(?<![\w.,])[-−]?\d+(?:\.\d+)?",
    r"(?<![\w.,\d])[-−]?\.\d+",
])
_NUMBER_RE = re.compile(_NUMBER)
_CURRENCY = r"[$€£¥]?\s*"
_HASHES = re.compile(r"####\s*" + _CURRENCY + r"(" + _NUMBER + r")")
_ANSWER_IS = re.compile(
    r"answer\s*(?:is|:|=|would\s+be|will\s+be)\s*:?\s*(?:approximately\s+|about\s+)?"
    + _CURRENCY + r"(" + _NUMBER + r")",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def parse_number(text: str) -> float | None:
    """The first number in ``text`` ("$1,234.50" -> 1234.5, "-3" -> -3.0), or None."""
    m = _NUMBER_RE.search(text.replace("\\$", "$").replace("\\%", "%"))
    if not m:
        return None
    number = m.group(0).replace(",", "").replace("−", "-")
    if "/" in number:  # a simple fraction, "3/4"
        numerator, denominator = number.split("/")
        return float(numerator) / float(denominator) if float(denominator) else None
    return float(number)


def extract_number(reply: str) -> float | None:
    """The final numeric answer of a GSM8K reply, or None if it has no number at all."""
    if not reply:
        return None
    text = reply.replace("**", "").replace("\\$", "$").replace("\\,", "").replace("\\%", "%")
    if m := _last(_HASHES, text):
        return parse_number(m.group(1))
    if m := _last(_ANSWER_IS, text):
        return parse_number(m.group(1))
    for boxed in reversed(_BOXED.findall(text)):
        value = parse_number(boxed)
        if value is not None:
            return value
    numbers = _NUMBER_RE.findall(text)
    return parse_number(numbers[-1]) if numbers else None


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match: a model that corrects itself states its final answer last."""
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def numbers_match(predicted: float | None, expected: float, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
    """Numeric equality with a small tolerance (so "18.00" and 18 agree); None never matches."""
    return predicted is not None and math.isclose(predicted, expected, rel_tol=rel_tol, abs_tol=abs_tol)
