"""Automatic pose initialisation from 2D hand joints, segmentation and depth.

HOnnotate (Hampali et al., "HOnnotate: A method for 3D Annotation of Hand and Object
Poses", CVPR 2020), Sec. 4.1:

* **Multi-camera** (:func:`hand_from_2d_multiview`, Eq. 11): per frame, the hand pose
  minimising the confidence-weighted reprojection error of the 21 joints over all
  cameras plus the joint-angle limit term,
  ``E(p_h) = sum_c sum_j conf_cj ||pi_c(J_j(p_h)) - k_cj||^2 + nu * E_joint(p_h)``,
  ``nu = 50`` (pixels^2 and radians^2). It is started from a 3D guess: the 2D joints are
  triangulated (confidence-weighted DLT, :func:`triangulate`) and the hand model is fitted
  to those 3D points (:func:`hoannot.fitting.ik.fit_keypoints`, which also estimates the
  sequence's ``betas``). When tracking, a frame whose energy is lower from the previous
  frame's solution is re-solved from there.
* **Single camera** (:func:`grasp_from_2d_single_view`, Eq. 12): one grasp, i.e. the
  hand pose in the **object frame**, shared by a random subset of frames, minimising the
  same reprojection error summed over those frames (the hand follows the object poses
  found by :mod:`hoannot.annotate.object_pose`). A single camera cannot triangulate, so
  the hand's depth comes from the depth of the hand pixels at the 2D joints
  (:func:`keypoint_depth`): a robust (Huber) depth term, and the 3D start is the 2D joints
  back-projected at that depth.
* :func:`initialize_sequence` reads a sequence's 2D joints, segmentation and depth,
  registers the object, and picks the multi- or single-camera path by the number of cameras.

The torch problems are solved with ``torch.optim.LBFGS`` (strong Wolfe line search), all
frames batched (the energy is a sum of independent per-frame terms).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera
from hoannot.io import InputError
from hoannot.datasets.keypoints2d import read_views
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.segmentation import SEGMENTATION_LABELS, labels_path, read_labels
from hoannot.datasets.segmentation import segmentation_dir as segmentation_dir_of
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.config import FitConfig
from hoannot.fitting.ik import fit_keypoints
from hoannot.geometry import project, transform, transform_points, unproject
from hoannot.models.hand import HandModel, change_frame
from hoannot.models.objects import ObjectModel

#: HOnnotate's weight of the joint-angle limit term (Eq. 11, 12).
NU = 50.0
#: confidence given to joints a ground-truth ``visible`` flag marks as hidden (a file with
#: ``visible`` and no ``conf``, :mod:`hoannot.datasets.keypoints2d`).
HIDDEN_CONF = 0.2
#: depth of each HO-3D keypoint below the visible skin, metres (wrist, MCP, PIP/DIP, tips).
SURFACE_OFFSET = np.array(
    [0.015] + [0.010, 0.008, 0.007] * 4 + [0.010, 0.008, 0.007] + [0.003] * 5, dtype=np.float32
)
#: transl is optimised in decimetres so that its scale matches that of the angles
_TRANSL_UNIT = 0.1
SOURCE = "2d-joints+registration"
#: a frame constrains its hand when at least MIN_INIT_JOINTS (camera, joint) detections over
#: all cameras have a confidence above MIN_INIT_CONF (a missed hand has confidence 0).
MIN_INIT_CONF = 0.1
MIN_INIT_JOINTS = 6
#: the grasp search finds a frame's hand when its views hold this many hand pixels with depth
MIN_HAND_PIXELS = 100
#: the ways to initialise the hand (see :func:`initialize_sequence`)
HAND_INITS = ("search", "joints")
#: weights of the 2D joints in the grasp search (``search_grasp`` ``lambda_2d``), one search
#: each; the start with the lowest estimated hand error wins (:func:`initialize_sequence`)
SEARCH_JOINTS = (0.0, 0.3)
#: at most this many frames (evenly spread) score the searches' starts: a grasp held in the
#: object frame reads the same on a subset, and a long sequence's quality pass is not repeated
SCORE_FRAMES = 16


class HandInit(NamedTuple):
    """Hand initialisation, world frame.

    Attributes:
        global_orient: (F, 3) float32 axis-angle.
        hand_pose: (F, 45) float32 axis-angle (flat hand = 0).
        transl: (F, 3) float32 metres.
        betas: (nb,) float32 shape used.
        reproj_px: (F,) float32 confidence-weighted RMS reprojection error, pixels.
    """

    global_orient: np.ndarray
    hand_pose: np.ndarray
    transl: np.ndarray
    betas: np.ndarray
    reproj_px: np.ndarray


# ---------------------------------------------------------------------------------------
# geometry helpers


def triangulate(cameras: list[Camera], uv: np.ndarray, conf: np.ndarray, min_conf: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Confidence-weighted linear (DLT) triangulation of 2D joints.

    Each camera contributes the two rows ``w (u P_3 - P_1)``, ``w (v P_3 - P_2)`` of
    ``A X = 0`` (Hartley & Zisserman, Sec. 12.2), ``w`` its confidence; the homogeneous
    solution is the last right singular vector (``numpy.linalg.svd``). Cameras below
    ``min_conf`` get a weight of 5% of their confidence (so a joint seen confidently by
    fewer than two cameras is still defined, but dominated by the confident ones).

    Args:
        cameras: C >= 2 calibrated cameras.
        uv: (F, C, J, 2) pixels. conf: (F, C, J) in [0, 1].
        min_conf: confidence from which a view counts fully.
    Returns:
        points (F, J, 3) float64 world metres, ok (F, J) bool: at least two views with
        ``conf >= min_conf``.
    Raises:
        InputError: fewer than two cameras or mismatched shapes.
    """
    uv = np.asarray(uv, np.float64)
    conf = np.asarray(conf, np.float64)
    F, C, J = conf.shape
    if C < 2 or uv.shape != (F, C, J, 2) or len(cameras) != C:
        raise InputError(f"triangulate: need >= 2 cameras and uv (F, C, J, 2) matching conf {conf.shape}, got {uv.shape}")
    P = np.stack([np.asarray(c.K) @ c.T_cam_world[:3] for c in cameras])  # (C, 3, 4)
    w = np.where(conf >= min_conf, conf, 0.05 * conf) + 1e-6
    rows_u = uv[..., 0:1] * P[None, :, None, 2] - P[None, :, None, 0]  # (F, C, J, 4)
    rows_v = uv[..., 1:2] * P[None, :, None, 2] - P[None, :, None, 1]
    A = np.concatenate([rows_u * w[..., None], rows_v * w[..., None]], axis=1)  # (F, 2C, J, 4)
    A = A.transpose(0, 2, 1, 3)  # (F, J, 2C, 4)
    A = A / np.linalg.norm(A, axis=-1, keepdims=True).clip(1e-12)
    _, _, Vt = np.linalg.svd(A)
    X = Vt[..., -1, :]
    pts = X[..., :3] / X[..., 3:4]
    ok = (conf >= min_conf).sum(1) >= 2
    return pts, ok


def keypoint_depth(depth: np.ndarray, labels: np.ndarray | None, uv: np.ndarray, window: int = 2) -> np.ndarray:
    """Measured depth of the hand skin at each 2D joint.

    The median depth of the pixels within ``window`` of the joint that are labelled
    *hand* (any pixel when ``labels`` is None) and have a depth value.

    Args:
        depth: (H, W) metres, 0 = no value. labels: (H, W) uint8 or None.
        uv: (J, 2) pixels.
    Returns:
        (J,) float32 metres along the camera's z axis; NaN where nothing was measured.
    """
    H, W = depth.shape
    out = np.full(len(uv), np.nan, np.float32)
    for j, (u, v) in enumerate(np.asarray(uv, np.float64)):
        if not np.isfinite([u, v]).all():
            continue
        ui, vi = int(round(u)), int(round(v))
        u0, u1, v0, v1 = max(ui - window, 0), min(ui + window + 1, W), max(vi - window, 0), min(vi + window + 1, H)
        if u0 >= u1 or v0 >= v1:
            continue
        d = depth[v0:v1, u0:u1]
        m = d > 0
        if labels is not None:
            m &= labels[v0:v1, u0:u1] == SEGMENTATION_LABELS["hand"]
        if m.any():
            out[j] = np.median(d[m])
    return out


class _Cams:
    """Cameras as torch tensors (float32): K (C, 3, 3), R (C, 3, 3), t (C, 3) world -> camera."""

    def __init__(self, cameras: list[Camera]) -> None:
        T = np.stack([c.T_cam_world for c in cameras])
        self.K = torch.as_tensor(np.stack([np.asarray(c.K) for c in cameras]), dtype=torch.float32)
        self.R = torch.as_tensor(T[:, :3, :3], dtype=torch.float32)
        self.t = torch.as_tensor(T[:, :3, 3], dtype=torch.float32)

    def project(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X (B, J, 3) world -> uv (B, C, J, 2) pixels (depth clamped at 1 mm), z (B, C, J) metres."""
        pc = transform_points(X[:, None], self.R, self.t)
        return project(pc, self.K[:, None], min_depth=1e-3), pc[..., 2]


def _huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x * x, delta * (a - 0.5 * delta)) * 2.0


class _Energy:
    """Eq. 11/12 terms for B hypotheses, each evaluated on its own frames' observations.

    uv: (B, C, J, 2); conf: (B, C, J); depth: (B, C, J) metres or NaN (optional).
    """

    def __init__(self, cams: _Cams, uv, conf, depth=None, nu=NU, depth_sigma=0.005, depth_weight=1.0, pose_prior=0.1):
        self.cams = cams
        self.uv = torch.as_tensor(np.nan_to_num(uv), dtype=torch.float32)
        self.conf = torch.as_tensor(np.where(np.isfinite(np.asarray(uv)).all(-1), conf, 0.0), dtype=torch.float32)
        if depth is not None:
            d = np.asarray(depth, np.float32)
            self.dmask = torch.as_tensor(np.isfinite(d), dtype=torch.float32) * self.conf
            self.depth = torch.as_tensor(np.nan_to_num(d + SURFACE_OFFSET), dtype=torch.float32)
        else:
            self.depth = None
        self.nu, self.sigma, self.wd, self.prior = nu, depth_sigma, depth_weight, pose_prior

    def __call__(self, joints: torch.Tensor, hand_pose: torch.Tensor, limits) -> tuple[torch.Tensor, torch.Tensor]:
        """joints (B, Cf, J, 3) or (B, J, 3) world -> per-hypothesis energy (B,) and reprojection term (B,)."""
        uv, z = self.cams.project(joints)
        r2 = (uv - self.uv).square().sum(-1)
        e_2d = (self.conf * r2).flatten(1).sum(-1)
        e = e_2d + self.nu * limits.violation(hand_pose).square().sum(-1) + self.prior * hand_pose.square().sum(-1)
        if self.depth is not None:
            e = e + self.wd * (self.dmask * _huber((z - self.depth) / self.sigma, 3.0)).flatten(1).sum(-1)
        return e, e_2d


def _lbfgs(params: list[torch.Tensor], closure_loss, iterations: int) -> None:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = closure_loss()
        loss.backward()
        return loss

    opt.step(closure)


def _weighted_rms(e_2d: torch.Tensor, conf: torch.Tensor) -> np.ndarray:
    return torch.sqrt(e_2d / conf.flatten(1).sum(-1).clamp(min=1e-9)).detach().numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------
# multi-camera (Eq. 11)


def hand_from_2d_multiview(
    hand_model: HandModel,
    cameras: list[Camera],
    uv: np.ndarray,
    conf: np.ndarray,
    depth_hint: np.ndarray | None = None,
    betas: np.ndarray | None = None,
    nu: float = NU,
    iterations: int = 60,
    ik_iterations: int = 100,
    min_conf: float = 0.3,
    tracking: bool = True,
) -> HandInit:
    """Per-frame hand pose from 2D joints seen by several cameras (HOnnotate Eq. 11).

    Args:
        hand_model: the model to initialise.
        cameras: C >= 2 calibrated cameras.
        uv: (F, C, 21, 2) pixels, HO-3D order (NaN = no detection).
        conf: (F, C, 21) detection confidences in [0, 1] (weights of Eq. 11).
        depth_hint: optional (F, C, 21) measured skin depth at each joint (camera z,
            metres, NaN = none; :func:`keypoint_depth`): adds a robust depth term.
        betas: (nb,) shape to use; None: estimated from the triangulated joints.
        nu: weight of the joint-limit term (HOnnotate: 50).
        iterations: L-BFGS iterations of the Eq. 11 solve.
        ik_iterations: Adam iterations of the 3D keypoint fit that gives the start.
        min_conf: confidence from which a view counts fully in the triangulation.
        tracking: re-solve a frame from the previous frame's solution when that has a
            lower energy on this frame (robust to a bad triangulation in one frame).
    Returns:
        :class:`HandInit` (world frame).
    Raises:
        InputError: fewer than two cameras, or shapes that do not match.
    """
    uv = np.asarray(uv, np.float64)
    conf = np.asarray(conf, np.float64)
    F, C, J = conf.shape
    if J != 21 or uv.shape != (F, C, 21, 2):
        raise InputError(f"hand_from_2d_multiview: expected uv (F, C, 21, 2) and conf (F, C, 21), got {uv.shape}, {conf.shape}")
    conf = np.where(np.isfinite(uv).all(-1), np.clip(conf, 0, 1), 0.0)
    pts, _ = triangulate(cameras, np.nan_to_num(uv), conf, min_conf)
    ik = fit_keypoints(hand_model, pts.astype(np.float32), iterations=ik_iterations, fit_betas=betas is None)
    b = torch.as_tensor(ik["betas"] if betas is None else np.asarray(betas, np.float32))
    cams = _Cams(cameras)
    energy = _Energy(cams, uv, conf, depth_hint, nu)

    def solve(go0, pose0, transl0, idx):
        sub = _subset(energy, idx)
        go = torch.as_tensor(go0, dtype=torch.float32).clone().requires_grad_()
        pose = torch.as_tensor(pose0, dtype=torch.float32).clone().requires_grad_()
        tr = (torch.as_tensor(transl0, dtype=torch.float32) / _TRANSL_UNIT).clone().requires_grad_()

        def loss():
            out = hand_model(go, pose, b, tr * _TRANSL_UNIT)
            return sub(out.joints, pose, hand_model.limits)[0].sum()

        _lbfgs([go, pose, tr], loss, iterations)
        with torch.no_grad():
            out = hand_model(go, pose, b, tr * _TRANSL_UNIT)
            e, e2 = sub(out.joints, pose, hand_model.limits)
        return go.detach(), pose.detach(), (tr * _TRANSL_UNIT).detach(), e, _weighted_rms(e2, sub.conf)

    idx = torch.arange(F)
    go, pose, tr, e, rms = solve(ik["global_orient"], ik["hand_pose"], ik["transl"], idx)
    if tracking and F > 1:
        # the previous frame's solution, evaluated on each frame
        with torch.no_grad():
            out = hand_model(go[:-1], pose[:-1], b, tr[:-1])
            sub_idx = idx[1:]
            e_prev = _subset(energy, sub_idx)(out.joints, pose[:-1], hand_model.limits)[0]
        redo = sub_idx[e_prev < e[1:]]
        if len(redo):
            g2, p2, t2, e2, r2 = solve(go[redo - 1], pose[redo - 1], tr[redo - 1], redo)
            better = e2 < e[redo]
            sel = redo[better]
            go[sel], pose[sel], tr[sel], e[sel] = g2[better], p2[better], t2[better], e2[better]
            rms[sel.numpy()] = r2[better.numpy()]
    n = lambda x: x.numpy().astype(np.float32)  # noqa: E731
    return HandInit(n(go), n(pose), n(tr), b.numpy().astype(np.float32), rms)


def _subset(energy: _Energy, idx: torch.Tensor) -> _Energy:
    sub = _Energy.__new__(_Energy)
    sub.__dict__.update(energy.__dict__)
    sub.uv, sub.conf = energy.uv[idx], energy.conf[idx]
    if energy.depth is not None:
        sub.depth, sub.dmask = energy.depth[idx], energy.dmask[idx]
    return sub


# ---------------------------------------------------------------------------------------
# single camera (Eq. 12)


def grasp_from_2d_single_view(
    hand_model: HandModel,
    camera: Camera,
    uv: np.ndarray,
    conf: np.ndarray,
    obj_rot: np.ndarray,
    obj_transl: np.ndarray,
    kp_depth: np.ndarray,
    betas: np.ndarray | None = None,
    n_frames: int = 10,
    seed: int = 0,
    nu: float = NU,
    iterations: int = 100,
    ik_iterations: int = 100,
) -> tuple[HandInit, dict[str, np.ndarray]]:
    """One grasp shared by the sequence, from one camera's 2D joints (HOnnotate Eq. 12).

    The hand is parametrised in the object frame (``x_w = R_t x_o + t_t`` with the object
    pose of frame t); the reprojection error of Eq. 11 is summed over a random subset of
    ``n_frames`` frames, plus ``nu`` times the joint-limit term, plus a Huber depth term
    ``sum conf ((z_j - d_j - s_j) / 5 mm)^2`` with ``d_j`` the measured skin depth at the
    joint (:func:`keypoint_depth`) and ``s_j`` the joint's depth under the skin
    (``SURFACE_OFFSET``) -- one camera gives no triangulation, so depth comes from the
    hand pixels. Start: the joints back-projected at that depth, mapped into the object
    frame, median over the subset, then :func:`~hoannot.fitting.ik.fit_keypoints`.

    Args:
        hand_model: the model to initialise.
        camera: the camera.
        uv: (F, 21, 2) pixels (NaN = none). conf: (F, 21) in [0, 1].
        obj_rot: (F, 3) axis-angle object -> world. obj_transl: (F, 3) metres.
        kp_depth: (F, 21) measured skin depth at the joints, metres, NaN = none.
        betas: (nb,) shape, or None (mean shape: one view does not constrain it).
        n_frames: size of the random frame subset.
        seed: subset seed.
    Returns:
        (:class:`HandInit` for every frame, world frame; the grasp in the object frame as a
        dict with ``global_orient`` (3,), ``hand_pose`` (45,), ``transl`` (3,), ``frames``
        (the subset's frame indices)).
    Raises:
        InputError: shapes that do not match, or no joint with a depth measurement.
    """
    uv = np.asarray(uv, np.float64)
    F = uv.shape[0]
    conf = np.asarray(conf, np.float64)
    kp_depth = np.asarray(kp_depth, np.float64)
    if uv.shape != (F, 21, 2) or conf.shape != (F, 21) or kp_depth.shape != (F, 21) or np.shape(obj_rot) != (F, 3):
        raise InputError(
            "grasp_from_2d_single_view: expected uv (F, 21, 2), conf/kp_depth (F, 21), obj poses (F, 3); "
            f"got {uv.shape}, {conf.shape}, {kp_depth.shape}, {np.shape(obj_rot)}"
        )
    conf = np.where(np.isfinite(uv).all(-1), np.clip(conf, 0, 1), 0.0)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(F, min(n_frames, F), replace=False))
    R = Rotation.from_rotvec(np.asarray(obj_rot, np.float64)).as_matrix()
    t = np.asarray(obj_transl, np.float64)
    # 3D start: back-project at the measured depth (+ depth under the skin)
    guesses = []
    for f in sub:
        d = kp_depth[f]
        good = np.isfinite(d) & (conf[f] > 0)
        if not good.any():
            continue
        z = np.where(np.isfinite(d), d, np.median(d[good])) + SURFACE_OFFSET
        Xw = transform(unproject(np.nan_to_num(uv[f]), z, np.asarray(camera.K)), camera.T_world_cam)
        guesses.append((Xw - t[f]) @ R[f])  # world -> object
    if not guesses:
        raise InputError("grasp_from_2d_single_view: no hand joint has a depth measurement in the chosen frames")
    start = np.median(np.stack(guesses), 0)
    ik = fit_keypoints(hand_model, start[None].astype(np.float32), iterations=ik_iterations, fit_betas=False)
    b = torch.zeros(hand_model.num_betas) if betas is None else torch.as_tensor(np.asarray(betas, np.float32))
    cams = _Cams([camera])
    Rt = torch.as_tensor(R[sub], dtype=torch.float32)
    tt = torch.as_tensor(t[sub], dtype=torch.float32)
    energy = _Energy(cams, uv[sub][:, None], conf[sub][:, None], kp_depth[sub][:, None], nu)  # B = T frames, C = 1

    def joints_world(go, pose, tr):
        jo = hand_model(go, pose, b, tr * _TRANSL_UNIT).joints[0]  # (21, 3) object frame
        return torch.einsum("tij,nj->tni", Rt, jo) + tt[:, None]  # (T, 21, 3)

    def per_frame(jw):
        uvp, z = cams.project(jw)  # (T, 1, 21, 2), (T, 1, 21)
        e2 = (energy.conf * (uvp - energy.uv).square().sum(-1)).sum()
        ed = (energy.dmask * _huber((z - energy.depth) / energy.sigma, 3.0)).sum()
        return e2, ed

    go = torch.as_tensor(ik["global_orient"]).clone().requires_grad_()
    pose = torch.as_tensor(ik["hand_pose"]).clone().requires_grad_()
    tr = (torch.as_tensor(ik["transl"]) / _TRANSL_UNIT).clone().requires_grad_()

    def loss():
        e2, ed = per_frame(joints_world(go, pose, tr))
        return e2 + energy.wd * ed + nu * hand_model.limits.violation(pose).square().sum() + energy.prior * pose.square().sum()

    _lbfgs([go, pose, tr], loss, iterations)
    go, pose, tr = go.detach(), pose.detach(), (tr * _TRANSL_UNIT).detach()
    # every frame, world frame
    Rall = torch.as_tensor(R, dtype=torch.float32)
    tall = torch.as_tensor(t, dtype=torch.float32)
    with torch.no_grad():
        gw, tw = change_frame(hand_model, Rall, tall, go.expand(F, 3), tr.expand(F, 3), b)
        jw = hand_model(gw, pose.expand(F, 45), b, tw).joints
        uvp, _ = cams.project(jw)
        cf = torch.as_tensor(conf, dtype=torch.float32)
        e2 = (cf * (uvp[:, 0] - torch.as_tensor(np.nan_to_num(uv), dtype=torch.float32)).square().sum(-1)).sum(-1)
    rms = _weighted_rms(e2, cf)
    n = lambda x: x.numpy().astype(np.float32)  # noqa: E731
    init = HandInit(n(gw), n(pose.expand(F, 45)), n(tw), b.numpy().astype(np.float32), rms)
    grasp = {"global_orient": n(go[0]), "hand_pose": n(pose[0]), "transl": n(tr[0]), "frames": sub}
    return init, grasp


# ---------------------------------------------------------------------------------------
# a whole sequence


def check_search_joints(weights: float | tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """The grasp search's 2D-joint weights (``--search-joints``) as a tuple of floats.

    Raises:
        InputError: no weight, or one that is negative or not finite (one line naming it).
    """
    ws = (weights,) if isinstance(weights, (int, float)) else tuple(weights)
    if not ws:
        raise InputError("--search-joints: expected at least one weight")
    for w in ws:
        if not (np.isfinite(w) and w >= 0):
            raise InputError(f"--search-joints {w}: expected a weight >= 0")
    return tuple(float(w) for w in ws)


def initialize_sequence(
    seq: Sequence,
    hand_model: HandModel,
    obj: ObjectModel,
    keypoints2d_dir: str | Path | None = None,
    segmentation_dir: str | Path | None = None,
    frames: list[int] | None = None,
    depth_hint: bool = True,
    n_grasp_frames: int = 10,
    seed: int = 0,
    hand_init: str = "search",
    hypotheses: int = 1,
    fit_cfg: FitConfig | None = None,
    search_joints: float | tuple[float, ...] = SEARCH_JOINTS,
) -> HandObjectPoses:
    """Initial hand and object poses of a sequence from 2D joints, segmentation and depth.

    The object pose comes from :func:`hoannot.annotate.object_pose.track_object`
    (object pixels + depth of all cameras; the RGB images, when present, only break ties
    between poses of equal geometric fit). The hand: with two or more cameras
    :func:`hand_from_2d_multiview` (Eq. 11) per frame; with one camera
    :func:`grasp_from_2d_single_view` (Eq. 12) -- a grasp fixed to the object.

    Args:
        seq: the opened sequence.
        hand_model: the model to initialise. obj: the object model.
        keypoints2d_dir: folder of ``<cam>.npz`` 2D joints (default ``SEQ/keypoints2d``).
        segmentation_dir: folder of ``<cam>/<frame:06d>.png`` labels (default
            ``SEQ/segmentation``).
        frames: frame ids (default: all of the sequence).
        depth_hint: multi-camera only: add the skin-depth term to Eq. 11.
        n_grasp_frames: single camera: frames in the random subset of Eq. 12.
        seed: random seed (subset, point sampling).
        hand_init: ``"search"``: the grasp that explains the hand's depth points and masks
            (:func:`hoannot.annotate.hand_search.search_grasp`, analysis by synthesis; the
            2D joints are not used); ``"joints"``: from the 2D joints (Eq. 11 / Eq. 12).
        hypotheses: with ``"search"``: how many of the search's hypotheses (best by the
            search energy first) are fitted briefly and ranked by the fit's own energy
            (:func:`hoannot.annotate.hypotheses.rank_hypotheses`, HOnnotate Eq. 3); the
            chosen one's short-fitted poses (hand and object) are returned. 1: the search's
            winner, no fit.
        fit_cfg: the fit settings of those short fits (default: the fit's defaults).
        search_joints: with ``"search"``: weights of the 2D joints in the search's energy
            (:func:`~hoannot.annotate.hand_search.search_grasp` ``lambda_2d``; 0: the joints
            are not used), one search per weight. With several, each search's winner is
            scored by its estimated hand error (:func:`hoannot.annotate.hypotheses.
            estimated_hand_error`, mean over at most ``SCORE_FRAMES`` evenly spread frames)
            and the lowest is kept: the joints help the search on some captures and hurt it
            on others, and the estimate, which does not read the joints, tells which on 8 of
            10 (``benchmarks/results/auto_annotation.md``) and on 5 of 6 captures held out from
            the rule (``auto_annotation_validation.md``).
    Returns:
        :class:`HandObjectPoses` (world frame), ``source`` = ``"2d-joints+registration"``
        plus the path taken.
    Raises:
        InputError: an unknown ``hand_init``, a missing or malformed 2D-joint file,
            segmentation image or depth image (names the file), no confident 2D joint in any
            view (``"joints"``), no hand pixel in any view (``"search"``), a frame where
            the object cannot be registered, ``hypotheses`` < 1, or no ``search_joints`` or
            one < 0 or not finite.
    """
    from hoannot.annotate.object_pose import DepthView, track_object

    if hand_init not in HAND_INITS:
        raise InputError(f"--hand-init {hand_init!r}: expected one of {', '.join(HAND_INITS)}")
    if hypotheses < 1:
        raise InputError(f"--hypotheses {hypotheses}: expected at least 1")
    search_joints = check_search_joints(search_joints)
    frames = list(seq.frames if frames is None else frames)
    kp_dir = Path(keypoints2d_dir) if keypoints2d_dir is not None else seq.root / "keypoints2d"
    seg_dir = Path(segmentation_dir) if segmentation_dir is not None else segmentation_dir_of(seq.root)
    uv, conf = read_views([kp_dir / f"{c}.npz" for c in seq.camera_names], seq.camera_names, frames, HIDDEN_CONF)
    seen = (conf > MIN_INIT_CONF).sum((1, 2))  # (F,) confident joints over all cameras
    if hand_init == "joints" and not seen.any():
        raise InputError(f"{kp_dir}: no confident 2D joint in any view (confidence <= {MIN_INIT_CONF}): the "
                         "detector found no hand; look at perception/overlay_*.png, try the other --kp-detector")  # fmt: skip
    views, kdepth = [], np.full(conf.shape, np.nan, np.float32)
    for fi, f in enumerate(frames):
        row = []
        for ci, cam in enumerate(seq.cameras):
            dpath = seq.depth_path(cam.name, f)
            if not dpath.is_file():
                raise InputError(f"{dpath}: file not found (depth of camera {cam.name}, frame {f})")
            depth = seq.read_depth(cam.name, f)
            labels = read_labels(labels_path(seg_dir, cam.name, f), (cam.width, cam.height),
                                 f"segmentation of camera {cam.name}, frame {f}")
            rgb = seq.read_rgb(cam.name, f) if seq.rgb_path(cam.name, f).is_file() else None
            row.append(DepthView(cam, depth, labels, rgb if rgb is not None and rgb.shape[:2] == depth.shape else None))
            kdepth[fi, ci] = keypoint_depth(depth, labels, uv[fi, ci])
        views.append(row)
    try:
        obj_rot, obj_transl, _ = track_object(views, obj, seed=seed)
    except InputError as e:  # "frame index i: ..." -> name the masks and the frame id
        msg = str(e)
        if msg.startswith("frame index "):
            head, _, rest = msg.partition(": ")
            msg = f"frame {frames[int(head.split()[-1])]}: {rest}"
        raise InputError(f"{seg_dir}: {msg} (check the object masks; retrain with hoannot train-seg)") from None
    if hand_init == "search":
        from hoannot.annotate.hand_search import search_grasp

        D = np.stack([[v.depth for v in row] for row in views])
        L = np.stack([[v.labels for v in row] for row in views])
        if not (L == SEGMENTATION_LABELS["hand"]).any():
            raise InputError(f"{seg_dir}: no hand pixel in any view: the hand cannot be initialised")
        searches = [search_grasp(hand_model, seq.cameras, D, L, obj_rot, obj_transl, obj.verts, obj.faces, seed=seed,
                                 **({"uv": uv, "conf": conf, "lambda_2d": w} if w > 0 else {}))
                    for w in search_joints]  # fmt: skip
        s, how = searches[0], ""
        if len(searches) > 1:  # the search's energies differ by weight: compare the winners by their estimated error
            from hoannot.annotate.hypotheses import estimated_hand_error

            from hoannot.fitting.schedule import evenly_spaced

            sub = evenly_spaced(len(frames), SCORE_FRAMES)
            est = [float(np.mean(estimated_hand_error(seq, hand_model, obj, HandObjectPoses(
                frames=np.asarray(frames)[sub], global_orient=c.global_orient[sub], hand_pose=c.hand_pose[sub],
                betas=c.betas, transl=c.transl[sub], obj_rot=np.asarray(obj_rot)[sub],
                obj_transl=np.asarray(obj_transl)[sub], source="grasp search"), fit_cfg)))
                for c in searches]  # fmt: skip
            k = int(np.argmin(est))
            s = searches[k]
            how = (f"; 2D-joint weight {search_joints[k]:g} chosen by the estimated hand error ("
                   + ", ".join(f"weight {w:g}: {e:.2f} mm" for w, e in zip(search_joints, est)) + ")")
        h = HandInit(s.global_orient, s.hand_pose, s.transl, s.betas, np.zeros(len(frames), np.float32))
        how = (f"grasp search on the hand's depth points and masks ({s.points} points, {len(seq.cameras)} cameras, "
               f"energy {s.energy[0]:.3f})" + how)
        if hypotheses > 1 and s.hypotheses is not None:
            from hoannot.annotate.hypotheses import rank_hypotheses

            top = tuple(x[:hypotheses] for x in s.hypotheses)
            r = rank_hypotheses(seq, hand_model, obj, top, np.asarray(frames), obj_rot, obj_transl, fit_cfg)
            # the chosen hypothesis' short-fitted poses (hand and object), not its raw start: the full
            # fit from them ended 0.2-1.0 mm nearer the truth on 4 of 4 captures (hypothesis_ranking.md)
            p = r.fitted[r.chosen]
            obj_rot, obj_transl = p.obj_rot, p.obj_transl
            h = HandInit(p.global_orient, p.hand_pose, p.transl, p.betas, np.zeros(len(frames), np.float32))
            how += (f"; hypothesis {r.chosen} of {len(r.energies)} chosen by the fit's energy after a short fit "
                    f"(energies {', '.join(f'{e:.3f}' for e in r.energies)}; {r.seconds:.0f} s)")  # fmt: skip
    elif len(seq.cameras) >= 2:
        h = hand_from_2d_multiview(hand_model, seq.cameras, uv, conf, depth_hint=kdepth if depth_hint else None)
        how = f"multi-camera Eq. 11 ({len(seq.cameras)} cameras, reprojection {float(np.median(h.reproj_px)):.1f} px)"
    else:
        h, grasp = grasp_from_2d_single_view(
            hand_model, seq.cameras[0], uv[:, 0], conf[:, 0], obj_rot, obj_transl, kdepth[:, 0],
            n_frames=n_grasp_frames, seed=seed,
        )  # fmt: skip
        how = f"single-camera grasp Eq. 12 ({len(grasp['frames'])} frames, reprojection {float(np.median(h.reproj_px)):.1f} px)"
    if hand_init == "search":
        hand_px = np.array([sum(int(((v.labels == SEGMENTATION_LABELS["hand"]) & (v.depth > 0)).sum()) for v in row) for row in views])
        blind_frames = [f for f, n in zip(frames, hand_px) if n < MIN_HAND_PIXELS]
        if blind_frames:
            how += (f"; {len(blind_frames)}/{len(frames)} frames without a hand found (fewer than {MIN_HAND_PIXELS} hand "
                    f"pixels with depth over all cameras: {blind_frames[:5]}): they carry the sequence's grasp")  # fmt: skip
    else:
        blind_frames = [f for f, n in zip(frames, seen) if n < MIN_INIT_JOINTS]
        if blind_frames:
            how += f"; {len(blind_frames)}/{len(frames)} frames with fewer than {MIN_INIT_JOINTS} confident 2D joints (hand pose unconstrained there)"
    return HandObjectPoses(
        frames=np.asarray(frames), global_orient=h.global_orient, hand_pose=h.hand_pose, betas=h.betas,
        transl=h.transl, obj_rot=obj_rot, obj_transl=obj_transl, source=f"{SOURCE}: {how}",
    )  # fmt: skip
