"""Text safety analysis end to end (USE + trained heads + word lists + detectors) on hand-written cases
that are not in the training set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch.text_data import load_dataset
from batch.text_train import train_heads
from engines.text.analyzer import TextAnalyzer
from engines.text.heads import ClassifierHeads

_CASES = json.loads((Path(__file__).parent / "text_cases.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    out = tmp_path_factory.mktemp("text_heads")
    train_heads(out_dir=out)
    return TextAnalyzer(ClassifierHeads.load(out))


def test_hand_written_cases_not_in_training_set():
    train_texts = {r["text"] for r in load_dataset()}
    for key, cases in _CASES.items():
        if key.startswith("_"):
            continue
        for case in cases:
            text = case[0] if isinstance(case, list) else case
            assert text not in train_texts


def test_prohibited_items_detected_per_class(analyzer):
    cases = _CASES["prohibited_cases"]
    results = analyzer.analyze_batch([t for t, _ in cases], "listing")
    per_class: dict[str, list[bool]] = {}
    for (_text, item), res in zip(cases, results, strict=True):
        per_class.setdefault(item, []).append(item in [i for i, _ in res.prohibited])
    misses = {c: hits for c, hits in per_class.items() if sum(hits) < len(hits) / 2}
    assert not misses, misses  # every class: at least half of its hand-written cases found
    assert sum(sum(h) for h in per_class.values()) >= 0.75 * len(cases)
    for res in results:
        if res.prohibited:
            assert res.safety_score < 0.5


def test_ok_listings_pass(analyzer):
    results = analyzer.analyze_batch(_CASES["ok_listings"], "listing")
    flagged = [(t, r.prohibited) for t, r in zip(_CASES["ok_listings"], results, strict=True) if r.prohibited]
    assert len(flagged) <= 1, flagged
    assert sum(r.safety_score >= 0.4 for r in results) >= len(results) - 1


def test_offensive_chat_scored(analyzer):
    for text in _CASES["offensive_cases"]:
        assert analyzer.analyze(text, "chat").offensive >= 0.7, text
    for text in _CASES["polite_chats"]:
        res = analyzer.analyze(text, "chat")
        assert res.offensive < 0.5 and res.safety_score >= 0.4, (text, res)


def test_diversion_lowers_safety_with_spans(analyzer):
    for text, kinds in _CASES["diversion_cases"]:
        res = analyzer.analyze(text, "chat")
        assert set(kinds) <= {d.kind for d in res.diversion}
        assert res.safety_score <= 1 - analyzer.settings.diversion_penalty + 1e-6


def test_rules_only_without_heads():
    a = TextAnalyzer(None)
    assert a.model_version.startswith("rules-only+")
    res = a.analyze("โทร ๐๘๑๒๓๔๕๖๗๘ ไอ้ควาย", "chat")
    assert res.prohibited == [] and res.offensive >= 0.7 and res.diversion
