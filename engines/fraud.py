"""Listing fraud score from four signals, shared by the nightly batch and the on-demand service.

Each signal gives a risk in [0, 1]; the score is their noisy-OR ``1 - prod(1 - risk_i)``, so one strong
signal is enough and independent weak signals add up:

* **seller** — from the seller trust inputs (:func:`kernels.trust.seller_trust`): low trust raises risk,
  a banned seller is near-certain risk.
* **price** — far below the category's average price (``avg_category_price_history``), the classic bait.
* **diversion** — the listing text asks to move the deal off the platform (Line ID, phone, e-mail, URL,
  payment outside; :func:`engines.text.detectors.detect_diversion`).
* **duplicate** — the image is a copy of another seller's listing image.

All functions are vectorised over listings (numpy); :func:`reasons` explains one listing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.trust import seller_trust


@dataclass(frozen=True)
class FraudWeights:
    trust_floor: float = 0.55  # trust at or above this carries no seller risk
    seller_max: float = 0.6  # seller risk at trust 0
    banned: float = 0.95
    cheap_ratio: float = 0.4  # price / category average below this starts to look like bait
    cheap_zero: float = 0.05  # ... and at this ratio the price risk is maximal
    price_max: float = 0.7
    diversion: float = 0.55  # contact details in the text
    payment_outside: float = 0.7  # "transfer first", bank account, PromptPay
    duplicate: float = 0.6


DEFAULT = FraudWeights()
CONTACT_KINDS = ("line_id", "phone", "email", "url")


def seller_risk(trust: np.ndarray, banned: np.ndarray, w: FraudWeights = DEFAULT) -> np.ndarray:
    t = np.asarray(trust, dtype=np.float64)
    r = np.clip((w.trust_floor - t) / w.trust_floor, 0.0, 1.0) * w.seller_max
    return np.where(np.asarray(banned, dtype=bool), np.maximum(r, w.banned), r)


def price_risk(price_ratio: np.ndarray, w: FraudWeights = DEFAULT) -> np.ndarray:
    x = np.asarray(price_ratio, dtype=np.float64)
    r = np.clip((w.cheap_ratio - x) / (w.cheap_ratio - w.cheap_zero), 0.0, 1.0) * w.price_max
    return np.where(np.isfinite(x), r, 0.0)


def diversion_risk(contact: np.ndarray, payment: np.ndarray, w: FraudWeights = DEFAULT) -> np.ndarray:
    return np.maximum(np.where(np.asarray(contact, bool), w.diversion, 0.0),
                      np.where(np.asarray(payment, bool), w.payment_outside, 0.0))


def combine(*risks: np.ndarray) -> np.ndarray:
    keep = np.ones_like(np.asarray(risks[0], dtype=np.float64))
    for r in risks:
        keep = keep * (1.0 - np.clip(np.asarray(r, dtype=np.float64), 0.0, 1.0))
    return (1.0 - keep).astype(np.float32)


def trust_from_inputs(verified, reports, age_days, banned) -> np.ndarray:
    score, _ = seller_trust(np.asarray(verified, bool), np.asarray(reports, np.float32),
                            np.asarray(age_days, np.float32), np.asarray(banned, bool), xp=np)
    return np.asarray(score, dtype=np.float32)


@dataclass
class FraudResult:
    score: np.ndarray  # float32 [n]
    seller: np.ndarray
    price: np.ndarray
    diversion: np.ndarray
    duplicate: np.ndarray


def fraud_scores(trust: np.ndarray, banned: np.ndarray, price_ratio: np.ndarray, contact: np.ndarray,
                 payment: np.ndarray, duplicate: np.ndarray | None = None,
                 w: FraudWeights = DEFAULT) -> FraudResult:
    """Vectorised fraud score. ``duplicate`` is a bool array (None = the signal is not available)."""
    s = seller_risk(trust, banned, w)
    p = price_risk(price_ratio, w)
    d = diversion_risk(contact, payment, w)
    dup = np.where(np.asarray(duplicate, bool), w.duplicate, 0.0) if duplicate is not None else np.zeros_like(s)
    return FraudResult(combine(s, p, d, dup), s, p, d, dup)


def reasons(res: FraudResult, i: int, *, trust: float, banned: bool, price_ratio: float,
            diversion_kinds: list[str], duplicate_of: str | None, notes: list[str] = ()) -> list[dict]:
    """Human-readable reasons of listing ``i`` (only signals that contributed, strongest first)."""
    out = []
    if res.seller[i] > 0:
        msg = "banned seller" if banned else f"low seller trust {trust:.2f}"
        out.append({"signal": "seller", "risk": round(float(res.seller[i]), 4), "reason": msg})
    if res.price[i] > 0:
        out.append({"signal": "price", "risk": round(float(res.price[i]), 4),
                    "reason": f"price is {price_ratio:.0%} of the category average"})
    if res.diversion[i] > 0:
        out.append({"signal": "diversion", "risk": round(float(res.diversion[i]), 4),
                    "reason": "listing text moves the deal off the platform: " + ", ".join(sorted(set(diversion_kinds)))})
    if res.duplicate[i] > 0:
        out.append({"signal": "duplicate", "risk": round(float(res.duplicate[i]), 4),
                    "reason": f"image duplicates listing {duplicate_of}"})
    out.sort(key=lambda r: -r["risk"])
    out += [{"signal": "note", "risk": 0.0, "reason": n} for n in notes]
    return out


def diversion_flags(texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """(contact bool [n], payment bool [n], kinds per text) from the diversion detectors."""
    from engines.text.detectors import detect_diversion

    kinds = [[d.kind for d in detect_diversion(t)] if t else [] for t in texts]
    contact = np.array([any(k in CONTACT_KINDS for k in ks) for ks in kinds], dtype=bool)
    payment = np.array(["payment_outside" in ks for ks in kinds], dtype=bool)
    return contact, payment, kinds
