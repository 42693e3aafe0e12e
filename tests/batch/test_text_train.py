"""Labelled set generation (deterministic, shipped) and head training with held-out metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batch.text_data import DATA_PATH, generate, load_dataset
from batch.text_train import REGISTERED_MODEL, train_heads
from engines.text.heads import CLASSES, PROHIBITED_ITEMS, ClassifierHeads, TextModelError


def test_shipped_dataset_is_the_generator_output():
    assert load_dataset(DATA_PATH) == generate()


def test_dataset_covers_every_class_in_both_splits():
    rows = load_dataset()
    for split in ("train", "test"):
        labels = {lbl for r in rows if r["split"] == split for lbl in r["labels"]}
        assert labels == set(CLASSES), split
    assert {r["lang"] for r in rows} == {"th", "en", "mixed"}
    assert len({r["text"] for r in rows}) == len(rows)


def test_held_out_uses_unseen_lexicon_entries():
    from batch.text_data import PROHIBITED

    rows = load_dataset()
    train_text = " ".join(r["text"] for r in rows if r["split"] == "train")
    test_text = " ".join(r["text"] for r in rows if r["split"] == "test")
    for cls, items in PROHIBITED.items():
        unseen = [th for th, _en in items if th and th not in train_text and th in test_text]
        assert unseen, f"{cls}: some entries must appear only in the held-out split"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_heads(out_dir=tmp_path_factory.mktemp("text"))


def test_training_writes_artifact_and_metrics(trained):
    heads = ClassifierHeads.load(trained.model_dir)
    assert heads.classes == CLASSES and heads.coef.shape == (len(CLASSES), 512)
    metrics = json.loads((trained.model_dir / "metrics.json").read_text())
    per = metrics["held_out"]["per_class"]
    assert set(per) == set(CLASSES)
    assert per["offensive"]["recall"] >= 0.85 and per["diversion"]["recall"] >= 0.85
    assert np.mean([per[c]["recall"] for c in PROHIBITED_ITEMS]) >= 0.6
    assert metrics["held_out"]["macro"]["f1"] >= 0.6
    assert metrics["version"] == heads.version


def test_training_is_deterministic(tmp_path):
    rows = load_dataset()[::5]
    first, again = train_heads(rows=rows, out_dir=tmp_path / "a"), train_heads(rows=rows, out_dir=tmp_path / "b")
    assert again.version == first.version
    a, b = ClassifierHeads.load(first.model_dir), ClassifierHeads.load(again.model_dir)
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-4)


def test_broken_artifact_raises(tmp_path):
    (tmp_path / "heads.json").write_text("{}")
    with pytest.raises(TextModelError):
        ClassifierHeads.load(tmp_path)


def test_registers_production_alias(tmp_path, monkeypatch):
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path))
    monkeypatch.delenv("JAIKOD_MLFLOW_URI", raising=False)
    reset_settings()
    try:
        res = train_heads(rows=load_dataset()[::6], register=True)  # a slice keeps it quick
        from mlflow import MlflowClient

        from gpu_core.settings import get_settings

        uri = get_settings().tracking_uri
        mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(REGISTERED_MODEL, "production")
        assert str(mv.version) == res.registered_version
        assert (tmp_path / "artifacts" / "text" / "heads.npz").is_file()
    finally:
        reset_settings()


def test_stale_or_missing_heads_need_training(tmp_path, trained):
    from batch.text_train import heads_need_training

    assert heads_need_training(tmp_path / "none")
    assert heads_need_training(trained.model_dir) is None
    old = ClassifierHeads.load(trained.model_dir)
    ClassifierHeads(old.classes[:9], old.coef[:9], old.intercept[:9], "old").save(tmp_path / "old")
    assert "classes" in heads_need_training(tmp_path / "old")


def test_hand_written_eval_set_is_independent_and_large_enough():
    from bench.bench_text import load_eval_set

    rows = load_eval_set()
    assert sum(r["subset"] == "messages" for r in rows) >= 300
    assert sum(r["subset"] == "honest_listings" for r in rows) >= 200
    assert {r["split"] for r in rows} == {"dev", "test"}
    train_texts = {r["text"] for r in load_dataset()}
    from engines.text.lexicon import LEXICON_PATH

    lexicon = LEXICON_PATH.read_text(encoding="utf-8")
    for r in rows:
        assert set(r["prohibited"]) <= set(PROHIBITED_ITEMS)
        assert r["text"] not in train_texts and (len(r["text"]) < 12 or r["text"] not in lexicon), r["text"]
