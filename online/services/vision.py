"""Visual intelligence service: ``POST /v1/analyze-image`` and ``POST /v1/ekyc-match``.

:class:`VisionService` loads every engine once (nudenet detector, open_nsfw classifier, MobileNetV2
backbone, the category's ImageNet classifier (``JAIKOD_VISION_CATEGORY_CLASSIFIER``), the category/condition heads from the MLflow registry alias, YuNet/SFace) and serves:

* **analyze-image** — concurrent requests are gathered by a :class:`MicroBatcher` (window
  ``JAIKOD_VISION_BATCH_WINDOW_MS``, at most ``JAIKOD_VISION_MAX_BATCH`` images) and run as one
  batch per model. ``safety_score = 1 - max(P(nsfw), max unsafe-detection score)``; below
  ``JAIKOD_SAFETY_THRESHOLD`` (0.4) the listing is handed to ``on_flagged(listing_id, result)``
  (default: ``XADD jk:moderation:queue`` when a Redis client is given, else nothing).
* **duplicates** — :class:`engines.vision.duplicates.DuplicateIndex` (faiss over the backbone
  embeddings + perceptual hash + colour signature: a recoloured twin is another listing).
* **ekyc-match** — SFace cosine between the ID photo's face and the selfie faces (median over
  frames), active liveness (:mod:`engines.vision.faces`), privacy by :class:`engines.vision.vault.FaceVault`.

The engines live in :mod:`engines.vision` (micro-batching in :mod:`engines.vision.batching`); this
module is the service that wires them and its HTTP routes. Logs carry counts and timings, never
images, vectors or hashes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from engines.vision.batching import MicroBatcher
from engines.vision.calibration import temperature as calibration_temperature
from engines.vision.category import WorldDomain, category_mass, decide, imagenet_model, portrait
from engines.vision.config import get_vision_settings
from engines.vision.duplicates import DuplicateIndex
from engines.vision.errors import VisionInputError, VisionRuntimeError
from engines.vision.faces import FaceAnalyzer, liveness
from engines.vision.imaging import b64decode_image, colour_signature, decode_image, phash
from engines.vision.models import (
    UNSAFE_LABELS,
    Backbone,
    Head,
    ImageNetClassifier,
    NsfwClassifier,
    NudityDetector,
    embed,
)
from engines.vision.quality import image_quality
from engines.vision.vault import FaceVault
from gpu_core.moderation import QUEUE as MODERATION_STREAM
from gpu_core.schema import CATEGORIES, CONDITION_GRADES
from gpu_core.settings import get_settings

__all__ = ["MODERATION_STREAM", "VisionInputError", "VisionService", "router"]

log = logging.getLogger(__name__)
CATEGORY_MODEL = "jaikod-vision-category"
CONDITION_MODEL = "jaikod-vision-condition"


# ----------------------------------------------------------------------------------------------
@dataclass
class _Heads:
    category: Head
    condition: Head
    version: str
    domain: WorldDomain | None = None  # where the heads may answer (None: nowhere, ImageNet answers)


def _domain(meta: dict) -> WorldDomain | None:
    """The heads' domain when they were trained on this backbone size (features of another size differ)."""
    if "domain" not in meta or meta.get("backbone_size") != get_vision_settings().backbone_size:
        if meta:
            log.warning("vision heads trained at backbone size %s, served at %s: world head disabled",
                        meta.get("backbone_size"), get_vision_settings().backbone_size)
        return None
    return WorldDomain.from_json(meta["domain"])


def load_heads(runtime: str | None = None, *, alias: str | None = None, registry=None) -> _Heads:
    """Category and condition heads from the registry alias (``production``)."""
    from gpu_core.registry import Registry

    s = get_vision_settings()
    alias = alias or s.head_alias
    reg = registry or Registry()
    refs = [reg.require(s.head_category_model, alias), reg.require(s.head_condition_model, alias)]
    dirs = [reg.download(r) for r in refs]
    meta_path = dirs[0] / "meta.json"
    meta = orjson.loads(meta_path.read_bytes()) if meta_path.is_file() else {}
    return _Heads(Head(dirs[0] / "head.onnx", list(CATEGORIES), runtime),
                  Head(dirs[1] / "head.onnx", list(CONDITION_GRADES), runtime),
                  "+".join(r.label for r in refs), _domain(meta))


def heads_from_trained(trained: dict, version: str, runtime: str | None = None) -> _Heads:
    """Heads straight from :func:`batch.vision_heads.train_heads` (tests, benchmarks), no registry."""
    return _Heads(Head(trained["category"].onnx_path, list(CATEGORIES), runtime),
                  Head(trained["condition"].onnx_path, list(CONDITION_GRADES), runtime), version,
                  _domain(trained["category"].meta))


class VisionService:
    """Every vision engine, loaded once; thread-safe batch methods plus async micro-batched entry points."""

    def __init__(self, *, runtime: str | None = None, redis=None, on_flagged: Callable[[str, dict], None] | None = None,
                 heads: _Heads | None = None, registry=None, faces: bool = True, window_ms: float | None = None,
                 max_batch: int | None = None, category_classifier: str | None = None):
        self.s = get_vision_settings()
        self.runtime = runtime or self.s.runtime
        self.redis = redis
        self.on_flagged = on_flagged or self._queue_for_moderation
        self.nudity = NudityDetector(runtime=self.runtime)
        self.nsfw = NsfwClassifier(runtime=self.runtime)
        self.backbone = Backbone(runtime=self.runtime)
        # the category's ImageNet classifier; None = the backbone's own head (MobileNetV2, one pass for both)
        name = category_classifier or self.s.category_classifier
        self.classifier = None if name == "mobilenet_v2" else ImageNetClassifier(name, runtime=self.runtime)
        self.category_model = imagenet_model(name)
        self.category_temperature = calibration_temperature(name)
        self._heads, self._registry = heads, registry
        self._heads_lock = threading.Lock()
        self.duplicates = DuplicateIndex()
        self.faces = FaceAnalyzer() if faces else None
        self.vault = FaceVault(self.s)
        self.batcher = MicroBatcher(self.analyze_batch, window_ms=self.s.batch_window_ms if window_ms is None else window_ms,
                                    max_batch=max_batch or self.s.max_batch)
        self._index_lock = threading.Lock()
        self._moderation = None

    @property
    def heads(self) -> _Heads:
        """The category/condition heads from the registry alias, loaded on first use: eKYC and safety never
        wait on them, and until they are registered only the analysis that needs them answers 503."""
        if self._heads is None:
            with self._heads_lock:
                if self._heads is None:
                    self._heads = load_heads(self.runtime, registry=self._registry)
        return self._heads

    # -- moderation hand-off ---------------------------------------------------------------
    def _queue_for_moderation(self, listing_id: str, result: dict) -> None:
        """Default hand-off: the durable moderation queue of :mod:`gpu_core.moderation` (a Redis Stream)."""
        if self.redis is None:
            return
        from gpu_core.moderation import ModerationQueue

        if self._moderation is None:
            self._moderation = ModerationQueue(self.redis)
        self._moderation.enqueue(listing_id, "image", result["safety_score"], result["safety_flags"])

    # -- analyze-image -----------------------------------------------------------------------
    def category_probs(self, images: list[np.ndarray], backbone_probs: np.ndarray) -> np.ndarray:
        """ImageNet-1k probabilities [n, 1000] of the category classifier (the backbone's own when it is
        MobileNetV2)."""
        return backbone_probs if self.classifier is None or not images else self.classifier.probs(images)

    def analyze_batch(self, items: list[tuple[np.ndarray, str | None, bool]]) -> list[dict]:
        """``items``: (RGB image, listing_id or None, add to the duplicate index?) -> one result each.

        Safety: ``safety_score = 1 - max(P_nsfw, max score of unsafe nudenet detections >=
        nudity_min_score)``; a flag is raised only for an unsafe detection >= ``nudity_flag_score`` or
        ``P_nsfw >= nsfw_flag_score``; ``safety_score < safety_threshold`` (0.4) hands the listing to
        moderation whether or not a flag was raised.
        """
        s = self.s
        images = [it[0] for it in items]
        detections = self.nudity.detect(images)
        p_nsfw = self.nsfw.predict(images)
        feats, imagenet = self.backbone.run(images)
        embs = embed(feats)
        world = self.heads.domain is not None
        in_domain = self.heads.domain.cosine(embs) >= self.heads.domain.min_cosine if world else \
            np.zeros(len(items), bool)
        photos = np.flatnonzero(~in_domain)  # the world head answers the rest: the classifier runs only for these
        imagenet[photos] = self.category_probs([images[i] for i in photos], imagenet[photos])
        mass, calibrated = category_mass(imagenet, temperature=1.0), category_mass(imagenet,
                                                                                  temperature=self.category_temperature)
        cat_p = self.heads.category.predict(feats) if in_domain.any() else None
        cond_p = self.heads.condition.predict(feats) if in_domain.any() else None
        grades = np.arange(len(CONDITION_GRADES), dtype=np.float32) / (len(CONDITION_GRADES) - 1)
        out = []
        for i, (img, listing_id, index) in enumerate(items):
            unsafe = [d for d in detections[i] if d["label"] in UNSAFE_LABELS]
            flags = [d for d in unsafe if d["score"] >= s.nudity_flag_score]
            if p_nsfw[i] >= s.nsfw_flag_score:
                flags.append({"label": "NSFW", "score": float(p_nsfw[i]), "box": None})
            risk = max([float(p_nsfw[i])] + [d["score"] for d in unsafe])
            h, colour = phash(img), colour_signature(img)
            with self._index_lock:
                strict = {"similarity": s.drawn_duplicate_similarity,
                          "phash_distance": s.drawn_near_duplicate_phash_distance} if in_domain[i] else {}
                dup = self.duplicates.search(embs[i], h, colour, exclude=listing_id, **strict)
                if index and listing_id is not None:
                    self.duplicates.add(listing_id, embs[i], h, colour)
            if in_domain[i]:
                c = int(cat_p[i].argmax())
                category = {"category": CATEGORIES[c], "category_confidence": round(float(cat_p[i, c]), 4),
                            "category_model": self.heads.version, "category_reason": "world_head"}
                condition = {"condition_score": round(float(cond_p[i] @ grades), 4),
                             "condition_grade": CONDITION_GRADES[int(cond_p[i].argmax())],
                             "condition_model": self.heads.version}
            else:
                d = decide(mass[i], calibrated=calibrated[i], is_portrait=portrait(detections[i], img.shape, s),
                           s=s)
                category = {"category": d["category"], "category_confidence": d["category_confidence"],
                            "category_model": self.category_model, "category_reason": d["reason"]}
                condition = {"condition_score": None, "condition_grade": None, "condition_model": None}
            result = {
                **category,
                **condition,
                "image_quality": image_quality(img, s),
                "safety_flags": [{**f, "score": round(f["score"], 4)} for f in flags],
                "safety_score": round(1.0 - risk, 4),
                "duplicate_of": None if dup is None else {"listing_id": dup["listing_id"], "similarity": dup["similarity"]},
                "model_version": self.heads.version,
                "runtime": self.runtime,
            }
            result["moderation_queued"] = False
            if result["safety_score"] < get_settings().safety_threshold and listing_id is not None:
                self.on_flagged(listing_id, result)
                result["moderation_queued"] = True
            out.append(result)
        return out

    async def analyze(self, image: np.ndarray, listing_id: str | None = None, index: bool = True) -> dict:
        return await self.batcher.submit((image, listing_id, index))

    # -- ekyc ----------------------------------------------------------------------------------
    def ekyc_match(self, id_raw: bytes, selfie_raws: list[bytes]) -> dict:
        if self.faces is None:
            raise VisionRuntimeError("face models are not loaded in this service")
        if not selfie_raws:
            raise VisionInputError("at least one selfie frame is needed", field="selfies", http_status=422)
        if len(selfie_raws) > self.s.max_selfie_frames:
            raise VisionInputError(f"at most {self.s.max_selfie_frames} selfie frames", field="selfies",
                                   http_status=413)
        id_img = decode_image(id_raw, field="id_card")
        frames = [decode_image(b, field=f"selfies[{i}]") for i, b in enumerate(selfie_raws)]
        id_faces = self.faces.detect(id_img)
        if not id_faces:
            raise VisionInputError("no face found on the ID photo", field="id_card", http_status=422)
        if len(id_faces) > 1:
            raise VisionInputError(f"{len(id_faces)} faces found on the ID photo; exactly one is needed",
                                   field="id_card", http_status=422)
        frame_faces = [self.faces.detect(f) for f in frames]
        if not any(frame_faces):
            raise VisionInputError("no face found in any selfie frame", field="selfies", http_status=422)
        id_vec = self.faces.embed(id_img, id_faces[0])
        vecs = [self.faces.embed(f, ff[0]) if len(ff) == 1 else None for f, ff in zip(frames, frame_faces, strict=True)]
        sims = [self.faces.similarity(id_vec, v) for v in vecs if v is not None]
        score = float(np.median(sims)) if sims else 0.0
        live = liveness(self.faces, frames, selfie_raws, id_img, frame_faces, vecs)
        record = self.vault.record(id_vec)
        retained = self.vault.retain([id_raw, *selfie_raws])
        del id_img, frames, id_vec, vecs
        log.info("ekyc match", extra={"frames": len(selfie_raws), "faces_found": 1 + sum(map(len, frame_faces))})
        return {
            "face_match_score": round(max(score, 0.0), 4),
            "matched": bool(score >= self.faces.threshold and len(sims) > 0),
            "liveness_prob": round(live.liveness_prob, 4),
            "liveness_checks": live.checks,
            "faces_found": 1 + sum(len(f) for f in frame_faces),
            "faces_per_selfie": [len(f) for f in frame_faces],
            "face_record": record,
            "retained": retained is not None,
        }


# ----------------------------------------------------------------------------------------------
# HTTP
router = APIRouter(tags=["vision"])
_service: VisionService | None = None
_service_lock = threading.Lock()


def set_service(service: VisionService | None) -> None:
    """Install the service the routes use (the app does this at startup; tests pass their own)."""
    global _service
    _service = service


def get_service() -> VisionService:
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                _service = VisionService()  # the heads load on first analysis (503 until registered)
    return _service


async def _read_upload(value: Any, field: str, limit: int) -> bytes:
    if isinstance(value, UploadFile):
        data = await value.read(limit + 1)
    elif isinstance(value, str):
        data = b64decode_image(value, field=field)
    else:
        raise VisionInputError(f"{field} must be a file or base64 text", field=field, http_status=400)
    if len(data) > limit:
        raise VisionInputError(f"{field} is larger than {limit} bytes", field=field, http_status=413)
    return data


async def _payload(request: Request) -> tuple[dict, Any]:
    """Multipart form or JSON body -> (single values, form for getlist)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise VisionInputError("body is not valid JSON", http_status=400) from exc
        if not isinstance(body, dict):
            raise VisionInputError("JSON body must be an object", http_status=400)
        return body, None
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_files=get_vision_settings().max_selfie_frames + 2)
        return dict(form), form
    raise VisionInputError("send multipart/form-data or application/json", http_status=415)


def _body_spec(multipart: dict, json_props: dict, required: list[str], json_required: list[str]) -> dict:
    """The OpenAPI request body of a route that reads the request itself (multipart form or JSON)."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": multipart, "required": required}},
        "application/json": {"schema": {"type": "object", "properties": json_props, "required": json_required}}}}}


_LISTING_ID = {"type": "string", "maxLength": 64, "description": "listing to check for duplicates / index"}
ANALYZE_IMAGE_BODY = _body_spec(
    {"file": {"type": "string", "format": "binary"}, "listing_id": _LISTING_ID,
     "index": {"type": "string", "enum": ["true", "false"]}},
    {"image_base64": {"type": "string", "description": "the image, base64 (or a data: URL)"},
     "listing_id": _LISTING_ID, "index": {"type": "boolean"}},
    ["file"], ["image_base64"])
EKYC_BODY = _body_spec(
    {"id_card": {"type": "string", "format": "binary"},
     "selfies": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": 8}},
    {"id_card_base64": {"type": "string"},
     "selfies_base64": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 8}},
    ["id_card", "selfies"], ["id_card_base64", "selfies_base64"])


@router.post("/v1/analyze-image", openapi_extra=ANALYZE_IMAGE_BODY)
async def analyze_image(request: Request) -> dict:
    """Multipart ``file`` (or ``image_base64``), optional ``listing_id`` and ``index`` (default true)."""
    s = get_vision_settings()
    body, _ = await _payload(request)
    value = body.get("file", body.get("image", body.get("image_base64")))
    if value is None:
        raise VisionInputError("send the image as multipart 'file' or as 'image_base64'", field="file", http_status=400)
    raw = await _read_upload(value, "file" if isinstance(value, UploadFile) else "image_base64", s.max_image_bytes)
    image = decode_image(raw, field="file")
    listing_id = body.get("listing_id")
    index = str(body.get("index", "true")).lower() not in ("false", "0", "no")
    return await get_service().analyze(image, None if listing_id in (None, "") else str(listing_id), index)


@router.post("/v1/ekyc-match", openapi_extra=EKYC_BODY)
async def ekyc_match(request: Request) -> dict:
    """``id_card`` (file or base64) and one or more ``selfies`` (repeated file fields, or a base64 list)."""
    s = get_vision_settings()
    body, form = await _payload(request)
    id_value = body.get("id_card", body.get("id_card_base64"))
    if id_value is None:
        raise VisionInputError("send the ID-card photo as 'id_card'", field="id_card", http_status=400)
    if form is not None:
        selfies = form.getlist("selfies") or form.getlist("selfies_base64")
    else:
        selfies = body.get("selfies", body.get("selfies_base64")) or []
        if isinstance(selfies, str):
            selfies = [selfies]
    if not selfies:
        raise VisionInputError("send at least one selfie frame as 'selfies'", field="selfies", http_status=400)
    id_raw = await _read_upload(id_value, "id_card", s.max_image_bytes)
    raws = [await _read_upload(v, f"selfies[{i}]", s.max_image_bytes) for i, v in enumerate(selfies)]
    service = get_service()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, service.ekyc_match, id_raw, raws)
