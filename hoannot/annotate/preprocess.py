"""What a perception network's input is made of, at training and at inference alike:
image normalisation (:func:`normalise_rgb`, :func:`normalise_depth`) and the square hand
crops of the 2D joint network (:func:`hand_box` from a mask, :func:`joint_box` from
joints, :func:`crop_affine` the warp onto the crop; pixel centres at integer ``(u, v)``).
"""

from __future__ import annotations


import cv2
import numpy as np



def normalise_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, roughly zero-mean unit-variance."""
    return ((rgb.astype(np.float32) / 255.0 - 0.45) / 0.25).transpose(2, 0, 1)


def normalise_depth(depth: np.ndarray) -> np.ndarray:
    """Depth channel for RGB-D networks: (H, W) metres -> (H, W) float32.

    Depth relative to the nearest valid depth (5th percentile), in units of 0.25 m,
    clipped to [-1, 4]; pixels without a reading get -1. Invariant to the capture's
    distance, so the network sees the hand/object relief, not the absolute range.
    """
    d = depth.astype(np.float32)
    valid = d > 0
    if not valid.any():
        return np.full(d.shape, -1.0, np.float32)
    near = np.percentile(d[valid], 5)
    out = np.clip((d - near) / 0.25, -1.0, 4.0)
    return np.where(valid, out, -1.0).astype(np.float32)


def affine(scale: float, angle_deg: float, centre: tuple[float, float], out_centre: tuple[float, float]) -> np.ndarray:
    """(2, 3) affine mapping ``centre`` to ``out_centre``, scaling by ``scale`` and
    rotating by ``angle_deg`` (counter-clockwise on screen) about it."""
    M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle_deg, scale)
    M[:, 2] += np.asarray(out_centre) - np.asarray(centre)
    return M


def hand_box(mask: np.ndarray, margin: float = 1.25) -> tuple[float, float, float] | None:
    """Square box around the hand pixels of a mask: ``(cx, cy, side)`` px, or None if empty.

    Args:
        mask: (H, W) bool hand mask.
        margin: side = ``margin`` x the larger extent of the mask.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0 + 1, y1 - y0 + 1, 8) * margin


def joint_box(uv: np.ndarray, margin: float = 1.5) -> tuple[float, float, float]:
    """Square box around 2D joints: ``(cx, cy, side)`` px.

    Args:
        uv: (J, 2) float joint positions, px (NaN rows are ignored; at least one finite).
        margin: side = ``margin`` x the joints' larger extent (at least 8 px).
    """
    uv = uv[np.isfinite(uv).all(1)]
    lo, hi = uv.min(0), uv.max(0)
    return float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, max(float((hi - lo).max()), 8.0) * margin


def crop_affine(box: tuple[float, float, float], size: int, angle_deg: float = 0.0) -> np.ndarray:
    """(2, 3) affine mapping the square ``box`` (cx, cy, side) onto a ``size`` x ``size`` crop."""
    cx, cy, side = box
    return affine(size / side, angle_deg, (cx, cy), ((size - 1) / 2, (size - 1) / 2))
