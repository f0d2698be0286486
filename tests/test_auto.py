"""Annotation without ground truth: geometric segmentation and the grasp search, against ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoannot.annotate.foreground import ForegroundConfig, background_planes, segment_sequence
from hoannot.io import read_image
from hoannot.datasets.poses import GroundTruth
from hoannot.datasets.sequence import open_sequence
from hoannot.pipeline import synth_sequence
from hoannot.datasets.loaders import load_sequence_object


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """The open hand holding a box over a textured table with clutter, 3 cameras, 2 frames."""
    root = tmp_path_factory.mktemp("auto") / "table"
    synth_sequence(root, "primitive:box:0.05,0.07,0.1", "open", cameras=3, frames=2, seed=3, width=160, height=120,
                   focal=150.0, scene="table", lighting=True)  # fmt: skip
    return open_sequence(root)


def _gt(seq, cam, frame):
    return read_image(seq.root / "gt" / "segmentation" / cam / f"{frame:06d}.png")


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_a_wall_is_background_and_a_box_face_is_not():
    rng = np.random.default_rng(0)
    wall = np.c_[rng.uniform(-0.4, 0.4, (6000, 2)), 0.6 + rng.normal(0, 0.001, 6000)]
    face = np.c_[rng.uniform([-0.1, -0.08], [0.1, 0.08], (2500, 2)), 0.3 + rng.normal(0, 0.001, 2500)]  # 20 x 16 cm
    planes = background_planes(np.r_[wall, face], ForegroundConfig(min_fraction=0.05))
    assert len(planes) == 1
    n, d = planes[0][:3], planes[0][3]
    assert abs(abs(n[2]) - 1) < 1e-3 and abs(abs(d) - 0.6) < 0.005


def test_geometry_labels_the_table_and_clutter_background(table):
    """A 'network' that calls the whole backdrop hand (as the shipped one does on textured
    scenes) and the object object: the geometric labels still match the ground truth."""
    net = {}
    for c in table.camera_names:
        for f in table.frames:
            g = _gt(table, c, f)
            net[c, f] = np.where(g == 2, 2, 1).astype(np.uint8)  # everything that is not object: "hand"
    labels, rot, transl, summary = segment_sequence(table, load_sequence_object(table), net)
    assert "background planes" in summary
    ious_h, ious_o, net_h = [], [], []
    for (c, f), lab in labels.items():
        g = _gt(table, c, f)
        ious_h.append(_iou(lab == 1, g == 1))
        ious_o.append(_iou(lab == 2, g == 2))
        net_h.append(_iou(net[c, f] == 1, g == 1))
    assert min(ious_h) > 0.75 and min(ious_o) > 0.8, (ious_h, ious_o)
    assert max(net_h) < 0.2  # the network's hand was wrong everywhere
    gt = GroundTruth.load(table.root / "gt" / "poses.npz")
    assert np.linalg.norm(transl - gt.obj_transl, axis=-1).max() < 0.01


def _search_inputs(seq):
    """Ground truth, our hand model, depth (F, C, H, W) m, ground-truth labels and the object."""
    from hoannot.models.hand import HandModel

    D = np.stack([[seq.read_depth(c, f) for c in seq.camera_names] for f in seq.frames])
    L = np.stack([[_gt(seq, c, f) for c in seq.camera_names] for f in seq.frames])
    return GroundTruth.load(seq.root / "gt" / "poses.npz"), HandModel(None), D, L, load_sequence_object(seq)


def test_grasp_search_finds_the_hand_without_joints(table):
    """From the ground-truth masks and the registered object alone (no 2D joints, no pose),
    the search lands the hand near the truth, and much nearer than its own starts do."""
    from hoannot.annotate.hand_search import search_grasp

    seq = table
    gt, hm, D, L, obj = _search_inputs(seq)

    def mpjpe(r):
        with torch.no_grad():
            J = hm(torch.as_tensor(r.global_orient), torch.as_tensor(r.hand_pose), torch.as_tensor(r.betas),
                   torch.as_tensor(r.transl)).joints.numpy()  # fmt: skip
        return np.linalg.norm(J - gt.hand_joints, axis=-1).mean() * 1000

    quick = dict(n_points=1000, keep_best=3, curls=(0.0, 0.8))  # fewer hypotheses than the default, for time
    found = search_grasp(hm, seq.cameras, D, L, gt.obj_rot, gt.obj_transl, obj.verts, obj.faces, **quick)
    starts = search_grasp(hm, seq.cameras, D, L, gt.obj_rot, gt.obj_transl, obj.verts, obj.faces, iterations=0, **quick)
    assert mpjpe(found) < 20.0 and mpjpe(found) < 0.5 * mpjpe(starts), (mpjpe(found), mpjpe(starts))
    assert found.energy[0] < starts.energy[0]


def test_grasp_search_extra_starts_come_back_ranked(table):
    """A hypothesis added with ``extra_starts`` is descended with the others and reported at
    its rank: the true grasp (object frame) beats a hand placed a metre from the object."""
    from scipy.spatial.transform import Rotation

    from hoannot.annotate.hand_search import search_grasp
    from hoannot.fitting.ik import fit_keypoints
    from hoannot.models.hand import change_frame

    seq = table
    gt, hm, D, L, obj = _search_inputs(seq)
    fl = fit_keypoints(hm, gt.hand_joints[:1], iterations=150)
    Rinv = torch.as_tensor(Rotation.from_rotvec(gt.obj_rot[:1]).inv().as_matrix(), dtype=torch.float32)
    tinv = -torch.einsum("fij,fj->fi", Rinv, torch.as_tensor(gt.obj_transl[:1], dtype=torch.float32))
    go, tr = change_frame(hm, Rinv, tinv, torch.as_tensor(fl["global_orient"]), torch.as_tensor(fl["transl"]),
                          torch.as_tensor(fl["betas"]))  # fmt: skip
    far = tr.numpy() + np.float32([1.0, 0.0, 0.0])
    extra = (np.concatenate([go.numpy()] * 2), np.concatenate([fl["hand_pose"]] * 2), np.concatenate([tr.numpy(), far]),
             np.stack([fl["betas"]] * 2))  # fmt: skip
    s = search_grasp(hm, seq.cameras, D, L, gt.obj_rot, gt.obj_transl, obj.verts, obj.faces, n_points=500,
                     iterations=15, keep_best=2, curls=(0.0,), extra_starts=extra)  # fmt: skip
    assert len(s.energy) == 2 + 2 and np.all(np.diff(s.energy) >= 0)
    assert s.extra_rank[1] == len(s.energy) - 1  # a metre away: last
    assert s.extra_rank[0] < s.extra_rank[1]
    # the returned hypothesis at the true grasp's rank is still near where it started
    assert np.abs(s.hypotheses[2][s.extra_rank[0]] - tr.numpy()[0]).max() < 0.03


def test_init_auto_end_to_end_with_the_shipped_models(table, tmp_path):
    """``init --auto`` on a cluttered table with the shipped models and nothing from gt/:
    the object lands within millimetres and the hand within a couple of centimetres, and
    the network's own labels are kept beside the geometric ones."""
    import shutil

    from hoannot.datasets.poses import HandObjectPoses
    from hoannot.models.hand import HandModel
    from hoannot.pipeline import run_init

    root = tmp_path / "seq"
    shutil.copytree(table.root, root, ignore=lambda d, e: [x for x in e if d == str(table.root) and x == "gt"])
    _, summary = run_init(root, auto=True, perception="model")
    assert "geometric segmentation" in summary and "grasp search" in summary
    assert len(list((root / "perception" / "network_segmentation").glob("*/*.png"))) == 3 * 2
    init = HandObjectPoses.load(root / "init" / "poses.npz")
    gt = GroundTruth.load(table.root / "gt" / "poses.npz")
    hm = HandModel(None)
    with torch.no_grad():
        J = hm(*(torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in
                 (init.global_orient, init.hand_pose, init.betas, init.transl))).joints.numpy()  # fmt: skip
    assert np.linalg.norm(J - gt.hand_joints, axis=-1).mean() < 0.025
    assert np.linalg.norm(init.obj_transl - gt.obj_transl, axis=-1).max() < 0.01
    # the two searches (without and with the 2D joints) were compared by the estimated hand error
    assert "chosen by the estimated hand error" in summary

    # that estimate ranks starts as their true error does: the hand moved 3 cm off reads worse
    from dataclasses import replace

    from hoannot.annotate.hypotheses import estimated_hand_error
    from hoannot.datasets.loaders import load_hand_model

    seq = open_sequence(root)
    moved = replace(init, transl=np.asarray(init.transl) + np.float32([0.03, 0.0, 0.0]))
    hand_model, obj = load_hand_model(seq, None), load_sequence_object(seq, None)
    est = [estimated_hand_error(seq, hand_model, obj, p) for p in (init, moved)]
    assert all(e.shape == (2,) and np.isfinite(e).all() for e in est)
    assert est[1].mean() > est[0].mean() + 5.0, est
