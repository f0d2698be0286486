"""Per-frame error estimate (hoannot.fitting.quality): the Laplace std, the model and rigid
Jacobians and the temporal jump against independent computations; the calibration file; and
on a tiny fitted capture, a frame left wrong gets the largest estimate and is flagged, and
the estimate lands in fit/quality.json and labels.npz."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pytorch3d.transforms import axis_angle_to_matrix

from hoannot.io import InputError
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.fitting import quality as Q
from hoannot.fitting.config import load_fit_config
from hoannot.fitting.parameters import PoseParameters
from hoannot.models.hand import HandModel
from hoannot.pipeline import run_export, run_fit, run_init, synth_sequence


def test_laplace_std_is_the_spread_of_least_squares_solutions_of_a_linear_model():
    """For residuals r = A theta - b with noise of variance 1/w and a Gaussian prior, the
    Laplace covariance is exact: compare with the empirical spread of the MAP estimate over
    noise draws (numpy least squares)."""
    rng = np.random.default_rng(0)
    N, P, M = 40, 5, 3
    A = rng.normal(size=(N, P))
    w = rng.uniform(0.5, 4.0, N)
    prior = np.full(P, 0.3)
    G = rng.normal(size=(M, 3, P))
    theta = rng.normal(size=P)
    sols = []
    for _ in range(4000):
        b = A @ theta + rng.normal(size=N) / np.sqrt(w)
        prior_draw = rng.normal(size=P) / np.sqrt(prior)  # prior centred on theta: theta ~ N(theta, 1/prior)
        Aa = np.vstack([A * np.sqrt(w)[:, None], np.diag(np.sqrt(prior))])
        ba = np.r_[b * np.sqrt(w), np.sqrt(prior) * (theta + prior_draw)]
        sols.append(np.linalg.lstsq(Aa, ba, rcond=None)[0])
    out = np.einsum("mip,sp->smi", G, np.asarray(sols))
    empirical = np.sqrt(out.var(0).sum() / M)
    got = Q.gauss_newton_std(torch.tensor(A[None]), torch.tensor(w[None]), torch.tensor(prior), torch.tensor(G[None]))
    assert float(got[0]) == pytest.approx(empirical, rel=0.05)


def test_fewer_residuals_give_a_larger_std_and_none_the_priors():
    rng = np.random.default_rng(1)
    A = torch.tensor(rng.normal(size=(1, 30, 4)))
    G = torch.eye(3, 4, dtype=torch.float64)[None, None]  # the first 3 parameters
    prior = torch.full((4,), 4.0, dtype=torch.float64)
    full = Q.gauss_newton_std(A, torch.ones(1, 30, dtype=torch.float64), prior, G)
    few = Q.gauss_newton_std(A, torch.cat([torch.ones(1, 5), torch.zeros(1, 25)], 1).double(), prior, G)
    none = Q.gauss_newton_std(A, torch.zeros(1, 30, dtype=torch.float64), prior, G)
    assert full < few < none
    assert float(none[0]) == pytest.approx(np.sqrt(3 * 0.25))  # prior only: trace of 3 x 1/4


def test_hand_jacobians_match_autograd():
    hm = HandModel(None)
    rng = np.random.default_rng(2)
    poses = HandObjectPoses(frames=np.arange(2), global_orient=rng.normal(0, 0.5, (2, 3)).astype(np.float32),
                            hand_pose=rng.normal(0, 0.2, (2, 45)).astype(np.float32), betas=np.zeros(10, np.float32),
                            transl=rng.normal(0, 0.1, (2, 3)).astype(np.float32), obj_rot=np.zeros((2, 3), np.float32),
                            obj_transl=np.zeros((2, 3), np.float32))  # fmt: skip
    params = PoseParameters(poses, hm.num_betas)
    _, dJ = Q._hand_jacobians(params, hm)
    b = 1
    theta = torch.cat([params.global_orient[b], params.hand_pose[b], params.transl[b]]).detach()
    f = lambda th: hm(th[None, :3], th[None, 3:48], params.betas.detach()[None], th[None, 48:]).joints[0]  # noqa: E731
    ref = torch.autograd.functional.jacobian(f, theta)  # (21, 3, 51)
    assert torch.allclose(dJ[b], ref, atol=2e-3 * ref.abs().max())


def test_rigid_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    R0 = axis_angle_to_matrix(torch.tensor(rng.normal(size=(1, 3))))
    t = torch.tensor(rng.normal(size=(1, 3)))
    x = torch.tensor(rng.normal(size=(5, 3)))

    def world(p):  # p = (w, t): exp(w) R0 x + t0 + dt
        return (axis_angle_to_matrix(p[None, :3]) @ R0)[0] @ x.T + (t[0] + p[3:])[:, None]

    ref = torch.autograd.functional.jacobian(lambda p: world(p).T, torch.zeros(6, dtype=torch.float64))
    got = Q._rigid_jacobian((x @ R0[0].T + t)[None], t)[0]
    assert torch.allclose(got, ref, atol=1e-9)


def test_temporal_jump_is_zero_for_linear_motion_and_finds_a_displaced_frame():
    x = np.linspace(0, 0.1, 6)[:, None, None] * np.ones((6, 4, 3))
    assert np.allclose(Q.temporal_jump_mm(x), 0, atol=1e-6)
    x[3] += 0.02
    j = Q.temporal_jump_mm(x)
    assert int(np.argmax(j)) == 3 and j[3] == pytest.approx(20 * np.sqrt(3), rel=1e-4)
    # with two frames on each side, every other frame has a prediction that does not use frame 3
    x = np.linspace(0, 0.1, 8)[:, None, None] * np.ones((8, 4, 3))
    x[3] += 0.02
    j = Q.temporal_jump_mm(x)
    assert j[3] == pytest.approx(20 * np.sqrt(3), rel=1e-4) and np.allclose(np.delete(j, 3), 0, atol=1e-6)


def test_without_a_calibration_there_is_no_estimate_and_the_hard_flags(tmp_path):
    q = {"iou_hand": np.array([0.9, 0.2]), "iou_object": np.array([0.9, 0.9]), "depth_residual_mm": np.array([2.0, 2.0])}
    out = Q.apply_calibration(q, None)
    assert "hand_error_est_mm" not in out and not out["error_est_calibrated"].any()
    assert out["flag"].tolist() == [False, True]
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"hand_weights": [1, 2]}))
    with pytest.raises(InputError, match="cal.json: malformed"):
        Q.load_calibration(bad)
    with pytest.raises(InputError, match="not found"):
        Q.load_calibration(tmp_path / "none.json")
    old = Q.Calibration([0.0] * 3, [0.0] * (1 + len(Q.OBJECT_FEATURES)), 8.0, 2.0, hand_features=["a", "b"])
    old.save(bad)
    with pytest.raises(InputError, match="rerun benchmarks/qa.py --calibrate"):  # fitted by another version
        Q.load_calibration(bad)


def test_the_threshold_sits_in_the_log_middle_of_the_gap_within_the_false_flag_allowance():
    est = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 30.0])
    true = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 15, 15.0])  # 9 good frames, 2 bad
    t = Q.pick_threshold(est, true, 10.0, 6.0, 0.15)  # one good frame may be flagged: lo = 8, hi = 20
    assert t == pytest.approx(np.sqrt(8 * 20)) and ((est > t) & (true < 6)).sum() == 0 and (est > t)[true > 10].all()
    overlap = np.array([1, 2, 3, 12, 5, 6.0])
    t = Q.pick_threshold(overlap, np.array([1, 1, 1, 1, 15, 15.0]), 10.0, 6.0, 0.0)  # no gap: the false-flag limit wins
    assert 12 < t < 12.01


def test_the_shipped_calibration_loads_with_its_provenance():
    cal = Q.load_calibration()
    if cal is None:
        pytest.skip("no calibration shipped (run benchmarks/qa.py --calibrate)")
    assert {"captures", "git_commit", "date"} <= set(cal.provenance)
    assert all(w >= 0 for w in cal.hand_weights[1:] + cal.object_weights[1:])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny capture (our hand, a box; 2 cameras, 5 frames) with frame 2's initial hand
    moved 5 cm, fitted with few iterations so that it stays wrong."""
    root = tmp_path_factory.mktemp("qa") / "seq"
    synth_sequence(root, "primitive:box:0.05,0.07,0.1", "open", cameras=2, frames=5, seed=2, noise=True, width=160,
                   height=120, focal=150.0)  # fmt: skip
    run_init(root, from_gt=True, seed=2, noise_deg=3.0, noise_mm=3.0, pose_noise_rad=0.05)
    p = HandObjectPoses.load(root / "init" / "poses.npz")
    p.transl[2] += np.array([0.05, 0.0, 0.0], np.float32)
    p.save(root / "init" / "poses.npz")
    result = run_fit(root, load_fit_config(None, iterations=5, crop_size=48, num_points=300), progress=False)
    run_export(root, "fit")
    return root, result


def test_a_frame_left_wrong_gets_the_largest_estimate_and_is_flagged(fitted):
    root, result = fitted
    q = result.quality
    if not q["error_est_calibrated"].all():
        pytest.skip("no calibration shipped")
    gt = GroundTruth.load(root / "gt" / "poses.npz")
    true = np.linalg.norm(np.load(root / "labels" / "labels.npz")["hand_joints"] - gt.hand_joints, axis=-1).mean(-1)
    assert int(np.argmax(true)) == 2  # the frame really stayed wrong
    est = q["hand_error_est_mm"]
    assert int(np.argmax(est)) == 2 and est[2] > 1.5 * np.median(est)
    assert q["flag"][2]


def test_the_estimate_is_written_to_quality_json_and_labels_npz(fitted):
    root, result = fitted
    saved = json.loads((root / "fit" / "quality.json").read_text())
    labels = np.load(root / "labels" / "labels.npz")
    for k in ("hand_std_mm", "object_std_mm", "hand_jump_mm", "error_est_calibrated", "flag") + (
        ("hand_error_est_mm", "object_error_est_mm") if result.quality["error_est_calibrated"].all() else ()
    ):
        assert len(saved[k]) == 5
        np.testing.assert_allclose(labels[f"quality_{k}"], np.asarray(saved[k], labels[f"quality_{k}"].dtype))
    # the moved frame's hand is the least constrained or the farthest from its points
    assert np.argmax(saved["hand_points_rms_mm"]) == 2 or np.argmax(saved["hand_jump_mm"]) == 2


def test_2d_joints_add_information_to_the_laplace_std(fitted):
    """With the (ground-truth) 2D joints loaded as well, every frame's hand std shrinks."""
    from hoannot.datasets.sequence import open_sequence
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.fitting.objective import Objective

    root, result = fitted
    seq = open_sequence(root)
    cfg = load_fit_config(None, iterations=5, crop_size=48, num_points=300)
    poses = HandObjectPoses.load(root / "fit" / "poses.npz", seq.frames)
    hm, obj = load_hand_model(seq), load_sequence_object(seq, None, cfg.object_max_faces)
    without = Q.sequence_quality(seq, poses, Objective.make(seq, hm, obj, cfg.model_copy(update={"keypoints": "none"})),
                                 calibration=None)  # fmt: skip
    with_2d = Q.sequence_quality(seq, poses, Objective.make(seq, hm, obj, cfg.model_copy(update={"keypoints": "gt"})),
                                 calibration=None)  # fmt: skip
    assert (with_2d["hand_std_mm"] < without["hand_std_mm"]).all()
    np.testing.assert_allclose(with_2d["object_std_mm"], without["object_std_mm"], rtol=1e-5)
