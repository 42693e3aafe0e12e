"""Profanity scorer: word lists (pythainlp, tnprofanity, LDNOOBW) + alt-profanity-check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.text.profanity import ProfanityScorer, load_lexicon

_CASES = json.loads((Path(__file__).parent / "text_cases.json").read_text(encoding="utf-8"))
OFFENSIVE_CASES = _CASES["offensive_cases"]
POLITE_CHATS = _CASES["polite_chats"]


@pytest.fixture(scope="module")
def scorer():
    return ProfanityScorer()


def test_word_lists_load_offline():
    lex = load_lexicon()
    assert len(lex.thai) > 50 and len(lex.english) > 1000
    assert "กะปิ" not in lex.thai  # shrimp paste is a product here


@pytest.mark.parametrize("text", OFFENSIVE_CASES)
def test_offensive_scores_high(scorer, text):
    score, hits = scorer.score(text)
    assert score >= 0.7, (text, score)


@pytest.mark.parametrize("text", POLITE_CHATS)
def test_polite_scores_low(scorer, text):
    score, hits = scorer.score(text)
    assert score < 0.5 and hits == [], (text, score, hits)


def test_token_match_not_substring(scorer):
    # "หี" is on the lists; "หีบ" (a chest) is not an insult
    assert scorer.score("ขายหีบเพลงโบราณ")[0] < 0.5


def test_spaced_out_english_caught(scorer):
    assert scorer.score("f u c k you")[0] >= 0.7


def test_fast_english_model_matches_package():
    import numpy as np
    from profanity_check import predict_prob

    from engines.text.profanity import _english_model

    texts = ["you are a fucking idiot", "nice phone, works well", "shut up moron", "selling a bike", "hello"]
    model = _english_model()
    assert model.fast
    np.testing.assert_allclose(model(texts), predict_prob(texts), atol=1e-9)
