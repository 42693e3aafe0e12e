"""Category and condition-grade heads on the frozen ImageNet MobileNetV2 backbone.

The backbone (ONNX, :class:`engines.vision.models.Backbone`) turns each product image into 1280
pooled features; two small softmax heads are trained on them with torch (CPU, seconds), exported
to ONNX (``features -> probs``), logged to MLflow and registered like the rankers:
``jaikod-vision-category`` and ``jaikod-vision-condition``, alias ``production``. Held-out accuracy
(a stratified share of the images never seen in training) is logged as ``test_accuracy``.

Images come from the world lake (``products.image_path`` under the lake) or, without a lake, are
drawn directly with :func:`batch.world.images.draw_product_image` from a deterministic seed set.

    >>> report = run(n_images=600)        # or run(lake=Path("var/lake"))
    >>> report["category"]["test_accuracy"]
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.vision.category import WorldDomain
from engines.vision.config import get_vision_settings
from engines.vision.models import Backbone, embed, export_onnx
from gpu_core.schema import CATEGORIES, CONDITION_GRADES

log = logging.getLogger(__name__)
CATEGORY_MODEL = "jaikod-vision-category"
CONDITION_MODEL = "jaikod-vision-condition"
EXPERIMENT = "jaikod-vision-heads"


@dataclass
class ImageSet:
    images: list[np.ndarray]
    category: np.ndarray  # int32 [n]
    condition: np.ndarray  # int32 [n]
    source: str


@dataclass
class TrainedHead:
    name: str
    labels: list[str]
    onnx_path: Path
    train_accuracy: float
    test_accuracy: float
    chance: float
    n_train: int
    n_test: int
    meta: dict = field(default_factory=dict)


def drawn_images(n: int, *, seed: int = 0, size: int = 64) -> ImageSet:
    """``n`` images drawn by the world's generator; category and grade uniform, seeds deterministic."""
    from batch.world.images import draw_product_image

    rng = np.random.default_rng(seed)
    cats = rng.integers(0, len(CATEGORIES), n).astype(np.int32)
    grades = rng.integers(0, len(CONDITION_GRADES), n).astype(np.int32)
    seeds = rng.integers(0, 2**31 - 1, n)
    imgs = [draw_product_image(int(c), int(g), int(s), size) for c, g, s in zip(cats, grades, seeds, strict=True)]
    return ImageSet(imgs, cats, grades, f"drawn(n={n},seed={seed},size={size})")


def lake_images(lake: Path, limit: int | None = None, *, seed: int = 0) -> ImageSet:
    """Images written by ``jaikod world build`` (``<lake>/images/<product_id>.png``)."""
    import pandas as pd
    from PIL import Image

    products = pd.read_parquet(Path(lake) / "products", columns=["product_id", "category", "condition_grade",
                                                                 "image_path"])
    products = products[products["image_path"].astype(str) != ""]
    if limit is not None and len(products) > limit:
        products = products.sample(n=limit, random_state=seed)
    imgs = [np.asarray(Image.open(Path(lake) / p).convert("RGB")) for p in products["image_path"]]

    def codes(col, vocab):
        v = products[col]
        if v.dtype == object or str(v.dtype).startswith(("string", "str")):
            return np.array([vocab.index(x) for x in v], dtype=np.int32)
        return v.to_numpy(np.int32)

    return ImageSet(imgs, codes("category", CATEGORIES), codes("condition_grade", CONDITION_GRADES),
                    f"lake({lake}, n={len(imgs)})")


def split(y: np.ndarray, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test index split."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(len(idx) * test_share))) if len(idx) > 1 else 0
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def _fit_softmax(x: np.ndarray, y: np.ndarray, k: int, *, epochs: int = 300, weight_decay: float = 1e-3,
                 seed: int = 0):
    """Linear softmax head (standardisation folded in), full-batch Adam; returns the torch module."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    mu = x.mean(0)
    sd = x.std(0) + 1e-6
    lin = nn.Linear(x.shape[1], k)
    xt = torch.from_numpy(((x - mu) / sd).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(lin(xt), yt)
        loss.backward()
        opt.step()

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mu", torch.from_numpy(mu.astype(np.float32)))
            self.register_buffer("sd", torch.from_numpy(sd.astype(np.float32)))
            self.lin = lin

        def forward(self, f):
            return torch.softmax(self.lin((f - self.mu) / self.sd), dim=1)

    return Head().eval()


def train_head(name: str, labels: list[str], feats: np.ndarray, y: np.ndarray, out_dir: Path, *,
               test_share: float = 0.25, seed: int = 0) -> TrainedHead:
    import torch

    tr, te = split(y, test_share, seed)
    head = _fit_softmax(feats[tr], y[tr], len(labels), seed=seed)
    with torch.no_grad():
        pred = head(torch.from_numpy(feats)).numpy().argmax(1)
    path = export_onnx(head, torch.zeros(1, feats.shape[1]), Path(out_dir) / f"{name}.onnx",
                       input_name="features", output_names=["probs"])
    return TrainedHead(name, labels, path, float((pred[tr] == y[tr]).mean()), float((pred[te] == y[te]).mean()),
                       float(np.bincount(y[tr]).max() / len(tr)), len(tr), len(te))


def train_heads(data: ImageSet, out_dir: Path, *, test_share: float = 0.25, seed: int = 0,
                backbone: Backbone | None = None, batch_size: int = 64) -> dict[str, TrainedHead]:
    backbone = backbone or Backbone()
    feats = np.concatenate([backbone.features(data.images[i:i + batch_size])
                            for i in range(0, len(data.images), batch_size)])
    heads = {
        "category": train_head(CATEGORY_MODEL, list(CATEGORIES), feats, data.category, out_dir,
                               test_share=test_share, seed=seed),
        "condition": train_head(CONDITION_MODEL, list(CONDITION_GRADES), feats, data.condition, out_dir,
                                test_share=test_share, seed=seed),
    }
    # where the heads are trustworthy: near the drawn images they were trained on (engines.vision.category)
    domain = WorldDomain.fit(embed(feats), data.category, get_vision_settings().world_domain_quantile).to_json()
    for h in heads.values():
        h.meta = {"labels": h.labels, "backbone": "mobilenet_v2_imagenet", "backbone_size": backbone.size,
                  "source": data.source, "input": "features", "output": "probs", "domain": domain}
    return heads


def register_heads(heads: dict[str, TrainedHead], *, alias: str = "production", registry=None) -> dict[str, str]:
    """Log each head (ONNX + meta.json) to MLflow, register a version, point ``alias`` at it."""
    from gpu_core.registry import Registry

    reg = registry or Registry()
    exp = reg.experiment(EXPERIMENT)
    versions = {}
    for kind, h in heads.items():
        with reg.mlflow.start_run(experiment_id=exp, run_name=h.name) as run:
            reg.mlflow.log_params({"kind": kind, "n_train": h.n_train, "n_test": h.n_test,
                                   "source": h.meta.get("source", "")})
            reg.mlflow.log_metrics({"train_accuracy": h.train_accuracy, "test_accuracy": h.test_accuracy,
                                    "chance_accuracy": h.chance})
            with tempfile.TemporaryDirectory() as tmp:
                d = Path(tmp) / "head"
                d.mkdir()
                (d / "head.onnx").write_bytes(h.onnx_path.read_bytes())
                (d / "meta.json").write_text(json.dumps(h.meta, indent=2))
                reg.mlflow.log_artifacts(str(d), artifact_path="head")
            ref = reg.register_dir(h.name, run.info.run_id, "head", tags={"kind": kind})
        reg.set_alias(h.name, alias, ref.version)
        versions[kind] = ref.label
    return versions


def run(lake: Path | None = None, *, n_images: int = 600, seed: int = 0, alias: str = "production",
        register: bool = True) -> dict:
    """Train, export, register; returns the accuracy report (also what ``jaikod`` prints)."""
    from gpu_core.settings import get_settings

    data = lake_images(lake, n_images, seed=seed) if lake is not None else drawn_images(n_images, seed=seed)
    out = get_settings().artifacts_dir / "vision" / "heads"
    heads = train_heads(data, out, seed=seed)
    report = {k: {"train_accuracy": h.train_accuracy, "test_accuracy": h.test_accuracy, "chance": h.chance,
                  "n_train": h.n_train, "n_test": h.n_test, "onnx": str(h.onnx_path)} for k, h in heads.items()}
    if register:
        for k, v in register_heads(heads, alias=alias).items():
            report[k]["version"] = v
    log.info("vision heads trained", extra={"report": report})
    return report
