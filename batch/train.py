"""Training and evaluation of the rankers: XGBoost pCTR and pCVR, NDCG@20 on the 24 h holdout.

Train on the ``train_days`` days before the holdout, evaluate on the last ``holdout_hours`` (the
``as_of`` day). The ranking evaluated is the service's: FinalScore = pCTR*w1 + pCVR*w2 +
SellerTrust*w3 + boosted*BoostMultiplier, per request; relevance = click + conversion; requests
without any positive are left out of the mean. Compared against (a) popularity (clicks in the last
7 days) and (b) the current production model on the same rows. Everything is logged to MLflow; the
new version is registered and gets alias ``staging`` only if its NDCG@20 beats production's.

``TrainConfig(monotone_text=True)`` trains the same models with XGBoost ``monotone_constraints`` (+1) on
the text-relevance features (``TEXT_FEATURES``): the issue-11 alternative to relevance tiers, measured
beside them by ``bench/bench_search_served.py``. It is only a different trained model — the scoring path
(:func:`engines.ranker.score_matrix`, tiers included unless ``search_tier_gap`` is 0) is the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import xgboost as xgb

from batch.cluster import compute_in_order, shared
from batch.dataset import TrainingSet, training_set
from batch.etl import etl_as_of
from engines.ranker import Ranker, ScoreWeights, score_matrix
from gpu_core.device import backend
from gpu_core.errors import ConfigError, LakeError, RegistryError
from gpu_core.registry import PRODUCTION, RANKER, STAGING, RankerArtifact, Registry
from gpu_core.settings import get_settings
from kernels.features import MODEL_FEATURES, TEXT_FEATURES
from kernels.metrics import ndcg_at_k

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    # eta 0.2 / <= 150 rounds: the same holdout NDCG@20 as eta 0.1 / 300 on the demo world (0.499 vs
    # 0.4986) with about half the trees, which is what online scoring latency pays for
    max_depth: int = 6
    eta: float = 0.2
    n_rounds: int = 150
    early_stopping_rounds: int = 20
    min_child_weight: float = 5.0
    subsample: float = 0.9
    colsample_bytree: float = 0.9
    reg_lambda: float = 1.0
    negative_rate: float = 0.25  # share of negatives kept (weighted 1/rate, so calibration holds)
    seed: int = 0
    # +1 monotone constraints on the text_* relevance features (pCTR/pCVR never fall as relevance rises);
    # off by default: relevance tiers in score_matrix won on the judged set (README, Search)
    monotone_text: bool = False

    def params(self) -> dict:
        p = {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
             "device": backend().xgb_device, "max_depth": self.max_depth, "eta": self.eta,
             "min_child_weight": self.min_child_weight, "subsample": self.subsample,
             "colsample_bytree": self.colsample_bytree, "lambda": self.reg_lambda, "seed": self.seed,
             "nthread": os.cpu_count() or 2}
        if self.monotone_text:
            p["monotone_constraints"] = monotone_text_constraints()
        return p


def monotone_text_constraints() -> str:
    """XGBoost's ``monotone_constraints`` for MODEL_FEATURES: +1 on every text-relevance feature, 0 elsewhere."""
    return "(" + ",".join("1" if f in TEXT_FEATURES else "0" for f in MODEL_FEATURES) + ")"


@dataclass
class TrainResult:
    version: str | None
    promoted_to: str | None
    ndcg_model: float
    ndcg_popularity: float
    ndcg_production: float | None
    auc_click: float
    train_rows: int
    holdout_rows: int
    seconds: float
    run_id: str
    model_dir: Path
    reason: str
    importance: dict = field(default_factory=dict)

    def as_rows(self) -> dict:
        d = asdict(self)
        d.pop("importance")
        d["model_dir"] = str(self.model_dir)
        return d


def _fit(X: np.ndarray, y: np.ndarray, val: np.ndarray, cfg: TrainConfig) -> xgb.Booster:
    """Negatives are down-sampled (rate ``negative_rate``, weight ``1/rate``): clicks are ~3 % of
    impressions, so this cuts training time ~3x without biasing the predicted probabilities."""
    rng = np.random.default_rng(cfg.seed)
    train = ~val & ((y > 0) | (rng.random(len(y)) < cfg.negative_rate))
    weight = np.where(y[train] > 0, 1.0, 1.0 / cfg.negative_rate).astype(np.float32)
    dtrain = xgb.DMatrix(X[train], label=y[train], weight=weight, feature_names=list(MODEL_FEATURES))
    dval = xgb.DMatrix(X[val], label=y[val], feature_names=list(MODEL_FEATURES))
    booster = xgb.train(cfg.params(), dtrain, num_boost_round=cfg.n_rounds, evals=[(dval, "val")],
                        early_stopping_rounds=cfg.early_stopping_rounds, verbose_eval=False)
    best = booster.attributes().get("best_iteration")
    if best is not None and int(best) + 1 < booster.num_boosted_rounds():
        booster = booster[: int(best) + 1]  # keep only the trees early stopping chose (smaller, faster)
        booster.set_attr(best_iteration=best)
    return booster


def weights() -> ScoreWeights:
    return ScoreWeights.from_settings(get_settings())


def evaluate_model(model: Ranker, ds: TrainingSet, k: int) -> float:
    """NDCG@k of the service's ranking (:func:`engines.ranker.score_matrix`, the serving path) on ``ds``."""
    return evaluate(np.asarray(score_matrix(model, ds.X, weights()).final), ds, k)


def evaluate(scores: np.ndarray, ds: TrainingSet, k: int) -> float:
    rel = ds.label_click + ds.label_conv
    return float(ndcg_at_k(scores, rel, ds.request, k, ignore_all_zero=True, xp=np))


def load_ranker(model_dir: Path, ref=None) -> Ranker:
    return Ranker.load(model_dir, ref, device=backend().xgb_device, nthread=None)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


@dataclass
class Fitted:
    """Models fitted on the ``train_days`` before ``as_of``, with the training and holdout sets."""

    model: Ranker
    ctr: xgb.Booster
    cvr: xgb.Booster
    train: TrainingSet
    test: TrainingSet
    as_of: dt.date
    train_days: list[dt.date]


def fit_rankers(lake: Path, as_of: dt.date | None = None, cfg: TrainConfig | None = None,
                client=None, holdout_share: float | None = None) -> Fitted:
    """Fit pCTR and pCVR on the ``train_days`` days before ``as_of`` (default: the ETL's last day), early
    stopping on the last training day; nothing is logged or registered (:func:`run_train` does that).
    With a Dask ``client`` the two fits are two tasks on its workers (the matrix scattered once); the
    boosters are the same as in-process ones (same data, parameters, seed and ``nthread``).

    With ``holdout_share`` (the continuous retrain, ``as_of`` = the live day) the holdout is only the
    latest ``holdout_share`` of ``as_of``'s requests (by time): its earlier requests join the training
    set, so a retrain triggered by drift learns from the drifted traffic and is judged on later traffic of
    the same drift (early stopping stays on the last full day before ``as_of``)."""
    settings = get_settings()
    cfg = cfg or TrainConfig()
    as_of = as_of or etl_as_of(lake)
    train_days = [as_of - dt.timedelta(days=i) for i in range(settings.train_days, 0, -1)]
    if holdout_share is None:
        train = training_set(lake, train_days)
        test = training_set(lake, [as_of])
    else:
        train, test = split_live_day(training_set(lake, [*train_days, as_of]), as_of, holdout_share)
        train_days = [*train_days, as_of]
    # validation for early stopping: the last full training day (by time, never the holdout)
    days = sorted(d for d in train.rows["_day"].unique() if holdout_share is None or d != as_of.isoformat())
    val = (train.rows["_day"] == days[-1]).to_numpy() if days else np.zeros(len(train), bool)
    if val.all() or not val.any():
        val = np.zeros(len(train), bool)
        val[int(len(val) * 0.9):] = True
    if client is None:
        ctr = _fit(train.X, train.label_click, val, cfg)
        cvr = _fit(train.X, train.label_conv, val, cfg)
    else:
        X = shared(train.X, client)
        ctr, cvr = compute_in_order([dask.delayed(_fit)(X, y, val, cfg) for y in (train.label_click, train.label_conv)],
                                    client)
    model = Ranker.from_artifact(RankerArtifact(ctr, cvr, MODEL_FEATURES, {}))
    return Fitted(model, ctr, cvr, train, test, as_of, train_days)


def split_live_day(ds: TrainingSet, day: dt.date, holdout_share: float) -> tuple[TrainingSet, TrainingSet]:
    """(training rows, holdout rows): the holdout is the latest ``holdout_share`` of ``day``'s requests by
    their first impression's time (a request is never split); every other row trains."""
    if not 0.0 < holdout_share < 1.0:
        raise ConfigError(f"holdout_share must be in (0, 1), got {holdout_share}", field="continuous_holdout_share")
    on_day = (ds.rows["_day"] == day.isoformat()).to_numpy()
    if not on_day.any():
        raise LakeError(f"no training rows on {day} to hold out", field="training")
    start = ds.rows.loc[on_day].groupby("request_id")["ts_ms"].min().sort_values(kind="stable")
    n_hold = max(1, int(round(len(start) * holdout_share)))
    held = ds.rows["request_id"].isin(start.index[len(start) - n_hold:]).to_numpy() & on_day
    return ds.subset(~held), ds.subset(held)


def holdout_metrics(model: Ranker, test: TrainingSet, w: ScoreWeights | None = None,
                    k: int | None = None) -> dict[str, float]:
    """NDCG@k (the service's FinalScore ranking, weights ``w``: the settings' by default) and pCTR AUC on
    the holdout: all requests, feed requests (no query) and search requests, so what a search-ranking
    change costs the feed is visible."""
    k = k or get_settings().ndcg_k
    s = score_matrix(model, test.X, w or weights())
    final, p_ctr = np.asarray(s.final), np.asarray(s.p_ctr)
    is_search = (test.rows["query"].fillna("").astype(str) != "").to_numpy()
    out: dict[str, float] = {}
    for name, sel in (("all", np.ones(len(test), bool)), ("feed", ~is_search), ("search", is_search)):
        if not sel.any():
            continue
        sub = test.subset(sel)
        out[f"ndcg{k}_{name}"] = evaluate(final[sel], sub, k)
        out[f"auc_click_{name}"] = auc(test.label_click[sel], p_ctr[sel])
        out[f"rows_{name}"] = float(sel.sum())
    return out


def run_train(lake: Path, as_of: dt.date | None = None, cfg: TrainConfig | None = None,
              registry: Registry | None = None, bootstrap_production: bool = False,
              not_worse_tolerance: float | None = None, client=None,
              holdout_share: float | None = None) -> TrainResult:
    """Train, evaluate, log to MLflow, register (staging) if better than production — or, with
    ``not_worse_tolerance`` (the continuous retrain), if its NDCG@20 is at least production's times
    ``1 - tolerance``: the canary then decides on live CTR. ``holdout_share``: see :func:`fit_rankers`."""
    t0 = time.perf_counter()
    settings = get_settings()
    cfg = cfg or TrainConfig()
    fitted = fit_rankers(lake, as_of, cfg, client=client, holdout_share=holdout_share)
    model, ctr, cvr, train, test = fitted.model, fitted.ctr, fitted.cvr, fitted.train, fitted.test
    as_of, train_days = fitted.as_of, fitted.train_days
    k = settings.ndcg_k
    scores = score_matrix(model, test.X, weights())
    ndcg_model = evaluate(np.asarray(scores.final), test, k)
    ndcg_pop = evaluate(test.popularity, test, k)
    registry = registry or Registry()
    prod = registry.get(RANKER, PRODUCTION)
    ndcg_prod = None
    if prod is not None:
        try:
            ndcg_prod = evaluate_model(load_ranker(registry.download(prod), prod), test, k)
        except RegistryError as exc:  # a production model we cannot read is no baseline
            log.warning("production model %s not scorable: %s", prod.label, exc)
    auc_click = auc(test.label_click, np.asarray(scores.p_ctr))
    importance = {k_: float(v) for k_, v in ctr.get_score(importance_type="gain").items()}
    exp = registry.experiment("jaikod-ranker")
    with registry.mlflow.start_run(experiment_id=exp) as run, tempfile.TemporaryDirectory() as tmp:
        mlf = registry.mlflow
        mlf.log_params({**asdict(cfg), "as_of": as_of.isoformat(), "train_days": len(train_days),
                        "holdout_share": holdout_share if holdout_share is not None else 1.0,
                        "features": len(MODEL_FEATURES), "device": backend().name})
        metrics = {"ndcg20": ndcg_model, "ndcg20_popularity": ndcg_pop, "auc_click": auc_click,
                   "train_rows": len(train), "holdout_rows": len(test),
                   "best_iteration_ctr": float(ctr.attributes().get("best_iteration", -1)),
                   "holdout_ctr": float(test.label_click.mean())}
        if ndcg_prod is not None:
            metrics["ndcg20_production"] = ndcg_prod
        mlf.log_metrics({k_: float(v) for k_, v in metrics.items() if np.isfinite(v)})
        meta = {"as_of": as_of.isoformat(), "ndcg20": ndcg_model, "ndcg20_popularity": ndcg_pop,
                "ndcg20_production": ndcg_prod, "importance_gain": importance, "monotone_text": cfg.monotone_text}
        d = RankerArtifact(ctr, cvr, MODEL_FEATURES, meta).save(Path(tmp) / "ranker")
        mlf.log_artifacts(str(d), artifact_path="ranker")
        run_id = run.info.run_id
    if ndcg_prod is None:
        better = True
    elif not_worse_tolerance is not None:
        better = ndcg_model >= ndcg_prod * (1.0 - not_worse_tolerance)
    else:
        better = ndcg_model > ndcg_prod
    version = promoted = None
    if better:
        ref = registry.register_dir(RANKER, run_id, "ranker", tags={"ndcg20": f"{ndcg_model:.5f}"})
        version = ref.version
        registry.set_alias(RANKER, STAGING, version)
        promoted = STAGING
        if prod is None and bootstrap_production:
            registry.set_alias(RANKER, PRODUCTION, version)
            promoted = PRODUCTION
        reason = ("no production model yet" if ndcg_prod is None else
                  f"NDCG@{k} {ndcg_model:.4f} > production {ndcg_prod:.4f}" if ndcg_model > ndcg_prod else
                  f"NDCG@{k} {ndcg_model:.4f} not worse than production {ndcg_prod:.4f} within "
                  f"{not_worse_tolerance:.0%}: the canary decides")
    elif not_worse_tolerance is not None:
        reason = (f"not registered: NDCG@{k} {ndcg_model:.4f} < production {ndcg_prod:.4f} "
                  f"- {not_worse_tolerance:.0%}")
    else:
        reason = f"not registered: NDCG@{k} {ndcg_model:.4f} <= production {ndcg_prod:.4f}"
    return TrainResult(version, promoted, ndcg_model, ndcg_pop, ndcg_prod, auc_click, len(train), len(test),
                       time.perf_counter() - t0, run_id, registry.download(registry.require(RANKER, STAGING))
                       if version else Path(), reason, importance)


def run_evaluate(lake: Path, as_of: dt.date | None = None, alias: str = PRODUCTION,
                 registry: Registry | None = None) -> dict:
    """NDCG@k of a registered model (by alias) vs popularity on the holdout day."""
    settings = get_settings()
    as_of = as_of or etl_as_of(lake)
    registry = registry or Registry()
    ref = registry.require(RANKER, alias)
    model = load_ranker(registry.download(ref), ref)
    test = training_set(lake, [as_of])
    scores = score_matrix(model, test.X, weights())
    k = settings.ndcg_k
    return {"model": ref.label, "alias": alias, "holdout": as_of.isoformat(), "rows": len(test),
            f"ndcg@{k}": evaluate(np.asarray(scores.final), test, k),
            f"ndcg@{k} popularity": evaluate(test.popularity, test, k),
            "auc_click": auc(test.label_click, np.asarray(scores.p_ctr))}
