"""Auto-reply engine: grounded in listing facts, never leaks contact data, never states another price."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.text.detectors import detect_diversion
from engines.text.embedder import get_embedder
from engines.text.normalize import digits_only, normalize
from engines.text.reply import ListingFacts, LLMReplyAdapter, ReplySuggester, guard_reply, is_thai

BUYER_LINES = [
    "ยังมีอยู่ไหมคะ", "ราคาเท่าไหร่ครับ", "ลดเหลือ {offer} ได้ไหม", "นัดรับที่ไหนได้บ้าง", "ส่งต่างจังหวัดได้ไหมคะ",
    "สภาพเป็นยังไงบ้าง", "ขอไลน์หน่อยค่ะ ไลน์ฉัน {line}", "โทรมาที่ {phone} นะ", "is it still available?",
    "would you take {offer}?", "where can we meet?", "do you ship?", "any scratches?", "text me on {phone}",
    "my line id is {line}, add me", "email me at {line}@gmail.com", "how much?", "hello, interested",
]
SELLER_LINES = ["สวัสดีค่ะ", "hi!", "ยังมีค่ะ", "yes available", "ราคา {price} บาทค่ะ"]
AREAS = ["BTS อโศก", "Siam Paragon", "ตลาดนัดจตุจักร", None]
TITLES = ["iPhone 13 128GB", "โต๊ะไม้สัก", "Nike Air Max size 42", "กล้อง Canon 600D", None]


@pytest.fixture(scope="module")
def suggester():
    return ReplySuggester(get_embedder())


def _numbers(text: str) -> list[str]:
    return [m.replace(",", "") for m in re.findall(r"\d[\d,]*", normalize(text).text)]


conversation_st = st.fixed_dictionaries({
    "price": st.integers(min_value=50, max_value=90_000),
    "offer": st.integers(min_value=10, max_value=90_000),
    "phone": st.sampled_from(["0812345678", "๐๘๙๘๗๖๕๔๓๒", "0 9 1 2 2 3 3 4 4 5", "+66 86 111 2222"]),
    "line": st.sampled_from(["somsak99", "nid.shop", "kk_boss"]),
    "turns": st.lists(st.tuples(st.sampled_from(["buyer", "seller"]), st.integers(0, 100)), min_size=1, max_size=4),
    "last": st.integers(0, len(BUYER_LINES) - 1),
    "available": st.sampled_from([True, False, None]),
    "area": st.sampled_from(AREAS),
    "title": st.sampled_from(TITLES),
    "ships": st.sampled_from([True, False, None]),
})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conversation_st)
def test_replies_never_leak_contacts_or_other_prices(suggester, c):
    fill = {"price": c["price"], "offer": c["offer"], "phone": c["phone"], "line": c["line"]}
    conv = []
    for role, k in c["turns"]:
        lines = BUYER_LINES if role == "buyer" else SELLER_LINES
        conv.append({"role": role, "text": lines[k % len(lines)].format(**fill)})
    conv.append({"role": "buyer", "text": BUYER_LINES[c["last"]].format(**fill)})
    facts = ListingFacts(title=c["title"], price_thb=float(c["price"]), available=c["available"],
                         meetup_area=c["area"], ships=c["ships"])
    out = suggester.suggest(conv, facts)
    assert len(out.replies) == 3
    assert out.language == ("th" if is_thai(conv[-1]["text"]) else "en")
    allowed = {str(c["price"])} | {digits_only(n) for n in re.findall(r"\d+", c["title"] or "")}
    for reply in out.replies:
        assert detect_diversion(reply) == [], reply
        assert c["line"] not in reply.lower()
        assert digits_only(normalize(c["phone"]).text)[-6:] not in digits_only(reply)
        for n in _numbers(reply):
            assert n in allowed, (reply, n)
        own_words = reply
        for fact in (c["area"], c["title"]):
            own_words = own_words.replace(fact or "\0", "")
        assert is_thai(own_words) == (out.language == "th"), reply  # facts are quoted as written


def test_price_reply_states_listing_price(suggester):
    facts = ListingFacts(title="โต๊ะไม้สัก", price_thb=4500, available=True, meetup_area="BTS อโศก")
    out = suggester.suggest([{"role": "buyer", "text": "ราคาเท่าไหร่คะ ลด 3000 ได้ไหม"}], facts)
    assert out.intent == "price"
    assert any("4,500" in r for r in out.replies)
    assert not any("3000" in r or "3,000" in r for r in out.replies)


def test_missing_facts_not_invented(suggester):
    facts = ListingFacts(title=None, price_thb=None, available=None, meetup_area=None)
    out = suggester.suggest([{"role": "buyer", "text": "how much and where can we meet?"}], facts)
    assert len(out.replies) >= 1
    for r in out.replies:
        assert not re.search(r"\d", r)


def test_contact_request_gets_in_app_reply(suggester):
    facts = ListingFacts(price_thb=990, available=True)
    out = suggester.suggest([{"role": "buyer", "text": "ขอไลน์หน่อยค่ะ 0812345678"}], facts)
    assert out.intent == "contact"
    assert "แอป" in out.replies[0]


def test_guard_rejects_bad_replies():
    facts = ListingFacts(title="iPhone 13 128GB", price_thb=15900)
    conv = ["my number is 0812345678"]
    assert guard_reply("ราคา 15,900 บาทค่ะ", facts, conv)
    assert guard_reply("iPhone 13 128GB still here", facts, conv)
    assert not guard_reply("ลดเหลือ 14,000 บาทได้ค่ะ", facts, conv)
    assert not guard_reply("โทรมา 0812345678", facts, conv)
    assert not guard_reply("add my line: seller_01", facts, conv)
    assert not guard_reply("", facts, conv)


class _LLM(BaseHTTPRequestHandler):
    replies: list[str] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert "conversation" in body and "listing" in body
        data = json.dumps({"replies": self.replies}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def llm_server():
    srv = HTTPServer(("127.0.0.1", 0), _LLM)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/reply"
    srv.shutdown()
    srv.server_close()


def test_llm_adapter_output_is_guarded(llm_server):
    _LLM.replies = ["Sure, it's 15,900 THB.", "Call me on 0899999999", "I can do 12,000 THB", "See you at Asok!"]
    s = ReplySuggester(get_embedder(), LLMReplyAdapter(llm_server, timeout_s=2.0))
    facts = ListingFacts(title="iPhone 13", price_thb=15900, available=True, meetup_area="Asok")
    out = s.suggest([{"role": "buyer", "text": "how much?"}], facts)
    assert out.replies[:2] == ["Sure, it's 15,900 THB.", "See you at Asok!"]
    assert out.source == "llm+templates" and len(out.replies) == 3


def test_llm_down_falls_back_to_templates():
    s = ReplySuggester(get_embedder(), LLMReplyAdapter("http://127.0.0.1:9/none", timeout_s=0.5))
    out = s.suggest([{"role": "buyer", "text": "is it still available?"}], ListingFacts(price_thb=100, available=True))
    assert out.source == "templates" and len(out.replies) == 3
