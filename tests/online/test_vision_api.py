"""POST /v1/analyze-image and /v1/ekyc-match on the real models (ONNX Runtime, CPU)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from PIL import Image

from batch.world.images import draw_product_image
from engines.vision.config import reset_vision_settings
from engines.vision.vault import purge_cold_storage
from gpu_core.errors import JaikodError
from online.services import vision as vs
from tests.support.synthetic import draw_face, sample_face_photo


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(img: np.ndarray, quality: int = 70) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from gpu_core.settings import reset_settings

    home = tmp_path_factory.mktemp("vision_api_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("JAIKOD_HOME", str(home))
    mp.setenv("JAIKOD_VISION_RETENTION_ENABLED", "true")
    mp.setenv("JAIKOD_VISION_BATCH_WINDOW_MS", "20")
    reset_settings()
    reset_vision_settings()
    yield home
    mp.undo()
    reset_settings()
    reset_vision_settings()


@pytest.fixture(scope="module")
def heads(env):
    from batch.vision_heads import drawn_images, train_heads

    trained = train_heads(drawn_images(240, seed=9), env / "heads_out", seed=0)
    return vs.heads_from_trained(trained, "test-heads")


@pytest.fixture(scope="module")
def flagged():
    return []


@pytest.fixture(scope="module")
def service(env, heads, flagged):
    svc = vs.VisionService(heads=heads, on_flagged=lambda lid, res: flagged.append((lid, res["safety_score"])))
    vs.set_service(svc)
    yield svc
    vs.set_service(None)


def make_app() -> FastAPI:
    app = FastAPI()
    app.include_router(vs.router)

    @app.exception_handler(JaikodError)
    async def _jaikod(_request, exc: JaikodError):
        return JSONResponse(status_code=exc.http_status,
                            content={"error": {"code": type(exc).__name__, "message": exc.message, "field": exc.field}})

    return app


@pytest.fixture(scope="module")
def client(service):
    with TestClient(make_app(), raise_server_exceptions=False) as c:
        yield c


def test_analyze_multipart_fields_and_category(client):
    img = draw_product_image(1, 4, seed=101)  # electronics, new
    r = client.post("/v1/analyze-image", files={"file": ("a.png", png(img), "image/png")},
                    data={"listing_id": "L-100"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"category", "category_confidence", "condition_score", "safety_flags", "safety_score",
                         "duplicate_of", "category_model", "image_quality"}
    assert body["category"] == "electronics"
    assert body["category_model"] == "test-heads"  # a world drawing: the world head answers
    assert 0 <= body["category_confidence"] <= 1 and 0 <= body["condition_score"] <= 1
    assert body["safety_score"] > 0.7 and body["safety_flags"] == []
    assert body["duplicate_of"] is None


def test_reupload_is_duplicate_other_product_is_not(client):
    first = draw_product_image(6, 3, seed=202)
    r = client.post("/v1/analyze-image", files={"file": ("a.png", png(first), "image/png")},
                    data={"listing_id": "L-202"})
    assert r.status_code == 200 and r.json()["duplicate_of"] is None
    reup = jpeg(cv2.resize(first, (140, 140), interpolation=cv2.INTER_CUBIC), quality=65)
    r = client.post("/v1/analyze-image", json={"image_base64": base64.urlsafe_b64encode(reup).decode().rstrip("="),
                                               "listing_id": "L-203"})
    assert r.status_code == 200, r.text
    dup = r.json()["duplicate_of"]
    assert dup is not None and dup["listing_id"] == "L-202" and dup["similarity"] > 0.7
    other = draw_product_image(6, 3, seed=203)  # same category and grade, another listing
    r = client.post("/v1/analyze-image", files={"file": ("b.png", png(other), "image/png")},
                    data={"listing_id": "L-204"})
    assert r.status_code == 200 and r.json()["duplicate_of"] is None


@pytest.mark.parametrize("raw, status", [
    (b"", 400), (b"not an image", 415), (png(draw_product_image(2, 2, seed=1))[:300], 400),
])
def test_bad_images_are_4xx_with_json(client, raw, status):
    r = client.post("/v1/analyze-image", files={"file": ("x.png", raw, "image/png")})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == "VisionInputError" and err["message"] and err["field"] == "file"


def test_missing_image_and_wrong_content_type(client):
    assert client.post("/v1/analyze-image", json={"listing_id": "x"}).status_code == 400
    assert client.post("/v1/analyze-image", content=b"raw", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/v1/analyze-image", json={"image_base64": "@@@"}).status_code in (400, 415)


def test_huge_dimensions_are_413(client, monkeypatch):
    monkeypatch.setenv("JAIKOD_VISION_MAX_IMAGE_SIDE", "1000")
    reset_vision_settings()
    try:
        r = client.post("/v1/analyze-image", files={"file": ("big.png", png(np.zeros((1200, 40, 3), np.uint8)),
                                                             "image/png")})
        assert r.status_code == 413
    finally:
        monkeypatch.undo()
        reset_vision_settings()


def test_unsafe_listing_goes_to_moderation(service, flagged, monkeypatch, redis_client):
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_SAFETY_THRESHOLD", "1.01")  # every image is below: exercises the hand-off
    reset_settings()
    try:
        res = service.analyze_batch([(draw_product_image(3, 1, seed=5), "L-900", False)])[0]
        assert res["moderation_queued"] and flagged[-1][0] == "L-900"
        default = vs.VisionService(heads=service.heads, redis=redis_client, faces=False)
        default.analyze_batch([(draw_product_image(3, 1, seed=6), "L-901", False)])
        entries = redis_client.xrange(vs.MODERATION_STREAM)
        assert entries and entries[-1][1][b"listing_id"] == b"L-901"
    finally:
        monkeypatch.undo()
        os.environ["JAIKOD_HOME"] = str(service.vault.root.parents[1])
        reset_settings()
    n = len(flagged)
    service.analyze_batch([(draw_product_image(3, 1, seed=7), "L-902", False)])
    assert len(flagged) == n  # a safe image under the real 0.4 threshold is not queued


def test_micro_batching_gathers_concurrent_requests(service):
    images = [draw_product_image(c % 12, 4, seed=300 + c) for c in range(8)]
    expected = [service.analyze_batch([(im, None, False)])[0] for im in images]

    async def burst():
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*[
                c.post("/v1/analyze-image", files={"file": ("a.png", png(im), "image/png")}, data={"index": "false"})
                for im in images])

    before = len(service.batcher.batches)
    results = asyncio.run(burst())
    sizes = service.batcher.batches[before:]
    assert all(r.status_code == 200 for r in results)
    assert sum(sizes) == 8 and max(sizes) > 1
    for r, e in zip(results, expected, strict=True):
        assert r.json()["category"] == e["category"]
        assert r.json()["category_confidence"] == pytest.approx(e["category_confidence"], abs=1e-3)


def test_ekyc_same_person_matches(client, photo):
    h, w = photo.shape[:2]
    selfies = [cv2.warpAffine(photo, cv2.getRotationMatrix2D((w / 2, h / 2), a, s), (w, h))
               for a, s in ((3, 1.0), (-6, 0.9), (8, 1.1))]
    files = [("id_card", ("id.jpg", jpeg(photo, 90), "image/jpeg"))] + [
        ("selfies", (f"s{i}.png", png(s), "image/png")) for i, s in enumerate(selfies)]
    r = client.post("/v1/ekyc-match", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] and body["face_match_score"] > 0.6
    assert body["faces_found"] == 4
    assert body["liveness_prob"] < 0.5  # a photo turned and zoomed is rigid motion, not a live face


def test_ekyc_different_person_does_not_match_and_live_frames_pass(client):
    photo = sample_face_photo()
    frames = [draw_face(0), draw_face(0, yaw=1.0), draw_face(0, yaw=-1.0, smile=1.0)]
    body = {"id_card_base64": base64.b64encode(png(draw_face(0, zoom=0.8))).decode(),
            "selfies_base64": [base64.b64encode(png(f)).decode() for f in frames]}
    r = client.post("/v1/ekyc-match", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["matched"] and r.json()["liveness_prob"] >= 0.5
    if photo is not None:
        body["id_card_base64"] = base64.b64encode(jpeg(photo)).decode()
        r = client.post("/v1/ekyc-match", json=body)
        assert r.status_code == 200 and not r.json()["matched"] and r.json()["face_match_score"] < 0.363


def test_ekyc_bad_inputs(client):
    face = png(draw_face(1))
    no_face = png(draw_product_image(0, 4, seed=1))
    two = png(np.concatenate([draw_face(1), draw_face(4)], axis=1))
    cases = [
        ({"id_card": ("i.png", no_face, "image/png"), "selfies": ("s.png", face, "image/png")}, 422, "id_card"),
        ({"id_card": ("i.png", two, "image/png"), "selfies": ("s.png", face, "image/png")}, 422, "id_card"),
        ({"id_card": ("i.png", face, "image/png"), "selfies": ("s.png", no_face, "image/png")}, 422, "selfies"),
        ({"id_card": ("i.png", b"junk", "image/png"), "selfies": ("s.png", face, "image/png")}, 415, "id_card"),
        ({"id_card": ("i.png", face, "image/png")}, 400, "selfies"),
    ]
    for files, status, field in cases:
        r = client.post("/v1/ekyc-match", files=files)
        assert r.status_code == status, (field, r.text)
        assert r.json()["error"]["field"] == field


def test_no_face_data_on_disk_unencrypted_and_purge(client, env, service, photo, caplog):
    id_raw = jpeg(photo, 90)
    selfie_raws = [png(draw_face(2)), png(draw_face(2, yaw=1.0))]
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/ekyc-match", files=[("id_card", ("id.jpg", id_raw, "image/jpeg"))] + [
            ("selfies", (f"s{i}.png", b, "image/png")) for i, b in enumerate(selfie_raws)])
    assert r.status_code == 200
    record = r.json()["face_record"]
    assert len(record) == 64 and r.json()["retained"]
    # nothing face-related in the logs
    text = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
    assert record not in text and "face_match_score" not in text
    # scan every file under the home (and the system temp dir): no image bytes, no embedding bytes
    magic = [b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n"]
    needles = [id_raw[:64], id_raw[-64:], *(b[:64] for b in selfie_raws), *magic]
    roots = [env, os.environ.get("TMPDIR", "/tmp")]
    offenders = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            if "vision_api_home" not in dirpath and root != env:
                continue
            for f in files:
                p = os.path.join(dirpath, f)
                try:
                    data = open(p, "rb").read()
                except OSError:
                    continue
                if any(n in data for n in needles):
                    offenders.append(p)
    assert offenders == []
    stored = sorted(service.vault.root.glob("*.bin"))
    assert any(service.vault.open(p) == [id_raw, *selfie_raws] for p in stored)  # the cold copy decrypts back
    old = time.time() - 31 * 86400
    os.utime(stored[0], (old, old))
    assert purge_cold_storage(service.vault.root, older_than_days=30) == 1
    assert not stored[0].exists() and all(p.exists() for p in stored[1:])


# ---- real photos (packaged in scikit-image / matplotlib) -----------------------------------------
def _skimage(name: str) -> np.ndarray:
    skimage = pytest.importorskip("skimage")
    from pathlib import Path

    return np.asarray(Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB"))


def test_real_photos_get_imagenet_answers_and_no_false_flags(service):
    moto, coffee = _skimage("motorcycle_left.png"), _skimage("coffee.png")
    res = service.analyze_batch([(moto, None, False), (coffee, None, False)])
    assert res[0]["category"] == "vehicles_parts" and res[0]["category_confidence"] >= 0.5
    assert res[0]["category_model"] == "mobilenet_v2_imagenet1k+imagenet_to_category"
    for r in res:  # the world's drawn-image heads do not answer for photos
        assert r["condition_score"] is None and r["condition_model"] is None
        assert 0 <= r["image_quality"]["score"] <= 1 and set(r["image_quality"]) >= {"sharpness", "exposure"}
        assert r["safety_flags"] == [] and r["safety_score"] >= 0.5  # the coffee cup is no nudity
    # the category is the raw mass's argmax; its confidence, and the unknown gate, the calibrated mass
    from engines.vision.calibration import temperature
    from engines.vision.category import category_mass
    from gpu_core.schema import CATEGORIES

    assert temperature() != 1.0 and service.category_temperature == temperature()
    _, probs = service.backbone.run([moto, coffee])
    probs = service.category_probs([moto, coffee], probs)  # the category classifier in force
    raw, cal = category_mass(probs, temperature=1.0), category_mass(probs)
    for r, m, q in zip(res, raw, cal, strict=True):
        c = int(m.argmax())
        assert r["category_confidence"] == pytest.approx(float(q[c]), abs=1e-4)
        gated = q[c] < service.s.category_min_confidence
        assert r["category"] == ("unknown" if gated else CATEGORIES[c])
        assert r["category_reason"] == ("low_confidence" if gated else "imagenet")


@pytest.fixture(scope="module")
def lite_service(env, heads):
    """The service with EfficientNet-Lite0 as the category classifier (``JAIKOD_VISION_CATEGORY_CLASSIFIER``)."""
    return vs.VisionService(heads=heads, faces=False, category_classifier="efficientnet_lite0")


def test_labelled_photos_get_their_label_from_the_category_classifier(lite_service):
    """EfficientNet-Lite0 answers, with its own calibration: a labelled product photo gets its hand label,
    labelled non-product photos (a rocket launch, a temple) get ``unknown`` for low confidence."""
    import json

    from bench.vision_photos import LABELS
    from engines.vision.calibration import temperature

    service = lite_service
    assert service.classifier.name == "efficientnet_lite0"
    assert service.category_temperature == temperature("efficientnet_lite0") != temperature("mobilenet_v2")
    label = {r["file"]: r for r in json.loads(LABELS.read_text())["photos"]}
    moto, rocket = _skimage("motorcycle_left.png"), _skimage("rocket.jpg")
    china = np.asarray(Image.open(Path(pytest.importorskip("sklearn").__file__).parent / "datasets" / "images" /
                                  "china.jpg").convert("RGB"))
    res = service.analyze_batch([(moto, None, False), (rocket, None, False), (china, None, False)])
    assert {r["category_model"] for r in res} == {"efficientnet_lite0_imagenet1k+imagenet_to_category"}
    assert label["motorcycle_left.png"]["product"] and res[0]["category"] == label["motorcycle_left.png"]["category"]
    for name, r in (("rocket.jpg", res[1]), ("china.jpg", res[2])):
        assert label[name]["product"] is False
        assert r["category"] == "unknown" and r["category_reason"] == "low_confidence", (name, r)
        assert r["category_confidence"] < service.s.category_min_confidence


def test_portrait_and_animal_are_unknown(service, photo):
    res = service.analyze_batch([(photo, None, False), (_skimage("chelsea.png"), None, False)])
    assert res[0]["category"] == "unknown" and res[0]["category_reason"] == "person"
    assert res[1]["category"] == "unknown"  # a cat is not a product photo (pets as animals: off by default)


def test_blurred_photo_scores_lower_quality(service):
    moto = _skimage("motorcycle_left.png")
    sharp, blurred = service.analyze_batch([(moto, None, False), (cv2.GaussianBlur(moto, (0, 0), 6), None, False)])
    assert blurred["image_quality"]["sharpness"] < 0.5 * sharp["image_quality"]["sharpness"]


def test_exif_rotated_and_16bit_uploads_are_answered(client):
    moto = _skimage("motorcycle_left.png")
    stored = Image.fromarray(np.rot90(moto, k=1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=90, exif=exif)
    r = client.post("/v1/analyze-image", files={"file": ("m.jpg", buf.getvalue(), "image/jpeg")},
                    data={"index": "false"})
    assert r.status_code == 200 and r.json()["category"] == "vehicles_parts", r.text
    grey16 = (cv2.cvtColor(moto, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, format="PNG")
    r = client.post("/v1/analyze-image", files={"file": ("g.png", buf.getvalue(), "image/png")},
                    data={"index": "false"})
    assert r.status_code == 200, r.text


def test_decompression_bomb_upload_is_413_naming_the_field(client):
    from tests.engines.test_vision_imaging import _png_with_header_size

    r = client.post("/v1/analyze-image", files={"file": ("bomb.png", _png_with_header_size(40_000, 40_000),
                                                         "image/png")})
    assert r.status_code == 413 and r.json()["error"]["field"] == "file"


def test_ekyc_answers_before_any_vision_heads_are_registered(env):
    """The heads come from the registry on first analysis: with none registered, eKYC still matches and
    analyze-image answers 503 naming the registry (not a service that fails to start)."""
    svc = vs.VisionService(window_ms=0)  # JAIKOD_HOME of this module: an empty registry
    vs.set_service(svc)
    try:
        c = TestClient(make_app(), raise_server_exceptions=False)
        frames = [draw_face(3), draw_face(3, yaw=1.0), draw_face(3, yaw=-1.0, smile=1.0)]
        r = c.post("/v1/ekyc-match", files=[("id_card", ("i.png", png(draw_face(3, zoom=0.8)), "image/png"))]
                   + [("selfies", (f"s{i}.png", png(f), "image/png")) for i, f in enumerate(frames)])
        assert r.status_code == 200, r.text
        assert r.json()["matched"]
        r = c.post("/v1/analyze-image", files={"image": ("p.png", png(draw_product_image(0, 4, seed=2)), "image/png")})
        assert r.status_code == 503, r.text
        assert "jaikod-vision-category" in r.json()["error"]["message"]
    finally:
        vs.set_service(None)
