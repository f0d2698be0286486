"""Energy terms of the HOnnotate objective (Hampali et al., CVPR 2020, Sec. 4), one pure function each.

Every term returns a (B,) tensor, one value per frame, so schedules can sum them with
the weights of :class:`hoannot.fitting.config.EnergyWeights` and report them per frame.
Units are chosen so that a data term is O(1) for an error of about a centimetre: depths
and point distances enter in **centimetres**, angles in radians, silhouettes as
fractions; the temporal term uses metres, rotation matrices and radians, and the config
scales its parts (``FitConfig.tc_acceleration``) so that the paper's weight does not swamp
the data terms.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pytorch3d.loss.point_mesh_distance import point_face_distance
from pytorch3d.ops import knn_points

CM = 100.0  # metres -> centimetres


def silhouette_energy(silhouette: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """E_mask, HOnnotate Eq. 4: squared difference of rendered and observed silhouettes.

    Args:
        silhouette: (B, C, 2, H, W) rendered soft silhouettes (hand, object) in [0, 1].
        mask: (B, C, 2, H, W) observed segmentation (hand, object), {0, 1} float.
        weight: optional (B, C, 1 or 2, H, W) pixel weights (0 ignores a pixel).
    Returns:
        (B,) mean over cameras, classes and pixels.
    """
    d = (silhouette - mask).square()
    if weight is not None:
        d = d * weight
    return d.flatten(1).mean(1)


def tukey(r: torch.Tensor, c: float) -> torch.Tensor:
    """Tukey's biweight rho(r) = c^2/6 (1 - (1 - (r/c)^2)^3) for |r| < c, else c^2/6."""
    x = (r / c).clamp(-1.0, 1.0)
    return (c * c / 6.0) * (1.0 - (1.0 - x * x) ** 3)


def depth_energy(
    zbuf: torch.Tensor,
    rendered_labels: torch.Tensor,
    depth: torch.Tensor,
    observed_labels: torch.Tensor,
    c: float = 2.0,
) -> torch.Tensor:
    """E_dpt, HOnnotate Eq. 5: Tukey-robust difference of rendered and observed depth.

    Counted where the render shows hand or object, the sensor has a depth and the
    segmentation marks hand or object; divided by the number of such pixels.

    Args:
        zbuf: (B, C, H, W) rendered depth, metres (0 where empty).
        rendered_labels: (B, C, H, W) int, 0 background.
        depth: (B, C, H, W) observed depth, metres (0 where missing).
        observed_labels: (B, C, H, W) int, 0 background.
        c: Tukey threshold, centimetres.
    Returns:
        (B,) mean Tukey loss, cm^2.
    """
    valid = (rendered_labels > 0) & (observed_labels > 0) & (depth > 0)
    rho = tukey((zbuf - depth) * CM, c) * valid
    return rho.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


def nearest_sq_dists(points: torch.Tensor, verts: torch.Tensor, method: Literal["auto", "kdtree", "brute"] = "auto") -> torch.Tensor:
    """Squared distance from each point to its nearest vertex, per batch item; differentiable in both.

    The nearest vertex is found without gradient, by a k-d tree per item (``"kdtree"``:
    scipy's ``cKDTree``, exact; 4-5x faster than the exhaustive search on the CPU for a few
    thousand points against a hand mesh) or by pytorch3d's exhaustive ``knn_points``
    (``"brute"``, the GPU path; ``"auto"`` picks by the tensors' device); the distance is then
    computed from the gathered vertex, so its gradient is the exhaustive search's.

    Args:
        points: (B, N, 3) metres. verts: (B, V, 3) metres, same device.
        method: ``"auto"``, ``"kdtree"`` or ``"brute"``.
    Returns:
        (B, N) squared distances, m^2.
    Raises:
        ValueError: an unknown ``method``.
    """
    if method not in ("auto", "kdtree", "brute"):
        raise ValueError(f"nearest_sq_dists: method {method!r}: expected auto, kdtree or brute")
    if method == "brute" or (method == "auto" and points.is_cuda):
        return knn_points(points, verts, K=1).dists[..., 0]
    from scipy.spatial import cKDTree

    P, V = points.detach().cpu().numpy(), verts.detach().cpu().numpy()
    idx = np.stack([cKDTree(V[b]).query(P[b], k=1)[1] for b in range(len(P))])
    nearest = torch.gather(verts, 1, torch.as_tensor(idx, device=verts.device)[..., None].expand(-1, -1, 3))
    return (points - nearest).square().sum(-1)


def closest_triangles(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Index of the triangle closest to each point, per frame, by a BVH query (open3d's
    Embree ``RaycastingScene.compute_closest_points``, exact up to float32 ties).

    Args:
        points: (B, N, 3) metres. verts: (B, V, 3) metres. faces: (F, 3) int64.
    Returns:
        (B, N) int64 on the points' device, no gradient. It reads the tensors on the host,
        so on a GPU it synchronises (use the brute-force search there).
    """
    from hoannot.models._open3d import load as load_open3d

    o3d = load_open3d()
    tri = o3d.core.Tensor(faces.detach().cpu().numpy().astype(np.uint32))
    P = points.detach().cpu().float().numpy()
    V = verts.detach().cpu().float().numpy()
    out = np.empty(points.shape[:2], np.int64)
    for b in range(points.shape[0]):
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(V[b])), tri)
        out[b] = scene.compute_closest_points(o3d.core.Tensor(np.ascontiguousarray(P[b])))["primitive_ids"].numpy()
    # no hit (non-finite vertices or points): any triangle; the distance is then non-finite too
    out[(out < 0) | (out >= len(faces))] = 0
    return torch.from_numpy(out).to(points.device)


class RigidSurface:
    """A rigid object's full-resolution surface, in its own frame, with a BVH built once
    (open3d's Embree ``RaycastingScene``), for E_3D against the true surface rather than the
    decimated render mesh.

    Args:
        verts: (V, 3) object-frame vertices, metres (numpy or anything ``np.asarray`` reads).
        faces: (F, 3) triangle indices.
        device: torch device of :attr:`triangles`.
    Attributes:
        triangles: (F, 3, 3) float32 object-frame triangles, centimetres, on ``device``.
    Raises:
        ImportError: open3d is not installed.
    """

    def __init__(self, verts, faces, device: str | torch.device = "cpu"):
        from hoannot.models._open3d import load as load_open3d

        o3d = load_open3d()
        V = np.ascontiguousarray(np.asarray(verts, np.float32))
        F = np.ascontiguousarray(np.asarray(faces, np.int64))
        self.triangles = torch.as_tensor(V[F] * CM, device=device)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(V), o3d.core.Tensor(F.astype(np.uint32)))
        self._o3d = o3d

    def closest(self, points: torch.Tensor) -> torch.Tensor:
        """Index of the closest triangle to each point (exact up to float32 ties).

        Args:
            points: (M, 3) object-frame points, metres (read on the host, no gradient).
        Returns:
            (M,) int64 on the points' device; a point with no answer (non-finite) gets 0.
        """
        P = np.ascontiguousarray(points.detach().cpu().float().numpy())
        ids = self._scene.compute_closest_points(self._o3d.core.Tensor(P))["primitive_ids"].numpy().astype(np.int64)
        ids[(ids < 0) | (ids >= len(self.triangles))] = 0
        return torch.from_numpy(ids).to(points.device)


def rigid_point_to_surface_energy(
    points: torch.Tensor,
    points_valid: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    surface: RigidSurface,
    truncate: float = 2.0,
    search: Literal["bvh", "brute"] = "bvh",
) -> torch.Tensor:
    """E_3D (HOnnotate Eq. 7) of a rigid object against its full-resolution surface.

    The observed points are moved into the object's frame (``R^T (p - t)``), where the surface
    and its BVH never change, and each point's squared distance to its closest triangle is
    taken exactly (pytorch3d's ``point_face_distance``); the gradient reaches ``R`` and ``t``
    through the moved points. Same value as :func:`point_to_surface_energy` on the posed full
    mesh, without posing or re-indexing it every iteration. The closest triangle comes from the
    BVH (``search="bvh"``, on the host: on a GPU it synchronises) or from every triangle
    (``"brute"``, pytorch3d, all frames' points as one cloud against the one mesh: the GPU path).

    Args:
        points: (B, N, 3) observed object points, world, metres.
        points_valid: (B, N) bool; padding is False.
        R: (B, 3, 3) object-to-world rotations. t: (B, 3) object translations, metres.
        surface: the object's :class:`RigidSurface`.
        truncate: robust cap on a point's distance, centimetres.
        search: see above.
    Returns:
        (B,) mean truncated squared distance, cm^2 (0 for frames without points).
    Raises:
        ValueError: unknown ``search``.
    """
    B, N = points.shape[:2]
    dev = points.device
    local = torch.einsum("bnj,bji->bni", points - t[:, None], R).reshape(-1, 3)  # R^T (p - t)
    if search == "bvh":
        one = torch.arange(B * N, device=dev)
        d2 = point_face_distance(local * CM, one, surface.triangles[surface.closest(local)], one, 1, 1e-12)
    elif search == "brute":
        zero = torch.zeros(1, dtype=torch.int64, device=dev)
        d2 = point_face_distance(local * CM, zero, surface.triangles, zero, B * N, 1e-12)
    else:
        raise ValueError(f"unknown closest-triangle search {search!r} (use 'bvh' or 'brute')")
    valid = points_valid.reshape(-1).to(d2.dtype)
    d2 = (d2.clamp(max=truncate**2) * valid).reshape(B, N)
    return d2.sum(1) / points_valid.sum(1).clamp(min=1)


def point_to_surface_energy(
    points: torch.Tensor,
    points_valid: torch.Tensor,
    verts: torch.Tensor,
    faces: torch.Tensor,
    truncate: float = 2.0,
    candidates: int = 0,
    search: Literal["bvh", "brute"] = "brute",
) -> torch.Tensor:
    """E_3D, HOnnotate Eq. 7, with the exact distance of each observed point to the mesh
    surface (its closest triangle; pytorch3d's ``point_face_distance``).

    The paper takes the closest mesh vertex. That is biased: a point on a flat triangle is
    far from every vertex, the more so on a coarse mesh. Measured on a synthetic capture of
    our own hand model holding a YCB can (5 cameras, 6 frames, single-frame fits with
    E_mask + E_dpt + E_3D): object ADD 1.59 mm with the closest-vertex point-to-plane term,
    0.21 mm with this one (1000-face object mesh); hand MPJPE 1.11 -> 0.78 mm (our 2000-face
    hand mesh), and 6.29 -> 5.58 mm with the WebXR hand as the data hand.

    How the closest triangle is found (the distance to it, and its gradient, is the same):

    - ``search="bvh"``: a BVH query per frame (:func:`closest_triangles`), then the distance
      to that one triangle; about 50x faster than ``"brute"`` on 2 CPU cores (2000 faces,
      1500 points) and the same triangle up to float32 ties;
    - ``search="brute"``: every triangle of the frame (pytorch3d); no host synchronisation,
      the GPU path;
    - ``candidates`` K > 0 (either search): only the K triangles whose centroids are nearest to
      the point (pytorch3d ``knn_points``), which can miss the closest triangle and so
      overestimate a distance (measured on the 1000-face YCB can, 8 frames x 1500 noisy
      surface points: K = 32 about 5x faster than brute, 0.2 % of the points too far by at
      most 0.03 cm^2, energy off by 4e-5 relative; K = 64 about 2x faster, no point off).

    Args:
        points: (B, N, 3) observed points of one class, metres.
        points_valid: (B, N) bool; padding is False.
        verts: (B, V, 3) mesh vertices of the same class, metres.
        faces: (F, 3) int64 triangles, shared by all frames.
        truncate: robust cap on a point's distance, centimetres.
        candidates: see above (0: exact).
        search: see above.
    Returns:
        (B,) mean truncated squared distance, cm^2 (0 for frames without points).
    """
    B, N, F = points.shape[0], points.shape[1], faces.shape[0]
    dev = points.device
    pts = (points * CM).reshape(-1, 3)  # (B*N, 3) centimetres, padding included and masked below
    tris = (verts * CM)[:, faces].reshape(-1, 3, 3)  # (B*F, 3, 3) centimetres
    frame = torch.arange(B, device=dev).repeat_interleave(N)
    one = torch.arange(B * N, device=dev)  # every point its own "cloud" and "mesh"
    # min_triangle_area: below it pytorch3d treats a triangle as degenerate (edges only)
    if 0 < candidates < F:
        centroids = tris.detach().reshape(B, F, 3, 3).mean(2)
        near = knn_points((points * CM).detach(), centroids, K=candidates).idx.reshape(B * N, candidates)
        sel = tris[(frame[:, None] * F + near).reshape(-1)]
        d2 = point_face_distance(pts, one, sel, one * candidates, 1, 1e-12)
    elif search == "bvh":
        near = closest_triangles(points, verts, faces).reshape(-1)
        d2 = point_face_distance(pts, one, tris[frame * F + near], one, 1, 1e-12)
    elif search == "brute":
        d2 = point_face_distance(pts, torch.arange(B, device=dev) * N, tris, torch.arange(B, device=dev) * F, N, 1e-12)
    else:
        raise ValueError(f"unknown closest-triangle search {search!r} (use 'bvh' or 'brute')")
    valid = points_valid.reshape(-1).to(d2.dtype)
    d2 = (d2.clamp(max=truncate**2) * valid).reshape(B, N)
    return d2.sum(1) / points_valid.sum(1).clamp(min=1)


def keypoint_2d_energy(projected: torch.Tensor, detected: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """E_j2d, HOnnotate Eq. 6: confidence-weighted squared reprojection error.

    Args:
        projected: (B, C, 21, 2) projections of the model's joints, pixels.
        detected: (B, C, 21, 2) detected joints, pixels (same joint order).
        confidence: (B, C, 21) in [0, 1] (0 for missing detections).
    Returns:
        (B,) sum over cameras and joints, px^2.
    """
    return (confidence * (projected - detected).square().sum(-1)).flatten(1).sum(1)


def penetration_energy(
    hand_verts: torch.Tensor,
    obj_verts: torch.Tensor,
    obj_normals: torch.Tensor,
    w: float = 5.0,
    radius: float = 2.0,
) -> torch.Tensor:
    """E_phy, HOnnotate Eq. 9-10: exponential repulsion of hand vertices inside the object.

    For each hand vertex, the penetration depth ``Gamma`` is its distance behind the tangent
    plane of the closest object vertex, ``max(0, -n . (h - o))`` (centimetres); the energy
    is ``exp(w Gamma) - 1`` (zero for a vertex outside), averaged over the hand vertices.
    Vertices farther than ``radius`` cm from every object vertex count as outside (the
    tangent-plane test is only meaningful near the surface), and depths are capped at
    ``radius`` so that the exponential stays finite.

    Args:
        hand_verts: (B, Vh, 3) hand vertices (subsample them for speed), metres.
        obj_verts: (B, Vo, 3) object vertices, metres.
        obj_normals: (B, Vo, 3) outward unit vertex normals.
        w: the paper's steepness, per centimetre (w = 5).
        radius: centimetres.
    Returns:
        (B,) mean ``exp(w Gamma) - 1`` (dimensionless).
    """
    nn = knn_points(hand_verts, obj_verts, K=1)  # (pytorch3d's return_nn reads a length back to the host)
    index = nn.idx[:, :, :1].expand(-1, -1, 3)
    o = torch.gather(obj_verts, 1, index)
    n = torch.gather(obj_normals, 1, index)
    near = nn.dists[:, :, 0] < (radius / CM) ** 2
    depth = torch.where(near, torch.relu(-((hand_verts - o) * n).sum(-1)) * CM, torch.zeros_like(near, dtype=o.dtype))
    return torch.expm1(w * depth.clamp(max=radius)).mean(1)


def joint_limit_energy(violation: torch.Tensor) -> torch.Tensor:
    """E_joint, HOnnotate Eq. 8: squared hinge on the 45 joint angles.

    Args:
        violation: (B, 45) radians outside the limits (0 inside), e.g.
            :meth:`hoannot.models.joint_limits.JointLimits.violation`.
    Returns:
        (B,) rad^2.
    """
    return violation.square().sum(-1)


def temporal_energy(values: torch.Tensor, first_order: float = 1.0, second_order: float = 1.0) -> torch.Tensor:
    """E_tc: 0th and 1st order smoothness of a pose trajectory (HOnnotate Sec. 4.2).

    ``first_order * ||x_t - x_{t-1}||^2 + second_order * ||x_{t+1} - 2 x_t + x_{t-1}||^2``,
    each difference charged to the later frame.

    Args:
        values: (B, D) consecutive frames of a pose vector: translations in metres,
            rotations as flattened matrices (squared Frobenius distance ~ 2 angle^2),
            joint angles in radians.
    Returns:
        (B,) (zero for the first frame).
    """
    out = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    if values.shape[0] > 1:
        out = out + torch.nn.functional.pad(first_order * (values[1:] - values[:-1]).square().sum(-1), (1, 0))
    if values.shape[0] > 2:
        acc = values[2:] - 2 * values[1:-1] + values[:-2]
        out = out + torch.nn.functional.pad(second_order * acc.square().sum(-1), (2, 0))
    return out


def hand_in_object_frame(wrist: torch.Tensor, R_hand: torch.Tensor, R_obj: torch.Tensor, t_obj: torch.Tensor) -> torch.Tensor:
    """The wrist pose in the object's frame, as a pose vector for :func:`temporal_energy`.

    A hand that holds an object still moves with it: in the object's frame its wrist stays
    put even while both move in the world. Charging the velocity of this vector (and of the
    finger angles) is a grasp-stability prior, in the spirit of the single-camera grasp of
    HOnnotate Eq. 12 (one hand pose in the object frame for all frames), made soft.

    Args:
        wrist: (B, 3) wrist joint, world, metres.
        R_hand: (B, 3, 3) hand-to-world rotation (``global_orient`` as a matrix).
        R_obj: (B, 3, 3) object-to-world rotation. t_obj: (B, 3) object translation, metres.
    Returns:
        (B, 12): wrist position in the object frame (metres) and the flattened rotation
        ``R_obj^T R_hand``.
    """
    p = torch.einsum("bji,bj->bi", R_obj, wrist - t_obj)
    return torch.cat([p, (R_obj.transpose(1, 2) @ R_hand).flatten(1)], dim=1)
