"""Suggested replies for a seller: intent retrieval on USE embeddings + templates grounded in listing facts.

The buyer's last message is embedded and matched to intent prototypes (Thai and English example phrases,
nearest example by cosine). Replies are filled only from the listing's facts (title, price, availability,
meet-up area, shipping, condition); a template whose fact is missing is skipped, so nothing is invented.
Every candidate — template or external LLM — passes :func:`guard_reply`: no phone, Line ID, e-mail, URL or
off-platform payment, no personal data from the conversation, and no number that is not in the listing
(so never a price other than the listing's).
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass

import numpy as np

from engines.text.detectors import detect_diversion
from engines.text.embedder import TextEmbedder
from engines.text.normalize import digits_only, normalize

INTENT_EXAMPLES: dict[str, list[str]] = {
    "availability": ["ยังมีของอยู่ไหมคะ", "ยังอยู่ไหมครับ", "ขายแล้วหรือยัง", "is it still available?", "do you still have it?",
                     "still for sale?", "sold already?", "ของยังว่างอยู่ไหม"],
    "price": ["ราคาเท่าไหร่คะ", "ลดได้ไหมครับ", "ขอราคาสุดท้าย", "ต่อได้ไหม", "how much?", "what's the price?",
              "can you lower the price?", "best price?", "any discount?", "ขาย 3000 ได้ไหม", "would you take 2000?"],
    "meetup": ["นัดรับได้ที่ไหนคะ", "นัดเจอที่ไหนได้บ้าง", "รับของเองได้ไหม", "where can we meet?", "can I pick it up?",
               "where is the pickup?", "meet up location?", "อยู่แถวไหนครับ"],
    "shipping": ["ส่งของได้ไหมคะ", "ส่งต่างจังหวัดได้ไหม", "ค่าส่งเท่าไหร่", "do you ship?", "can you deliver?",
                 "shipping cost?", "ส่งไปรษณีย์ได้ไหม", "can you send it by post?"],
    "condition": ["สภาพเป็นยังไงบ้าง", "มีตำหนิไหมคะ", "ใช้มานานไหม", "what condition is it in?", "any scratches?",
                  "does it work well?", "แบตยังดีไหม", "how old is it?"],
    "contact": ["ขอไลน์หน่อย", "ขอเบอร์โทรได้ไหม", "แอดไลน์ได้ไหมคะ", "can I have your phone number?", "what's your line id?",
                "can we talk on whatsapp?", "โอนนอกแอปได้ไหม", "can I pay you directly?"],
    "greeting": ["สวัสดีครับ", "สวัสดีค่ะ สนใจสินค้า", "hello", "hi, I'm interested", "สนใจค่ะ", "interested in this"],
}
PRICE_WORDS = re.compile(r"(บาท|฿|thb|baht|ราคา|price)", re.I)


def is_thai(text: str) -> bool:
    thai = sum("\u0e00" <= c <= "\u0e7f" for c in text)
    latin = sum(c.isascii() and c.isalpha() for c in text)
    return thai > 0 and thai >= latin * 0.3


def _fmt_price(p: float) -> str:
    return f"{int(p):,}" if float(p).is_integer() else f"{p:,.2f}"


@dataclass(frozen=True)
class ListingFacts:
    title: str | None = None
    price_thb: float | None = None
    available: bool | None = None
    meetup_area: str | None = None
    ships: bool | None = None
    condition: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> ListingFacts:
        avail = d.get("available", d.get("in_stock"))
        if avail is None and "stock_status" in d:
            avail = str(d["stock_status"]).lower() in ("in_stock", "available", "1", "true")
        price = d.get("price_thb", d.get("price"))
        return cls(
            title=d.get("title"),
            price_thb=float(price) if price is not None else None,
            available=None if avail is None else bool(avail),
            meetup_area=d.get("meetup_area") or d.get("meet_up_area"),
            ships=d.get("ships", d.get("shipping")),
            condition=d.get("condition") or d.get("condition_grade"),
        )

    def allowed_numbers(self) -> set[str]:
        """Digit strings a reply may contain: the price and numbers written in the listing's own facts."""
        out: set[str] = set()
        if self.price_thb is not None:
            out.add(str(int(self.price_thb)) if float(self.price_thb).is_integer() else f"{self.price_thb:.2f}")
        for s in (self.title, self.meetup_area, self.condition):
            if s:
                out |= {digits_only(m) for m in re.findall(r"\d[\d,.]*", normalize(s).text)}
        return {n.replace(".", "") for n in out if n}


# --- templates: (intent, needed facts, thai, english) ------------------------------------------------------
TEMPLATES: list[tuple[str, tuple[str, ...], str, str]] = [
    ("availability", ("available_yes",), "ยังมีอยู่ค่ะ สนใจสั่งซื้อผ่านแอปได้เลยนะคะ", "Yes, it's still available. You can order it in the app."),
    ("availability", ("available_no",), "ขออภัยค่ะ สินค้าชิ้นนี้ขายไปแล้ว", "Sorry, this item has already been sold."),
    ("availability", ("available_yes", "price"), "ยังมีค่ะ ราคา {price} บาทนะคะ", "Still available, the price is {price} THB."),
    ("price", ("price",), "ราคาที่ตั้งไว้คือ {price} บาทค่ะ", "The listed price is {price} THB."),
    ("price", ("price",), "ตอนนี้ราคา {price} บาทค่ะ ชำระผ่านแอปได้เลย", "It's {price} THB, and you can pay safely in the app."),
    ("meetup", ("meetup",), "นัดรับได้ที่{meetup}ค่ะ", "We can meet at {meetup}."),
    ("meetup", ("meetup",), "สะดวกนัดรับแถว{meetup}ไหมคะ", "Would {meetup} work for you for pick-up?"),
    ("meetup", (), "สะดวกนัดรับแถวไหนคะ คุยรายละเอียดในแชทนี้ได้เลย", "Where would be convenient for you? Let's arrange it here in the chat."),
    ("shipping", ("ships_yes",), "ส่งได้ค่ะ สั่งผ่านแอปแล้วจะจัดส่งให้นะคะ", "Yes, I can ship it once you order in the app."),
    ("shipping", ("ships_no", "meetup"), "ขออภัยค่ะ ไม่ได้จัดส่ง นัดรับได้ที่{meetup}ค่ะ", "Sorry, no shipping, but you can pick it up at {meetup}."),
    ("condition", ("condition",), "สภาพ{condition}ค่ะ", "It's in {condition} condition."),
    ("condition", (), "ดูรูปเพิ่มเติมได้ในประกาศค่ะ ถ้าอยากดูจุดไหนเพิ่ม บอกในแชทได้เลย", "There are more photos in the listing; tell me here if you'd like to see a detail."),
    ("contact", (), "คุยและชำระเงินผ่านแชทในแอปได้เลยค่ะ ปลอดภัยกว่า", "Let's keep chatting and paying in the app, it's safer for both of us."),
    ("greeting", ("title",), "สวัสดีค่ะ ขอบคุณที่สนใจ{title}นะคะ", "Hi, thanks for your interest in the {title}!"),
    ("greeting", (), "สวัสดีค่ะ มีอะไรสอบถามได้เลยนะคะ", "Hi! Feel free to ask anything."),
]
FOLLOW_UP = {"availability": "price", "price": "meetup", "meetup": "availability", "shipping": "price",
             "condition": "price", "contact": "availability", "greeting": "availability"}


def _facts_ok(needs: tuple[str, ...], f: ListingFacts) -> bool:
    checks = {
        "available_yes": f.available is True, "available_no": f.available is False, "price": f.price_thb is not None,
        "meetup": bool(f.meetup_area), "ships_yes": f.ships is True, "ships_no": f.ships is False,
        "condition": bool(f.condition), "title": bool(f.title),
    }
    return all(checks[n] for n in needs)


def guard_reply(reply: str, facts: ListingFacts, conversation_texts: list[str]) -> bool:
    """True when the reply is safe to suggest (see module docstring)."""
    if not reply or not reply.strip() or len(reply) > 300:
        return False
    nt = normalize(reply)
    if detect_diversion(nt):
        return False
    # personal data seen in the conversation must never be repeated
    for text in conversation_texts:
        for d in detect_diversion(text):
            frag = normalize(text[d.span[0] : d.span[1]]).text
            core = digits_only(frag) if d.kind == "phone" else frag
            if core and len(core) >= 4 and core in (digits_only(nt.text) if d.kind == "phone" else nt.text):
                return False
    allowed = facts.allowed_numbers()
    for m in re.finditer(r"\d[\d,.]*\d|\d", nt.text):
        n = m.group(0).replace(",", "").rstrip(".")
        n = n[:-3] if n.endswith(".00") else n
        if n.replace(".", "") not in allowed:
            return False
    return True


class LLMReplyAdapter:
    """POST {conversation, listing, language} to an external endpoint, expecting {"replies": [str, ...]}."""

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url = url
        self.timeout_s = timeout_s

    def suggest(self, conversation: list[dict], facts: ListingFacts, language: str) -> list[str]:
        body = json.dumps({"conversation": conversation, "listing": facts.__dict__, "language": language}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (configured URL)
                data = json.loads(resp.read().decode("utf-8"))
        except (OSError, ValueError):
            return []
        replies = data.get("replies", []) if isinstance(data, dict) else []
        return [r for r in replies if isinstance(r, str)]


@dataclass
class ReplySuggestions:
    language: str
    intent: str
    replies: list[str]
    source: str  # "templates" | "llm" | "llm+templates"


class ReplySuggester:
    """Nearest-example intent retrieval (USE) + grounded templates (+ optional guarded LLM suggestions)."""

    def __init__(self, embedder: TextEmbedder, llm: LLMReplyAdapter | None = None):
        self.embedder = embedder
        self.llm = llm
        self.intents = list(INTENT_EXAMPLES)
        examples = [(name, ex) for name in self.intents for ex in INTENT_EXAMPLES[name]]
        self.example_intent = np.array([self.intents.index(n) for n, _ in examples])
        self.example_emb = embedder.encode([normalize(ex).text for _, ex in examples])

    def intent_of(self, text: str) -> str:
        if detect_diversion(text):
            return "contact"
        sims = self.example_emb @ self.embedder.encode([normalize(text).text])[0]
        return self.intents[int(self.example_intent[int(np.argmax(sims))])]  # nearest example wins

    def suggest(self, conversation: list[dict], facts: ListingFacts, n: int = 3) -> ReplySuggestions:
        texts = [t["text"] for t in conversation]
        buyer = [t["text"] for t in conversation if t.get("role") == "buyer"] or texts
        last = buyer[-1]
        language = "th" if is_thai(last) else "en"
        intent = self.intent_of(last)
        col = 2 if language == "th" else 3
        ordered = [intent, FOLLOW_UP[intent]] + [i for i in self.intents if i not in (intent, FOLLOW_UP[intent])]
        candidates: list[str] = []
        source = "templates"
        if self.llm is not None:
            llm_ok = [r.strip() for r in self.llm.suggest(conversation, facts, language)
                      if guard_reply(r, facts, texts)]
            candidates += llm_ok[:n]
            if llm_ok:
                source = "llm" if len(llm_ok) >= n else "llm+templates"
        values = {"price": _fmt_price(facts.price_thb) if facts.price_thb is not None else "",
                  "meetup": facts.meetup_area or "", "condition": facts.condition or "", "title": facts.title or ""}
        for it in ordered:
            for t_intent, needs, th, en in TEMPLATES:
                if t_intent == it and _facts_ok(needs, facts):
                    reply = (th, en)[col - 2].format(**values)
                    if reply not in candidates and guard_reply(reply, facts, texts):
                        candidates.append(reply)
            if len(candidates) >= n:
                break
        return ReplySuggestions(language, intent, candidates[:n], source)
