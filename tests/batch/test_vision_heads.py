"""Category and condition heads beat chance by a wide margin on held-out world images, are exported
to ONNX and registered in MLflow under the production alias."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batch.vision_heads import (
    CATEGORY_MODEL,
    CONDITION_MODEL,
    drawn_images,
    lake_images,
    register_heads,
    split,
    train_heads,
)
from engines.vision.config import reset_vision_settings


@pytest.fixture(scope="module")
def heads_env(tmp_path_factory):
    from gpu_core.settings import reset_settings

    home = tmp_path_factory.mktemp("heads_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("JAIKOD_HOME", str(home))
    mp.setenv("JAIKOD_VISION_BACKBONE_SIZE", "96")
    reset_settings()
    reset_vision_settings()
    yield home
    mp.undo()
    reset_settings()
    reset_vision_settings()


@pytest.fixture(scope="module")
def trained(heads_env):
    data = drawn_images(300, seed=5)
    return data, train_heads(data, heads_env / "heads", test_share=0.3, seed=0)


def test_split_is_stratified_and_disjoint():
    y = np.repeat(np.arange(4), 10)
    tr, te = split(y, 0.3, 0)
    assert not set(tr) & set(te) and len(tr) + len(te) == 40
    assert all((y[te] == c).sum() == 3 for c in range(4))


def test_heads_beat_chance_on_held_out_images(trained):
    _, heads = trained
    cat, cond = heads["category"], heads["condition"]
    assert cat.n_test >= 80 and cond.n_test >= 80
    assert cat.test_accuracy >= 0.6 > 4 * cat.chance - 0.05  # chance is about 1/12
    assert cond.test_accuracy >= 0.45 and cond.test_accuracy >= 2 * cond.chance


def test_exported_onnx_head_gives_probabilities(trained):
    from engines.vision.models import Backbone, Head

    data, heads = trained
    h = Head(heads["category"].onnx_path, heads["category"].labels)
    p = h.predict(Backbone().features(data.images[:8]))
    assert p.shape == (8, 12)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)


def test_register_heads_sets_production_alias(trained):
    from gpu_core.registry import Registry

    _, heads = trained
    versions = register_heads(heads)
    reg = Registry()
    for name, kind in ((CATEGORY_MODEL, "category"), (CONDITION_MODEL, "condition")):
        ref = reg.require(name, "production")
        assert versions[kind] == ref.label
        assert ref.metrics["test_accuracy"] == pytest.approx(heads[kind].test_accuracy)
        d = reg.download(ref)
        assert (d / "head.onnx").stat().st_size > 1000
        assert json.loads((d / "meta.json").read_text())["labels"] == heads[kind].labels
    # the service resolves the same alias (the registry is the only contract between batch and online)
    from online.services.vision import load_heads

    served = load_heads()
    assert served.version == f"{versions['category']}+{versions['condition']}"
    assert served.category.predict(np.zeros((2, 1280), np.float32)).shape == (2, 12)
    assert served.domain is not None  # meta.json carries where the world heads may answer


def test_lake_images_reads_products_and_pngs(tmp_path):
    import pandas as pd
    from PIL import Image

    from batch.world.images import draw_product_image

    (tmp_path / "images").mkdir()
    (tmp_path / "products").mkdir()
    rows = []
    for pid, (c, g) in enumerate([(0, 1), (3, 4), (7, 0)]):
        Image.fromarray(draw_product_image(c, g, seed=pid)).save(tmp_path / "images" / f"{pid}.png")
        rows.append({"product_id": pid, "category": c, "condition_grade": g, "image_path": f"images/{pid}.png"})
    rows.append({"product_id": 9, "category": 1, "condition_grade": 1, "image_path": ""})  # no image drawn
    pd.DataFrame(rows).to_parquet(tmp_path / "products" / "part-0.parquet")
    data = lake_images(tmp_path)
    assert len(data.images) == 3 and data.images[0].shape == (64, 64, 3)
    assert data.category.tolist() == [0, 3, 7] and data.condition.tolist() == [1, 4, 0]
