"""Joint-order maps and OpenCV/OpenGL flips (hoannot.datasets.conventions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoannot.datasets import conventions as C
from hoannot.io import InputError

# Independent definition of both orders by name (formats.md / the HO-3D joint-order figure).
HO3D = C.HO3D_JOINT_NAMES
OPENPOSE = ("wrist",) + tuple(
    f"{finger}_{part}"
    for finger, parts in [
        ("thumb", ("cmc", "mcp", "ip", "tip")),
        ("index", ("mcp", "pip", "dip", "tip")),
        ("middle", ("mcp", "pip", "dip", "tip")),
        ("ring", ("mcp", "pip", "dip", "tip")),
        ("pinky", ("mcp", "pip", "dip", "tip")),
    ]
    for part in parts
)


def test_maps_agree_with_joint_names():
    assert len(set(HO3D)) == 21 and len(set(OPENPOSE)) == 21
    assert [OPENPOSE[i] for i in C.OPENPOSE_TO_HO3D] == list(HO3D)
    assert [HO3D[i] for i in C.HO3D_TO_OPENPOSE] == list(OPENPOSE)


def test_round_trip_numpy_and_torch():
    j = np.random.default_rng(0).normal(size=(4, 2, 21, 3))
    np.testing.assert_array_equal(C.openpose_to_ho3d(C.ho3d_to_openpose(j)), j)
    np.testing.assert_array_equal(C.ho3d_to_openpose(C.openpose_to_ho3d(j)), j)
    assert sorted(C.OPENPOSE_TO_HO3D) == list(range(21))
    jt = torch.from_numpy(j).float()
    out = C.ho3d_to_openpose(jt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), C.ho3d_to_openpose(j), rtol=1e-6)
    torch.testing.assert_close(C.openpose_to_ho3d(out), jt)
    # 2D keypoints too
    assert C.ho3d_to_openpose(np.zeros((21, 2))).shape == (21, 2)


def test_reorder_moves_named_joint():
    j = np.zeros((21, 3))
    j[HO3D.index("thumb_tip")] = [1, 2, 3]
    assert np.all(C.ho3d_to_openpose(j)[4] == [1, 2, 3])  # OpenPose 4 = thumb tip


def test_bad_joint_count_raises():
    with pytest.raises(InputError):
        C.ho3d_to_openpose(np.zeros((16, 3)))


def test_mano16_plus_tips():
    j16 = np.arange(48.0).reshape(16, 3)
    tips = -np.arange(15.0).reshape(5, 3)
    out = C.mano16_plus_tips_to_ho3d(j16, tips)
    assert out.shape == (21, 3)
    np.testing.assert_array_equal(out[HO3D.index("ring_tip")], tips[3])
    t = C.mano16_plus_tips_to_ho3d(torch.from_numpy(j16)[None], torch.from_numpy(tips)[None])
    assert t.shape == (1, 21, 3)
    with pytest.raises(InputError):
        C.mano16_plus_tips_to_ho3d(j16[:15], tips)


def test_points_flip_is_involution_and_matches_matrix():
    p = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    q = C.opencv_to_opengl_points(p)
    assert q.dtype == np.float32
    np.testing.assert_allclose(q, p @ C.OPENCV_TO_OPENGL.T, rtol=1e-6)
    np.testing.assert_allclose(C.opengl_to_opencv_points(q), p)
    # a point in front of an OpenCV camera (z>0) is at negative z for OpenGL, and "down" becomes "up"
    np.testing.assert_allclose(C.opencv_to_opengl_points(np.array([0.1, 0.2, 1.0])), [0.1, -0.2, -1.0])
    pt = torch.from_numpy(p)
    np.testing.assert_allclose(C.opencv_to_opengl_points(pt).numpy(), q)


def test_pose_conversion_keeps_points_consistent():
    rng = np.random.default_rng(2)
    R = Rotation.random(5, random_state=3).as_matrix()
    t = rng.normal(size=(5, 3))
    x_obj = rng.normal(size=(7, 3))
    Rg, tg = C.opencv_to_opengl_pose(R, t)
    np.testing.assert_allclose(np.linalg.det(Rg), 1.0, atol=1e-12)  # still a rotation
    x_cv = np.einsum("fij,nj->fni", R, x_obj) + t[:, None]
    x_gl = np.einsum("fij,nj->fni", Rg, x_obj) + tg[:, None]
    np.testing.assert_allclose(x_gl, C.opencv_to_opengl_points(x_cv), atol=1e-12)
    R2, t2 = C.opengl_to_opencv_pose(Rg, tg)
    np.testing.assert_allclose(R2, R)
    np.testing.assert_allclose(t2, t)
    Rt, tt = C.opencv_to_opengl_pose(torch.from_numpy(R), torch.from_numpy(t))
    np.testing.assert_allclose(Rt.numpy(), Rg)
    with pytest.raises(InputError):
        C.opencv_to_opengl_pose(np.eye(3), np.zeros(2))


def test_look_at_puts_world_up_at_the_top_of_the_image():
    """An OpenCV camera looks along +z with image y down: a point above the target (world
    +z, the ``up`` given) must project above the image centre, one to the camera's right to
    the right of it, and the target itself at the centre."""
    from hoannot.camera import look_at

    T = look_at(np.array([0.5, 0.0, 0.2]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    T_cw = np.linalg.inv(T)

    def pixel(p):
        q = T_cw[:3, :3] @ p + T_cw[:3, 3]
        return 100 * q[:2] / q[2]  # focal 100, centre 0

    assert np.allclose(pixel(np.zeros(3)), 0, atol=1e-9)
    assert pixel(np.array([0.0, 0.0, 0.05]))[1] < -1  # above -> smaller v
    # looking along -x from +x with z up, the camera's right is world +y (right = forward x up)
    assert pixel(np.array([0.0, 0.05, 0.0]))[0] > 1
    assert np.isclose(np.linalg.det(T[:3, :3]), 1.0)
