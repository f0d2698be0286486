"""hoannot.geometry against independent computations: OpenCV's projectPoints, matrix
inverses, and crops indexed directly."""

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera
from hoannot.geometry import (
    backproject_depth,
    crop_intrinsics,
    crop_nearest,
    invert_rigid,
    pixel_rays,
    project,
    project_world,
    transform,
    unproject,
)


def _camera(seed: int, skew: float = 0.0):
    rng = np.random.default_rng(seed)
    K = np.array([[rng.uniform(300, 700), skew, rng.uniform(150, 170)], [0, rng.uniform(300, 700), rng.uniform(110, 130)],
                  [0, 0, 1.0]])  # fmt: skip
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.5, 3)).as_matrix()
    T[:3, 3] = rng.normal(0, 0.3, 3)
    return K, T


def _points_in_front(T_world_cam, n, seed):
    rng = np.random.default_rng(seed)
    pc = np.stack([rng.uniform(-0.2, 0.2, n), rng.uniform(-0.15, 0.15, n), rng.uniform(0.3, 1.5, n)], -1)
    return pc @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matches_opencv(seed):
    K, T = _camera(seed)
    X = _points_in_front(T, 50, seed)
    T_cw = np.linalg.inv(T)
    ref, _ = cv2.projectPoints(X, cv2.Rodrigues(T_cw[:3, :3])[0], T_cw[:3, 3], K, np.zeros(5))
    np.testing.assert_allclose(project_world(X, K, T), ref[:, 0], atol=1e-9)
    np.testing.assert_allclose(Camera("c", K, 320, 240, T).project(X.reshape(5, 10, 3)), ref[:, 0].reshape(5, 10, 2), atol=1e-9)
    # torch, float32, batched over two cameras by broadcasting
    K2, T2 = _camera(seed + 10)[0], T.copy()
    T2[:3, 3] += 0.02  # the points are in front of this one too
    Ks, Ts = torch.tensor(np.stack([K, K2])), torch.tensor(np.stack([T, T2]))
    uv = project_world(torch.tensor(X, dtype=torch.float32)[None], Ks.float(), Ts.float())
    assert uv.shape == (2, 50, 2) and uv.dtype == torch.float32
    np.testing.assert_allclose(uv[0].numpy(), ref[:, 0], atol=2e-3)
    np.testing.assert_allclose(uv[1].numpy(), project_world(X, K2, T2), atol=2e-3)


def test_invert_rigid_and_transform():
    _, T = _camera(3)
    np.testing.assert_allclose(invert_rigid(T), np.linalg.inv(T), atol=1e-12)
    np.testing.assert_allclose(invert_rigid(torch.tensor(T)).numpy(), np.linalg.inv(T), atol=1e-12)
    X = np.random.default_rng(0).normal(size=(7, 3))
    np.testing.assert_allclose(transform(X, T), (np.c_[X, np.ones(7)] @ T.T)[:, :3], atol=1e-12)
    np.testing.assert_allclose(transform(transform(X, T), invert_rigid(T)), X, atol=1e-12)


@pytest.mark.parametrize("skew", [0.0, 3.5])
def test_backproject_then_project_is_the_pixel(skew):
    K, T = _camera(4, skew)
    depth = np.random.default_rng(1).uniform(0.4, 1.2, (24, 32))
    depth[::3, ::5] = 0  # no value: not back-projected
    mask = np.ones_like(depth, bool)
    mask[:4] = False
    pts, vu = backproject_depth(depth, K, T, mask)
    assert len(pts) == int(((depth > 0) & mask).sum())
    np.testing.assert_allclose(project_world(pts, K, T), vu[:, ::-1], atol=1e-9)
    # the camera depth of each point is the depth map's value
    np.testing.assert_allclose(transform(pts, invert_rigid(T))[:, 2], depth[vu[:, 0], vu[:, 1]], atol=1e-12)
    # (u, v, z) points, torch
    uv = torch.tensor([[3.0, 4.0], [30.5, 20.25]], dtype=torch.float64)
    z = torch.tensor([0.5, 2.0], dtype=torch.float64)
    pc = unproject(uv, z, torch.tensor(K))
    torch.testing.assert_close(project(pc, torch.tensor(K)), uv)
    # pixel rays: origin + depth * ray is the back-projected point
    rays = pixel_rays(K, 32, 24, T)
    v, u = vu[:, 0], vu[:, 1]
    np.testing.assert_allclose(T[:3, 3] + depth[v, u, None] * rays[v, u], pts, atol=1e-12)


def test_project_clamps_depth():
    """Points at or behind the camera get a finite projection and gradient; in front of
    ``min_depth`` nothing changes."""
    K, _ = _camera(5)
    p = torch.tensor([[0.1, 0.1, -0.5], [0.1, -0.05, 0.0], [0.02, 0.03, 0.4]], requires_grad=True)
    uv = project(p, torch.tensor(K, dtype=torch.float32), min_depth=1e-3)
    uv.sum().backward()
    assert torch.isfinite(uv).all() and torch.isfinite(p.grad).all()
    torch.testing.assert_close(uv[2], project(p[2].detach(), torch.tensor(K, dtype=torch.float32)))
    np.testing.assert_allclose(uv[2].detach().numpy(), [K[0, 0] * 0.05 + K[0, 2], K[1, 1] * 0.075 + K[1, 2]], rtol=1e-6)


@pytest.mark.parametrize("box,S", [((10.3, 7.8, 40.0, 40.0), 40), ((5.2, 3.1, 60.0, 60.0), 20), ((-8.4, -6.3, 30.0, 30.0), 45)])
def test_crop_intrinsics_agree_with_the_crop_itself(box, S):
    """A point seen at crop pixel (i, j) through the crop's K lies in the original pixel
    that the nearest-neighbour crop copied to (i, j)."""
    K, T = _camera(6)
    W, H = 64, 48
    index = np.arange(H * W).reshape(H, W) + 1  # 0 is reserved for "outside the image"
    crop = crop_nearest(index, box, S)
    Kc = crop_intrinsics(K, box, (S, S))
    j, i = np.mgrid[0:S, 0:S]
    ray = unproject(np.stack([i, j], -1).astype(np.float64), np.full((S, S), 0.8), Kc)  # crop pixel centres
    uv = project(ray, K)  # where they are in the original image
    u, v = np.floor(uv[..., 0] + 0.5).astype(int), np.floor(uv[..., 1] + 0.5).astype(int)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    assert inside.any()
    np.testing.assert_array_equal(crop[inside], index[v[inside], u[inside]])
    assert (crop[~inside] == 0).all()
    # the documented centre: crop pixel i at original u = x0 + (i + 0.5) w / S
    np.testing.assert_allclose(uv[..., 0], box[0] + (i + 0.5) * box[2] / S, atol=1e-9)
    # a multi-channel image is cropped per pixel the same way
    rgb = np.stack([index % 256, index // 256, index % 7], -1).astype(np.uint8)
    np.testing.assert_array_equal(crop_nearest(rgb, box, S)[..., 0], np.where(crop > 0, crop % 256, 0).astype(np.uint8))
