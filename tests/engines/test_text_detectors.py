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


def _span_text(text: str, kind: str) -> list[str]:
    return [text[d.span[0] : d.span[1]] for d in detect_diversion(text) if d.kind == kind]


@pytest.mark.parametrize(("text", "expected"), [
    ("ศู น ย์ แปด หนึ่ง 234 5678 โทรมานะ", "ศู น ย์ แปด หนึ่ง 234 5678"),
    ("เบอร์ 08l-234-5678 ครับ", "08l-234-5678"),
    ("my number is 086 OO1 2345", "086 OO1 2345"),
    ("โทร 0️⃣8️⃣1️⃣2️⃣3️⃣4️⃣5️⃣6️⃣7️⃣8️⃣ นะ", "0️⃣8️⃣1️⃣2️⃣3️⃣4️⃣5️⃣6️⃣7️⃣8️⃣"),
    ("โทร0812345678ด่วน", "0812345678"),
    ("ติดต่อ 08 หนึ่ง 2 สาม 4 ห้า 6 เจ็ด 8", "08 หนึ่ง 2 สาม 4 ห้า 6 เจ็ด 8"),
])
def test_obfuscated_phone_span_is_exact(text, expected):
    assert _span_text(text, "phone") == [expected]


@pytest.mark.parametrize(("text", "kind"), [
    ("ไล น์ ไอ ดี kaew123", "line_id"),
    ("ติดต่อทางไลน์ค่ะ ID: ann.seller", "line_id"),
    ("ไลนน์ : mookmook77", "line_id"),
    ("เมล ploy.s แอท จีเมล จุด คอม", "email"),
    ("mail me at sara [at] gmail [.] com", "email"),
    ("สั่งที่ my-shop dot com ได้เลย", "url"),
    ("t.me/cheapphones", "url"),
    ("บัญชีออมสิน 0201-2345-6789 โอนแล้วแจ้ง", "payment_outside"),
])
def test_evasions_found(text, kind):
    assert kind in {d.kind for d in detect_diversion(text)}, (text, detect_diversion(text))


@pytest.mark.parametrize("text", [
    "นัดรับ @BTS อ่อนนุช ได้ครับ", "Online course voucher", "ไลน์อัพใหม่เข้าแล้ว", "ISBN 978-616-123-456-7",
    "เลขพัสดุ TH0123456789", "ราคา 12,500 บาท ไมล์ 98,765 กม.", "oil filter 2024 lol",
])
def test_look_alikes_are_not_diversion(text):
    assert detect_diversion(text) == []
