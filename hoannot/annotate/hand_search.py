"""Grasp search by analysis-by-synthesis: the hand pose that explains the hand's depth points and masks.

With the object registered (:mod:`hoannot.annotate.object_pose`) and the hand pixels known
(:mod:`hoannot.annotate.foreground`), every view of every frame shows the same hand in the
object frame as long as the grasp holds. The hand pixels with depth of all cameras and
frames are mapped into the object frame and pooled into one point cloud ``P``; then one
grasp -- ``global_orient``, ``hand_pose``, ``transl`` in the object frame, and ``betas`` --
is searched that minimises, summed over the frames ``t`` and cameras ``c``::

    E = mean_{p in P} rho(d(p, hand surface) / 1 cm)                 (points on the skin)
      + lambda_sil * mean_{t,c,v} min(DT_tc(pi_c(R_t v + t_t)), 40) / 10 px   (skin inside the masks)
      + lambda_2d * sum conf * GM(||pi_c(J) - k|| / 15 px)          (2D joints, robust, optional)
      + lambda_contact * mean_tips min(d(tip, object) / 1 cm, 3)     (fingertips touch the object)
      + E_phy (HOnnotate Eq. 9-10) + free space in front of the object pixels
      + nu * E_joint(hand_pose) + prior * ||hand_pose||^2

``rho`` is the capped L1 ``min(x, 2)``; ``DT_tc`` the distance transform (pixels) of
the hand-or-object mask of view (t, c), so vertices projecting onto the background are
penalised in proportion to how far off they are (the object may hide the hand, hence
hand *or* object); ``GM`` Geman-McClure ``x^2 / (1 + x^2)``. This is the depth and
silhouette part of the fit's energy (HOnnotate Eq. 4, 7) made cheap enough for many starts:
60 rigid starts (the rotations of the icosahedral group, wrist placed so that
the model's centre lies on the cloud's centre), all optimised in one batch with Adam; the
lowest energy wins. The best few are then restarted with the fingers curled by
several amounts (a flat start cannot reach a closed grasp) and optimised further. The frames then carry the winner through their object poses.

A sequence whose grasp changes is still served: the result is a start for the fit, which
solves every frame on its own.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera
from hoannot.io import InputError
from hoannot.geometry import project, transform_points
from hoannot.models.hand import HandModel, change_frame
from hoannot.models.hand import open_hand_flexion_axes

#: the joint-limit weight of HOnnotate Eq. 11/12
NU = 50.0
#: HO-3D fingertip joints (thumb, index, middle, ring, pinky)
TIPS = [16, 17, 18, 19, 20]
#: flexion (radians) per joint of a curl of 1: MCP, PIP, DIP of each finger (MANO joint order), thumb less
CURL_SCALE = torch.tensor([0.7, 0.9, 0.6] * 4 + [0.3, 0.4, 0.5])


class GraspSearch(NamedTuple):
    """Result of :func:`search_grasp`.

    Attributes:
        global_orient, hand_pose, transl: (F, 3), (F, 45), (F, 3) float32 world frame.
        betas: (nb,) float32.
        energy: (keep_best * len(curls),) float32 final energies of the hypotheses of the
            second stage, ascending (``energy[0]`` is the winner's).
        points: number of pooled hand points.
        hypotheses: the second stage's final hypotheses in the object frame, in the order
            of ``energy``: ``global_orient`` (B, 3), ``hand_pose`` (B, 45), ``transl``
            (B, 3) metres, ``betas`` (B, nb), all float32.
        extra_rank: (len(extra_starts),) int64, where the hypotheses grown from
            ``extra_starts`` ended in that order (None without them).
    """

    global_orient: np.ndarray
    hand_pose: np.ndarray
    transl: np.ndarray
    betas: np.ndarray
    energy: np.ndarray
    points: int
    hypotheses: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    extra_rank: np.ndarray | None = None


def _mask_distance(labels: np.ndarray) -> np.ndarray:
    """(H, W) float32 pixel distance to the nearest hand-or-object pixel (0 inside)."""
    outside = (labels == 0).astype(np.uint8)
    if outside.all():
        return np.full(labels.shape, 40.0, np.float32)
    return cv2.distanceTransform(outside, cv2.DIST_L2, 3).astype(np.float32)


def search_grasp(
    hand_model: HandModel,
    cameras: list[Camera],
    depth: np.ndarray,
    labels: np.ndarray,
    obj_rot: np.ndarray,
    obj_transl: np.ndarray,
    obj_verts: torch.Tensor | None = None,
    obj_faces: torch.Tensor | None = None,
    uv: np.ndarray | None = None,
    conf: np.ndarray | None = None,
    n_points: int = 3000,
    iterations: int = 150,
    keep_best: int = 6,
    curls: tuple[float, ...] = (0.0, 0.5, 1.0),
    start_curls: tuple[float, ...] = (0.0,),
    lambda_sil: float = 1.0,
    lambda_2d: float = 0.0,
    lambda_contact: float = 0.3,
    lambda_phy: float = 10.0,
    prior: float = 0.01,
    seed: int = 0,
    extra_starts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    free_space: str = "object",
    nearest: str = "auto",
) -> GraspSearch:
    """One grasp for the sequence from the hand's depth points and masks (module docstring).

    Args:
        hand_model: the model to initialise.
        cameras: the C cameras.
        depth: (F, C, H, W) float32 metres (0 = none).
        labels: (F, C, H, W) uint8 segmentation (1 hand, 2 object).
        obj_rot, obj_transl: (F, 3) object -> world (axis-angle, metres).
        obj_verts, obj_faces: the object mesh (V, 3) float32 metres object frame, (Nf, 3)
            int64: adds E_phy (HOnnotate Eq. 9-10) and the free-space test in front of the
            object pixels. None: neither.
        uv, conf: optional 2D joints (F, C, 21, 2) px HO-3D order and confidences (F, C, 21).
        n_points: hand points kept (random subset of the pooled cloud).
        iterations: Adam steps (a third with every start, the rest with the ``keep_best`` best).
        start_curls: finger curls of the rigid starts (each of the 60 rotations with each).
        curls: finger curls tried on each of the best (0 flat, 1 = ``CURL_SCALE`` radians of
            flexion per joint about the open hand's flexion axes).
        lambda_phy: weight of E_phy (HOnnotate Eq. 9-10, w = 0.5 per cm).
        lambda_contact: weight of the fingertip contact prior (a hidden fingertip is
            most often on the object's far side; 0: off).
        lambda_sil, lambda_2d, prior: weights of the terms (``lambda_2d`` 0: the shipped CPM's
            joints made the search worse, 12.5 vs 11.9 mm on the first benchmark capture).
        seed: subset seed.
        extra_starts: further hypotheses ``(global_orient (B, 3), hand_pose (B, 45),
            transl (B, 3) metres, betas (B, nb))`` in the object frame, added as they are
            to the second stage (e.g. grasps from other sources).
        free_space: where a hand vertex more than 1.5 cm in front of the observed depth is
            penalised (the camera would have seen it there): ``"object"`` the object's pixels,
            ``"all"`` every pixel with depth (hand, object and background).
        nearest: how each hand point finds its nearest hand vertex
            (:func:`hoannot.fitting.energies.nearest_sq_dists`): ``"auto"`` (a k-d tree on the
            CPU, the exhaustive search on a GPU), ``"kdtree"`` or ``"brute"``.
    Returns:
        :class:`GraspSearch`.
    Raises:
        InputError: no hand pixel with depth in any view; an unknown ``free_space`` or ``nearest``.
    """
    from pytorch3d.ops import knn_points

    from hoannot.fitting.energies import nearest_sq_dists

    if nearest not in ("auto", "kdtree", "brute"):
        raise InputError(f"search_grasp: nearest {nearest!r}: expected auto, kdtree or brute")
    F, C = labels.shape[:2]
    R = Rotation.from_rotvec(np.asarray(obj_rot, np.float64)).as_matrix()
    t = np.asarray(obj_transl, np.float64)
    pts = []
    for f in range(F):
        for c, cam in enumerate(cameras):
            p, _ = cam.backproject(depth[f, c], labels[f, c] == 1)
            pts.append((p - t[f]) @ R[f])  # world -> object frame
    P = np.concatenate(pts)
    if len(P) == 0:
        raise InputError("search_grasp: no hand pixel with depth in any view: the hand cannot be initialised")
    rng = np.random.default_rng(seed)
    P = P[rng.choice(len(P), min(n_points, len(P)), replace=False)]
    Pt = torch.as_tensor(P, dtype=torch.float32)
    # masks as distance maps, (F*C, 1, H, W)
    H, W = labels.shape[-2:]
    dt = torch.as_tensor(np.stack([_mask_distance(labels[f, c]) for f in range(F) for c in range(C)]))[:, None]
    # observed depth at the object pixels: a hand vertex well in front of it would have been seen
    if free_space not in ("object", "all"):
        raise InputError(f"search_grasp: free_space {free_space!r}: expected object or all")
    seen = (lambda f, c: labels[f, c] == 2) if free_space == "object" else (lambda f, c: depth[f, c] > 0)
    dobj = torch.as_tensor(np.stack([np.where(seen(f, c), depth[f, c], 0.0) for f in range(F) for c in range(C)]),
                           dtype=torch.float32)[:, None]  # fmt: skip
    onormals = None
    if obj_verts is not None:
        from pytorch3d.structures import Meshes

        from hoannot.fitting.energies import penetration_energy

        ov = torch.as_tensor(obj_verts, dtype=torch.float32)
        onormals = Meshes([ov], [torch.as_tensor(obj_faces)]).verts_normals_padded()[0]
    Kc = torch.as_tensor(np.stack([np.asarray(c.K) for c in cameras]), dtype=torch.float32)
    Tcw = np.stack([c.T_cam_world for c in cameras])
    # object -> camera per (f, c): x_c = Rc (R_f x + t_f) + tc
    Rfc = torch.as_tensor(np.einsum("cij,fjk->fcik", Tcw[:, :3, :3], R), dtype=torch.float32)
    tfc = torch.as_tensor(np.einsum("cij,fj->fci", Tcw[:, :3, :3], t) + Tcw[None, :, :3, 3], dtype=torch.float32)
    # starts
    starts = Rotation.create_group("I")
    B = len(starts)
    b = torch.zeros(hand_model.num_betas)
    with torch.no_grad():
        rest = hand_model(torch.zeros(1, 3), torch.zeros(1, 45), b[None]).vertices[0]
    Rs = torch.as_tensor(starts.as_matrix(), dtype=torch.float32).repeat(len(start_curls), 1, 1)
    J0 = hand_model.root_joint(b[None])[0]
    # choose transl so that R (rest_centre - J0) + J0 + transl = cloud centre
    centre = Pt.mean(0)
    rc = rest.mean(0)
    transl0 = centre - torch.einsum("bij,j->bi", Rs, rc - J0) - J0
    flex = torch.as_tensor(open_hand_flexion_axes(), dtype=torch.float32)  # (15, 3)
    curled = lambda c: (c[:, :, None] * flex[None] * CURL_SCALE[None, :, None]).reshape(-1, 45)  # noqa: E731  (B, 15) -> (B, 45)
    c0 = torch.as_tensor(start_curls, dtype=torch.float32).repeat_interleave(B)[:, None].expand(-1, 15)
    B = B * len(start_curls)
    state = [torch.as_tensor(starts.as_rotvec(), dtype=torch.float32).repeat(len(start_curls), 1), curled(c0), transl0 / 0.1,
             torch.zeros(B, hand_model.num_betas)]  # fmt: skip
    kp = None
    if uv is not None and conf is not None and lambda_2d > 0:
        kp = (torch.as_tensor(np.nan_to_num(uv), dtype=torch.float32),
              torch.as_tensor(np.where(np.isfinite(uv).all(-1), conf, 0.0), dtype=torch.float32))  # fmt: skip

    def energy(go, pose, tr, betas):
        Bh = go.shape[0]
        out = hand_model(go, pose, betas, tr * 0.1)
        V, Jn = out.vertices, out.joints  # (B, V, 3) object frame
        d2 = nearest_sq_dists(Pt[None].expand(Bh, -1, -1), V, nearest)  # (B, N) m^2
        e_pts = (d2.clamp(min=1e-12).sqrt() / 0.01).clamp(max=2.0).mean(-1)

        def to_pixels(X, with_z=False):  # (B, N, 3) object frame -> uv (F, C, B, N, 2) [, z (F, C, B, N)]
            xc = transform_points(X, Rfc[:, :, None], tfc[:, :, None])  # (F, C, B, N, 3)
            uv = project(xc, Kc[None, :, None, None], min_depth=1e-3)
            return (uv, xc[..., 2].clamp(min=1e-3)) if with_z else uv

        uvv, zv = to_pixels(V[:, ::2], with_z=True)
        grid = torch.stack([2 * uvv[..., 0] / (W - 1) - 1, 2 * uvv[..., 1] / (H - 1) - 1], -1).reshape(F * C, Bh, -1, 2)
        samp = torch.nn.functional.grid_sample(dt, grid, align_corners=True, padding_mode="border")
        e_sil = (samp.clamp(max=40.0) / 10.0).reshape(F * C, Bh, -1).mean((0, 2))
        # in front of an observed object surface by more than 1.5 cm: the camera would see the hand there
        dseen = torch.nn.functional.grid_sample(dobj, grid, mode="nearest", align_corners=True).reshape(F * C, Bh, -1)
        front = torch.where(dseen > 0, torch.relu(dseen - zv.reshape(F * C, Bh, -1) - 0.015) / 0.01, torch.zeros_like(dseen))
        e_sil = e_sil + front.clamp(max=4.0).mean((0, 2))
        e = e_pts + lambda_sil * e_sil + NU * hand_model.limits.violation(pose).square().sum(-1) \
            + prior * pose.square().sum(-1) + 0.01 * betas.square().sum(-1)
        if onormals is not None:
            e = e + lambda_phy * penetration_energy(V[:, ::3], ov[None].expand(Bh, -1, -1), onormals[None].expand(Bh, -1, -1), 0.5)
            if lambda_contact > 0:  # a grasping hand's fingertips touch the object
                dtip = knn_points(Jn[:, TIPS], ov[None].expand(Bh, -1, -1), K=1).dists[..., 0].clamp(min=1e-12).sqrt()
                e = e + lambda_contact * (dtip / 0.01).clamp(max=3.0).mean(-1)
        if kp is not None:
            r2 = (to_pixels(Jn) - kp[0][:, :, None]).square().sum(-1) / 15.0**2  # (F, C, B, 21)
            e = e + lambda_2d * (kp[1][:, :, None] * r2 / (1 + r2)).sum((0, 1, 3)) / max(F * C, 1)
        return e

    # all rigid starts (flat hand) for a third of the steps; then the `keep_best` best, each
    # with the fingers curled by every amount of `curls` (a flat start cannot reach a closed grasp)
    def descend(state, steps):
        params = [x.clone().requires_grad_() for x in state]
        opt = torch.optim.Adam([{"params": params[:2], "lr": 0.03}, {"params": [params[2]], "lr": 0.02},
                                {"params": [params[3]], "lr": 0.02}])  # fmt: skip
        for _ in range(steps):
            opt.zero_grad()
            energy(*params).sum().backward()
            opt.step()
        return [x.detach() for x in params]

    def best(state, k):
        with torch.no_grad():
            idx = torch.argsort(energy(*state))[:k]
        return [x[idx] for x in state]

    state = descend(state, iterations // 3)
    state = best(state, min(keep_best, B))
    n = len(state[0])
    state = [x.repeat(len(curls), *([1] * (x.dim() - 1))) for x in state]
    curl = torch.as_tensor(curls, dtype=torch.float32).repeat_interleave(n)[:, None].expand(-1, 15)
    state[1] = state[1] + curled(curl)
    n_extra = 0
    if extra_starts is not None:
        n_extra = len(extra_starts[0])
        xs = [torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in extra_starts]
        xs[2] = xs[2] / 0.1
        state = [torch.cat([a, b]) for a, b in zip(state, xs)]
    state = descend(state, iterations - iterations // 3)
    with torch.no_grad():
        e = energy(*state)
    k = int(torch.argmin(e))
    go, pose, tr, betas = state
    Rall, tall = torch.as_tensor(R, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)
    with torch.no_grad():
        bk = betas[k].detach()
        gw, tw = change_frame(hand_model, Rall, tall, go[k:k + 1].detach().expand(F, 3), (tr[k:k + 1] * 0.1).detach().expand(F, 3), bk)
    n = lambda x: x.detach().numpy().astype(np.float32)  # noqa: E731
    order = torch.argsort(e)
    hyp = (n(go[order]), n(pose[order]), n(tr[order] * 0.1), n(betas[order]))
    extra_rank = torch.argsort(order)[len(e) - n_extra:].numpy() if n_extra else None  # the extras come last
    return GraspSearch(n(gw), n(pose[k:k + 1].expand(F, 45)), n(tw), n(bk), n(e[order]), len(P), hyp, extra_rank)
