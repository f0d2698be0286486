"""Pinhole camera geometry: the one place that projects, back-projects, moves points between
frames and adjusts intrinsics to crops.

Conventions (as everywhere in hoannot):

* camera frame OpenCV: x right, y down, z forward; metres;
* pixel coordinates ``(u, v)``: u along the image width (column), v along the height (row),
  pixel centres at integers, so pixel ``u`` covers the continuous interval ``[u - 0.5, u + 0.5)``;
* ``K`` (3, 3) intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels (``s``: skew,
  0 for every camera we know; kept so that a crop-resampled ``K`` stays exact);
* ``T_world_cam`` (4, 4) maps camera coordinates to world coordinates; its inverse
  (:func:`invert_rigid`) is ``T_cam_world``.

The point functions (transforms, projection, unprojection) take numpy arrays or torch
tensors (one code for both; the output has the inputs' type, and their dtype when they share
one) and broadcast leading dimensions like kornia's ``project_points``: ``points (*, 3)``
with ``K (*, 3, 3)``; the depth-map, ray and crop functions are numpy. To project N points with each of
C cameras pass ``points (C, N, 3)`` (or ``(1, N, 3)``) and ``K[:, None]`` of shape (C, 1, 3, 3).
Distortion is not modelled (images are undistorted).
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def _stack(parts: list, axis: int = -1) -> Array:
    return torch.stack(parts, axis) if isinstance(parts[0], torch.Tensor) else np.stack(parts, axis)


def _swap(m: Array) -> Array:
    """Transpose of the last two axes."""
    return m.transpose(-1, -2) if isinstance(m, torch.Tensor) else np.swapaxes(m, -1, -2)


# ---------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------
def invert_rigid(T: Array) -> Array:
    """Inverse of rigid transforms: ``T_cam_world`` from ``T_world_cam`` and back.

    Args:
        T: (*, 4, 4) rigid transforms (rotation R, translation t, metres).
    Returns:
        (*, 4, 4) of the same type and dtype: ``[[R^T, -R^T t], [0, 1]]``.
    """
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = _swap(R)
    if isinstance(T, torch.Tensor):
        out = torch.zeros_like(T)
    else:
        out = np.zeros(np.shape(T), np.result_type(T, np.float64))
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ t[..., None])[..., 0]
    out[..., 3, 3] = 1
    return out


def transform_points(points: Array, R: Array, t: Array) -> Array:
    """Rigidly move points: ``R x + t`` (e.g. world -> camera with ``T_cam_world``).

    Args:
        points: (*, N, 3) metres.
        R: (*, 3, 3) rotation; t: (*, 3) translation, metres; ``*`` broadcasts against the
            points' leading dimensions (one transform for all N points of a row).
    Returns:
        (*, N, 3) metres.
    """
    if isinstance(points, torch.Tensor):
        return torch.einsum("...ij,...nj->...ni", R, points) + t[..., None, :]
    return points @ _swap(R) + t[..., None, :]


def transform(points: Array, T: Array) -> Array:
    """:func:`transform_points` with a (*, 4, 4) rigid transform ``T``, e.g. ``T_world_cam``."""
    return transform_points(points, T[..., :3, :3], T[..., :3, 3])


# ---------------------------------------------------------------------------------------
# pinhole projection
# ---------------------------------------------------------------------------------------
def normalized_to_pixels(xyw: Array, K: Array) -> Array:
    """Rays ``(x, y, w)`` (*, 3) -> pixels ``K[:2] (x, y, w)`` (*, 2).

    ``u = fx x + s y + cx w``, ``v = fy y + cy w`` with ``K`` (*, 3, 3) broadcasting on ``*``;
    ``w = 1`` for normalised image coordinates ``(x / z, y / z, 1)``. On tensors this is the
    einsum the renderer has always used, so fits (values and gradients) are unchanged by it.
    """
    if isinstance(xyw, torch.Tensor):
        return torch.einsum("...ij,...j->...i", K[..., :2, :], xyw)
    x, y, w = xyw[..., 0], xyw[..., 1], xyw[..., 2]
    u = K[..., 0, 0] * x + K[..., 0, 1] * y + K[..., 0, 2] * w
    v = K[..., 1, 1] * y + K[..., 1, 2] * w
    return _stack([u, v])


def pixels_to_normalized(uv: Array, K: Array) -> Array:
    """Inverse of :func:`normalized_to_pixels`: pixels (*, 2) -> ``(x / z, y / z)`` (*, 2) (``w = 1``)."""
    y = (uv[..., 1] - K[..., 1, 2]) / K[..., 1, 1]
    x = (uv[..., 0] - K[..., 0, 2] - K[..., 0, 1] * y) / K[..., 0, 0]
    return _stack([x, y])


def project(points_cam: Array, K: Array, min_depth: float | None = None) -> Array:
    """Pinhole projection of camera-frame points to pixels.

    Args:
        points_cam: (*, 3) OpenCV camera frame, metres.
        K: (*, 3, 3) intrinsics, broadcasting against the points' ``*``.
        min_depth: divide the point by ``max(z, min_depth)`` (metres) -- keeps the projection
            and its gradient finite for points at or behind the camera (their pixels mean
            nothing); None: no clamp.
    Returns:
        (*, 2) pixels ``(u, v)``, same type and dtype as ``points_cam``.
    """
    z = points_cam[..., 2:3]
    if min_depth is not None:
        z = z.clamp(min=min_depth) if isinstance(z, torch.Tensor) else np.maximum(z, min_depth)
    return normalized_to_pixels(points_cam / z, K)


def unproject(uv: Array, z: Array, K: Array) -> Array:
    """Camera-frame points of pixels at a camera depth (inverse of :func:`project`).

    Args:
        uv: (*, 2) pixels; z: (*) camera depth (along the optical axis), metres.
        K: (*, 3, 3) intrinsics.
    Returns:
        (*, 3) OpenCV camera frame, metres.
    """
    xy = pixels_to_normalized(uv, K)
    return _stack([xy[..., 0] * z, xy[..., 1] * z, z])


def project_world(points_world: Array, K: Array, T_world_cam: Array, min_depth: float | None = None) -> Array:
    """World points (*, N, 3) metres -> pixels (*, N, 2) of the camera ``(K, T_world_cam)``.

    ``K`` (*, 3, 3) and ``T_world_cam`` (*, 4, 4) broadcast against the points' leading
    dimensions; see :func:`project` for ``min_depth``.
    """
    pc = transform(points_world, invert_rigid(T_world_cam))
    Kb = K[..., None, :, :]
    return project(pc, Kb, min_depth)


def backproject_depth(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray | None = None,
                      mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points of the pixels of a depth map that have a value.

    Args:
        depth: (H, W) camera depth, metres, 0 = no value.
        K: (3, 3) intrinsics.
        T_world_cam: (4, 4) camera -> world; None: the points stay in the camera frame.
        mask: (H, W) bool: only these pixels (None: all).
    Returns:
        points (N, 3) float64 metres (world frame with ``T_world_cam``, else camera frame),
        pixels (N, 2) int64 ``(v, u)`` (row, column) in row-major order.
    """
    m = depth > 0 if mask is None else (depth > 0) & mask
    v, u = np.nonzero(m)
    pc = unproject(np.stack([u, v], -1).astype(np.float64), depth[v, u].astype(np.float64), np.asarray(K, np.float64))
    if T_world_cam is not None:
        pc = transform(pc, np.asarray(T_world_cam, np.float64))
    return pc, np.stack([v, u], -1)


def pixel_rays(K: np.ndarray, width: int, height: int, T_world_cam: np.ndarray | None = None) -> np.ndarray:
    """Ray of every pixel centre, scaled so that its camera z is 1.

    Returns:
        (H, W, 3) float64 direction: ``origin + d * ray`` is the point at camera depth ``d``
        metres of that pixel (camera frame, or rotated into the world with ``T_world_cam``).
    """
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    xy = pixels_to_normalized(np.stack([u, v], -1).astype(np.float64), np.asarray(K, np.float64))
    d = np.concatenate([xy, np.ones(u.shape + (1,))], -1)
    return d if T_world_cam is None else d @ np.asarray(T_world_cam)[:3, :3].T


# ---------------------------------------------------------------------------------------
# crops
# ---------------------------------------------------------------------------------------
def crop_intrinsics(K: np.ndarray, box, size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of a crop resampled to ``size``.

    Args:
        K: (3, 3) original intrinsics.
        box: (x0, y0, w, h) crop in original continuous pixel coordinates
            (pixel u covers [u - 0.5, u + 0.5)).
        size: (H, W) of the resampled crop.
    Returns:
        (3, 3) float64: crop pixel i has its centre at original u = x0 + (i + 0.5) * w / W.
    """
    x0, y0, w, h = (float(b) for b in box)
    H, W = size
    sx, sy = W / w, H / h
    Kc = np.array(K, dtype=np.float64).copy()
    Kc[0, 0] *= sx
    Kc[0, 1] *= sx
    Kc[0, 2] = (K[0, 2] - x0) * sx - 0.5
    Kc[1, 1] *= sy
    Kc[1, 2] = (K[1, 2] - y0) * sy - 0.5
    return Kc


def crop_nearest(img: np.ndarray, box, size: int) -> np.ndarray:
    """Nearest-neighbour resampling of a crop, consistent with :func:`crop_intrinsics`.

    Output pixel i samples original ``u = x0 + (i + 0.5) w / S`` (rounded to the nearest
    pixel), so values are never mixed (depth edges stay sharp); outside the image: 0.

    Args:
        img: (H, W, ...) image. box: (x0, y0, w, h) continuous pixels. size: S.
    Returns:
        (S, S, ...) of ``img``'s dtype.
    """
    H, W = img.shape[:2]
    x0, y0, w, h = box
    u = np.floor(x0 + (np.arange(size) + 0.5) * w / size + 0.5).astype(int)
    v = np.floor(y0 + (np.arange(size) + 0.5) * h / size + 0.5).astype(int)
    inside = ((v >= 0) & (v < H))[:, None] & ((u >= 0) & (u < W))[None, :]
    out = img[np.clip(v, 0, H - 1)[:, None], np.clip(u, 0, W - 1)[None, :]]
    return np.where(inside.reshape(inside.shape + (1,) * (img.ndim - 2)), out, 0).astype(img.dtype)
