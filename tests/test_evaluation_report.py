"""run_eval end to end on small synthetic label files (hoannot.evaluation.report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from rich.table import Table
from scipy.spatial.transform import Rotation

from hoannot.io import InputError, write_npz
from hoannot.evaluation.report import METRIC_KEYS, format_table, run_eval

F = 3


def labels(rng, frames=(0, 1, 2)):
    F = len(frames)
    hand = trimesh.creation.box(extents=[0.02, 0.02, 0.02])  # a cube stands in for the hand mesh
    joints = rng.normal(scale=0.03, size=(F, 21, 3))
    verts = np.repeat(hand.vertices[None], F, 0) + np.array([0.05, 0.0, 0.0])  # overlaps the object
    return dict(
        frames=np.array(frames, dtype=np.int64),
        hand_joints=joints.astype(np.float32),
        hand_vertices=verts.astype(np.float32),
        hand_faces=hand.faces.astype(np.int64),
        obj_rot=np.zeros((F, 3), np.float32),
        obj_transl=np.zeros((F, 3), np.float32),
    )


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    gt = labels(rng)
    obj = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    gt.update(obj_points=obj.vertices, obj_faces=obj.faces, obj_symmetric=np.array(False))
    pred = {k: v.copy() for k, v in gt.items() if k.startswith(("frames", "hand", "obj_rot", "obj_transl"))}
    pred["hand_joints"] = gt["hand_joints"] + np.float32(0.01)  # 10 mm along x, y and z
    pred["obj_transl"] = gt["obj_transl"] + np.array([0, 0, 0.02], np.float32)
    write_npz(tmp_path / "gt" / "gt" / "poses.npz", **gt)  # folder layout of synthetic captures
    write_npz(tmp_path / "pred.npz", **pred)
    return tmp_path / "pred.npz", tmp_path / "gt", gt, pred


def test_run_eval_values(files, tmp_path):
    pred, gt, g, p = files
    out = tmp_path / "out"
    m = run_eval(pred, gt, out_dir=out)
    assert tuple(m) == METRIC_KEYS
    assert m["frames"] == F
    assert m["mpjpe_mm"] == pytest.approx(10 * np.sqrt(3), rel=1e-5)
    assert m["rr_mpjpe_mm"] == pytest.approx(0, abs=1e-4)
    assert m["st_mpjpe_mm"] == pytest.approx(0, abs=1e-4)
    assert m["pa_mpjpe_mm"] == pytest.approx(0, abs=1e-4)
    assert m["auc_0_50mm"] == pytest.approx(1 - 0.5 / 99, abs=1e-3)  # only the 0 mm threshold misses
    assert m["f5"] == 1.0 and m["f15"] == 1.0 and m["mesh_error_mm"] == pytest.approx(0, abs=1e-4)
    assert m["add_mm"] == pytest.approx(20.0, rel=1e-5) and m["adds_mm"] <= m["add_mm"]
    assert m["mssd_mm"] == pytest.approx(20.0, rel=1e-5)
    assert m["add_pass_rate"] == 0.0  # 20 mm > 0.1 * diameter (0.1 * 173 mm)
    # the predicted "hand" cube spans x in [0.04, 0.06], the object cube ends at x = 0.05
    assert m["penetration_mm"] == pytest.approx(10.0, rel=1e-4)
    assert m["intersection_volume_cm3"] == pytest.approx(4.0)
    assert m["contact_rate"] == 1.0
    assert len(m["per_joint_mpjpe_mm"]) == 21
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["mpjpe_mm"] == pytest.approx(m["mpjpe_mm"])
    for png in ("pck.png", "per_joint.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t = format_table(m)
    assert isinstance(t, Table) and t.row_count == len(METRIC_KEYS) - 1


def test_frames_matched_by_id(tmp_path):
    rng = np.random.default_rng(1)
    gt = labels(rng, frames=(5, 6, 7))
    pred = dict(gt)
    pred["frames"] = np.array([7, 6, 9], np.int64)  # reversed, and one extra frame
    pred["hand_joints"] = gt["hand_joints"][[2, 1, 0]]
    write_npz(tmp_path / "g.npz", **gt)
    write_npz(tmp_path / "p" / "labels" / "labels.npz", **pred)
    m = run_eval(tmp_path / "p", tmp_path / "g.npz")
    assert m["frames"] == 2 and m["mpjpe_mm"] == pytest.approx(0, abs=1e-6)
    assert m["add_mm"] is None and m["penetration_mm"] is None  # no object points anywhere
    pred["frames"] = np.array([1, 2, 3], np.int64)
    write_npz(tmp_path / "p" / "labels" / "labels.npz", **pred)
    with pytest.raises(InputError, match="no frame id in common"):
        run_eval(tmp_path / "p", tmp_path / "g.npz")


def test_different_topology_and_missing_parts(tmp_path):
    rng = np.random.default_rng(2)
    gt = labels(rng)
    pred = {k: gt[k] for k in ("frames", "hand_joints")}
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.01)
    pred["hand_vertices"] = np.repeat(sphere.vertices[None], F, 0) + np.array([0.05, 0.0, 0.0])
    R = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix()
    pred["hand_joints"] = gt["hand_joints"] @ R.T  # joints rotated: the F-score alignment uses joints
    pred["hand_vertices"] = pred["hand_vertices"] @ R.T
    write_npz(tmp_path / "g.npz", **gt)
    write_npz(tmp_path / "p.npz", **pred)
    m = run_eval(tmp_path / "p.npz", tmp_path / "g.npz")
    assert m["mesh_error_mm"] is None
    assert 0 < m["f15"] <= 1 and m["f5"] <= m["f15"]
    assert m["pa_mpjpe_mm"] == pytest.approx(0, abs=1e-4) and m["mpjpe_mm"] > 1


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        run_eval(tmp_path / "nope.npz", tmp_path / "nope2.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="labels.npz"):
        run_eval(tmp_path / "empty", tmp_path / "empty")
    write_npz(tmp_path / "bad.npz", frames=np.arange(2), hand_joints=np.zeros((2, 16, 3)))
    with pytest.raises(InputError, match="hand_joints"):
        run_eval(tmp_path / "bad.npz", tmp_path / "bad.npz")


def test_ground_truth_is_never_its_own_prediction(tmp_path):
    """``hoannot eval SEQ/`` before ``export``: no labels is an error, not a perfect score."""
    write_npz(tmp_path / "seq" / "gt" / "poses.npz", **labels(np.random.default_rng(4)))
    with pytest.raises(InputError, match=r"seq: no labels/labels\.npz"):
        run_eval(tmp_path / "seq", tmp_path / "seq")
    with pytest.raises(InputError, match="the prediction is the ground-truth file itself"):
        run_eval(tmp_path / "seq" / "gt" / "poses.npz", tmp_path / "seq")


def test_one_sequence_folder_is_prediction_and_ground_truth(tmp_path):
    """``hoannot eval SEQ/``: labels/labels.npz is the prediction, gt/poses.npz the truth."""
    rng = np.random.default_rng(3)
    gt = labels(rng)
    pred = dict(gt, hand_joints=gt["hand_joints"] + np.float32(0.002))
    write_npz(tmp_path / "gt" / "poses.npz", **gt)
    write_npz(tmp_path / "labels" / "labels.npz", **pred)
    res = run_eval(tmp_path, tmp_path)
    assert res["mpjpe_mm"] == pytest.approx(2.0 * np.sqrt(3.0), rel=1e-4)
