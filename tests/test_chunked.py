"""``fit --chunk-frames N --workers W`` (issue 22.2): chunks fitted in parallel processes, seams
re-fitted with their neighbours fixed; labels close to the sequential fit's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import WEBXR_RIGHT

from hoannot.io import InputError
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.sequence import open_sequence
from hoannot.fitting.chunked import chunk_ranges
from hoannot.fitting.config import load_fit_config
from hoannot.fitting.parameters import PoseParameters
from hoannot.pipeline import run_fit, run_init, synth_sequence
from hoannot.datasets.loaders import load_hand_model

# without the finger search, whose second batch pass would make the sequential fit's first batch
# differ from chunk 0's (this file tests the chunking, tests/test_finger_search.py the search)
CFG = dict(iterations=20, batch_size=4, overlap=1, crop_size=32, num_points=300, finger_search=0)
POSE_FIELDS = ("global_orient", "hand_pose", "transl", "obj_rot", "obj_transl")


def hand_mpjpe_mm(root) -> np.ndarray:
    """(F,) hand MPJPE per frame of fit/poses.npz against gt/ (HO-3D joint order), mm."""
    poses, gt = HandObjectPoses.load(root / "fit" / "poses.npz"), GroundTruth.load(root / "gt" / "poses.npz")
    model = load_hand_model(open_sequence(root))
    with torch.no_grad():
        joints = PoseParameters(poses.select(gt.frames), model.num_betas).hand(model).joints.numpy()
    return np.linalg.norm(joints - gt.hand_joints, axis=-1).mean(-1) * 1000


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """WebXR hand on a box, 2 cameras x 8 frames, initial poses = ground truth + noise."""
    if not WEBXR_RIGHT.is_file():
        pytest.skip("../shared WebXR hand not available")
    root = tmp_path_factory.mktemp("chunked") / "seq"
    synth_sequence(root, "primitive:box:0.05,0.07,0.1", str(WEBXR_RIGHT), cameras=2, frames=8, seed=5, width=96,
                   height=72, focal=90.0)  # fmt: skip
    run_init(root, from_gt=True, seed=5, noise_deg=5, noise_mm=8)
    return root


def test_two_chunks_on_two_workers_match_the_sequential_fit_and_the_seams_are_refitted(capture, tmp_path):
    cfg = load_fit_config(None, **CFG)
    seq_root, chunk_root = tmp_path / "seq", tmp_path / "chunked"
    shutil.copytree(capture, seq_root)
    shutil.copytree(capture, chunk_root)
    run_fit(seq_root, cfg, progress=False, threads=1)
    run_fit(chunk_root, cfg, progress=False, threads=1, chunk_frames=4, workers=2)
    seq_p, chk_p = (HandObjectPoses.load(r / "fit" / "poses.npz") for r in (seq_root, chunk_root))
    info = json.loads((chunk_root / "fit" / "info.json").read_text())["chunked"]
    assert info["chunks"] == [[0, 1, 2, 3], [4, 5, 6, 7]] and info["seams"] == [[3, 4]]
    # measured: mean hand MPJPE 7.45 (sequential) vs 7.48 mm (chunked); frames moved <= 1.8 mm
    e_seq, e_chk = hand_mpjpe_mm(seq_root), hand_mpjpe_mm(chunk_root)
    assert abs(e_chk.mean() - e_seq.mean()) < 0.5, (e_seq, e_chk)
    assert np.abs(chk_p.transl - seq_p.transl).max() < 0.005
    # chunk 0 before the seam is the sequential fit's first batch, bit for bit
    np.testing.assert_array_equal(chk_p.transl[:3], seq_p.transl[:3])
    # the seam frames differ from the chunks' own results (their checkpoints); the others are them
    chunk_results = [np.load(chunk_root / "fit" / "chunks" / f"{k:03d}" / "ckpt" / "state.npz") for k in (0, 1)]
    unrefitted = {name: np.concatenate([z[name] for z in chunk_results]) for name in POSE_FIELDS}
    for name in POSE_FIELDS:
        assert not np.array_equal(getattr(chk_p, name)[[3, 4]], unrefitted[name][[3, 4]]), name
        np.testing.assert_array_equal(getattr(chk_p, name)[[0, 1, 2, 5, 6, 7]], unrefitted[name][[0, 1, 2, 5, 6, 7]])
    # resumed, the finished chunks come from their checkpoints: the same labels
    run_fit(chunk_root, cfg, resume=True, progress=False, threads=1, chunk_frames=4, workers=2)
    again = HandObjectPoses.load(chunk_root / "fit" / "poses.npz")
    for name in POSE_FIELDS:
        np.testing.assert_array_equal(getattr(again, name), getattr(chk_p, name), err_msg=name)


def test_chunked_fit_refuses_the_single_camera_schedule(capture, tmp_path):
    cfg = load_fit_config(None, schedule="single", **CFG)
    with pytest.raises(InputError, match="--chunk-frames fits the multi-camera schedule only") as e:
        run_fit(capture, cfg, progress=False, chunk_frames=4)
    assert "\n" not in str(e.value) and not (capture / "fit" / "poses.npz").exists()
    with pytest.raises(InputError, match="--chunk-frames 1: expected 2 or more"):
        chunk_ranges(8, 1)
    assert chunk_ranges(9, 4) == [(0, 4), (4, 8), (8, 9)]


def test_auto_executor_is_local_processes_unless_connected_to_ray(monkeypatch):
    """A fit not connected to Ray does not start one for its chunks (about 27 s on 2 cores);
    one inside a Ray task (``hoannot run``) sends them to Ray."""
    import sys
    import types

    from hoannot.fitting.chunked import resolve_executor

    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert resolve_executor("auto") == "process" and "ray" not in sys.modules
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: True))
    assert resolve_executor("auto") == "ray" and resolve_executor("process") == "process"
    with pytest.raises(InputError, match="--executor 'dask': expected auto, ray or process"):
        resolve_executor("dask")
