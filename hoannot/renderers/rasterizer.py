"""Mesh rasterization with PyTorch3D, and a fast differentiable path for CPU.

PyTorch3D's CPU backward of ``rasterize_meshes`` is a single-threaded scatter and
dominates fitting time on CPU (../shared/docs/dependencies.md). The ``"fast"``
backend runs PyTorch3D's forward rasterizer *without* gradient only to find which
faces cover each pixel (``pix_to_face``), then recomputes, for exactly those
(pixel, face) pairs, the quantities PyTorch3D would return — perspective-correct
depth ``zbuf`` and the signed squared pixel-to-triangle distance ``dists`` — as
vectorised torch expressions of the vertex positions, so autograd does the
backward. The formulas mirror PyTorch3D's ``rasterize_meshes_cpu`` (edge-function
barycentrics, perspective correction, point-to-segment distances), so the outputs
agree to float precision and the gradients agree away from measure-zero events
(a face entering/leaving a pixel's top-K list), which neither path differentiates.
The ``"native"`` backend calls PyTorch3D with autograd through its own kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
from pytorch3d.structures import Meshes

Backend = Literal["fast", "native"]

_EPS = 1e-8  # PyTorch3D's kEpsilon for barycentric denominators


@dataclass
class Fragments:
    """Per-pixel fragments of N images, K faces per pixel sorted near to far.

    Attributes:
        pix_to_face: (N, H, W, K) int64 index into the packed faces (N*F faces,
            view n's faces at [n*F, (n+1)*F)), -1 where empty.
        zbuf: (N, H, W, K) float32 camera depth (metres), -1 where empty.
        dists: (N, H, W, K) float32 signed squared distance in NDC units from the
            pixel centre to the face's 2D projection (negative inside), -1 where empty.
    """

    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor


def _pixel_centres(H: int, W: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC coordinates of pixel centres: x of each column (W,), y of each row (H,)."""
    S = float(min(H, W))
    cols = torch.arange(W, device=device, dtype=torch.float32)
    rows = torch.arange(H, device=device, dtype=torch.float32)
    x = -(cols + 0.5 - W / 2.0) * (2.0 / S)
    y = -(rows + 0.5 - H / 2.0) * (2.0 / S)
    return x, y


def _seg_dist2(px, py, ax, ay, bx, by):
    """Squared distance from points p to segments ab (PyTorch3D PointLineDistanceForward)."""
    vx, vy = bx - ax, by - ay
    l2 = vx * vx + vy * vy
    t = ((px - ax) * vx + (py - ay) * vy) / l2.clamp(min=_EPS)
    t = t.clamp(0.0, 1.0)
    t = torch.where(l2 <= _EPS, torch.zeros_like(t), t)
    dx = px - (ax + t * vx)
    dy = py - (ay + t * vy)
    return dx * dx + dy * dy


def _recompute(face_verts: torch.Tensor, pix_to_face: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable zbuf and dists for the given fragments.

    Args:
        face_verts: (Ftot, 3, 3) packed NDC face vertices (x, y, depth), requires grad.
        pix_to_face: (N, H, W, K) int64 from the forward rasterizer.
    Returns:
        zbuf, dists: (N, H, W, K) float32, -1 where pix_to_face < 0.
    """
    N, _, _, Kf = pix_to_face.shape
    valid = pix_to_face >= 0
    idx = valid.nonzero(as_tuple=True)  # (n, y, x, k)
    f = pix_to_face[idx]
    xs, ys = _pixel_centres(H, W, face_verts.device)
    px = xs[idx[2]]
    py = ys[idx[1]]
    v = face_verts[f]  # (M, 3, 3)
    x0, y0, z0 = v[:, 0, 0], v[:, 0, 1], v[:, 0, 2]
    x1, y1, z1 = v[:, 1, 0], v[:, 1, 1], v[:, 1, 2]
    x2, y2, z2 = v[:, 2, 0], v[:, 2, 1], v[:, 2, 2]
    # Edge-function barycentrics (PyTorch3D BarycentricCoordsForward).
    area = (x2 - x0) * (y1 - y0) - (y2 - y0) * (x1 - x0) + _EPS
    w0 = ((px - x1) * (y2 - y1) - (py - y1) * (x2 - x1)) / area
    w1 = ((px - x2) * (y0 - y2) - (py - y2) * (x0 - x2)) / area
    w2 = ((px - x0) * (y1 - y0) - (py - y0) * (x1 - x0)) / area
    # Perspective-correct barycentrics and depth (BarycentricPerspectiveCorrectionForward).
    c0, c1, c2 = w0 * z1 * z2, w1 * z0 * z2, w2 * z0 * z1
    denom = c0 + c1 + c2
    denom = torch.where(denom.abs() < _EPS, torch.full_like(denom, _EPS), denom)
    b0, b1, b2 = c0 / denom, c1 / denom, c2 / denom
    z = b0 * z0 + b1 * z1 + b2 * z2
    inside = (b0 > 0) & (b1 > 0) & (b2 > 0)
    d = torch.minimum(
        torch.minimum(_seg_dist2(px, py, x0, y0, x1, y1), _seg_dist2(px, py, x1, y1, x2, y2)),
        _seg_dist2(px, py, x2, y2, x0, y0),
    )
    d = torch.where(inside, -d, d)
    zbuf = torch.full(pix_to_face.shape, -1.0, dtype=face_verts.dtype, device=face_verts.device)
    dists = torch.full_like(zbuf, -1.0)
    zbuf = zbuf.index_put(idx, z)
    dists = dists.index_put(idx, d)
    return zbuf, dists


def rasterize(
    verts_ndc: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    blur_radius: float = 0.0,
    faces_per_pixel: int = 1,
    backend: Backend = "fast",
) -> Fragments:
    """Rasterize N meshes that share one face list.

    Args:
        verts_ndc: (N, V, 3) float32 vertices in PyTorch3D NDC with camera depth
            (metres) as z (see :func:`hoannot.renderers.cameras.project_to_ndc`).
        faces: (F, 3) int64.
        image_size: (H, W).
        blur_radius: squared NDC distance within which a face outside a pixel still
            yields a fragment (PyTorch3D's convention; 0 for hard rasterization).
        faces_per_pixel: K.
        backend: ``"fast"`` (PyTorch3D forward + torch recomputation, autograd
            backward) or ``"native"`` (PyTorch3D forward and backward).
    Returns:
        :class:`Fragments`. Faces behind the camera (z <= 0) are culled by PyTorch3D.
    """
    N = verts_ndc.shape[0]
    src = verts_ndc if backend == "native" else verts_ndc.detach()
    meshes = Meshes(verts=src, faces=faces[None].expand(N, -1, -1))
    kw = dict(
        image_size=tuple(image_size),
        blur_radius=blur_radius,
        faces_per_pixel=faces_per_pixel,
        bin_size=0,
        perspective_correct=True,
        clip_barycentric_coords=False,
        cull_backfaces=False,
    )
    if backend == "native":
        p2f, zbuf, _, dists = rasterize_meshes(meshes, **kw)
        return Fragments(p2f, zbuf, dists)
    if backend != "fast":
        raise ValueError(f"unknown rasterizer backend {backend!r} (use 'fast' or 'native')")
    with torch.no_grad():
        p2f, _, _, _ = rasterize_meshes(meshes, **kw)
    face_verts = verts_ndc[:, faces].reshape(-1, 3, 3)  # packed: view n's faces at n*F + f
    zbuf, dists = _recompute(face_verts, p2f, *image_size)
    return Fragments(p2f, zbuf, dists)
