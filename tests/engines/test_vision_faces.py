"""Face match and active liveness on the real sample photo and synthetic faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.vision.faces import FaceAnalyzer, liveness, nonrigid_motion
from tests.support.synthetic import draw_face


@pytest.fixture(scope="module")
def fa():
    return FaceAnalyzer()


def vec(fa, img):
    faces = fa.detect(img)
    assert len(faces) == 1
    return fa.embed(img, faces[0])


def test_same_face_matches_across_photos(fa, photo):
    h, w = photo.shape[:2]
    rotated = cv2.warpAffine(photo, cv2.getRotationMatrix2D((w / 2, h / 2), 8, 0.9), (w, h))
    small = cv2.resize(photo, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    a = vec(fa, photo)
    for other in (rotated, small, np.ascontiguousarray(photo[:, ::-1])):
        assert fa.similarity(a, vec(fa, other)) >= fa.threshold + 0.3


def test_different_faces_do_not_match(fa, photo):
    a = vec(fa, photo)
    for identity in (0, 2, 5):
        assert fa.similarity(a, vec(fa, draw_face(identity))) < fa.threshold


def test_two_renderings_of_one_synthetic_face_match(fa):
    assert fa.similarity(vec(fa, draw_face(2)), vec(fa, draw_face(2, yaw=0.5, roll=4))) >= fa.threshold


def test_nonrigid_motion_ignores_similarity_transforms():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (5, 2))
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = 1.7 * pts @ rot.T + [12.0, -40.0]
    assert nonrigid_motion(pts, moved) < 1e-9
    bent = pts.copy()
    bent[2] += [15.0, 0.0]  # the nose moves against the eyes: a head turn
    assert nonrigid_motion(pts, bent) > 0.05


def _report(fa, frames, id_img):
    raws = [cv2.imencode(".png", f)[1].tobytes() for f in frames]
    faces = [fa.detect(f) for f in frames]
    vecs = [fa.embed(f, ff[0]) if len(ff) == 1 else None for f, ff in zip(frames, faces, strict=True)]
    return liveness(fa, frames, raws, id_img, faces, vecs)


def test_liveness_accepts_head_turns_and_smile(fa):
    frames = [draw_face(0), draw_face(0, yaw=1.0), draw_face(0, yaw=-1.0, smile=1.0)]
    rep = _report(fa, frames, draw_face(0, zoom=0.8))
    assert all(rep.checks.values()), rep.checks
    assert rep.liveness_prob >= 0.5


def test_liveness_rejects_replay_and_id_photo_and_rigid_motion(fa, photo):
    face = draw_face(0)
    replay = _report(fa, [face, face, face], draw_face(0, zoom=0.8))
    assert not replay.checks["no_replayed_frame"] and replay.liveness_prob == 0.0
    same_as_id = _report(fa, [face, draw_face(0, yaw=1.0), draw_face(0, yaw=-1.0)], face)
    assert not same_as_id.checks["not_the_id_photo"] and same_as_id.liveness_prob == 0.0
    h, w = photo.shape[:2]
    moved_photo = [cv2.warpAffine(photo, cv2.getRotationMatrix2D((w / 2, h / 2), a, s), (w, h))
                   for a, s in ((0, 1.0), (6, 0.95), (-5, 1.05))]
    rigid = _report(fa, moved_photo, draw_face(3))
    assert rigid.liveness_prob < 0.5
    mixed = _report(fa, [photo, draw_face(0, yaw=1.0), draw_face(0, yaw=-1.0)], draw_face(3))
    assert not mixed.checks["same_person"] and mixed.liveness_prob == 0.0
    few = _report(fa, [face], draw_face(3))
    assert not few.checks["enough_frames"]
