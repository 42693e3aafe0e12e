"""Pattern detectors for attempts to take a deal off the platform ("diversion").

Kinds: ``line_id | phone | email | url | payment_outside``. Every detector runs on the normalised text
(:mod:`engines.text.normalize`) and reports spans ``(start, end)`` in the ORIGINAL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engines.text.normalize import NormalizedText, digits_only, normalize

DIVERSION_KINDS = ("line_id", "phone", "email", "url", "payment_outside")


@dataclass(frozen=True)
class Diversion:
    kind: str
    span: tuple[int, int]  # [start, end) in the original text

    def as_dict(self) -> dict:
        return {"kind": self.kind, "span": [self.span[0], self.span[1]]}


# --- phone: Thai mobile/landline (0 + 8-9 digits) or +66, separators allowed between digits -------------
_PHONE_RE = re.compile(
    r"(?<![0-9a-z@_])(?:\+?\s*6\s*6[\s\-.(),]*|0[\s\-.(),]{0,3})(?:\d[\s\-.(),]{0,3}){7,10}\d(?![\d])"
)

# --- email, including "name at gmail dot com", "name [at] gmail [.] com", "ชื่อ แอท จีเมล จุด คอม" ---------------
_AT_LITERAL = r"(?:\s*@\s*|\s*[\[({]\s*(?:at|@)\s*[\])}]\s*|\s*แอท\s*|\s+at\s+(?=[a-z]))"
_DOT = r"(?:\s*\.\s*|\s*[\[({]\s*(?:dot|\.)\s*[\])}]\s*|\s+dot\s+|\s*(?:จุด|ดอท)\s*)"
_EMAIL_TLD = r"(?:com|net|org|co|th|io|me|info|biz|edu|ac|go|mail|คอม)(?![a-z0-9])"
_PROVIDER = r"(?:gmail|hotmail|yahoo|outlook|icloud|live|msn|proton\w*|ymail|จีเมล|จีเมล์|ฮอตเมล|ฮอตเมล์|ยาฮู)"
_EMAIL_RE = re.compile(
    r"(?<![a-z0-9._%+\-])[a-z0-9][a-z0-9._%+\-]*(?:\s*@\s*|\s*[\[({]\s*(?:at|@)\s*[\])}]\s*)[a-z0-9\-]+(?:"
    + _DOT + r"[a-z0-9\-]+)*" + _DOT + _EMAIL_TLD
)
# a spelled-out "at"/"แอท" is common English/Thai, so only with a known mail provider
_EMAIL_WORDY_RE = re.compile(
    r"(?<![a-z0-9._%+\-])[a-z0-9][a-z0-9._%+\-]*(?:\s+dot\s+[a-z0-9_%+\-]+)*" + _AT_LITERAL + _PROVIDER
    + r"(?:" + _DOT + r"[a-z0-9\-]+)*" + _DOT + _EMAIL_TLD
)

# --- url -------------------------------------------------------------------------------------------------
_TLD = (r"(?:com|net|org|co\.th|in\.th|co|th|ly|me|io|shop|store|link|site|online|xyz|info|app|page|gl|gle|at|to"
        r"|gg|cc|tv|asia|biz)")
_URL_RE = re.compile(
    r"(?:https?://|www\.)[^\s<>\"']+|\b[a-z0-9][a-z0-9\-]*(?:\.[a-z0-9\-]+)*\." + _TLD + r"\b(?:/[^\s<>\"']*)?"
)
# "my-shop dot com", "bestdeals[.]shop", "shop จุด com"
_URL_OBFUSCATED_RE = re.compile(
    r"(?<![a-z0-9\-])[a-z0-9][a-z0-9\-]*(?:\s*[\[(]\s*(?:\.|dot)\s*[\])]\s*|\s+dot\s+|\s*(?:จุด|ดอท)\s*)"
    r"(?:com|net|org|shop|store|co\.th|in\.th|online|site|xyz|link|me|io|คอม)(?![a-z0-9])"
)

# --- line id: a LINE keyword, optional "id"/":" then the id; or "@handle" ---------------------------------
_LINE_KW = (
    r"(?:(?<![a-z])(?:line|ln|li\s?ne|l1ne|lineid|id\s*line)|ไลน์|ไลนน์|ไลน|ไล์น|ไรน์|ลายน์|ไลน์ไอดี|ไอดีไลน์|ไอดีไลน|เส้น)"
)
_LINE_RE = re.compile(
    _LINE_KW + r"\s*@?\s*(?:id|ไอดี|ไอดี้|official|ส่วนตัว)?\s*(?:[:：=\-]|is|คือ|เป็น|นะ|ครับ|ค่ะ|มา|ที่)?\s*"
    r"(?:ได้ที่|ที่|มาที่|:)?\s*(?P<id>@?[a-z0-9][a-z0-9._\-]{2,24})"
)
_LINE_URL_RE = re.compile(r"(?:https?://)?line\.me/\S+|lin\.ee/\S+")
_HANDLE_RE = re.compile(r"(?<![\w.])@\s?(?P<id>[a-z0-9][a-z0-9._\-]{2,24})")
# an "ID: handle" counts as a Line ID when the text talks about LINE somewhere
_ID_HANDLE_RE = re.compile(r"(?<![a-z])(?:id|ไอดี|ไอดี้)\s*[:：=\-]?\s*(?:[^\sa-z0-9]{1,2}\s*)?(?P<id>@?[a-z0-9][a-z0-9._\-]{2,24})")
_LINE_MENTION_RE = re.compile(_LINE_KW)
# a bare "@word" (no digit, "_" or ".") is a place as often as a handle ("นัดรับ @BTS"): it needs a contact cue
_CONTACT_CUE_RE = re.compile(r"(?:ไลน์|ไลน|line|แอด|add|ทัก|ติดต่อ|contact|dm|ig|instagram|follow|ฟอล|ไอดี|(?<![a-z])id(?![a-z]))")
_ADD_LINE_RE = re.compile(r"(?:แอดไลน์|แอดไลน|add\s*line|add\s*me\s*on\s*line|ทักไลน์|ทักไลน|คุยไลน์|คุยทางไลน์)")
_LINE_ID_STOP = {
    "id", "official", "only", "me", "ok", "na", "krub", "ka", "nah", "please", "pls", "chat", "app", "here",
    "now", "inbox", "and", "the", "for", "shopping", "thb", "baht",
}

# --- payment outside the platform ------------------------------------------------------------------------
_PAYMENT_KW = re.compile(
    r"(?:โอนก่อน|โอนเงินก่อน|โอนมัดจำ|มัดจำก่อน|โอนเข้าบัญชี|โอนมาที่|โอนผ่าน|เลขบัญชี|เลขที่บัญชี|"
    r"พร้อมเพย์|พร้อมเพ|promptpay|prompt\s*pay|true\s*money|ทรูมันนี่|ทรูวอลเล็ท|"
    r"นอกแอป|นอกระบบ|นอกแพลตฟอร์ม|นอกแพลทฟอร์ม|off\s*-?\s*platform|ไม่ผ่านแอป|ไม่ต้องผ่านแอป|ไม่ผ่านระบบ|ไม่ต้องผ่านระบบ|จ่ายตรง|ชำระตรง|"
    r"bank\s*transfer|transfer\s*(?:first|to\s*my|directly)|pay\s*(?:me\s*)?(?:directly|outside|first|via\s*bank)|"
    r"outside\s*(?:the\s*)?(?:app|platform)|off\s*(?:the\s*)?(?:app|platform)|paypal\.me|wire\s*(?:me|the\s*money)|"
    r"deposit\s*first|send\s*(?:the\s*)?money\s*(?:first|to)|account\s*(?:no|number)|acc\s*no)"
)
_BANK_ACCOUNT_RE = re.compile(r"(?<!\d)\d{3}[\-\s]\d[\-\s]\d{5}[\-\s]\d(?!\d)")
# a bank named next to a 10-12 digit number ("บัญชีออมสิน 0201-2345-6789", "kbank 1112333445")
_BANK_NAMED_RE = re.compile(
    r"(?:บัญชี|บช\.?|เลขที่บัญชี|ธนาคาร|กสิกร|ไทยพาณิชย์|กรุงเทพ|กรุงไทย|กรุงศรี|ออมสิน|ทหารไทย|ธกส|kbank|kasikorn|scb|"
    r"ktb|bbl|krungsri|ttb|gsb|bank|account|acc)[^0-9]{0,25}?(?P<num>\d(?:[\s\-]?\d){9,11})(?!\d)"
)


def _phone_spans(nt: NormalizedText) -> list[tuple[int, int]]:
    out = []
    for m in _PHONE_RE.finditer(nt.text):
        d = digits_only(m.group(0))
        ok = (d.startswith("0") and len(d) in (9, 10)) or (d.startswith("66") and len(d) in (10, 11))
        if ok and not _BANK_ACCOUNT_RE.fullmatch(m.group(0).strip()):
            out.append((m.start(), m.end()))
    return out


def _overlaps(a: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a[0] < b[1] and b[0] < a[1] for b in spans)


def detect_diversion(text: str | NormalizedText) -> list[Diversion]:
    """All diversion attempts in ``text``, spans in the original text, sorted by position."""
    nt = text if isinstance(text, NormalizedText) else normalize(text)
    t = nt.text
    found: list[tuple[str, tuple[int, int]]] = []  # spans in normalised coordinates

    emails = [(m.start(), m.end()) for rx in (_EMAIL_RE, _EMAIL_WORDY_RE) for m in rx.finditer(t)]
    found += [("email", s) for s in emails]
    phones = [s for s in _phone_spans(nt) if not _overlaps(s, emails)]
    found += [("phone", s) for s in phones]

    line_spans: list[tuple[int, int]] = []
    for m in _LINE_URL_RE.finditer(t):
        line_spans.append((m.start(), m.end()))
    for m in _LINE_RE.finditer(t):
        ident = m.group("id")
        if ident.lstrip("@") in _LINE_ID_STOP:
            continue
        s = (m.start("id"), m.end("id"))
        if _overlaps(s, phones + emails):
            # "line: 0812345678" is a phone number used as a Line ID: report both
            line_spans.append((m.start(), m.end()))
            continue
        line_spans.append((m.start(), m.end()))
    if _LINE_MENTION_RE.search(t):
        for m in _ID_HANDLE_RE.finditer(t):
            s = (m.start(), m.end())
            if m.group("id").lstrip("@") not in _LINE_ID_STOP and not _overlaps(s, emails + line_spans + phones):
                line_spans.append(s)
    contact_cue = _CONTACT_CUE_RE.search(t) is not None
    for m in _HANDLE_RE.finditer(t):
        s = (m.start(), m.end())
        ident = m.group("id")
        handle_like = contact_cue or any(c.isdigit() or c in "._" for c in ident)
        if handle_like and not _overlaps(s, emails + line_spans) and ident not in _LINE_ID_STOP:
            line_spans.append(s)
    for m in _ADD_LINE_RE.finditer(t):
        s = (m.start(), m.end())
        if not _overlaps((s[0], s[1] + 40), line_spans):
            line_spans.append(s)
    found += [("line_id", s) for s in line_spans]

    taken = emails + line_spans
    for rx in (_URL_RE, _URL_OBFUSCATED_RE):
        for m in rx.finditer(t):
            s = (m.start(), m.end())
            if not _overlaps(s, taken):
                found.append(("url", s))
                taken = taken + [s]

    for m in _PAYMENT_KW.finditer(t):
        found.append(("payment_outside", (m.start(), m.end())))
    bank = [(m.start(), m.end()) for m in _BANK_ACCOUNT_RE.finditer(t)]
    bank += [(m.start("num"), m.end("num")) for m in _BANK_NAMED_RE.finditer(t)
             if not _overlaps((m.start("num"), m.end("num")), bank)]
    found += [("payment_outside", s) for s in bank]

    out = {Diversion(kind, nt.span(a, b)) for kind, (a, b) in found}
    return sorted(out, key=lambda d: (d.span, d.kind))


def diversion_kinds(text: str | NormalizedText) -> set[str]:
    return {d.kind for d in detect_diversion(text)}
