"""Visual intelligence service: ``POST /v1/analyze-image`` and ``POST /v1/ekyc-match``.

:class:`VisionService` loads every engine once (nudenet detector, open_nsfw classifier, MobileNetV2
backbone, the category/condition heads from the MLflow registry alias, YuNet/SFace) and serves:

* **analyze-image** — concurrent requests are gathered by a :class:`MicroBatcher` (window
  ``JAIKOD_VISION_BATCH_WINDOW_MS``, at most ``JAIKOD_VISION_MAX_BATCH`` images) and run as one
  batch per model. ``safety_score = 1 - max(P(nsfw), max unsafe-detection score)``; below
  ``JAIKOD_SAFETY_THRESHOLD`` (0.4) the listing is handed to ``on_flagged(listing_id, result)``
  (default: ``XADD jk:moderation:queue`` when a Redis client is given, else nothing).
* **duplicates** — :class:`DuplicateIndex`: a faiss inner-product index over the unit-length
  backbone embeddings (the Siamese tower: one shared backbone, cosine) plus a 64-bit perceptual hash
  per listing. A re-upload is an image whose pHash is within ``phash_max_distance`` bits of an indexed
  listing; a near-duplicate is a faiss neighbour with cosine >= ``duplicate_similarity`` whose pHash
  is also within ``near_duplicate_phash_distance``. (Measured on the world's drawn images: ImageNet
  features put two *different* products of one category at cosine 0.94-0.96, above some re-encoded
  copies, so the embedding alone cannot decide; it retrieves, the hash verifies.)
* **ekyc-match** — SFace cosine between the ID photo's face and the selfie faces (median over
  frames), active liveness (:mod:`engines.vision.faces`), privacy by :class:`FaceVault`.

Privacy: face images and vectors live in memory only. The stored record is
``HMAC-SHA256(key, quantised face vector)``; with retention enabled the original uploads are
encrypted with AES-256-GCM into the cold-storage folder and :func:`purge_cold_storage` deletes
them after ``retention_days`` (30). Logs carry counts and timings, never images, vectors or hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from engines.vision.config import VisionSettings, get_vision_settings
from engines.vision.errors import VisionInputError, VisionRuntimeError
from engines.vision.faces import FaceAnalyzer, liveness
from engines.vision.imaging import b64decode_image, decode_image, phash
from engines.vision.models import UNSAFE_LABELS, Backbone, Head, NsfwClassifier, NudityDetector, embed
from gpu_core.moderation import QUEUE as MODERATION_STREAM  # "jk:moderation:queue"
from gpu_core.schema import CATEGORIES, CONDITION_GRADES
from gpu_core.settings import get_settings

__all__ = [
    "MODERATION_STREAM", "DuplicateIndex", "FaceVault", "MicroBatcher", "VisionInputError", "VisionService", "purge_cold_storage",
    "router",
]

log = logging.getLogger(__name__)
CATEGORY_MODEL = "jaikod-vision-category"
CONDITION_MODEL = "jaikod-vision-condition"


# ----------------------------------------------------------------------------------------------
# Duplicate index
class DuplicateIndex:
    """faiss inner-product index over unit embeddings + pHash table, keyed by listing id."""

    def __init__(self, dim: int = 1280, settings: VisionSettings | None = None):
        import faiss

        self.s = settings or get_vision_settings()
        self.index = faiss.IndexFlatIP(dim)
        self.ids: list[str] = []
        self.hashes = np.zeros(0, dtype=np.uint64)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, listing_id: str, embedding: np.ndarray, image_hash: int) -> None:
        with self._lock:
            self.index.add(np.ascontiguousarray(embedding.reshape(1, -1), dtype=np.float32))
            self.ids.append(str(listing_id))
            self.hashes = np.append(self.hashes, np.uint64(image_hash))

    def search(self, embedding: np.ndarray, image_hash: int, exclude: str | None = None) -> dict | None:
        """``{listing_id, similarity, match}`` of the best duplicate, or None."""
        with self._lock:
            if not self.ids:
                return None
            emb = np.ascontiguousarray(embedding.reshape(1, -1), dtype=np.float32)
            dist = np.bitwise_count(self.hashes ^ np.uint64(image_hash)).astype(np.int32)
            k = min(self.s.duplicate_candidates, len(self.ids))
            sims, idx = self.index.search(emb, k)
            best: tuple[float, int, str] | None = None
            close = np.flatnonzero(dist <= self.s.phash_max_distance)
            for i in close:  # exact re-uploads, anywhere in the index
                if self.ids[i] == exclude:
                    continue
                sim = float(self.index.reconstruct(int(i)) @ emb[0])
                if best is None or sim > best[0]:
                    best = (sim, int(i), "phash")
            for sim, i in zip(sims[0], idx[0], strict=True):  # near-duplicates among faiss neighbours
                if i < 0 or self.ids[i] == exclude:
                    continue
                if sim >= self.s.duplicate_similarity and dist[i] <= self.s.near_duplicate_phash_distance:
                    if best is None or sim > best[0]:
                        best = (float(sim), int(i), "embedding")
            if best is None:
                return None
            return {"listing_id": self.ids[best[1]], "similarity": round(min(best[0], 1.0), 4), "match": best[2]}


# ----------------------------------------------------------------------------------------------
# Privacy of faces
def _key(hex_value: str | None, name: str) -> bytes:
    """A 32-byte key: from settings (hex) or a 0600 key file under ``<home>/secrets`` created once."""
    if hex_value:
        return bytes.fromhex(hex_value)
    path = get_settings().home / "secrets" / f"{name}.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    return path.read_bytes()


class FaceVault:
    """Keyed face records and optional encrypted retention of the uploads."""

    def __init__(self, settings: VisionSettings | None = None):
        self.s = settings or get_vision_settings()
        self._hmac_key = _key(self.s.face_hmac_key, "face_hmac")
        self.root = self.s.cold_storage_dir or (get_settings().home / "cold_storage" / "ekyc")

    def record(self, vector: np.ndarray) -> str:
        """HMAC-SHA256 of the face vector quantised to int8 steps of 1/16 (not reversible without the key)."""
        q = np.clip(np.round(np.asarray(vector, np.float32) * 16), -127, 127).astype(np.int8)
        return hmac.new(self._hmac_key, q.tobytes(), hashlib.sha256).hexdigest()

    def retain(self, blobs: list[bytes]) -> Path | None:
        """AES-256-GCM encrypt the uploads into one file (nonce || ciphertext); None when disabled."""
        if not self.s.retention_enabled:
            return None
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aes = AESGCM(_key(self.s.retention_key, "cold_storage"))
        payload = orjson.dumps([b.hex() for b in blobs])
        nonce = os.urandom(12)
        name = uuid.uuid4().hex
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{name}.bin"
        path.write_bytes(nonce + aes.encrypt(nonce, payload, name.encode()))
        return path

    def open(self, path: Path) -> list[bytes]:
        """Decrypt a retained file (for an audit)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        data = Path(path).read_bytes()
        aes = AESGCM(_key(self.s.retention_key, "cold_storage"))
        plain = aes.decrypt(data[:12], data[12:], Path(path).stem.encode())
        return [bytes.fromhex(h) for h in orjson.loads(plain)]


def purge_cold_storage(root: str | Path | None = None, older_than_days: int = 30, *, now: float | None = None) -> int:
    """Delete retained eKYC files older than ``older_than_days`` (by mtime); returns how many."""
    root = Path(root) if root is not None else (
        get_vision_settings().cold_storage_dir or get_settings().home / "cold_storage" / "ekyc")
    if not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    n = 0
    for p in root.glob("*.bin"):
        if p.stat().st_mtime < cutoff:
            p.unlink(missing_ok=True)
            n += 1
    return n


# ----------------------------------------------------------------------------------------------
# Micro-batching
class MicroBatcher:
    """Gathers concurrent calls for ``window_ms`` (or until ``max_batch``) and runs ``fn(items)`` once
    in a worker thread; each caller awaits its own result."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], *, window_ms: float, max_batch: int):
        self.fn, self.window, self.max_batch = fn, window_ms / 1000.0, max_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-batch")
        self.batches: list[int] = []  # sizes of the batches run (for the benchmark)

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._worker())
        fut = loop.create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        q = self._queue
        while True:
            first = await q.get()
            batch = [first]
            deadline = loop.time() + self.window
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(q.get(), timeout))
                except TimeoutError:
                    break
            self.batches.append(len(batch))
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [b[0] for b in batch])
                for (_, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
            except Exception as exc:  # every waiter gets the error, the worker lives on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)


# ----------------------------------------------------------------------------------------------
@dataclass
class _Heads:
    category: Head
    condition: Head
    version: str


def load_heads(runtime: str | None = None, *, alias: str | None = None, registry=None) -> _Heads:
    """Category and condition heads from the registry alias (``production``)."""
    from gpu_core.registry import Registry

    s = get_vision_settings()
    alias = alias or s.head_alias
    reg = registry or Registry()
    refs = [reg.require(s.head_category_model, alias), reg.require(s.head_condition_model, alias)]
    dirs = [reg.download(r) for r in refs]
    return _Heads(Head(dirs[0] / "head.onnx", list(CATEGORIES), runtime),
                  Head(dirs[1] / "head.onnx", list(CONDITION_GRADES), runtime),
                  "+".join(r.label for r in refs))


class VisionService:
    """Every vision engine, loaded once; thread-safe batch methods plus async micro-batched entry points."""

    def __init__(self, *, runtime: str | None = None, redis=None, on_flagged: Callable[[str, dict], None] | None = None,
                 heads: _Heads | None = None, registry=None, faces: bool = True, window_ms: float | None = None,
                 max_batch: int | None = None):
        self.s = get_vision_settings()
        self.runtime = runtime or self.s.runtime
        self.redis = redis
        self.on_flagged = on_flagged or self._queue_for_moderation
        self.nudity = NudityDetector(runtime=self.runtime)
        self.nsfw = NsfwClassifier(runtime=self.runtime)
        self.backbone = Backbone(runtime=self.runtime)
        self.heads = heads or load_heads(self.runtime, registry=registry)
        self.duplicates = DuplicateIndex()
        self.faces = FaceAnalyzer() if faces else None
        self.vault = FaceVault(self.s)
        self.batcher = MicroBatcher(self.analyze_batch, window_ms=self.s.batch_window_ms if window_ms is None else window_ms,
                                    max_batch=max_batch or self.s.max_batch)
        self._index_lock = threading.Lock()
        self._moderation = None

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
    def analyze_batch(self, items: list[tuple[np.ndarray, str | None, bool]]) -> list[dict]:
        """``items``: (RGB image, listing_id or None, add to the duplicate index?) -> one result each."""
        images = [it[0] for it in items]
        detections = self.nudity.detect(images)
        p_nsfw = self.nsfw.predict(images)
        feats = self.backbone.features(images)
        cat_p = self.heads.category.predict(feats)
        cond_p = self.heads.condition.predict(feats)
        embs = embed(feats)
        grades = np.arange(len(CONDITION_GRADES), dtype=np.float32) / (len(CONDITION_GRADES) - 1)
        out = []
        for i, (img, listing_id, index) in enumerate(items):
            flags = [d for d in detections[i] if d["label"] in UNSAFE_LABELS]
            if p_nsfw[i] >= self.s.nsfw_flag_score:
                flags.append({"label": "NSFW", "score": float(p_nsfw[i]), "box": None})
            risk = max([float(p_nsfw[i])] + [d["score"] for d in flags])
            h = phash(img)
            with self._index_lock:
                dup = self.duplicates.search(embs[i], h, exclude=listing_id)
                if index and listing_id is not None:
                    self.duplicates.add(listing_id, embs[i], h)
            c = int(cat_p[i].argmax())
            result = {
                "category": CATEGORIES[c],
                "category_confidence": round(float(cat_p[i, c]), 4),
                "condition_score": round(float(cond_p[i] @ grades), 4),
                "condition_grade": CONDITION_GRADES[int(cond_p[i].argmax())],
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
                _service = VisionService()  # RegistryError (503) until the heads are registered
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


@router.post("/v1/analyze-image")
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


@router.post("/v1/ekyc-match")
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
