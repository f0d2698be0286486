"""Mesh rasterization for fitting: a binned CPU forward, PyTorch3D's, and autograd recomputation.

PyTorch3D's CPU rasterizer is a naive loop over every (pixel, face) pair (its coarse-to-fine
binning runs on CUDA only), and its CPU backward is a single-threaded scatter; together they
made 76 % of a default fit's time (``benchmarks/results/speed.md``). Fitting therefore splits
rasterization into two parts:

1. **which faces cover each pixel** (``pix_to_face``, no gradient), found by one of
   - ``"binned"`` (default on CPU): every face enumerates only the pixels of its bounding
     box grown by the blur radius, all faces of all views at once as vectorised torch
     operations; the candidates pass PyTorch3D's tests (non-degenerate, in front of the
     camera, inside or within the blur radius) and the K nearest in depth per pixel are kept,
     as PyTorch3D keeps them. One enumeration serves both the soft (K faces, blurred) and
     the hard (nearest covering face) pass. Its sizes depend on the data, so it synchronises
     with the host: it is a CPU path;
   - ``"pytorch3d"`` (default on CUDA): PyTorch3D's forward without gradient (coarse-to-fine
     binning on the GPU, no host synchronisation);
2. **the differentiable values** of exactly those (pixel, face) pairs, perspective-correct
   depth ``zbuf`` and the signed squared pixel-to-triangle distance ``dists``, recomputed as
   torch expressions of the vertex positions, so autograd does the backward.

The formulas mirror PyTorch3D's ``rasterize_meshes_cpu`` (edge-function barycentrics,
perspective correction, point-to-segment distances), so the outputs agree to float precision
and the gradients agree away from measure-zero events (a face entering or leaving a pixel's
top-K list), which neither path differentiates. ``"native"`` calls PyTorch3D with autograd
through its own kernels; it is the reference that the tests compare the other paths with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Backend = Literal["auto", "binned", "pytorch3d", "native"]
BACKENDS = ("auto", "binned", "pytorch3d", "native")

_EPS = 1e-8  # PyTorch3D's kEpsilon for barycentric denominators and degenerate faces


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


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"pytorch3d"`` on CUDA, ``"binned"`` elsewhere; others unchanged.

    Raises:
        ValueError: an unknown backend name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r} (use one of {', '.join(BACKENDS)})")
    if backend == "auto":
        return "pytorch3d" if torch.device(device).type == "cuda" else "binned"
    return backend


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


def _fragment_values(v: torch.Tensor, px: torch.Tensor, py: torch.Tensor):
    """Depth, signed squared distance and inside test of pixels against triangles.

    Args:
        v: (..., 3, 3) NDC triangle vertices (x, y, depth).
        px, py: NDC pixel centres, broadcastable with ``v[..., 0, 0]``.
    Returns:
        z perspective-correct depth, d signed squared distance (negative inside),
        inside bool (all perspective-correct barycentrics > 0), of the broadcast shape.
    """
    x0, y0, z0 = v[..., 0, 0], v[..., 0, 1], v[..., 0, 2]
    x1, y1, z1 = v[..., 1, 0], v[..., 1, 1], v[..., 1, 2]
    x2, y2, z2 = v[..., 2, 0], v[..., 2, 1], v[..., 2, 2]
    # Edge-function barycentrics (PyTorch3D BarycentricCoordsForward).
    area = (x2 - x0) * (y1 - y0) - (y2 - y0) * (x1 - x0) + _EPS
    w0 = ((px - x1) * (y2 - y1) - (py - y1) * (x2 - x1)) / area
    w1 = ((px - x2) * (y0 - y2) - (py - y2) * (x0 - x2)) / area
    w2 = ((px - x0) * (y1 - y0) - (py - y0) * (x1 - x0)) / area
    # Perspective-correct barycentrics and depth (BarycentricPerspectiveCorrectionForward).
    c0, c1, c2 = w0 * z1 * z2, w1 * z0 * z2, w2 * z0 * z1
    denom = (c0 + c1 + c2).clamp(min=_EPS)  # std::max(denom, kEpsilon), as PyTorch3D
    b0, b1, b2 = c0 / denom, c1 / denom, c2 / denom
    z = b0 * z0 + b1 * z1 + b2 * z2
    inside = (b0 > 0) & (b1 > 0) & (b2 > 0)
    d = torch.minimum(
        torch.minimum(_seg_dist2(px, py, x0, y0, x1, y1), _seg_dist2(px, py, x1, y1, x2, y2)),
        _seg_dist2(px, py, x2, y2, x0, y0),
    )
    return z, torch.where(inside, -d, d), inside


def _recompute(face_verts: torch.Tensor, pix_to_face: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable zbuf and dists for the given fragments.

    Args:
        face_verts: (Ftot, 3, 3) packed NDC face vertices (x, y, depth), requires grad.
        pix_to_face: (N, H, W, K) int64 from the forward rasterizer.
    Returns:
        zbuf, dists: (N, H, W, K) float32, -1 where pix_to_face < 0.
    """
    flat = pix_to_face.reshape(-1)
    valid = flat >= 0
    f = flat.clamp(min=0)  # empty slots read face 0 and are masked below (no host sync)
    Kf = pix_to_face.shape[-1]
    pix = torch.arange(flat.numel(), device=flat.device) // Kf  # (n*H + y)*W + x
    xs, ys = _pixel_centres(H, W, face_verts.device)
    z, d, _ = _fragment_values(face_verts[f], xs[pix % W], ys[(pix // W) % H])
    minus1 = torch.full_like(z, -1.0)
    return torch.where(valid, z, minus1).reshape(pix_to_face.shape), torch.where(valid, d, minus1).reshape(pix_to_face.shape)


def _dense(shape: tuple[int, int, int, int], pix: torch.Tensor, slot: torch.Tensor, face: torch.Tensor,
           z: torch.Tensor, d: torch.Tensor) -> Fragments:
    """Dense (N, H, W, K) fragments, -1 except at flat pixel ``pix``, slot ``slot``."""
    index = pix * shape[3] + slot

    def full(v: torch.Tensor) -> torch.Tensor:
        return torch.full(shape, -1, dtype=v.dtype, device=v.device).reshape(-1).index_put((index,), v).reshape(shape)

    return Fragments(full(face), full(z), full(d))


#: square pixel windows the binned rasterizer sorts faces into (a face goes to the smallest
#: window that holds its grown bounding box; the image size closes the list)
_WINDOWS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def _binned_candidates(face_verts: torch.Tensor, N: int, H: int, W: int, blur_radius: float, occluded: bool = True):
    """Every (pixel, face) pair that PyTorch3D's rasterizer would consider a fragment.

    Each face tests the pixel centres of its NDC bounding box grown by ``sqrt(blur_radius)``
    (PyTorch3D's ``CheckPointOutsideBoundingBox``): faces are grouped by the size of that
    box, and each group is tested over a square window of pixels by broadcasting, with no
    per-pair gathers. Faces with a vertex behind the camera or (near) zero area are skipped;
    a pair is kept when the pixel is inside the face or its squared distance is below
    ``blur_radius``, and its depth is not negative, all as in ``RasterizeMeshesNaiveCpu``.

    Args:
        face_verts: (N*F, 3, 3) packed NDC face vertices, no gradient needed.
        occluded: keep pairs farther than the nearest face that covers their pixel (False
            drops them: in front-to-back compositing with full coverage inside a face they
            have zero weight and zero gradient).
    Returns:
        pix (M,) int64 flat pixel index ``(n*H + y)*W + x``, face (M,) int64 packed face
        index, z (M,) depth, inside (M,) bool; sorted by pixel, then depth.
    """
    dev = face_verts.device
    S = float(min(H, W))
    r = blur_radius**0.5 + 1e-6  # NDC; the tiny margin only admits pairs the exact tests reject
    x, y, z = face_verts[..., 0], face_verts[..., 1], face_verts[..., 2]
    # NDC x decreases with the column: column c has its centre at x = -(c + 0.5 - W/2) 2/S
    c_lo = torch.ceil(W / 2.0 - 0.5 - (x.amax(1) + r) * S / 2).clamp(min=0)
    c_hi = torch.floor(W / 2.0 - 0.5 - (x.amin(1) - r) * S / 2).clamp(max=W - 1)
    r_lo = torch.ceil(H / 2.0 - 0.5 - (y.amax(1) + r) * S / 2).clamp(min=0)
    r_hi = torch.floor(H / 2.0 - 0.5 - (y.amin(1) - r) * S / 2).clamp(max=H - 1)
    area = (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0]) - (y[:, 2] - y[:, 0]) * (x[:, 1] - x[:, 0])
    ok = (area.abs() > _EPS) & (z.amin(1) >= _EPS) & (c_hi >= c_lo) & (r_hi >= r_lo)
    size = torch.where(ok, torch.maximum(c_hi - c_lo, r_hi - r_lo) + 1, torch.zeros_like(c_lo))
    F = face_verts.shape[0] // N
    pix, face, zs, ins = [], [], [], []
    lo = 0
    for w in [w for w in _WINDOWS if w < max(H, W)] + [max(H, W)]:
        ids = ((size > lo) & (size <= w)).nonzero()[:, 0]
        lo = w
        if len(ids) == 0:
            continue
        off = torch.arange(w, device=dev, dtype=torch.float32)
        cols = c_lo[ids, None] + off  # (Nf, w)
        rows = r_lo[ids, None] + off
        px = (-(cols + 0.5 - W / 2.0) * (2.0 / S))[:, None, :]  # (Nf, 1, w), as _pixel_centres
        py = (-(rows + 0.5 - H / 2.0) * (2.0 / S))[:, :, None]  # (Nf, w, 1)
        zc, d, inside = _fragment_values(face_verts[ids, None, None], px, py)  # (Nf, w, w)
        in_box = (rows <= r_hi[ids, None])[:, :, None] & (cols <= c_hi[ids, None])[:, None, :]
        keep = in_box & (inside | (d < blur_radius)) & (zc >= 0)
        k, i, j = keep.nonzero(as_tuple=True)
        f = ids[k]
        pix.append(((f // F) * H + rows[k, i].long()) * W + cols[k, j].long())
        face.append(f)
        zs.append(zc[k, i, j])
        ins.append(inside[k, i, j])
    if not pix:
        e = torch.zeros(0, dtype=torch.int64, device=dev)
        return e, e, torch.zeros(0, device=dev), torch.zeros(0, dtype=torch.bool, device=dev)
    pix, face, zc, inside = torch.cat(pix), torch.cat(face), torch.cat(zs), torch.cat(ins)
    if not occluded:
        front = torch.full((N * H * W,), float("inf"), device=dev).scatter_reduce(
            0, pix[inside], zc[inside], "amin", include_self=True)
        near = zc <= front[pix]
        pix, face, zc, inside = pix[near], face[near], zc[near], inside[near]
    # sort by pixel, then depth (then face index, PyTorch3D's tie-break): one sort of a float64 key
    key = pix.double() * (float(zc.max()) + 1.0) + zc.double()
    order = torch.sort(key, stable=True).indices
    return pix[order], face[order], zc[order], inside[order]


def _rank_in_group(sorted_keys: torch.Tensor) -> torch.Tensor:
    """(M,) position of each element within its run of equal sorted keys."""
    pos = torch.arange(len(sorted_keys), device=sorted_keys.device)
    starts = torch.ones_like(sorted_keys, dtype=torch.bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return pos - torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values


def _rasterize_binned(verts_ndc: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int], blur_radius: float,
                      faces_per_pixel: int) -> Fragments:
    """PyTorch3D's K nearest fragments within the blur radius, from the binned enumeration."""
    N = verts_ndc.shape[0]
    H, W = image_size
    face_verts = verts_ndc[:, faces].reshape(-1, 3, 3)  # packed: view n's faces at n*F + f
    with torch.no_grad():
        pix, face, _, _ = _binned_candidates(face_verts.detach(), N, H, W, blur_radius)
        rank = _rank_in_group(pix)
        sel = rank < faces_per_pixel
        pix, face, rank = pix[sel], face[sel], rank[sel]
    xs, ys = _pixel_centres(H, W, verts_ndc.device)
    z, d, _ = _fragment_values(face_verts[face], xs[pix % W], ys[(pix // W) % H])
    return _dense((N, H, W, faces_per_pixel), pix, rank, face, z, d)


def _hard_soft_binned(verts_ndc: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int], blur_radius: float,
                      faces_per_pixel: int) -> tuple[Fragments, Fragments | None]:
    """The hard pass (nearest covering face) and, when ``faces_per_pixel`` > 0, the soft pass
    (up to K nearest faces within the blur radius, none behind the nearest covering face),
    from one enumeration; the values of the pairs they share are computed once."""
    N = verts_ndc.shape[0]
    H, W = image_size
    face_verts = verts_ndc[:, faces].reshape(-1, 3, 3)
    K = max(faces_per_pixel, 0)
    with torch.no_grad():
        pix, face, _, inside = _binned_candidates(face_verts.detach(), N, H, W, blur_radius, occluded=False)
        rank = _rank_in_group(pix)
        # rank of the nearest covering face of each pixel (inf where none covers it)
        first = torch.full((N * H * W,), len(pix) + 1, device=pix.device).scatter_reduce(
            0, pix[inside], rank[inside], "amin", include_self=True)[pix]
        is_hard = inside & (rank == first)
        is_soft = (rank < K) & (rank <= first)
        use = is_hard | is_soft
        pix, face, rank, is_hard, is_soft = pix[use], face[use], rank[use], is_hard[use], is_soft[use]
    xs, ys = _pixel_centres(H, W, verts_ndc.device)
    z, d, _ = _fragment_values(face_verts[face], xs[pix % W], ys[(pix // W) % H])

    hard = _dense((N, H, W, 1), pix[is_hard], torch.zeros_like(rank[is_hard]), face[is_hard], z[is_hard], d[is_hard])
    if K == 0:
        return hard, None
    return hard, _dense((N, H, W, K), pix[is_soft], rank[is_soft], face[is_soft], z[is_soft], d[is_soft])


def _pytorch3d_kernel(face_verts: torch.Tensor, N: int, image_size: tuple[int, int], blur_radius: float,
                      faces_per_pixel: int):
    """PyTorch3D's rasterization kernel on N meshes of F packed faces each.

    ``pytorch3d.renderer.mesh.rasterize_meshes`` would first build a ``Meshes``, whose
    validity checks read tensors back to the host (several synchronisations per call on a
    GPU); with equal-size meshes its kernel inputs are known, so this calls the kernel's
    autograd function directly (pinned PyTorch3D release, see pyproject.toml), with
    PyTorch3D's own choice of bin size.
    """
    from pytorch3d.renderer.mesh.rasterize_meshes import _RasterizeFaceVerts

    F = face_verts.shape[0] // N
    dev = face_verts.device
    H, W = image_size
    if dev.type != "cuda":
        bin_size = 0  # naive per-pixel kernel (coarse-to-fine is CUDA-only)
    else:
        bin_size = 8 if max(H, W) <= 64 else int(2 ** max(math.ceil(math.log2(max(H, W))) - 4, 4))
    return _RasterizeFaceVerts.apply(
        face_verts, torch.arange(N, device=dev) * F, torch.full((N,), F, device=dev, dtype=torch.int64),
        torch.full((N * F,), -1, device=dev, dtype=torch.int64), (H, W), blur_radius, faces_per_pixel, bin_size,
        int(max(10000, F / 5)), True, False, False,
    )  # fmt: skip


def _rasterize_pytorch3d(verts_ndc: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int],
                         blur_radius: float, faces_per_pixel: int, native: bool) -> Fragments:
    """PyTorch3D's forward; its backward (``native``) or our autograd recomputation."""
    N = verts_ndc.shape[0]
    face_verts = verts_ndc[:, faces].reshape(-1, 3, 3)
    if native:
        p2f, zbuf, _, dists = _pytorch3d_kernel(face_verts, N, image_size, blur_radius, faces_per_pixel)
        return Fragments(p2f, zbuf, dists)
    with torch.no_grad():
        p2f, _, _, _ = _pytorch3d_kernel(face_verts.detach(), N, image_size, blur_radius, faces_per_pixel)
    zbuf, dists = _recompute(face_verts, p2f, *image_size)
    return Fragments(p2f, zbuf, dists)


def rasterize(
    verts_ndc: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    blur_radius: float = 0.0,
    faces_per_pixel: int = 1,
    backend: Backend = "auto",
) -> Fragments:
    """Rasterize N meshes that share one face list (PyTorch3D's ``rasterize_meshes`` semantics).

    Args:
        verts_ndc: (N, V, 3) float32 vertices in PyTorch3D NDC with camera depth
            (metres) as z (see :func:`hoannot.renderers.cameras.project_to_ndc`).
        faces: (F, 3) int64.
        image_size: (H, W).
        blur_radius: squared NDC distance within which a face outside a pixel still
            yields a fragment (PyTorch3D's convention; 0 for hard rasterization).
        faces_per_pixel: K.
        backend: see the module docstring; ``"auto"`` picks by device.
    Returns:
        :class:`Fragments`. Faces with a vertex behind the camera (z <= 0) are culled.
    Raises:
        ValueError: an unknown backend.
    """
    backend = resolve_backend(backend, verts_ndc.device)
    if backend == "binned":
        return _rasterize_binned(verts_ndc, faces, image_size, blur_radius, faces_per_pixel)
    return _rasterize_pytorch3d(verts_ndc, faces, image_size, blur_radius, faces_per_pixel, backend == "native")


def rasterize_hard_soft(
    verts_ndc: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    blur_radius: float,
    faces_per_pixel: int,
    backend: Backend = "auto",
    soft: bool = True,
) -> tuple[Fragments, Fragments | None]:
    """Both passes of :class:`~hoannot.renderers.renderer.HandObjectRenderer`: the hard one
    (K = 1, no blur) and, when ``soft``, the soft one (``faces_per_pixel``, ``blur_radius``).
    The binned backend finds both in one enumeration; the nearest covering face is the
    first candidate flagged inside, however many nearer faces lie within the blur radius.
    Its soft fragments stop at that face: the faces behind it, which PyTorch3D also returns,
    have zero weight and zero gradient in front-to-back compositing where a face covers
    its pixel fully (:class:`~hoannot.renderers.renderer.HandObjectRenderer`).

    Returns:
        (hard, soft or None) :class:`Fragments`.
    Raises:
        ValueError: an unknown backend.
    """
    backend = resolve_backend(backend, verts_ndc.device)
    if backend == "binned":
        return _hard_soft_binned(verts_ndc, faces, image_size, blur_radius if soft else 0.0, faces_per_pixel if soft else 0)
    hard = _rasterize_pytorch3d(verts_ndc, faces, image_size, 0.0, 1, backend == "native")
    if not soft:
        return hard, None
    return hard, _rasterize_pytorch3d(verts_ndc, faces, image_size, blur_radius, faces_per_pixel, backend == "native")
