"""Text normalisation that keeps a map back to the original string.

Sellers and buyers hide contact details from filters: zero-width characters, Thai numerals (๐-๙),
digits written as words ("ศูนย์ แปด หนึ่ง", "zero eight one"), and letters spaced out ("L I N E",
"0 8 1 - 2 3 4"). :func:`normalize` undoes these tricks and returns a :class:`NormalizedText` whose
``start``/``end`` arrays map every character of the normalised text to a character range of the
original, so detectors can report spans in the ORIGINAL text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# zero-width and invisible format characters used to split words
_INVISIBLE = {
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e", "\u2061", "\u2062", "\u2063",
    "\u2064", "\u034f", "\u200e", "\u200f",
    "\ufe0e", "\ufe0f", "\u20e3",  # emoji presentation selectors and the keycap ("0\ufe0f\u20e3" -> "0")
}
# modifiers of the character before them: dropped, but that character's span grows over them
_TRAILING_MODIFIERS = {"\ufe0e", "\ufe0f", "\u20e3"}
_THAI_DIGITS = {chr(0x0E50 + i): str(i) for i in range(10)}

# digit words; Thai words are matched anywhere (Thai has no spaces), English ones as whole words
THAI_NUMBER_WORDS = {
    "ศูนย์": "0", "สูนย์": "0", "หนึ่ง": "1", "นึง": "1", "สอง": "2", "สาม": "3", "สี่": "4", "ห้า": "5",
    "หก": "6", "เจ็ด": "7", "แปด": "8", "เก้า": "9",
}
ENGLISH_NUMBER_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9",
}
# Thai digit words only count when they form a run of >= 3 (a phone number spelled out); single words like
# "สาม" inside "สามารถ" or "หก" inside "หกล้ม" are left alone.
_THAI_NUM_RE = re.compile("(?:" + "|".join(sorted(THAI_NUMBER_WORDS, key=len, reverse=True)) + ")")
_THAI_NUM_RUN_RE = re.compile(
    "(?:" + _THAI_NUM_RE.pattern + r")(?:[\s\-.,]*(?:" + _THAI_NUM_RE.pattern + r"|\d)){2,}"
)
_EN_NUM_RE = re.compile(r"\b(?:" + "|".join(ENGLISH_NUMBER_WORDS) + r")\b")
_EN_NUM_RUN_RE = re.compile(
    r"\b(?:" + "|".join(ENGLISH_NUMBER_WORDS) + r"|\d)\b(?:[\s\-.,]+\b(?:"
    + "|".join(ENGLISH_NUMBER_WORDS) + r"|\d+)\b){2,}"
)
_TRAILING_PUNCT = set(":：.,;-)")
# letter-for-digit swaps inside digit runs ("08l-234-5678", "086 OO1 2345"): after lower-casing, l/i -> 1, o -> 0
_SWAP = {"l": "1", "i": "1", "o": "0"}
_DIGITISH_RUN_RE = re.compile(r"(?<![a-z0-9])[0-9oil](?:[0-9oil]|[\s\-.()](?=[0-9oil])){5,}(?![a-z0-9])")


@dataclass(frozen=True)
class NormalizedText:
    """Normalised text plus, for each of its characters, the original [start, end) it came from."""

    original: str
    text: str
    start: tuple[int, ...]
    end: tuple[int, ...]

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Map a [a, b) span of the normalised text to a span of the original text."""
        if not self.text or b <= a:
            return (0, 0)
        return (self.start[a], self.end[b - 1])


class _Builder:
    def __init__(self) -> None:
        self.chars: list[str] = []
        self.start: list[int] = []
        self.end: list[int] = []

    def add(self, s: str, a: int, b: int) -> None:
        for c in s:
            self.chars.append(c)
            self.start.append(a)
            self.end.append(b)

    def build(self, original: str) -> NormalizedText:
        return NormalizedText(original, "".join(self.chars), tuple(self.start), tuple(self.end))


def _piecewise(nt: NormalizedText, run: re.Pattern[str], word: re.Pattern[str], table: dict[str, str]):
    """Inside every ``run`` match, replace each ``word`` with its digit, mapping digits to their word."""
    b = _Builder()
    pos = 0
    for m in run.finditer(nt.text):
        for i in range(pos, m.start()):
            b.add(nt.text[i], nt.start[i], nt.end[i])
        i = m.start()
        while i < m.end():
            w = word.match(nt.text, i, m.end())
            if w and w.group(0):
                b.add(table[w.group(0)], nt.start[w.start()], nt.end[w.end() - 1])
                i = w.end()
            else:
                b.add(nt.text[i], nt.start[i], nt.end[i])
                i += 1
        pos = m.end()
    for i in range(pos, len(nt.text)):
        b.add(nt.text[i], nt.start[i], nt.end[i])
    return b.build(nt.original)


def _is_thai(c: str) -> bool:
    return "\u0e00" <= c <= "\u0e7f"


def _is_single(tok: str) -> bool:
    """One visible character (Thai combining marks allowed), optionally followed by punctuation; a Thai
    syllable piece of at most two letters ("ไล น์ ไอ ดี", "ศู น ย์"); or a lone Thai combining mark ("ป ื น")."""
    core = tok.rstrip("".join(_TRAILING_PUNCT)) if len(tok) > 1 else tok
    base = [c for c in core if unicodedata.category(c) not in ("Mn", "Mc")]
    if not base:
        return bool(core) and all(_is_thai(c) for c in core)
    if len(base) == 2 and all(_is_thai(c) for c in core):
        return True
    return len(base) == 1 and (base[0].isalnum() or base[0] in "@-._")


def _collapse_spaced(nt: NormalizedText) -> NormalizedText:
    """Join runs of >= 3 single-character tokens: "l i n e: abc" -> "line: abc", "0 8 1" -> "081"."""
    toks = list(re.finditer(r"\S+", nt.text))
    drop: set[int] = set()
    i = 0
    while i < len(toks):
        j = i
        while j < len(toks) and _is_single(toks[j].group(0)):
            # a token ending in punctuation closes the run
            j += 1
            last = toks[j - 1].group(0)
            if len(last) > 1 and last[-1] in _TRAILING_PUNCT:
                break
        if j - i >= 3:
            for k in range(i, j - 1):
                drop.update(range(toks[k].end(), toks[k + 1].start()))
            i = j
        else:
            i += 1
    if not drop:
        return nt
    b = _Builder()
    for idx, c in enumerate(nt.text):
        if idx not in drop:
            b.add(c, nt.start[idx], nt.end[idx])
    return b.build(nt.original)


def _swap_letters_in_digit_runs(nt: NormalizedText) -> NormalizedText:
    """Inside a run that is mostly digits, read l/i as 1 and o as 0 (one character for one: offsets unchanged)."""
    chars = list(nt.text)
    changed = False
    for m in _DIGITISH_RUN_RE.finditer(nt.text):
        run = m.group(0)
        n_digits = sum(c.isdigit() for c in run)
        n_swaps = sum(c in _SWAP for c in run)
        if n_swaps and n_digits >= 6 and n_swaps <= 3:
            for k, c in enumerate(run, start=m.start()):
                if c in _SWAP:
                    chars[k] = _SWAP[c]
                    changed = True
    if not changed:
        return nt
    return NormalizedText(nt.original, "".join(chars), nt.start, nt.end)


def normalize(text: str) -> NormalizedText:
    """Lower-case, NFKC, invisible characters removed, Thai numerals and digit words to ASCII digits,
    spaced-out letters joined. Offsets map back to ``text``."""
    b = _Builder()
    for i, ch in enumerate(text):
        if ch in _TRAILING_MODIFIERS and b.end and b.end[-1] == i:
            b.end[-1] = i + 1
            continue
        if ch in _INVISIBLE or unicodedata.category(ch) == "Cf":
            continue
        if ch in _THAI_DIGITS:
            b.add(_THAI_DIGITS[ch], i, i + 1)
            continue
        n = unicodedata.normalize("NFKC", ch).lower()
        # Thai SARA AM decomposes under NFKC; keep Thai as written
        if "\u0e00" <= ch <= "\u0e7f":
            n = ch
        b.add(n, i, i + 1)
    nt = b.build(text)
    nt = _collapse_spaced(nt)
    nt = _piecewise(nt, _THAI_NUM_RUN_RE, _THAI_NUM_RE, THAI_NUMBER_WORDS)
    nt = _piecewise(nt, _EN_NUM_RUN_RE, _EN_NUM_RE, ENGLISH_NUMBER_WORDS)
    nt = _swap_letters_in_digit_runs(nt)
    return nt


def digits_only(s: str) -> str:
    return "".join(c for c in s if c.isdigit())
