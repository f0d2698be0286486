"""What a perception network's input is made of, at training and at inference alike:
image normalisation (:func:`normalise_rgb`, :func:`normalise_depth`) and the square hand
crops of the 2D joint network (:func:`hand_box` from a mask, :func:`distal_hand_box` from a
mask that runs up the forearm, :func:`joint_box` from joints, :func:`crop_affine` the warp
onto the crop; pixel centres at integer ``(u, v)``).
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


def distal_hand_box(
    mask: np.ndarray,
    object_mask: np.ndarray | None = None,
    margin: float = 1.25,
    length_per_width: float = 2.5,
    bins: int = 40,
) -> tuple[float, float, float] | None:
    """Square box around the hand end of a hand mask that may include the forearm: ``(cx, cy,
    side)`` px, or None if the mask is empty.

    A skin mask of a real photo (and 70 % of the synthetic training views) runs up the
    forearm; a box around all of it (:func:`hand_box`) makes the hand small in the crop. The
    mask's principal axis (PCA of its pixel coordinates) runs along the arm; the hand is its
    distal end. The width profile is the mask's filled width (pixels per px along the axis)
    in ``bins`` slices; the hand's width is its widest slice in the distal half. A mask no
    longer than ``length_per_width`` x that width (a hand from wrist to middle fingertip is
    about 2.2 x its palm breadth) has no forearm and gets exactly :func:`hand_box`. Otherwise
    the wrist is the distal-most slice within 10 % of the narrowest one between that length
    from the distal end and the hand's widest slice (the forearm is narrower than the hand and
    widens towards the elbow), and the box is :func:`hand_box` of the mask pixels from the
    wrist slice to the distal end.

    Which end is distal: the end nearer the object's centroid when ``object_mask`` has
    pixels (a grasping hand touches its object), else the end away from the image border
    (an arm enters the picture from its edge); when neither decides, :func:`hand_box`.

    Args:
        mask: (H, W) bool hand (and forearm) pixels.
        object_mask: (H, W) bool object pixels, or None.
        margin: as :func:`hand_box`.
        length_per_width: hand length along the axis, in hand widths (dimensionless).
        bins: slices of the width profile.
    Returns:
        ``(cx, cy, side)`` float px, full-image coordinates.
    Raises:
        ValueError: ``object_mask`` has another shape than ``mask``.
    """
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if len(xs) < 16:
        return hand_box(mask, margin)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    mean = pts.mean(0)
    _, vecs = np.linalg.eigh(np.cov((pts - mean).T))
    axis = vecs[:, -1]  # principal axis (unit, px)
    t = (pts - mean) @ axis
    lo, hi = t.min(), t.max()
    if hi - lo < 8:
        return hand_box(mask, margin)
    sign = 0.0
    if object_mask is not None:
        object_mask = np.asarray(object_mask, bool)
        if object_mask.shape != mask.shape:
            raise ValueError(f"distal_hand_box: object mask {object_mask.shape} does not match mask {mask.shape}")
        if object_mask.any():
            oy, ox = np.nonzero(object_mask)
            sign = float(np.sign((np.array([ox.mean(), oy.mean()]) - mean) @ axis))
    if sign == 0.0:  # the end with more pixels on the image border is the arm's
        H, W = mask.shape
        border = (xs == 0) | (ys == 0) | (xs == W - 1) | (ys == H - 1)
        end = 0.15 * (hi - lo)
        sign = float(np.sign(int((border & (t < lo + end)).sum()) - int((border & (t > hi - end)).sum())))
    if sign == 0.0:
        return hand_box(mask, margin)
    t = sign * t  # distal end at the largest t
    lo, hi = t.min(), t.max()
    step = (hi - lo) / bins
    width = np.bincount(np.minimum(((t - lo) / step).astype(int), bins - 1), minlength=bins) / step
    k_max = bins // 2 + int(width[bins // 2 :].argmax())  # the hand's widest slice
    reach = length_per_width * width[k_max]
    if hi - lo <= reach:  # no forearm to cut off
        return hand_box(mask, margin)
    k_cap = int((hi - reach - lo) / step)
    k_wrist = k_cap
    if k_max > k_cap:  # the distal-most slice within 10 % of the narrowest
        arm = width[k_cap:k_max]
        k_wrist = k_cap + int(np.nonzero(arm <= 1.1 * arm.min())[0].max())
    keep = t >= lo + k_wrist * step
    hand = np.zeros_like(mask)
    hand[ys[keep], xs[keep]] = True
    return hand_box(hand, margin)


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
