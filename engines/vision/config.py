"""Settings of the visual intelligence service (env prefix ``JAIKOD_VISION_``).

Kept beside the engines so the shared :mod:`gpu_core.settings` stays small; every limit and
threshold of the vision seed is a named setting with its default documented here. The moderation
threshold itself (``safety_threshold`` = 0.4) stays in the shared settings.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class VisionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JAIKOD_VISION_", extra="ignore")

    runtime: Literal["onnxruntime", "tensorrt", "triton"] = "onnxruntime"
    triton_url: str = "127.0.0.1:8000"  # host:port of a Triton server (http) when runtime=triton
    triton_protocol: Literal["http", "grpc"] = "http"
    tensorrt_fp16: bool = True
    intra_op_threads: int = 0  # onnxruntime intra-op threads; 0 = library default

    # --- input limits ------------------------------------------------------------------------
    max_image_bytes: int = 8 * 1024 * 1024  # larger uploads -> 413
    max_image_side: int = 6000  # larger width or height -> 413 (decompression bombs)
    max_image_pixels: int = 24_000_000
    min_image_side: int = 16  # smaller -> 422
    allowed_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")

    # --- models --------------------------------------------------------------------------------
    backbone_size: int = 224  # MobileNetV2 input side (224 = its ImageNet training size; the 1000-class head needs it)
    nudity_min_score: float = 0.25  # nudenet detections below this are ignored (they count in no score)
    nudity_flag_score: float = 0.5  # an unsafe nudenet detection at or above this becomes a safety flag
    nsfw_flag_score: float = 0.5  # open_nsfw probability at or above which an "NSFW" flag (no box) is added

    # --- category from ImageNet (engines/vision/imagenet_map.py) -------------------------------
    # the ImageNet-1k classifier whose probabilities the table maps; "mobilenet_v2" = the backbone's own head (one pass
    # for embedding and category). "efficientnet_lite0" (chosen on the real photos' dev split by bench/vision_backbones.py)
    # adds a second network for photos outside the world domain: test top-1 0.59 = 0.59, non-product unknown 0.83 vs
    # 0.78, about one more MobileNetV2 of CPU per photo (README, "Image analysis on real photos")
    category_classifier: Literal["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = \
        "mobilenet_v2"
    category_min_confidence: float = 0.5
    pet_animals_are_listings: bool = False  # count dog/cat/... classes as the "pets" category
    portrait_face_share: float = 0.02  # a face box (nudenet FACE_*) this share of the image or more -> a portrait
    portrait_face_score: float = 0.5  # ... when its detection score is at least this
    world_domain_quantile: float = 0.01  # a photo is "like the world's drawings" when its cosine to the nearest
    #                                      drawn-class centroid is above this quantile of the training images'

    # --- image quality (engines/vision/quality.py) ---------------------------------------------
    quality_sharp_laplacian: float = 150.0  # variance of the Laplacian (grey, 512-px side) that counts as sharp
    quality_good_side: int = 800  # shorter side in px that counts as full resolution
    quality_clutter_edges: float = 0.25  # share of edge pixels (Canny) that counts as fully cluttered
    head_category_model: str = "jaikod-vision-category"
    head_condition_model: str = "jaikod-vision-condition"
    head_alias: str = "production"

    # --- micro-batching ----------------------------------------------------------------------
    batch_window_ms: float = 4.0  # how long the first request of a batch waits for company
    max_batch: int = 16

    # --- duplicates ----------------------------------------------------------------------------
    # every threshold below chosen on the dev split of the real-photo set under crop/resize/JPEG/brightness/
    # rotation/caption edits (bench/bench_vision_real.py, max min(P, R) on dev); test P 0.963 / R 0.967
    duplicate_similarity: float = 0.92  # cosine of Siamese (backbone, 224 px) embeddings at or above -> near-duplicate
    duplicate_candidates: int = 10  # faiss neighbours checked per upload
    near_duplicate_phash_distance: int = 32  # a near-duplicate by cosine must also be this close in pHash (of 64)
    # the world's drawn images crowd ImageNet feature space (two different drawn products of one category
    # sit at cosine 0.94-0.96), so images in the world heads' domain keep the strict pair below
    drawn_duplicate_similarity: float = 0.97
    drawn_near_duplicate_phash_distance: int = 12
    phash_max_distance: int = 6  # Hamming distance of 64-bit perceptual hashes at or below -> re-upload
    # colour agreement needed by both rules above (engines.vision.imaging.colour_distance): a recoloured
    # twin of a product mock-up moves the hue or the mean chroma, the 7 edits do not
    duplicate_colour_chroma_ratio: float = 0.3  # |ln| of the mean-chroma ratio at or below
    duplicate_colour_hue_distance: float = 0.15  # chroma-weighted hue earth mover's distance (half-turns) at or below

    # --- eKYC ----------------------------------------------------------------------------------
    face_detect_confidence: float = 0.6
    face_match_threshold: float = 0.363  # SFace cosine threshold of OpenCV Zoo
    max_selfie_frames: int = 8
    liveness_min_landmark_motion: float = 0.08  # non-rigid landmark residual (inter-ocular units) between frames
    liveness_min_frames: int = 3
    face_hmac_key: str | None = Field(None, description="hex key for face-record HMAC; default key file in home")
    retention_enabled: bool = False  # keep AES-GCM encrypted originals in cold storage
    retention_key: str | None = Field(None, description="hex AES-256 key; default key file in home")
    retention_days: int = 30
    # a folder or s3://bucket/prefix (the lake's object store; a lifecycle rule expires it after retention_days)
    cold_storage_dir: Path | str | None = None  # default <home>/cold_storage/ekyc


@lru_cache(maxsize=1)
def get_vision_settings() -> VisionSettings:
    return VisionSettings()


def reset_vision_settings() -> None:
    get_vision_settings.cache_clear()
