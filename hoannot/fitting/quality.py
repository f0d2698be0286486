"""Per-frame quality of a fit without ground truth: residuals, an error estimate in mm, flags.

Three layers, each usable alone:

1. :func:`frame_quality`: what the fit's objective (:mod:`hoannot.fitting.objective`)
   says of some poses: per-frame energies ``E_<term>``, silhouette IoUs against the segmentation, the median depth residual and the
   hard flag (an IoU below ``FLAG_IOU_*`` or a depth residual above ``FLAG_DEPTH_MM``).
2. :func:`error_features`: per-frame features of how wrong a frame may be, on the final
   poses: a Laplace (Gauss-Newton) standard deviation of the hand joints and of the object
   points (:func:`laplace_std`, from the curvature of the point and 2D-joint terms with
   respect to the frame's own pose parameters), the RMS distance of the observed hand and
   object points to the fitted surfaces, and the temporal jump of each frame against its
   neighbours.
3. :class:`Calibration` / :func:`apply_calibration`: a log-linear regression from those
   features to the true per-frame hand MPJPE and object ADD, fitted on synthetic captures
   with ground truth (``benchmarks/qa.py --calibrate``, :func:`fit_calibration`), shipped as
   ``qa_calibration.json`` beside this module, and the flags from its thresholds.

:func:`sequence_quality` runs 1-3 on a whole sequence (the fit calls it once at the end; the
report calls it for poses without a ``quality.json``). Joint arrays are in HO-3D order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pytorch3d.ops import knn_points
from pytorch3d.structures import Meshes

from hoannot.io import InputError
from hoannot.fitting import energies as E
from hoannot.fitting.config import FitConfig
from hoannot.fitting.parameters import PoseParameters
from hoannot.renderers.cameras import project_points

#: a frame is flagged when a silhouette IoU falls below these or the depth residual exceeds this
FLAG_IOU_HAND, FLAG_IOU_OBJECT, FLAG_DEPTH_MM = 0.5, 0.6, 10.0
#: the shipped calibration (written by ``benchmarks/qa.py --calibrate``)
CALIBRATION_PATH = Path(__file__).with_name("qa_calibration.json")
#: Laplace noise model: std of a point-to-surface residual (metres), of a 2D joint (pixels),
#: and the Gaussian prior that bounds what the data leave free (radians, metres)
SIGMA_POINT_M, SIGMA_PX = 0.003, 4.0
PRIOR_ROT_RAD, PRIOR_POSE_RAD, PRIOR_TRANSL_M = 0.5, 0.5, 0.05
#: finite-difference steps for the model Jacobians (central differences)
FD_ROT_RAD, FD_TRANSL_M = 1e-3, 1e-3
#: features of each estimate, in the order of the regression weights
HAND_FEATURES = ("log_hand_std", "log_hand_points_rms", "hand_iou_miss", "log_hand_jump", "log_hand_limit", "log_E_depth")
OBJECT_FEATURES = ("log_object_std", "log_object_points_rms", "object_iou_miss", "log_object_jump")


# ---- 1. residuals of the objective -------------------------------------------------------


def frame_quality(objective, params, obs) -> dict[str, np.ndarray]:
    """Per-frame residuals of B frames and the hard flag.

    Args:
        objective: the fit's :class:`hoannot.fitting.objective.Objective` (its energies,
            renderer and models).
        params: :class:`PoseParameters` or :class:`GraspParameters` of the B frames.
        obs: their :class:`hoannot.fitting.observations.Observations`.
    Returns:
        ``E_<term>`` (B,) float32 final energies (units of :mod:`hoannot.fitting.energies`),
        ``iou_hand``, ``iou_object`` (B,) float32 silhouette IoU against the segmentation at
        the crop size, ``depth_residual_mm`` (B,) float32 median |rendered - observed| depth
        where both show hand or object (NaN where none), ``flag`` (B,) bool.
    """
    with torch.no_grad():
        terms = objective.energies(params, obs)
        hand = params.hand(objective.hand_model)
        obj = objective.obj
        r = objective.renderer(hand.vertices, hand.faces, params.object_vertices(obj.verts), obj.faces, obs.cams, soft=False)
        q = {f"E_{k}": v.cpu().numpy() for k, v in terms.items()}
        for name, cls in (("iou_hand", 1), ("iou_object", 2)):
            a, b = r.labels == cls, obs.labels == cls
            inter = (a & b).flatten(1).sum(1).float()
            union = (a | b).flatten(1).sum(1).float().clamp(min=1)
            q[name] = (inter / union).cpu().numpy()
        valid = (r.labels > 0) & (obs.labels > 0) & (obs.depth > 0)
        res = []
        for b in range(len(obs.frames)):
            d = (r.zbuf[b] - obs.depth[b]).abs()[valid[b]]
            res.append(float(d.median()) * 1000 if d.numel() else np.nan)
        q["depth_residual_mm"] = np.array(res, np.float32)
    q["flag"] = hard_flag(q)
    return q


def merge_quality(quality: dict, q: dict, batch_frames: list[int], frames: list[int]) -> dict:
    """``quality`` ((F,) arrays over ``frames``; empty: all NaN, flags True) with the entries
    of ``batch_frames`` (ids) taken from ``q`` ((B,) arrays in that order, without ``frames``)."""
    if not quality:
        quality = {"frames": np.asarray(frames)}
        for k, v in q.items():
            quality[k] = np.ones(len(frames), bool) if v.dtype == bool else np.full(len(frames), np.nan, np.float32)
    index = {int(f): i for i, f in enumerate(frames)}
    idx = np.array([index[int(f)] for f in batch_frames])
    for k, v in q.items():
        if k in quality:
            quality[k][idx] = v
    return quality


def hard_flag(q: dict[str, np.ndarray]) -> np.ndarray:
    """(F,) bool: an IoU under ``FLAG_IOU_HAND`` / ``FLAG_IOU_OBJECT`` or a depth residual
    over ``FLAG_DEPTH_MM`` (or none at all) in ``q``'s (F,) arrays."""
    return (q["iou_hand"] < FLAG_IOU_HAND) | (q["iou_object"] < FLAG_IOU_OBJECT) | ~(q["depth_residual_mm"] <= FLAG_DEPTH_MM)


# ---- 2. features on the final poses ------------------------------------------------------


def gauss_newton_std(J: torch.Tensor, w: torch.Tensor, prior: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Laplace approximation of an output's uncertainty from residual Jacobians.

    With residuals ``r(theta)`` of variance ``1 / w``, the Gauss-Newton Hessian of
    ``0.5 sum w r^2 + 0.5 sum prior theta^2`` is ``H = J^T diag(w) J + diag(prior)``, the
    posterior covariance ``H^-1``, and an output ``y(theta)`` with Jacobian ``G`` has
    covariance ``G H^-1 G^T`` (Laplace / linearised error propagation; e.g. Bishop, PRML
    Sec. 4.4). Returns the RMS of the output points' standard deviations.

    Args:
        J: (B, N, P) residual Jacobians (N residuals, P parameters).
        w: (B, N) residual weights (inverse variances; 0 drops a residual).
        prior: (P,) prior inverse variances (> 0, keeps H invertible).
        G: (B, M, 3, P) Jacobians of M output points.
    Returns:
        (B,) sqrt(trace(G H^-1 G^T) / M), in the outputs' units.
    """
    Jd = J.double()
    H = torch.einsum("bnp,bn,bnq->bpq", Jd, w.double(), Jd) + torch.diag(prior.double())
    cov = torch.linalg.inv(H)
    Gf = G.double().flatten(1, 2)  # (B, 3M, P)
    tr = torch.einsum("bip,bpq,biq->b", Gf, cov, Gf)
    return (tr / G.shape[1]).clamp(min=0).sqrt().to(J.dtype)


def _hand_jacobians(params: PoseParameters, hand_model) -> tuple[torch.Tensor, torch.Tensor]:
    """Central-difference Jacobians of the posed hand w.r.t. each frame's 51 pose parameters
    (``global_orient`` 3, ``hand_pose`` 45, ``transl`` 3; radians, metres).

    Returns:
        dV (B, V, 3, 51) and dJ (B, 21, 3, 51) (metres per unit), no gradient.
    """
    with torch.no_grad():
        theta = torch.cat([params.global_orient, params.hand_pose, params.transl], 1)  # (B, 51)
        B, P = theta.shape
        step = torch.full((P,), FD_ROT_RAD, dtype=theta.dtype, device=theta.device)
        step[48:] = FD_TRANSL_M
        delta = torch.cat([torch.diag(step), -torch.diag(step)])  # (2P, P)
        th = (theta[:, None] + delta[None]).reshape(-1, P)  # (B * 2P, P)
        out = hand_model(th[:, :3], th[:, 3:48], params.betas[None].expand(len(th), -1), th[:, 48:])
        V = out.vertices.reshape(B, 2, P, -1, 3)
        J = out.joints.reshape(B, 2, P, -1, 3)
        s = (2 * step)[None, None, None]
        return ((V[:, 0] - V[:, 1]).permute(0, 2, 3, 1) / s, (J[:, 0] - J[:, 1]).permute(0, 2, 3, 1) / s)


def _point_rows(points, valid, verts, normals, dverts, truncate_m):
    """Point-to-plane residual Jacobians of observed points against their closest vertex.

    Returns:
        rows (B, N, P) and weights (B, N) (1/SIGMA_POINT_M^2 for inliers, 0 for padding and
        points farther than ``truncate_m``).
    """
    nn = knn_points(points, verts, K=1)
    idx = nn.idx[..., 0]  # (B, N)
    d = nn.dists[..., 0].sqrt()
    n = torch.gather(normals, 1, idx[..., None].expand(-1, -1, 3))  # (B, N, 3)
    dv = torch.gather(dverts, 1, idx[..., None, None].expand(-1, -1, 3, dverts.shape[-1]))  # (B, N, 3, P)
    rows = torch.einsum("bni,bnip->bnp", n, dv)
    inlier = valid & (d < truncate_m)
    return rows, inlier.to(rows.dtype) / SIGMA_POINT_M**2


def laplace_std(params: PoseParameters, obs, hand_model, obj, cfg: FitConfig) -> dict[str, np.ndarray]:
    """Curvature-based uncertainty of each frame's hand joints and object points, mm.

    The Gauss-Newton Hessian (:func:`gauss_newton_std`) of the point term E_3D (HOnnotate
    Eq. 7, as point-to-plane residuals to the closest vertex, inliers within
    ``cfg.points3d_truncate_cm``) and, when 2D joints are loaded, of E_j2d (Eq. 6, weighted
    by the detection confidence), with respect to the frame's own parameters: the 51 hand
    parameters for the joints, the 6-DoF object update for the object's model points. Noise
    ``SIGMA_POINT_M``, ``SIGMA_PX``; prior ``PRIOR_*``. A frame without hand points and
    joints gets the prior's spread (tens of mm). Silhouette and depth-image terms are left
    out (their curvature needs the renderer twice per parameter).

    Args:
        params: :class:`PoseParameters` of B frames (world frame).
        obs: their observations (``hand_points``, ``object_points``, optional ``kp_uv``).
        hand_model, obj: on the observations' device.
    Returns:
        ``hand_std_mm`` (B,) and ``object_std_mm`` (B,) float32.
    """
    with torch.no_grad():
        truncate = cfg.points3d_truncate_cm / 100.0
        hand = params.hand(hand_model)
        dV, dJ = _hand_jacobians(params, hand_model)
        normals = Meshes(list(hand.vertices), [hand.faces] * len(hand.vertices)).verts_normals_padded()
        rows, w = _point_rows(obs.hand_points, obs.hand_points_valid, hand.vertices, normals, dV, truncate)
        if obs.kp_uv is not None:
            B, P = dJ.shape[0], dJ.shape[-1]
            # projections of the joints moved along each parameter (central differences of the projection)
            step = torch.full((P,), FD_ROT_RAD, dtype=dJ.dtype, device=dJ.device)
            step[48:] = FD_TRANSL_M
            Jp = hand.joints[:, None] + (dJ * step).permute(0, 3, 1, 2)  # (B, P, 21, 3)
            Jm = hand.joints[:, None] - (dJ * step).permute(0, 3, 1, 2)
            up = project_points(Jp.reshape(B * P, 21, 3), obs.full_cams)
            um = project_points(Jm.reshape(B * P, 21, 3), obs.full_cams)
            C = up.shape[1]
            dU = ((up - um) / (2 * step.repeat(B)[:, None, None, None])).reshape(B, P, C * 21 * 2).transpose(1, 2)
            wj = (obs.kp_conf[..., None].expand(-1, -1, -1, 2).reshape(B, -1) / SIGMA_PX**2).to(rows.dtype)
            rows, w = torch.cat([rows, dU], 1), torch.cat([w, wj], 1)
        prior = torch.full((51,), 1.0 / PRIOR_POSE_RAD**2, device=rows.device)
        prior[:3] = 1.0 / PRIOR_ROT_RAD**2
        prior[48:] = 1.0 / PRIOR_TRANSL_M**2
        hand_std = gauss_newton_std(rows, w, prior, dJ)

        ov = params.object_vertices(obj.verts)  # (B, Vo, 3)
        dO = _rigid_jacobian(ov, params.obj_transl)
        on = Meshes(list(ov), [obj.faces] * len(ov)).verts_normals_padded()
        orows, ow = _point_rows(obs.object_points, obs.object_points_valid, ov, on, dO, truncate)
        oprior = torch.full((6,), 1.0 / PRIOR_TRANSL_M**2, device=rows.device)
        oprior[:3] = 1.0 / PRIOR_ROT_RAD**2
        sub = torch.linspace(0, ov.shape[1] - 1, min(200, ov.shape[1]), device=ov.device).long()
        obj_std = gauss_newton_std(orows, ow, oprior, dO[:, sub])
    return {"hand_std_mm": (hand_std * 1000).cpu().numpy().astype(np.float32),
            "object_std_mm": (obj_std * 1000).cpu().numpy().astype(np.float32)}  # fmt: skip


def _rigid_jacobian(points: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
    """(B, N, 3, 6) Jacobian of world points ``exp(w) R x + t`` w.r.t. (w, t) at w = 0:
    ``[-[R x]_x | I]`` with ``R x = points - t``."""
    y = points - transl[:, None]
    z = torch.zeros_like(y[..., 0])
    skew = torch.stack([torch.stack([z, y[..., 2], -y[..., 1]], -1),
                        torch.stack([-y[..., 2], z, y[..., 0]], -1),
                        torch.stack([y[..., 1], -y[..., 0], z], -1)], -2)  # fmt: skip  # -[y]_x
    eye = torch.eye(3, dtype=y.dtype, device=y.device).expand(*y.shape[:2], 3, 3)
    return torch.cat([skew, eye], -1)


def temporal_jump_mm(points: np.ndarray, static: bool = False) -> np.ndarray:
    """How far each frame's points sit from where its neighbours put them, mm.

    Three constant-velocity predictions of frame t from other frames -- the midpoint
    ``(x_{t-1} + x_{t+1}) / 2`` and the extrapolations ``2 x_{t-1} - x_{t-2}`` and
    ``2 x_{t+1} - x_{t+2}`` -- each scored by the mean distance over the points; a frame's
    jump is the smallest of those it has. So one bad frame raises its own jump, not its
    neighbours' (each of them has a prediction from the other side); two adjacent frames
    that are wrong the same way do not show here. With ``static`` (points that should stay
    put, as a held hand in its object's frame) the neighbours ``x_{t-1}``, ``x_{t+1}``
    themselves are predictions too, so even a short sequence has one free of a bad neighbour.

    Args:
        points: (F, M, 3) metres, consecutive frames (e.g. joints in HO-3D order).
        static: also predict each frame by its neighbours' positions.
    Returns:
        (F,) float32 mm (0 for a frame without any prediction: fewer than 3 frames, or 2
        with ``static``).
    """
    x = np.asarray(points, np.float64)
    F = len(x)
    best = np.full(F, np.inf)

    def score(t: slice, pred: np.ndarray) -> None:
        best[t] = np.minimum(best[t], np.linalg.norm(x[t] - pred, axis=-1).mean(-1))

    score(slice(1, F - 1), (x[:-2] + x[2:]) / 2)
    score(slice(2, F), 2 * x[1:-1] - x[:-2])
    score(slice(0, F - 2), 2 * x[1:-1] - x[2:])
    if static:
        score(slice(1, F), x[:-1])
        score(slice(0, F - 1), x[1:])
    return (np.where(np.isfinite(best), best, 0.0) * 1000).astype(np.float32)


def error_features(params: PoseParameters, obs, hand_model, obj, cfg: FitConfig) -> dict[str, np.ndarray]:
    """Per-frame features of B frames besides :func:`frame_quality`'s, all (B,) float32:
    ``hand_std_mm``, ``object_std_mm`` (:func:`laplace_std`); ``hand_points_rms_mm``,
    ``object_points_rms_mm``: RMS distance of the observed points to the fitted surface
    (E_3D of each class alone, HOnnotate Eq. 7, capped at ``cfg.points3d_truncate_cm``; NaN
    without points); ``hand_limit_rad``: the root of E_joint (Eq. 8), how far the fingers
    bend past their limits; ``hand_pixels``: observed hand pixels over all cameras at the
    crop size."""
    out = laplace_std(params, obs, hand_model, obj, cfg)
    with torch.no_grad():
        c, k, search = cfg.points3d_truncate_cm, cfg.points3d_candidates, cfg.resolved_points3d_search()
        hand = params.hand(hand_model)
        for name, pts, valid, verts, faces in (
            ("hand", obs.hand_points, obs.hand_points_valid, hand.vertices, hand.faces),
            ("object", obs.object_points, obs.object_points_valid, params.object_vertices(obj.verts), obj.faces),
        ):
            rms = E.point_to_surface_energy(pts, valid, verts, faces, c, k, search).sqrt() * 10  # cm^2 -> mm
            rms = torch.where(valid.any(1), rms, torch.full_like(rms, float("nan")))
            out[f"{name}_points_rms_mm"] = rms.cpu().numpy().astype(np.float32)
        limit = E.joint_limit_energy(hand_model.limits.violation(params.hand_pose)).sqrt()
        out["hand_limit_rad"] = limit.cpu().numpy().astype(np.float32)
        out["hand_pixels"] = (obs.labels == 1).flatten(1).sum(1).cpu().numpy().astype(np.float32)
    return out


def feature_matrix(q: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """(F, 1 + k) regression inputs of ``kind`` (``"hand"`` or ``"object"``): a 1, then
    ``HAND_FEATURES`` / ``OBJECT_FEATURES`` from the quality arrays: log of the Laplace std,
    log(1 + points RMS) (no points counts as the cap, 20 mm), 1 - IoU, log(1 + jump), and for
    the hand log(1 + 10 x the joint-limit excess in radians) and log(1 + 10 E_dpt) (the
    frame's depth energy, HOnnotate Eq. 5, cm^2; 0 when the fit has no depth term).

    Chosen on 6 corrupted runs of 4 captures (benchmarks/qa.py), leave-one-capture-out: the
    features without E_dpt gave a Spearman of 0.59 with the true hand error, flag recall 0.85
    over 10 mm and 0.29 false flags under 6 mm; with E_dpt 0.86, 1.0 and 0.14 (E_mask as well:
    0.80, 0.92, 0.14)."""
    std = np.asarray(q[f"{kind}_std_mm"], np.float64)
    rms = np.nan_to_num(np.asarray(q[f"{kind}_points_rms_mm"], np.float64), nan=20.0)
    iou = np.nan_to_num(np.asarray(q[f"iou_{kind}"], np.float64), nan=0.0)
    jump = np.asarray(q[f"{kind}_jump_mm"], np.float64)
    cols = [np.ones_like(std), np.log(np.maximum(std, 1e-3)), np.log1p(rms), 1 - iou, np.log1p(jump)]
    if kind == "hand":
        cols.append(np.log1p(10 * np.asarray(q["hand_limit_rad"], np.float64)))
        cols.append(np.log1p(10 * np.nan_to_num(np.asarray(q.get("E_depth", np.zeros_like(std)), np.float64))))
    return np.stack(cols, 1)


# ---- 3. calibration and flags --------------------------------------------------------------


@dataclass
class Calibration:
    """Regression from features to per-frame errors, and the flag thresholds.

    ``error_est_mm = exp(weights . feature_matrix(q, kind))`` for ``kind`` hand (estimates the
    hand MPJPE, mm, HO-3D joints) and object (the object ADD, ADD-S for a symmetric object, mm).

    Attributes:
        hand_weights, object_weights: 1 + len(HAND_FEATURES) and 1 + len(OBJECT_FEATURES)
            floats (intercept, then the features' weights, which are >= 0: more residual never
            means less error).
        hand_flag_mm, object_flag_mm: a frame whose estimate exceeds one is flagged.
        hard_flags: also flag by :func:`hard_flag`.
        provenance: where it was fitted (captures, commit, date, command).
        hand_features, object_features: the feature names the weights belong to
            (``HAND_FEATURES``, ``OBJECT_FEATURES`` of the version that fitted it).
    """

    hand_weights: list[float]
    object_weights: list[float]
    hand_flag_mm: float
    object_flag_mm: float
    hard_flags: bool = True
    provenance: dict = field(default_factory=dict)
    hand_features: list[str] = field(default_factory=lambda: list(HAND_FEATURES))
    object_features: list[str] = field(default_factory=lambda: list(OBJECT_FEATURES))

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        from hoannot.io import write_json

        write_json(Path(path), asdict(self))


def load_calibration(path: str | Path | None = None) -> Calibration | None:
    """The calibration at ``path`` (default: the shipped ``qa_calibration.json``), or None when
    the default file does not exist.

    Raises:
        InputError: an unreadable or malformed file, or one fitted for other features than
            this version computes (names it), or a missing ``path`` given.
    """
    p = Path(path) if path is not None else CALIBRATION_PATH
    if not p.is_file():
        if path is None:
            return None
        raise InputError(f"{p}: calibration file not found")
    try:
        raw = json.loads(p.read_text())
        cal = Calibration(**raw)
        if len(cal.hand_weights) != 1 + len(cal.hand_features) or len(cal.object_weights) != 1 + len(cal.object_features):
            raise ValueError("expected one weight per feature and an intercept")
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"{p}: malformed error-estimate calibration ({type(e).__name__}: {e})".splitlines()[0]) from None
    if (tuple(cal.hand_features), tuple(cal.object_features)) != (HAND_FEATURES, OBJECT_FEATURES):
        raise InputError(f"{p}: calibration fitted for the features {cal.hand_features} / {cal.object_features}, this "
                         f"version computes {list(HAND_FEATURES)} / {list(OBJECT_FEATURES)}; rerun benchmarks/qa.py "
                         "--calibrate")  # fmt: skip
    return cal


def apply_calibration(q: dict[str, np.ndarray], cal: Calibration | None) -> dict[str, np.ndarray]:
    """Add ``hand_error_est_mm``, ``object_error_est_mm`` (F,) float32 (estimated hand MPJPE
    and object ADD, mm), ``error_est_calibrated`` (F,) bool, and recompute ``flag`` (F,) bool;
    returns a new dict.

    Without a calibration there are no estimates, ``error_est_calibrated`` is False and the
    flag is the hard one (:func:`hard_flag`).
    """
    q = dict(q)
    F = len(q["iou_hand"])
    hard = hard_flag(q)
    if cal is None:
        q["error_est_calibrated"] = np.zeros(F, bool)
        q["flag"] = hard
        return q
    # log-linear: clipped to [0.1 mm, 1 m] so far outside the calibration's range the estimate
    # saturates instead of overflowing
    h = np.exp(np.clip(feature_matrix(q, "hand") @ np.asarray(cal.hand_weights), np.log(0.1), np.log(1000.0)))
    o = np.exp(np.clip(feature_matrix(q, "object") @ np.asarray(cal.object_weights), np.log(0.1), np.log(1000.0)))
    q["hand_error_est_mm"], q["object_error_est_mm"] = h.astype(np.float32), o.astype(np.float32)
    q["error_est_calibrated"] = np.ones(F, bool)
    q["flag"] = (h > cal.hand_flag_mm) | (o > cal.object_flag_mm) | (hard if cal.hard_flags else False)
    return q


def fit_weights(X: np.ndarray, err_mm: np.ndarray) -> np.ndarray:
    """Robust least squares of ``log(err_mm)`` on ``X`` (F, 1 + k) with the k feature weights
    >= 0 (scipy ``least_squares``, soft-L1 loss of scale 0.3 in log units).

    Returns:
        (1 + k,) float64 weights.
    Raises:
        ValueError: fewer frames than weights, or a non-positive error.
    """
    from scipy.optimize import least_squares

    y = np.log(np.asarray(err_mm, np.float64))
    if len(y) < X.shape[1] or not np.all(np.isfinite(y)):
        raise ValueError(f"need at least {X.shape[1]} frames with positive errors, got {len(y)}")
    lo = np.r_[-np.inf, np.zeros(X.shape[1] - 1)]
    x0 = np.r_[y.mean(), np.zeros(X.shape[1] - 1)]
    r = least_squares(lambda w: X @ w - y, x0, bounds=(lo, np.full(X.shape[1], np.inf)), loss="soft_l1", f_scale=0.3)
    return r.x


def pick_threshold(est: np.ndarray, true: np.ndarray, bad_mm: float, good_mm: float, max_false: float,
                   max_miss: float = 0.1) -> float:
    """A flag threshold on ``est`` in the middle of the gap between good and bad frames.

    ``lo``: the lowest threshold that flags at most ``max_false`` of the frames with
    ``true < good_mm``; ``hi``: the highest that still flags all but ``max_miss`` of the frames
    with ``true > bad_mm``. Where ``hi > lo`` the threshold is their geometric mean (the
    widest margin on both sides, in log units, as the estimate's errors are relative), else
    ``lo`` (the false-flag limit wins).

    Args:
        est, true: (F,) estimated and true errors, mm.
    Returns:
        mm.
    """
    est, true = np.asarray(est, np.float64), np.asarray(true, np.float64)
    good = np.sort(est[true < good_mm])
    bad = np.sort(est[true > bad_mm])
    if len(good) == 0:
        lo = float(np.nanmin(est)) if len(est) else bad_mm
    else:
        k = int(np.floor(max_false * len(good)))  # good frames allowed above the threshold
        lo = float(good[len(good) - 1 - k]) if k < len(good) else float(good[0])
    if len(bad) == 0:
        return lo * 1.0001
    m = int(np.floor(max_miss * len(bad)))  # bad frames allowed under it
    hi = float(bad[m])
    return float(np.sqrt(lo * hi)) if hi > lo else lo * 1.0001


def fit_calibration(qs: list[dict[str, np.ndarray]], hand_err: list[np.ndarray], obj_err: list[np.ndarray],
                    provenance: dict, max_false: float = 0.05) -> Calibration:
    """Fit :class:`Calibration` on the quality arrays of several fitted captures.

    Args:
        qs: per capture, the quality arrays (:func:`sequence_quality` keys).
        hand_err, obj_err: per capture, (F,) true hand MPJPE and object ADD(-S), mm.
        provenance: recorded in the calibration.
        max_false: the hand threshold flags at most this share of calibration frames under
            6 mm; the object threshold at most this share of frames with ADD under 2 mm.
    """
    Xh = np.concatenate([feature_matrix(q, "hand") for q in qs])
    Xo = np.concatenate([feature_matrix(q, "object") for q in qs])
    eh = np.maximum(np.concatenate(hand_err), 0.1)
    eo = np.maximum(np.concatenate(obj_err), 0.05)
    wh, wo = fit_weights(Xh, eh), fit_weights(Xo, eo)
    h, o = np.exp(Xh @ wh), np.exp(Xo @ wo)
    hard = np.concatenate([hard_flag(q) for q in qs])
    # never below the "good" error itself: an estimate under it says the frame is fine
    th = max(pick_threshold(h, eh, 10.0, 6.0, max_false), 6.0)
    to = max(pick_threshold(o, eo, 5.0, 2.0, max_false), 2.0)
    # the hard flags stay on only if they add no more false flags on good-hand frames than allowed
    good = eh < 6.0
    with_hard = ((h > th) | (o > to) | hard)[good].mean() if good.any() else 0.0
    return Calibration([float(x) for x in wh], [float(x) for x in wo], th, to, bool(with_hard <= 2 * max_false), provenance)


# ---- the whole sequence --------------------------------------------------------------------


def sequence_quality(seq, poses, objective, calibration: Calibration | None | str = "shipped") -> dict[str, np.ndarray]:
    """Quality, error estimates and flags of every frame of ``poses`` (world frame).

    Chunks of ``cfg.batch_size`` frames: :func:`frame_quality` and :func:`error_features` on
    each, then the temporal jumps (:func:`temporal_jump_mm`) of the hand joints (HO-3D order)
    in the object's frame (a held hand moves with its object; in the world the motion
    itself would dominate) and of the object's points in the world, over the whole sequence
    (``hand_jump_mm``, ``object_jump_mm``), then
    :func:`apply_calibration`.

    Args:
        seq: the sequence (observations are read from it as the fit reads them).
        poses: world-frame poses of the frames to score (in the sequence's order).
        objective: the fit's :class:`hoannot.fitting.objective.Objective` (its config,
            resolved for the schedule, sets crops, points, weights; its ``keypoints`` the 2D
            joints loaded).
        calibration: a :class:`Calibration`, None (uncalibrated) or ``"shipped"``
            (:func:`load_calibration`).
    Returns:
        (F,) arrays: ``frames``, :func:`frame_quality`'s, :func:`error_features`'s, the jumps,
        and :func:`apply_calibration`'s.
    Raises:
        InputError: a missing or bad observation (names the file), a malformed calibration.
    """
    if isinstance(calibration, str):
        calibration = load_calibration()
    cfg, hand_model, obj, device = objective.cfg, objective.hand_model, objective.obj, objective.device
    frames = [int(f) for f in poses.frames]
    parts, joints, opts = [], [], []
    for i in range(0, len(frames), cfg.batch_size):
        chunk = frames[i : i + cfg.batch_size]
        obs = objective.observations(seq, chunk, cfg.seed)
        params = PoseParameters(poses.select(chunk), hand_model.num_betas, device)
        q = frame_quality(objective, params, obs)
        q.update(error_features(params, obs, hand_model, obj, cfg))
        parts.append(q)
        with torch.no_grad():
            # the hand joints in the object's frame: a held hand moves with its object
            J = params.hand(hand_model).joints
            joints.append(torch.einsum("bji,bnj->bni", params.obj_R(), J - params.obj_transl[:, None]).cpu().numpy())
            sub = torch.linspace(0, obj.verts.shape[0] - 1, min(64, obj.verts.shape[0]), device=device).long()
            opts.append(params.object_vertices(obj.verts[sub]).cpu().numpy())
    # E_temporal is absent from a chunk of one frame: 0, as for the first frame of any chunk
    keys = list(dict.fromkeys(k for p in parts for k in p))
    q = {k: np.concatenate([p[k] if k in p else np.zeros(len(p["flag"]), np.float32) for p in parts]) for k in keys}
    q["frames"] = np.asarray(frames, np.int64)
    q["hand_jump_mm"] = temporal_jump_mm(np.concatenate(joints), static=True)
    q["object_jump_mm"] = temporal_jump_mm(np.concatenate(opts))
    return apply_calibration(q, calibration)
