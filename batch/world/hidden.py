"""The hidden preference model that drives the synthetic marketplace's behaviour.

Every click, add-to-cart and order of the synthetic world is sampled from this model, so a ranker
that learns these factors from the public tables can beat popularity. Its per-user parameters
(category affinity, price sensitivity, activity) are *hidden*: the generator writes them only to
``<out>/_hidden/`` (for tests and benchmarks), never to the lake's public tables.

Click logit of user ``u`` shown product ``p`` at 1-based ``position`` and Bangkok ``hour``::

    logit = bias
          + w_affinity  * log(K * affinity[u, cat[p]] + 0.05)     # preferred categories
          - w_distance  * log1p(haversine_km(u, p) / 25)          # distance decay
          - price_sensitivity[u] * log(price[p] / median_price[cat[p]])   # price fit
          + w_quality   * (quality[p] - 0.5)
          + w_trust     * (seller_trust[p] - 0.5)
          - w_position  * log(position)                          # position bias
          + HOUR_PROFILE[cat[p], hour]                            # e.g. electronics in the evening
          + w_query * (cat[p] == query_category) - w_query_miss * (query given and no match)
          + w_text * query_match - w_text_miss * (query given and not query_match)   # title relevance
          + category_boost[cat[p]]                                # drift injection

``query_match`` is the search's query-listing relevance (1 when the listing's title contains what was
searched, case-insensitive; :func:`query_matches`). Probabilities are ``sigmoid(logit)``. Add-to-cart
(after a click) and order (after a cart) are driven by price fit and, for a search, by the same
relevance (nobody buys the sofa they did not search for); orders are impossible for out-of-stock
listings.

    >>> model = HiddenModel.load("var/world")       # from a built lake
    >>> p = model.click_prob(user_idx, product_idx, position, hour)
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gpu_core.lake import lake_path, read_parquet, write_parquet
from gpu_core.schema import AGE_GROUPS, CATEGORIES, GENDERS
from kernels.geo import haversine_km

N_CATEGORIES = len(CATEGORIES)
_C = {name: i for i, name in enumerate(CATEGORIES)}


def _hour_profile() -> np.ndarray:
    """Additive logit bonus per (category, Bangkok hour): gaussian bumps around peak hours."""
    hours = np.arange(24, dtype=np.float64)
    prof = np.zeros((N_CATEGORIES, 24), dtype=np.float64)

    def bump(cat: str, centre: float, width: float, height: float) -> None:
        d = np.minimum(np.abs(hours - centre), 24 - np.abs(hours - centre))  # circular distance
        prof[_C[cat]] += height * np.exp(-0.5 * (d / width) ** 2)

    bump("electronics", 21.0, 2.0, 0.6)
    bump("mobile_phones", 21.5, 2.0, 0.5)
    bump("fashion", 12.5, 1.5, 0.4)
    bump("fashion", 20.5, 2.0, 0.3)
    bump("beauty", 22.0, 2.0, 0.45)
    bump("home_garden", 9.0, 2.0, 0.45)
    bump("baby_kids", 14.0, 2.5, 0.35)
    bump("sports", 6.5, 1.5, 0.5)
    bump("books_hobbies", 16.0, 3.0, 0.3)
    bump("vehicles_parts", 10.0, 2.0, 0.35)
    bump("pets", 18.0, 2.0, 0.3)
    bump("collectibles", 23.0, 1.5, 0.4)
    bump("furniture", 10.5, 2.5, 0.35)
    return (prof - prof.mean(axis=1, keepdims=True)).astype(np.float32)


HOUR_PROFILE: np.ndarray = _hour_profile()  # float32 [12, 24]

# Demographic priors on categories (multiplicative on the Dirichlet concentration).
_GENDER_PRIOR = {
    "female": {"fashion": 2.0, "beauty": 3.0, "baby_kids": 1.5, "home_garden": 1.3},
    "male": {"electronics": 1.8, "vehicles_parts": 3.0, "sports": 1.6, "mobile_phones": 1.4},
    "other": {"collectibles": 1.5, "books_hobbies": 1.5},
}
_AGE_PRIOR = {
    "18-24": {"fashion": 1.6, "mobile_phones": 1.6, "books_hobbies": 1.3},
    "25-34": {"electronics": 1.4, "baby_kids": 1.5, "beauty": 1.3},
    "35-44": {"baby_kids": 1.8, "home_garden": 1.4, "furniture": 1.4},
    "45-54": {"home_garden": 1.6, "furniture": 1.5, "vehicles_parts": 1.3},
    "55+": {"home_garden": 1.8, "pets": 1.5, "collectibles": 1.6},
}


@dataclass(frozen=True)
class HiddenParams:
    """Coefficients of the hidden model (the same for every user)."""

    bias: float = -3.1
    w_affinity: float = 0.85
    w_distance: float = 0.5
    distance_scale_km: float = 25.0
    w_quality: float = 1.4
    w_trust: float = 1.0
    w_position: float = 0.45
    w_query: float = 0.9
    w_query_miss: float = 0.6
    w_text: float = 1.2
    w_text_miss: float = 0.4
    cart_bias: float = -1.5
    cart_w_price: float = 0.9
    cart_w_quality: float = 1.0
    order_bias: float = -0.8
    order_w_price: float = 0.8
    order_w_trust: float = 1.2
    cart_w_text: float = 0.8
    order_w_text: float = 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def seller_trust_true(verified_id, reports, banned, tenure_days) -> np.ndarray:
    """The trust a buyer actually feels for a seller (0..1), from its public attributes."""
    verified = np.asarray(verified_id, dtype=np.float64)
    reports = np.asarray(reports, dtype=np.float64)
    tenure = np.asarray(tenure_days, dtype=np.float64)
    z = -0.2 + 1.2 * verified - 0.45 * reports + 0.6 * np.minimum(tenure / 365.0, 2.0)
    z = z - 3.0 * np.asarray(banned, dtype=np.float64)
    return sigmoid(z).astype(np.float32)


def sample_user_preferences(
    rng: np.random.Generator, age_group: np.ndarray, gender: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw hidden (affinity [U, 12], price_sensitivity [U], activity [U]) for users.

    ``age_group`` / ``gender`` are codes of AGE_GROUPS / GENDERS. Affinity rows sum to 1 and are
    peaked (Dirichlet with small concentration), tilted by demographic priors.
    """
    n = len(age_group)
    prior = np.ones((len(AGE_GROUPS), len(GENDERS), N_CATEGORIES), dtype=np.float64)
    for a, age in enumerate(AGE_GROUPS):
        for g, gen in enumerate(GENDERS):
            for cat, m in _AGE_PRIOR[age].items():
                prior[a, g, _C[cat]] *= m
            for cat, m in _GENDER_PRIOR[gen].items():
                prior[a, g, _C[cat]] *= m
    alpha = 0.25 * prior[np.asarray(age_group), np.asarray(gender)]  # [U, 12]
    g = rng.gamma(alpha)
    g = np.maximum(g, 1e-12)
    affinity = (g / g.sum(axis=1, keepdims=True)).astype(np.float32)
    price_sensitivity = np.clip(rng.normal(1.0, 0.5, size=n), 0.0, 2.5).astype(np.float32)
    activity = rng.lognormal(0.0, 0.8, size=n).astype(np.float32)
    return affinity, price_sensitivity, activity


@dataclass
class HiddenModel:
    """Hidden preferences of users plus the product attributes the behaviour depends on.

    Arrays are indexed by 0-based entity *index* (``user_id - 1``, ``product_id - 1``).
    """

    affinity: np.ndarray  # float32 [U, 12], rows sum to 1
    price_sensitivity: np.ndarray  # float32 [U]
    activity: np.ndarray  # float32 [U], relative session rate
    user_lat: np.ndarray  # float64 [U]
    user_lon: np.ndarray  # float64 [U]
    product_category: np.ndarray  # int32 [P]
    product_log_price_ratio: np.ndarray  # float32 [P], log(price / category median)
    product_quality: np.ndarray  # float32 [P]
    product_trust: np.ndarray  # float32 [P], seller_trust_true of the product's seller
    product_lat: np.ndarray  # float64 [P]
    product_lon: np.ndarray  # float64 [P]
    product_in_stock: np.ndarray  # bool [P]
    params: HiddenParams = field(default_factory=HiddenParams)

    @property
    def n_users(self) -> int:
        return int(self.affinity.shape[0])

    @property
    def n_products(self) -> int:
        return int(self.product_category.shape[0])

    # ------------------------------------------------------------------------------------------
    def distance_km(self, user_idx, product_idx) -> np.ndarray:
        return haversine_km(
            self.user_lat[user_idx],
            self.user_lon[user_idx],
            self.product_lat[product_idx],
            self.product_lon[product_idx],
            xp=np,
        )

    def top_categories(self, k: int = 3) -> np.ndarray:
        """int32 [U, k]: each user's k highest-affinity category codes, best first."""
        return np.argsort(-self.affinity, axis=1, kind="stable")[:, :k].astype(np.int32)

    def click_logit(
        self,
        user_idx,
        product_idx,
        position,
        hour,
        *,
        query_category=None,
        category_boost: np.ndarray | None = None,
        query_match=None,
    ) -> np.ndarray:
        """Vectorised click logit (float32) for impressions (all arguments broadcast).

        ``position`` is 1-based; ``hour`` is the Bangkok hour (0..23, fractional allowed, floored);
        ``query_category`` is the category code a search was about (-1 = feed, no query);
        ``category_boost`` [12] adds a per-category term (drift injection); ``query_match`` (bool, with
        ``query_category``) says whether the listing's title matches the search's query.
        """
        p = self.params
        u = np.asarray(user_idx, dtype=np.int64)
        i = np.asarray(product_idx, dtype=np.int64)
        cat = self.product_category[i]
        aff = self.affinity[u, cat].astype(np.float64)
        dist = self.distance_km(u, i)
        logit = (
            p.bias
            + p.w_affinity * np.log(N_CATEGORIES * aff + 0.05)
            - p.w_distance * np.log1p(dist / p.distance_scale_km)
            - self.price_sensitivity[u] * self.product_log_price_ratio[i]
            + p.w_quality * (self.product_quality[i] - 0.5)
            + p.w_trust * (self.product_trust[i] - 0.5)
            - p.w_position * np.log(np.maximum(np.asarray(position, dtype=np.float64), 1.0))
            + HOUR_PROFILE[cat, np.floor(np.asarray(hour)).astype(np.int64) % 24]
        )
        if query_category is not None:
            q = np.asarray(query_category, dtype=np.int64)
            has_q = q >= 0
            logit = logit + np.where(has_q & (q == cat), p.w_query, 0.0)
            logit = logit - np.where(has_q & (q != cat), p.w_query_miss, 0.0)
            if query_match is not None:
                m = np.asarray(query_match, dtype=bool)
                logit = logit + np.where(has_q & m, p.w_text, 0.0) - np.where(has_q & ~m, p.w_text_miss, 0.0)
        if category_boost is not None:
            logit = logit + np.asarray(category_boost, dtype=np.float64)[cat]
        return logit.astype(np.float32)

    def click_prob(self, user_idx, product_idx, position, hour, **kw) -> np.ndarray:
        return sigmoid(self.click_logit(user_idx, product_idx, position, hour, **kw).astype(np.float64))

    def cart_prob(self, user_idx, product_idx, query_match=None) -> np.ndarray:
        """P(add_to_cart | click): cheaper-than-usual listings fit price-sensitive users; a search's
        matching listings (``query_match``, bool; None for a feed) are carted more."""
        p = self.params
        u = np.asarray(user_idx, dtype=np.int64)
        i = np.asarray(product_idx, dtype=np.int64)
        fit = -self.price_sensitivity[u] * self.product_log_price_ratio[i]
        z = p.cart_bias + p.cart_w_price * fit + p.cart_w_quality * (self.product_quality[i] - 0.5)
        if query_match is not None:
            z = z + p.cart_w_text * np.asarray(query_match, dtype=np.float64)
        return sigmoid(z.astype(np.float64))

    def order_prob(self, user_idx, product_idx, query_match=None) -> np.ndarray:
        """P(order | add_to_cart): price fit, seller trust and (a search) relevance; 0 for out-of-stock
        listings."""
        p = self.params
        u = np.asarray(user_idx, dtype=np.int64)
        i = np.asarray(product_idx, dtype=np.int64)
        fit = -self.price_sensitivity[u] * self.product_log_price_ratio[i]
        z = p.order_bias + p.order_w_price * fit + p.order_w_trust * (self.product_trust[i] - 0.5)
        if query_match is not None:
            z = z + p.order_w_text * np.asarray(query_match, dtype=np.float64)
        return sigmoid(z.astype(np.float64)) * self.product_in_stock[i]

    # ------------------------------------------------------------------------------------------
    def save_hidden(self, hidden_dir: Path | str, user_ids: np.ndarray) -> None:
        """Write the hidden per-user parameters and coefficients (never into the public tables); a local
        folder or a prefix on object storage (:func:`gpu_core.lake.lake_path`)."""
        d = lake_path(hidden_dir)
        if isinstance(d, Path):
            d.mkdir(parents=True, exist_ok=True)
        cols = {"user_id": np.asarray(user_ids, dtype=np.int64)}
        for c, name in enumerate(CATEGORIES):
            cols[f"affinity_{name}"] = self.affinity[:, c]
        cols["price_sensitivity"] = self.price_sensitivity
        cols["activity"] = self.activity
        write_parquet(pd.DataFrame(cols), d / "users_hidden.parquet")
        (d / "params.json").write_text(json.dumps(asdict(self.params), indent=2))
        buf = io.BytesIO()
        np.save(buf, HOUR_PROFILE)
        (d / "hour_profile.npy").write_bytes(buf.getvalue())

    @classmethod
    def load(cls, out: Path | str) -> HiddenModel:
        """Rebuild the model from a built lake (a folder or s3://): public tables + ``<out>/_hidden/``."""
        out = lake_path(out)
        hidden = read_parquet(out / "_hidden" / "users_hidden.parquet").sort_values("user_id")
        params = HiddenParams(**json.loads((out / "_hidden" / "params.json").read_text()))
        users = read_parquet(out / "users").sort_values("user_id")
        sellers = read_parquet(out / "sellers").sort_values("seller_id").reset_index(drop=True)
        products = read_parquet(out / "products").sort_values("product_id").reset_index(drop=True)
        return cls.from_tables(users, sellers, products, hidden, params)

    @classmethod
    def from_tables(cls, users, sellers, products, hidden, params: HiddenParams | None = None) -> HiddenModel:
        """Build from (pandas) public tables and the hidden user table; ids are index + 1."""
        aff = np.stack([hidden[f"affinity_{c}"].to_numpy(np.float32) for c in CATEGORIES], axis=1)
        cat = _codes(products["category"].to_numpy(), CATEGORIES)
        price = products["price_thb"].to_numpy(np.float64)
        median = np.ones(N_CATEGORIES)
        for c in range(N_CATEGORIES):
            m = cat == c
            if m.any():
                median[c] = np.median(price[m])
        ref = pd.Timestamp(products["created_at"].max())
        tenure = (ref - pd.to_datetime(sellers["joined_at"], utc=True)).dt.days.to_numpy(np.float64)
        trust_by_seller = seller_trust_true(
            sellers["verified_id"].to_numpy(),
            sellers["reports"].to_numpy(),
            sellers["banned"].to_numpy(),
            tenure,
        )
        seller_idx = products["seller_id"].to_numpy(np.int64) - 1
        return cls(
            affinity=aff,
            price_sensitivity=hidden["price_sensitivity"].to_numpy(np.float32),
            activity=hidden["activity"].to_numpy(np.float32),
            user_lat=users["home_lat"].to_numpy(np.float64),
            user_lon=users["home_lon"].to_numpy(np.float64),
            product_category=cat,
            product_log_price_ratio=np.log(price / median[cat]).astype(np.float32),
            product_quality=products["quality_score"].to_numpy(np.float32),
            product_trust=trust_by_seller[seller_idx],
            product_lat=products["lat"].to_numpy(np.float64),
            product_lon=products["lon"].to_numpy(np.float64),
            product_in_stock=products["in_stock"].to_numpy(bool),
            params=params or HiddenParams(),
        )


def query_matches(queries, titles) -> np.ndarray:
    """Sorted int64 keys ``query_code * n_titles + title_index`` of every (query, title) pair where the
    title contains the query (case-insensitive): the world's notion of a relevant listing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(list(titles), type=pa.string())
    n = len(arr)
    keys = [q * n + np.flatnonzero(pc.match_substring(arr, pattern=str(text), ignore_case=True).to_numpy(
        zero_copy_only=False)) for q, text in enumerate(queries)]
    return np.sort(np.concatenate(keys)).astype(np.int64) if keys else np.empty(0, np.int64)


def is_match(keys: np.ndarray, query_code, product_idx, n_products: int) -> np.ndarray:
    """Whether listing ``product_idx`` matches query ``query_code`` (-1 = no query: False)."""
    q = np.asarray(query_code, dtype=np.int64)
    k = q * n_products + np.asarray(product_idx, dtype=np.int64)
    if not len(keys):
        return np.zeros(k.shape, bool)
    pos = np.clip(np.searchsorted(keys, k), 0, len(keys) - 1)
    return (q >= 0) & (keys[pos] == k)


def _codes(values: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    lookup = {v: i for i, v in enumerate(vocab)}
    return np.fromiter((lookup[v] for v in values), dtype=np.int32, count=len(values))
