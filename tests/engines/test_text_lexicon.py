"""Prohibited-item taxonomy and lexicon rules (no model): precision cases from the issue and the data file's
contract with the classifier heads."""

from __future__ import annotations

import json

import pytest

from engines.text.analyzer import TextAnalyzer
from engines.text.heads import PROHIBITED_ITEMS
from engines.text.lexicon import LEXICON_PATH, ProhibitedLexicon, get_lexicon, term_pattern


@pytest.fixture(scope="module")
def rules() -> TextAnalyzer:
    return TextAnalyzer(None)


def test_taxonomy_file_names_every_item_once_with_its_law():
    data = json.loads(LEXICON_PATH.read_text(encoding="utf-8"))
    assert set(data["classes"]) == set(PROHIBITED_ITEMS)
    for name, spec in data["classes"].items():
        assert spec["law"] and spec["terms"], name


@pytest.mark.parametrize("text", [
    "iPhone 13 สภาพดี 90% ราคา 12,500 บาท นัดรับแถวอโศก",
    "Samsung Galaxy S22 เกรด A ราคา 9,900",
    "Louis Vuitton Speedy 30 ของแท้ มีใบเสร็จ 32,000 บาท",
    "Rolex Oyster Perpetual authentic, full set, 2020",
    "ปืนกาวร้อน พร้อมกาว 10 แท่ง",
    "ชุดแก้วไวน์ 4 ใบ",
    "โซฟาสีงาช้าง 3 ที่นั่ง",
    "งานปั๊มหรือของแท้ครับ",
    "ล้อแม็กขอบ 15 4x100",
])
def test_brand_price_grade_or_innocent_use_alone_is_not_prohibited(rules, text):
    assert rules.analyze(text, "listing").prohibited == []


@pytest.mark.parametrize(("text", "item"), [
    ("Ivory carving antique, genuine elephant tusk", "wildlife"),
    ("กระเป๋า Gucci งานมิลเลอร์", "counterfeit"),
    ("บุหรี่ ไฟ ฟ้า กลิ่นองุ่น", "vape"),
    ("ขาย ป ื น สั้น", "weapon"),
    ("ลูกเสือโคร่ง ขายเลี้ยง", "wildlife"),
    ("ยาไวอากร้า แผงละ 4 เม็ด", "prescription_medicine"),
    ("Jack Daniel's 1 ลิตร 2 ขวด", "alcohol"),
    ("รับทำใบขับขี่ ไม่ต้องสอบ", "fake_document"),
])
def test_rules_find_items_without_a_model(rules, text, item):
    assert item in [i for i, _ in rules.analyze(text, "listing").prohibited]


def test_bank_account_diversion_is_payment_only(rules):
    res = rules.analyze("โอนเข้าบัญชีกสิกร 123-4-56789-0 แล้วส่งสลิปมา", "chat")
    assert res.prohibited == []
    assert {d.kind for d in res.diversion} == {"payment_outside"}


def test_term_syntax():
    import re

    assert re.search(term_pattern("gun"), "top gun") and not re.search(term_pattern("gun"), "gunmetal")
    assert re.search(term_pattern("e cig*"), "e-cigs") and re.search(term_pattern("e cig*"), "ecig")
    assert re.search(term_pattern("งาช้าง"), "แหวนงาช้างแท้")


def test_allowed_phrase_clears_the_class_for_models():
    hits, cleared = get_lexicon().match_with_cleared("ตู้แช่ไวน์ 12 ขวด")
    assert hits == [] and "alcohol" in cleared


def test_custom_lexicon_file(tmp_path):
    p = tmp_path / "lex.json"
    p.write_text(json.dumps({"_version": "t1", "classes": {"weapon": {
        "law": "x", "terms": ["ดาบ"], "allow": ["ดาบไม้"], "negate": ["ของเล่น"]}}}), encoding="utf-8")
    lex = ProhibitedLexicon(p)
    assert [h.item for h in lex.match("ขายดาบซามูไร")] == ["weapon"]
    assert lex.match("ดาบไม้ฝึก") == [] and lex.match("ดาบของเล่น") == []
