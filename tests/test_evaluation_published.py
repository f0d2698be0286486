"""Mean 3D joint errors recomputed from published NYU / ICVL predictions match the literature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hoannot.io import InputError
from hoannot.evaluation import depth_benchmarks as db
from hoannot.evaluation import metrics as M

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hand_depth_benchmarks"
needs_data = pytest.mark.skipif(not BENCH.is_dir(), reason="../shared hand_depth_benchmarks not available")

# Published mean joint errors (mm): V2V-PoseNet (Moon et al. CVPR 2018), DeepPrior++
# (Oberweger & Lepetit ICCVW 2017), Pose-REN (Chen et al. Neurocomputing 2018).
PUBLISHED = [
    ("nyu", "CVPR18_NYU_V2V_PoseNet", 8.419),
    ("nyu", "ICCVW17_NYU_DeepPrior++", 12.238),
    ("icvl", "CVPR18_ICVL_V2V_PoseNet", 6.284),
    ("icvl", "NEUCOM18_ICVL_Pose_REN", 6.791),
]


@needs_data
@pytest.mark.parametrize("dataset,method,expected_mm", PUBLISHED)
def test_published_mean_joint_error(dataset, method, expected_mm):
    gt = db.load_joints(BENCH, dataset)
    pred = db.load_joints(BENCH, dataset, method)
    b = db.BENCHMARKS[dataset]
    assert gt.shape == pred.shape == (b.num_frames, b.num_joints, 3)
    assert abs(M.mpjpe_mm(pred, gt) - expected_mm) < 0.01
    # per-joint means average to the same number; success rate is monotone and reaches
    # a sensible level at 80 mm
    assert np.mean(M.per_joint_mpjpe_mm(pred, gt)) == pytest.approx(M.mpjpe_mm(pred, gt))
    th, rate = M.success_rate_curve(pred, gt)
    assert np.all(np.diff(rate) >= 0) and rate[0] == 0.0 and rate[-1] > 0.9


@needs_data
def test_groundtruth_is_plausible_hand_in_metres():
    for name in ("nyu", "icvl"):
        gt = db.load_joints(BENCH, name)
        span = np.linalg.norm(gt.max(axis=1) - gt.min(axis=1), axis=-1)  # hand extent per frame
        assert 0.05 < np.median(span) < 0.3
        assert 0.15 < np.median(gt[..., 2]) < 1.5  # depth in metres


@needs_data
def test_list_methods():
    assert db.list_methods(BENCH, "icvl") == ["CVPR18_ICVL_V2V_PoseNet", "NEUCOM18_ICVL_Pose_REN"]


def test_uvd_back_projection_keeps_fy_sign():
    uvd = np.array([[330.0, 250.0, 1000.0]])
    xyz = db.uvd_to_xyz(uvd, 588.03, -587.07, 320.0, 240.0)
    np.testing.assert_allclose(xyz, [[10 * 1000 / 588.03, -10 * 1000 / 587.07, 1000.0]])


def test_bad_files(tmp_path):
    (tmp_path / "groundtruth" / "icvl").mkdir(parents=True)
    (tmp_path / "groundtruth" / "icvl" / "icvl_test_groundtruth_label.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(InputError, match="48 values"):
        db.load_joints(tmp_path, "icvl")
    with pytest.raises(InputError, match="not found"):
        db.load_joints(tmp_path, "icvl", "nope")
    with pytest.raises(InputError, match="unknown"):
        db.load_joints(tmp_path, "msra")
