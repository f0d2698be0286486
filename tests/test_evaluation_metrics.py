"""Hand-computed checks of hoannot.evaluation.metrics (joints, meshes, objects)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from hoannot.io import InputError
from hoannot.evaluation import metrics as M

RNG = np.random.default_rng(0)


def hand(F=4):
    """Random but hand-sized (F, 21, 3) skeletons, metres."""
    return RNG.normal(scale=0.04, size=(F, 21, 3)) + np.array([0.0, 0.0, 0.5])


def similarity(j, s, R, t):
    return s * j @ R.T + t


def test_identity_gives_zero_everywhere():
    j = hand()
    assert M.mpjpe_mm(j, j) == 0
    assert M.rr_mpjpe_mm(j, j) == 0
    assert M.st_mpjpe_mm(j, j) == pytest.approx(0, abs=1e-9)
    assert M.pa_mpjpe_mm(j, j) == pytest.approx(0, abs=1e-9)
    assert M.pck_auc(np.zeros(10)) == 1.0
    np.testing.assert_array_equal(M.per_joint_mpjpe_mm(j, j), np.zeros(21))


def test_translation_offset():
    j = hand()
    off = np.array([0.003, 0.0, 0.004])  # 5 mm
    assert M.mpjpe_mm(j + off, j) == pytest.approx(5.0)
    assert M.rr_mpjpe_mm(j + off, j) == pytest.approx(0, abs=1e-9)
    assert M.st_mpjpe_mm(j + off, j) == pytest.approx(0, abs=1e-9)
    assert M.pa_mpjpe_mm(j + off, j) == pytest.approx(0, abs=1e-9)


def test_single_joint_error_and_per_joint():
    j = hand(2)
    p = j.copy()
    p[:, 7, 1] += 0.021  # 21 mm on one joint of 21
    assert M.mpjpe_mm(p, j) == pytest.approx(1.0)
    pj = M.per_joint_mpjpe_mm(p, j)
    assert pj[7] == pytest.approx(21.0) and np.delete(pj, 7).max() == 0


def test_scale_translation_alignment_undoes_scale_about_wrist():
    j = hand()
    p = (j - j[:, :1]) * 1.3 + j[:, :1] + 0.01
    assert M.mpjpe_mm(p, j) > 5
    assert M.st_mpjpe_mm(p, j) == pytest.approx(0, abs=1e-9)
    # uses the wrist->middle-MCP bone (0->4): stretching only joint 4 changes the scale
    q = j.copy()
    q[:, 4] = j[:, 0] + 2 * (j[:, 4] - j[:, 0])
    aligned = M.align_scale_translation(q, j)
    np.testing.assert_allclose(aligned[:, 4], j[:, 4], atol=1e-12)
    np.testing.assert_allclose(aligned[:, 1:4], j[:, :1] + 0.5 * (j[:, 1:4] - j[:, :1]), atol=1e-12)
    # but a rotation is not undone
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    assert M.st_mpjpe_mm(similarity(j - j[:, :1], 1, R, 0) + j[:, :1], j) > 5


def test_procrustes_recovers_similarity():
    j = hand(1)[0]
    R = Rotation.from_rotvec([0.3, -0.5, 1.1]).as_matrix()
    p = similarity(j, 0.7, R, np.array([0.1, -0.2, 0.3]))
    aligned, s, R_est, t = M.procrustes(p, j)
    np.testing.assert_allclose(aligned, j, atol=1e-12)
    assert s == pytest.approx(1 / 0.7)
    np.testing.assert_allclose(R_est, R.T, atol=1e-12)
    assert M.pa_mpjpe_mm(p, j) == pytest.approx(0, abs=1e-9)


def test_procrustes_reflection_flag():
    j = hand(1)[0]
    mirrored = j * np.array([-1.0, 1.0, 1.0])
    assert M.pa_mpjpe_mm(mirrored, j, allow_reflection=True) == pytest.approx(0, abs=1e-9)
    assert M.pa_mpjpe_mm(mirrored, j) > 1.0
    assert np.linalg.det(M.procrustes(mirrored, j)[2]) == pytest.approx(1.0)


def test_pa_mpjpe_of_noise_is_below_raw():
    j = hand(8)
    p = j + RNG.normal(scale=0.01, size=j.shape) + 0.02
    assert M.pa_mpjpe_mm(p, j) < M.rr_mpjpe_mm(p, j) < M.mpjpe_mm(p, j)


def test_pck_and_auc_by_hand():
    # errors 10 mm and 30 mm: PCK = 0 below 10, 0.5 in [10, 30), 1 from 30 mm on
    th, pck = M.pck_curve(np.array([0.010, 0.030]))
    assert len(th) == 100 and th[0] == 0 and th[-1] == pytest.approx(0.05)
    assert pck[th < 0.010 - 1e-12].max() == 0 and pck[(th > 0.0101) & (th < 0.0299)].min() == 0.5
    assert pck[th >= 0.03].min() == 1.0
    # continuous-area value: (0.5*20 + 1*20)/50 = 0.6; 100-point trapezoid within one step
    assert M.pck_auc(np.array([0.010, 0.030])) == pytest.approx(0.6, abs=0.5 / 99 + 1e-9)
    assert M.pck_auc(np.array([0.2])) == 0.0
    # exact trapezoid on a 3-point curve
    assert M.auc(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0])) == pytest.approx(0.75)


def test_success_rate_uses_worst_joint():
    j = hand(4)
    p = j.copy()
    p[0, 3, 0] += 0.050  # frame 0: one joint 50 mm off
    p[1, :, 0] += 0.010  # frame 1: all joints 10 mm off
    th, rate = M.success_rate_curve(p, j, max_threshold=0.08, n=81)  # 1 mm steps
    assert rate[0] == 0.5  # frames 2 and 3 are perfect
    assert rate[9] == 0.5 and rate[11] == 0.75 and rate[49] == 0.75 and rate[51] == 1.0


def test_f_score_and_mesh_error():
    g = trimesh.creation.icosphere(subdivisions=2, radius=0.05).vertices
    assert M.f_score(g, g, 0.005) == (1.0, 1.0, 1.0)
    # 10 mm shift: nothing within 5 mm... (neighbouring vertices ~ 8 mm apart) but all within 15 mm
    f5, _, _ = M.f_score(g + [0.01, 0, 0], g, 0.005)
    f15, p15, r15 = M.f_score(g + [0.01, 0, 0], g, 0.015)
    assert f5 < 0.5 and f15 == p15 == r15 == 1.0
    # different topology: half of the prediction is far away -> precision 0.5, recall ~ 1
    far = np.concatenate([g, g + 1.0])
    f, p, r = M.f_score(far, g, 0.005)
    assert p == 0.5 and r == 1.0 and f == pytest.approx(2 / 3)
    # mesh error: Procrustes-aligned removes a similarity, not a deformation
    R = Rotation.from_rotvec([0.2, 0.1, 0.0]).as_matrix()
    assert M.mesh_error_mm(similarity(g, 1.2, R, 0.3), g) == pytest.approx(0, abs=1e-9)
    assert M.mesh_error_mm(g + [0.002, 0, 0], g, align=False) == pytest.approx(2.0)


# ------------------------------------------------------------------------------ objects


def test_add_known_offset_and_rotation():
    pts = np.array([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, -0.1, 0]])
    I = np.eye(3)
    assert M.add(I, np.zeros(3), I, np.zeros(3), pts) == 0
    assert M.add(I, np.array([0, 0, 0.02]), I, np.zeros(3), pts) == pytest.approx(0.02)
    # 90 deg about z maps the cross onto itself: ADD = |chord| = 0.1*sqrt(2), ADD-S = 0
    Rz = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    assert M.add(Rz, np.zeros(3), I, np.zeros(3), pts) == pytest.approx(0.1 * np.sqrt(2))
    assert M.adds(Rz, np.zeros(3), I, np.zeros(3), pts) == pytest.approx(0, abs=1e-12)
    # batched
    R = np.stack([I, Rz])
    t = np.zeros((2, 3))
    np.testing.assert_allclose(M.add(R, t, np.stack([I, I]), t, pts), [0, 0.1 * np.sqrt(2)])


def test_adds_not_above_add_for_cylinder():
    cyl = trimesh.creation.cylinder(radius=0.03, height=0.1, sections=64)
    pts = trimesh.sample.sample_surface(cyl, 500, seed=1)[0]
    Rs = Rotation.random(10, random_state=2).as_matrix()
    ts = RNG.normal(scale=0.01, size=(10, 3))
    Rg = np.repeat(np.eye(3)[None], 10, 0)
    tg = np.zeros((10, 3))
    a = M.add(Rs, ts, Rg, tg, pts)
    s = M.adds(Rs, ts, Rg, tg, pts)
    assert np.all(s <= a + 1e-12) and np.all(s < a)
    # rotation about the axis by a multiple of 360/64 deg: ADD-S = 0, ADD large
    Rz = Rotation.from_euler("z", 45, degrees=True).as_matrix()
    assert M.adds(Rz, np.zeros(3), np.eye(3), np.zeros(3), cyl.vertices) < 1e-9
    assert M.add(Rz, np.zeros(3), np.eye(3), np.zeros(3), cyl.vertices) > 0.015


def test_diameter_pass_rate_auc():
    box = trimesh.creation.box(extents=[0.1, 0.2, 0.2])
    assert M.object_diameter(box.vertices) == pytest.approx(0.3)
    assert M.pass_rate(np.array([0.01, 0.029, 0.031, 0.5]), 0.3) == 0.5
    e = np.array([0.0, 0.05, 0.2])
    assert M.add_auc(e) == pytest.approx((1 + 0.5 + 0) / 3)
    th = np.linspace(0, 0.1, 100001)  # numerical check of the closed form
    acc = (e[:, None] < th).mean(0)
    assert M.add_auc(e) == pytest.approx(np.sum((acc[1:] + acc[:-1]) / 2 * np.diff(th)) / 0.1, abs=1e-4)


def test_mssd_symmetries():
    box = trimesh.creation.box(extents=[0.1, 0.1, 0.2])
    v = box.vertices
    I = np.eye(3)
    assert M.mssd(I, np.array([0.01, 0, 0]), I, np.zeros(3), v) == pytest.approx(0.01)
    Rz = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    # without symmetries: max vertex displacement of a 90 deg turn = |corner chord| = 0.1
    assert M.mssd(Rz, np.zeros(3), I, np.zeros(3), v) == pytest.approx(0.1)
    S = np.eye(4)[None].repeat(2, 0)
    S[1, :3, :3] = Rz
    assert M.mssd(Rz, np.zeros(3), I, np.zeros(3), v, symmetries=S) == pytest.approx(0, abs=1e-12)
    assert M.mssd(Rz, np.zeros(3), I, np.zeros(3), v) >= M.adds(Rz, np.zeros(3), I, np.zeros(3), v)


def test_bad_shapes_raise():
    with pytest.raises(InputError):
        M.mpjpe_mm(np.zeros((2, 21, 3)), np.zeros((2, 20, 3)))
    with pytest.raises(InputError):
        M.add(np.eye(3), np.zeros(2), np.eye(3), np.zeros(3), np.zeros((4, 3)))
    with pytest.raises(InputError):
        M.f_score(np.zeros((0, 3)), np.zeros((4, 3)), 0.005)
