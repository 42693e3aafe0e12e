"""Normalisation and diversion detectors on hand-written cases (tests/engines/text_cases.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.text.detectors import DIVERSION_KINDS, detect_diversion
from engines.text.normalize import normalize

_CASES = json.loads((Path(__file__).parent / "text_cases.json").read_text(encoding="utf-8"))
CLEAN_TEXTS = _CASES["clean_texts"]
DIVERSION_CASES = _CASES["diversion_cases"]


@pytest.mark.parametrize(("text", "kinds"), DIVERSION_CASES)
def test_diversion_kind_found(text, kinds):
    found = {d.kind for d in detect_diversion(text)}
    assert set(kinds) <= found, (text, found)


@pytest.mark.parametrize("text", CLEAN_TEXTS)
def test_clean_text_has_no_diversion(text):
    assert detect_diversion(text) == []


@pytest.mark.parametrize(("text", "kinds"), DIVERSION_CASES)
def test_spans_point_into_original_text(text, kinds):
    for d in detect_diversion(text):
        a, b = d.span
        assert 0 <= a < b <= len(text)
        assert d.kind in DIVERSION_KINDS
        assert not text[a].isspace() and not text[b - 1].isspace()


def test_phone_span_covers_obfuscated_digits_in_original():
    text = "แอดไลน์ 0 8 1 - 2 3 4 - 5 6 7 8 นะคะ"
    phone = [d for d in detect_diversion(text) if d.kind == "phone"][0]
    assert text[phone.span[0] : phone.span[1]] == "0 8 1 - 2 3 4 - 5 6 7 8"


def test_thai_numerals_and_zero_width_normalised():
    nt = normalize("li\u200bne ๐๘๑")
    assert nt.text == "line 081"
    assert nt.span(5, 8) == (6, 9)  # the digits map back to the Thai numerals


def test_digit_words_only_convert_in_runs():
    assert normalize("สามารถส่งได้ หกโมงเช้า").text == "สามารถส่งได้ หกโมงเช้า"
    assert normalize("ศูนย์แปดหนึ่ง").text == "081"
    assert normalize("one piece").text == "one piece"


def test_spaced_letters_joined():
    assert normalize("L I N E: abc").text == "line: abc"
    assert normalize("I am ok").text == "i am ok"  # two single-letter tokens are not a run


def test_line_id_value_inside_span():
    text = "L I N E: abc_shop"
    (d,) = detect_diversion(text)
    assert text[d.span[0] : d.span[1]].endswith("abc_shop")


def test_bank_account_is_payment_not_phone():
    kinds = {d.kind for d in detect_diversion("เลขบัญชี 012-3-45678-9")}
    assert kinds == {"payment_outside"}
