"""Choosing among hand hypotheses by the fit's energy: the true grasp beats one turned 90 degrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoannot.datasets.loaders import load_sequence_object
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.sequence import open_sequence
from hoannot.models.hand import HandModel, change_frame
from hoannot.pipeline import synth_sequence


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """The open hand holding a box, 3 cameras, 2 frames, its gt/ labels and 2D joints copied in
    (``init --auto --perception gt``'s inputs)."""
    import shutil

    root = tmp_path_factory.mktemp("hyp") / "seq"
    synth_sequence(root, "primitive:box:0.05,0.07,0.1", "open", cameras=3, frames=2, seed=3, width=160, height=120,
                   focal=150.0)  # fmt: skip
    for name in ("segmentation", "keypoints2d"):
        shutil.copytree(root / "gt" / name, root / name)
    return open_sequence(root)


def _hypotheses(seq, hm, obj_rot=None, obj_transl=None):
    """Object-frame hypotheses (wrong, true): our model fitted to the true joints of frame 0,
    mapped into the frame of the object pose ``obj_rot``, ``obj_transl`` (F, 3) (default: the
    true one), and the same grasp turned 90 degrees about the object's z axis."""
    from hoannot.fitting.ik import fit_keypoints

    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    obj_rot = gt.obj_rot if obj_rot is None else obj_rot
    obj_transl = gt.obj_transl if obj_transl is None else obj_transl
    fl = fit_keypoints(hm, gt.hand_joints[:1], iterations=150)
    Rinv = torch.as_tensor(Rotation.from_rotvec(obj_rot[:1]).inv().as_matrix(), dtype=torch.float32)
    tinv = -torch.einsum("fij,fj->fi", Rinv, torch.as_tensor(obj_transl[:1], dtype=torch.float32))
    b = torch.as_tensor(fl["betas"])
    go, tr = change_frame(hm, Rinv, tinv, torch.as_tensor(fl["global_orient"]), torch.as_tensor(fl["transl"]), b)
    R90 = torch.as_tensor(Rotation.from_rotvec([0.0, 0.0, np.pi / 2]).as_matrix(), dtype=torch.float32)
    go90, tr90 = change_frame(hm, R90, torch.zeros(3), go, tr, b)
    cat = lambda *x: np.concatenate([np.asarray(a, np.float32) for a in x])  # noqa: E731
    return gt, (cat(go90, go), cat(fl["hand_pose"][:1], fl["hand_pose"][:1]), cat(tr90, tr), np.stack([fl["betas"]] * 2))


def _mpjpe_mm(hm, p: HandObjectPoses, gt) -> float:
    with torch.no_grad():
        J = hm(*(torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in
                 (p.global_orient, p.hand_pose, p.betas, p.transl))).joints.numpy()  # fmt: skip
    return float(np.linalg.norm(J - gt.hand_joints, axis=-1).mean() * 1000)


def test_the_fit_energy_prefers_the_true_grasp(capture):
    """Of the true grasp and one turned 90 degrees about the object, listed wrong first, the
    short fits' energies choose the true one, which also ends nearer the ground truth."""
    from hoannot.annotate.hypotheses import rank_hypotheses

    hm = HandModel(None)
    gt, hyp = _hypotheses(capture, hm)
    r = rank_hypotheses(capture, hm, load_sequence_object(capture), hyp, np.asarray(capture.frames), gt.obj_rot,
                        gt.obj_transl, iterations=10)  # fmt: skip
    assert r.energies.shape == (2,) and r.chosen == 1, r.energies
    err = [_mpjpe_mm(hm, p, gt) for p in r.fitted]
    assert err[1] < 15.0 < err[0], err
    assert _mpjpe_mm(hm, r.starts[1], gt) < _mpjpe_mm(hm, r.starts[0], gt)


def test_init_writes_the_chosen_hypothesis_and_one_keeps_the_winner(capture, tmp_path, monkeypatch):
    """``init --auto --hypotheses 2``: the search (replaced here by one whose winner is the turned
    grasp, both in the frame of the registered object) hands over both hypotheses; the fit energy's
    choice, the true grasp, short-fitted, is what ``init/poses.npz`` holds and its source names it.
    ``--hypotheses 1`` writes the search's winner unchanged."""
    import shutil

    import hoannot.annotate.hand_search as hs
    from hoannot.annotate.hypotheses import hypothesis_poses
    from hoannot.pipeline import run_init

    hm = HandModel(None)
    frames = np.asarray(capture.frames)
    seen = []  # (gt, hypotheses) of each init

    def fake_search(hand_model, cameras, D, L, obj_rot, obj_transl, *args, **kw):
        seen.append(_hypotheses(capture, hand_model, obj_rot, obj_transl))
        hyp = seen[-1][1]
        w = hypothesis_poses(hand_model, hyp, 0, frames, obj_rot, obj_transl, "")
        return hs.GraspSearch(w.global_orient, w.hand_pose, w.transl, w.betas, np.float32([0.5, 0.6]), 100, hyp)

    monkeypatch.setattr(hs, "search_grasp", fake_search)
    out = {}
    for k in (1, 2):
        root = tmp_path / f"k{k}"
        shutil.copytree(capture.root, root)
        run_init(root, auto=True, perception="gt", geometry=False, hypotheses=k, mano_model_path=None,
                 search_joints=0.0)  # one search: this test is about its hypotheses
        out[k] = HandObjectPoses.load(root / "init" / "poses.npz")
    one, two = out[1], out[2]
    (gt, hyp1), _ = seen
    want1 = hypothesis_poses(hm, hyp1, 0, frames, one.obj_rot, one.obj_transl, "")
    for name in ("global_orient", "hand_pose", "transl", "betas"):
        np.testing.assert_array_equal(getattr(one, name), getattr(want1, name))
    assert "hypothesis" not in one.source and "hypothesis 1 of 2 chosen" in two.source, two.source
    assert _mpjpe_mm(hm, two, gt) < 0.5 * _mpjpe_mm(hm, one, gt)
