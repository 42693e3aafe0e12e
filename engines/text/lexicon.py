"""Prohibited-item rules: the taxonomy and its Thai/English lexicons (``engines/text/data/prohibited.json``).

The data file is the source of truth (what each class covers, the law it comes from, terms, combinations,
innocent uses); this module only compiles and matches it. Matching runs on the normalised text
(:mod:`engines.text.normalize`) with spaces between two Thai letters squeezed out, because Thai is written
without spaces and sellers insert them to dodge filters ("บุหรี่ ไฟ ฟ้า").

Per class, in order: ``allow`` phrases mark innocent uses (a term inside one does not count: "ปืนกาว" is a
glue gun); ``negate`` phrases outside any allowed span switch the class off for the text (a buyer asking
"งานปั๊มหรือของแท้"); a ``terms`` hit reports the class; a ``combos`` pair (one phrase of each list) reports it
with a lower score. A brand, a price or a condition grade alone is never a term.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engines.text.normalize import NormalizedText, normalize

LEXICON_PATH = Path(__file__).resolve().parent / "data" / "prohibited.json"
_THAI = "\u0e00-\u0e7f"
_SQUEEZE_RE = re.compile(rf"(?<=[{_THAI}])\s+(?=[{_THAI}])")


def _is_ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def term_pattern(term: str) -> str:
    """One lexicon entry as a regular expression (see the data file's ``_doc`` for the syntax)."""
    if term.startswith("re:"):
        return term[3:]
    prefix = term.endswith("*")
    core = term[:-1] if prefix else term
    words = [re.escape(w) for w in core.split()]
    body = r"[\s\-_.]*".join(words)
    if prefix:
        body += r"[a-z0-9]*"
    if _is_ascii_alnum(core[0]):
        body = r"(?<![a-z0-9])" + body
    if not prefix and _is_ascii_alnum(core[-1]):
        body += r"(?![a-z0-9])"
    return body


def _compile(terms: list[str]) -> re.Pattern[str] | None:
    if not terms:
        return None
    # longest first, so "ลูกเสือโคร่ง" wins over a shorter allowed "ลูกเสือ" at the same position
    return re.compile("|".join(f"(?:{term_pattern(t)})" for t in sorted(terms, key=len, reverse=True)))


@dataclass(frozen=True)
class _ClassRules:
    name: str
    terms: re.Pattern[str] | None
    combos: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...]
    allow: re.Pattern[str] | None
    negate: re.Pattern[str] | None


@dataclass(frozen=True)
class RuleHit:
    item: str
    strength: str  # "term" | "combo"
    phrases: tuple[str, ...]  # what matched (for review; never logged)


def squeeze_thai(text: str) -> str:
    return _SQUEEZE_RE.sub("", text)


class ProhibitedLexicon:
    """Compiled taxonomy; ``match(text)`` -> one :class:`RuleHit` per class found."""

    def __init__(self, path: str | Path = LEXICON_PATH):
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        self.version: str = data.get("_version", "unknown")
        self.laws: dict[str, str] = {}
        rules = []
        for name, spec in data["classes"].items():
            self.laws[name] = spec.get("law", "")
            combos = tuple((_compile(a), _compile(b)) for a, b in spec.get("combos", []))
            rules.append(_ClassRules(name, _compile(spec.get("terms", [])), combos, _compile(spec.get("allow", [])),
                                     _compile(spec.get("negate", []))))
        self._rules = tuple(rules)
        self.classes: tuple[str, ...] = tuple(r.name for r in rules)

    @staticmethod
    def _hits(rx: re.Pattern[str] | None, text: str, allowed: list[tuple[int, int]]) -> list[str]:
        if rx is None:
            return []
        out = []
        for m in rx.finditer(text):
            if m.end() > m.start() and not any(a <= m.start() and m.end() <= b for a, b in allowed):
                out.append(m.group(0))
        return out

    def thai_words(self) -> set[str]:
        """The plain Thai terms of every class (the word tokenizer keeps them whole: "นอแรด" is not "แรด")."""
        data = json.loads(LEXICON_PATH.read_text(encoding="utf-8"))
        return {t for spec in data["classes"].values() for key in ("terms", "allow") for t in spec.get(key, [])
                if not t.startswith("re:") and t and all("\u0e00" <= c <= "\u0e7f" for c in t)}

    def match(self, text: str | NormalizedText) -> list[RuleHit]:
        return self.match_with_cleared(text)[0]

    def match_with_cleared(self, text: str | NormalizedText) -> tuple[list[RuleHit], set[str]]:
        """The hits, and the classes the rules cleared (an innocent use or a negation was found: a model
        alone must not report those)."""
        nt = text if isinstance(text, NormalizedText) else normalize(text)
        t = squeeze_thai(nt.text)
        out = []
        cleared: set[str] = set()
        for r in self._rules:
            allowed = [(m.start(), m.end()) for m in r.allow.finditer(t)] if r.allow is not None else []
            if allowed:
                cleared.add(r.name)
            if self._hits(r.negate, t, allowed):
                cleared.add(r.name)
                continue
            terms = self._hits(r.terms, t, allowed)
            if terms:
                out.append(RuleHit(r.name, "term", tuple(dict.fromkeys(terms))))
                continue
            for a, b in r.combos:
                ha, hb = self._hits(a, t, allowed), self._hits(b, t, allowed)
                if ha and hb:
                    out.append(RuleHit(r.name, "combo", tuple(dict.fromkeys(ha + hb))))
                    break
        return out, cleared


@lru_cache(maxsize=1)
def get_lexicon() -> ProhibitedLexicon:
    return ProhibitedLexicon()
