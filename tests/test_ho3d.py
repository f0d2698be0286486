"""HO-3D ingest: depth decoding, camMat -> K, OpenGL -> OpenCV labels, safe writes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoannot.datasets.ho3d import (
    HO3D_DEPTH_UNIT,
    decode_ho3d_depth,
    detect_layout,
    encode_ho3d_depth,
    ingest_ho3d,
    read_meta,
)
from hoannot.io import InputError, write_image, write_pickle
from hoannot.datasets.poses import GroundTruth
from hoannot.datasets.validate import validate_sequence

W, H = 32, 24
UNIT = 0.00012498664727900177  # formats.md: metres = (R + 256 G) * UNIT
CAM_MAT = np.array([[40.5, 0.0, 15.7], [0.0, 41.0, 11.2], [0.0, 0.0, 1.0]])


def make_ho3d(src: Path, n: int = 3, ext: str = "png", eval_frame: int | None = None) -> dict:
    """A fake HO-3D sequence; returns what was written (depth in metres, GL labels)."""
    rng = np.random.default_rng(1)
    truth = {"depth_m": {}, "joints_gl": {}, "obj_rot": {}, "obj_t": {}, "rgb": {}}
    for f in range(n):
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        write_image(src / "rgb" / f"{f:04d}.{ext}", rgb)
        depth_m = rng.uniform(0.3, 1.2, (H, W))
        depth_m[:3, :5] = 0.0  # sensor holes
        units = np.rint(depth_m / UNIT).astype(np.int64)
        enc = np.zeros((H, W, 3), np.uint8)
        enc[..., 0] = units % 256
        enc[..., 1] = units // 256
        enc[..., 2] = 7  # unused channel: must be ignored
        write_image(src / "depth" / f"{f:04d}.png", enc)
        joints_gl = rng.normal(0, 0.05, (21, 3)) + [0.02, -0.03, -0.6]  # in front: z < 0 in OpenGL
        rot, t = rng.normal(0, 1, 3), np.array([0.05, 0.02, -0.55])
        meta = {
            "camMat": CAM_MAT,
            "objName": "006_mustard_bottle",
            "handJoints3D": joints_gl,
            "handPose": rng.normal(0, 0.2, 48),
            "handTrans": np.array([0.01, 0.02, -0.6]),
            "handBeta": rng.normal(0, 1, 10),
            "objRot": rot.reshape(3, 1),
            "objTrans": t,
            "objCorners3DRest": rng.normal(0, 0.05, (8, 3)),
        }
        if f == eval_frame:  # HO-3D evaluation frames: root joint only, no pose
            meta.update(handJoints3D=joints_gl[0], handPose=None)
        write_pickle(src / "meta" / f"{f:04d}.pkl", meta)
        truth["depth_m"][f], truth["joints_gl"][f] = depth_m, joints_gl
        truth["obj_rot"][f], truth["obj_t"][f], truth["rgb"][f] = rot, t, rgb
    return truth


def test_detect_layout(tmp_path):
    make_ho3d(tmp_path / "ABF10", n=1)
    assert detect_layout(tmp_path / "ABF10") == "ho3d"
    seq = ingest_ho3d(tmp_path / "ABF10", tmp_path / "out")
    assert detect_layout(seq.root) == "hoannot"
    (tmp_path / "root" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="HO-3D dataset root"):
        detect_layout(tmp_path / "root")
    with pytest.raises(InputError, match="neither"):
        detect_layout(tmp_path / "root" / "train")


def test_depth_codec_matches_formats_md(tmp_path):
    d = np.array([[0.0, 0.5], [1.0, 8.19]])
    enc = encode_ho3d_depth(d)
    # independent decode of the formula in formats.md
    back = (enc[..., 0].astype(np.float64) + 256.0 * enc[..., 1].astype(np.float64)) * UNIT
    assert np.abs(back - d).max() <= UNIT / 2 + 1e-12
    write_image(tmp_path / "d.png", enc)
    assert np.array_equal(decode_ho3d_depth(tmp_path / "d.png").astype(np.float64) * UNIT, back)


def test_ingest_roundtrip(tmp_path):
    truth = make_ho3d(tmp_path / "src", n=3)
    seq = ingest_ho3d(tmp_path / "src", tmp_path / "dst", object_mesh="primitive:cylinder:0.03,0.18")
    assert seq.frames == [0, 1, 2] and seq.camera_names == ["cam0"]
    cam = seq.cameras[0]
    np.testing.assert_allclose(cam.K, CAM_MAT)
    np.testing.assert_array_equal(cam.T_world_cam, np.eye(4))
    assert (cam.width, cam.height) == (W, H) and cam.depth_scale == HO3D_DEPTH_UNIT
    assert seq.config.object.id == "006_mustard_bottle"
    for f in range(3):
        d = seq.read_depth("cam0", f)
        assert d.shape == (H, W)
        assert np.abs(d - truth["depth_m"][f]).max() <= UNIT / 2 + 1e-6  # quantisation (+float32)
        assert np.all(d[:3, :5] == 0)
        np.testing.assert_array_equal(seq.read_rgb("cam0", f), truth["rgb"][f])
    rep = validate_sequence(seq.root)
    assert rep.warnings == [] and 0.3 <= rep.depth_stats["cam0"].median_m <= 1.2

    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    assert gt.frames.tolist() == [0, 1, 2]
    assert gt.hand_vertices.shape == (3, 0, 3) and gt.hand_faces.shape == (0, 3)
    for i in range(3):
        jgl = truth["joints_gl"][i]
        expect = np.stack([jgl[:, 0], -jgl[:, 1], -jgl[:, 2]], 1)
        np.testing.assert_allclose(gt.hand_joints[i], expect, atol=1e-6)
        assert np.all(gt.hand_joints[i][:, 2] > 0)  # OpenCV: in front of the camera
        # projecting OpenCV joints with K equals the HO-3D recipe (flip, then camMat)
        uv = cam.project(gt.hand_joints[i].astype(np.float64))
        p = jgl * [1, -1, -1]
        np.testing.assert_allclose(uv, (p @ CAM_MAT.T)[:, :2] / p[:, 2:], atol=1e-3)
        # object: the same model points must land at D (R_gl x + t_gl)
        x = np.random.default_rng(i).normal(0, 0.05, (10, 3))
        gl = x @ Rotation.from_rotvec(truth["obj_rot"][i]).as_matrix().T + truth["obj_t"][i]
        cv = x @ Rotation.from_rotvec(gt.obj_rot[i]).as_matrix().T + gt.obj_transl[i]
        np.testing.assert_allclose(cv, gl * [1, -1, -1], atol=1e-5)
    with np.load(seq.root / "gt" / "ho3d_mano.npz") as z:
        assert z["hand_pose48"].shape == (3, 48) and z["valid"].all()


def test_frame_slice_jpg_and_eval_frames(tmp_path):
    make_ho3d(tmp_path / "src", n=4, ext="jpg", eval_frame=2)
    seq = ingest_ho3d(tmp_path / "src", tmp_path / "dst", frames=slice(1, None))
    assert seq.frames == [1, 2, 3] and seq.config.rgb_ext == "jpg"
    # jpg bytes are copied, not re-encoded
    assert seq.rgb_path("cam0", 3).read_bytes() == (tmp_path / "src" / "rgb" / "0003.jpg").read_bytes()
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    assert np.isnan(gt.hand_joints[1]).all() and np.isfinite(gt.hand_joints[[0, 2]]).all()
    with np.load(seq.root / "gt" / "ho3d_mano.npz") as z:
        assert z["valid"].tolist() == [True, False, True]
    validate_sequence(seq.root)


def test_refuses_to_overwrite(tmp_path):
    make_ho3d(tmp_path / "src", n=2)
    dst = tmp_path / "dst"
    ingest_ho3d(tmp_path / "src", dst, frames=slice(0, 1))
    marker = dst / "init" / "poses.npz"
    marker.parent.mkdir()
    marker.write_bytes(b"keep")
    with pytest.raises(InputError, match="not empty"):
        ingest_ho3d(tmp_path / "src", dst)
    assert marker.read_bytes() == b"keep"
    seq = ingest_ho3d(tmp_path / "src", dst, overwrite=True)
    assert seq.frames == [0, 1] and not marker.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a hoannot sequence"):
        ingest_ho3d(tmp_path / "src", other, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"
    # an existing empty folder is fine
    (tmp_path / "empty").mkdir()
    ingest_ho3d(tmp_path / "src", tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_failed_ingest_leaves_nothing(tmp_path):
    make_ho3d(tmp_path / "src", n=3)
    bad = tmp_path / "src" / "depth" / "0002.png"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(InputError) as e:
        ingest_ho3d(tmp_path / "src", tmp_path / "dst")
    assert str(bad) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    (tmp_path / "src" / "depth" / "0001.png").unlink()
    with pytest.raises(InputError, match="0001.png: depth frame file not found"):
        ingest_ho3d(tmp_path / "src", tmp_path / "dst")


def test_intrinsics_file_and_object_fallback(tmp_path):
    src = tmp_path / "src"
    make_ho3d(src, n=2)
    for p in (src / "meta").iterdir():
        p.unlink()
    (src / "calibration").mkdir()
    (src / "calibration" / "cam_0_intrinsics.txt").write_text("ppx: 15.7 ppy: 11.2 fx: 40.5 fy: 41.0\n")
    with pytest.raises(InputError, match="no objName"):
        ingest_ho3d(src, tmp_path / "dst")
    seq = ingest_ho3d(src, tmp_path / "dst", object_mesh="primitive:box:0.1,0.1,0.1")
    np.testing.assert_allclose(seq.cameras[0].K, CAM_MAT)
    assert not (seq.root / "gt").exists()


def test_meta_pickle_safety_and_errors(tmp_path):
    import os

    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"camMat": CAM_MAT})[:20])  # truncated
    with pytest.raises(InputError, match="unreadable meta"):
        read_meta(p)

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p.write_bytes(pickle.dumps({"camMat": Boom()}))
    with pytest.raises(InputError, match="refusing"):
        read_meta(p)
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(InputError, match="must hold a dict"):
        read_meta(p)
    # a Python-2 style pickle (protocol 2) of numpy data loads
    p.write_bytes(pickle.dumps({"camMat": CAM_MAT, "objName": "x"}, protocol=2))
    np.testing.assert_array_equal(read_meta(p)["camMat"], CAM_MAT)


def test_inconsistent_cammat(tmp_path):
    src = tmp_path / "src"
    make_ho3d(src, n=2)
    meta = read_meta(src / "meta" / "0001.pkl")
    meta["camMat"] = CAM_MAT * [[1.1], [1], [1]]
    write_pickle(src / "meta" / "0001.pkl", meta)
    with pytest.raises(InputError, match="0001.pkl: camMat differs"):
        ingest_ho3d(src, tmp_path / "dst")
