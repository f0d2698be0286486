"""Fitting: a real YCB mesh held by an independent (WebXR) hand, fitted with our hand model;
checkpoints and resuming."""

from __future__ import annotations

import numpy as np
import pytest

from hoannot.datasets.io import InputError
from hoannot.evaluation.report import run_eval
from hoannot.fitting.config import load_fit_config
from hoannot.fitting.optimize import fit_sequence
from hoannot.pipeline import load_hand_model, load_sequence_object, run_export, run_fit, run_init, synth_sequence
from hoannot.datasets.sequence import open_sequence

from conftest import WEBXR_RIGHT, YCB

SMALL = dict(width=160, height=120, focal=150.0)


@pytest.mark.slow
def test_fit_webxr_hand_on_ycb_can_halves_errors(shared_dir, tmp_path):
    """Data from the skinned WebXR hand (not our model) + the scanned YCB potted meat can,
    2 cameras, sensor noise on; init = ground truth + 10 deg / 15 mm (+ 0.1 rad per joint)."""
    seq = tmp_path / "seq"
    synth_sequence(seq, str(YCB / "010_potted_meat_can"), str(WEBXR_RIGHT), cameras=2, frames=4, seed=0, noise=True, **SMALL)
    run_init(seq, from_gt=True, seed=0)
    run_fit(seq, load_fit_config(None, iterations=30, batch_size=4, overlap=1, crop_size=64), progress=False)
    run_export(seq, "init")
    run_export(seq, "fit")
    before = run_eval(seq / "labels_init" / "labels.npz", seq)
    after = run_eval(seq, seq)
    assert before["mpjpe_mm"] > 15.0 and before["add_mm"] > 10.0  # the perturbation is real
    assert after["mpjpe_mm"] < 0.5 * before["mpjpe_mm"]
    assert after["add_mm"] < 0.5 * before["add_mm"]
    quality = np.load(seq / "labels" / "labels.npz")
    assert quality["quality_iou_object"].min() > 0.8


def _box_sequence(tmp_path):
    seq = tmp_path / "box"
    synth_sequence(seq, "primitive:box:0.05,0.07,0.1", "open", cameras=2, frames=4, seed=1, noise=True, **SMALL)
    init, _ = run_init(seq, from_gt=True, seed=1)
    s = open_sequence(seq)
    return s, init, load_hand_model(s), load_sequence_object(s)


def test_resume_gives_the_uninterrupted_result(tmp_path):
    seq, init, hand, obj = _box_sequence(tmp_path)
    cfg = load_fit_config(None, iterations=4, batch_size=3, overlap=1, crop_size=40, num_points=200)
    full = fit_sequence(seq, init, hand, obj, cfg, tmp_path / "a", progress=False)
    part = fit_sequence(seq, init, hand, obj, cfg, tmp_path / "b", progress=False, stop_after=1)
    # after one batch, its frames have moved and the rest are still the initial poses
    assert not np.allclose(part.poses.transl[0], init.select(list(seq.frames)).transl[0])
    assert np.allclose(part.poses.transl[3], init.select(list(seq.frames)).transl[3])
    resumed = fit_sequence(seq, init, hand, obj, cfg, tmp_path / "b", resume=True, progress=False)
    for name in ("global_orient", "hand_pose", "transl", "betas", "obj_rot", "obj_transl"):
        np.testing.assert_allclose(getattr(resumed.poses, name), getattr(full.poses, name), atol=1e-6, err_msg=name)
    np.testing.assert_allclose(resumed.quality["iou_hand"], full.quality["iou_hand"], atol=1e-6)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    seq, init, hand, obj = _box_sequence(tmp_path)
    cfg = load_fit_config(None, iterations=2, batch_size=3, overlap=1, crop_size=32, num_points=100)
    fit_sequence(seq, init, hand, obj, cfg, tmp_path / "f", progress=False, stop_after=1)
    other = load_fit_config(None, iterations=3, batch_size=3, overlap=1, crop_size=32, num_points=100)
    with pytest.raises(InputError, match="checkpoint"):
        fit_sequence(seq, init, hand, obj, other, tmp_path / "f", resume=True, progress=False)
