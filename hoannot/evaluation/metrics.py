"""Standard hand-pose and object-pose metrics of the field (pure numpy functions).

Conventions: inputs in **metres**; functions whose name ends in ``_mm`` return millimetres,
the others return metres (or fractions). Hand keypoints are in **HO-3D order**
(see :mod:`hoannot.datasets.conventions`). Batched inputs have a leading frame axis F.

Definitions and sources:

- MPJPE / root-relative / scale-translation aligned / Procrustes aligned joint errors, PCK-AUC
  over 0-50 mm and the mesh F-scores: the HO-3D challenge evaluation (Hampali et al., "HOnnotate",
  CVPR 2020, Sec. 6; same protocol as FreiHAND, Zimmermann et al., ICCV 2019).
- Success rate (fraction of frames whose *maximum* joint error is below a threshold): the
  NYU/ICVL depth-hand protocol (Taylor et al., CVPR 2012; Oberweger & Lepetit, ICCVW 2017).
- ADD / ADD-S: Hinterstoisser et al., ACCV 2012; MSSD: Hodan et al., BOP, ECCV 2020 (Eq. 2);
  ADD(-S) AUC up to 10 cm: Xiang et al., PoseCNN, RSS 2018.
- Hand-object contact and penetration metrics are in :mod:`hoannot.evaluation.physics` and
  re-exported here.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid  # numpy 1.x has no np.trapezoid (the mediapipe extra pins numpy<2)
from scipy.spatial import ConvexHull, QhullError, cKDTree
from scipy.spatial.distance import pdist

from hoannot.io import InputError
from hoannot.evaluation.physics import (  # noqa: F401 - re-exported
    contact,
    intersection_volume,
    penetration_depth,
    winding_number,
)

WRIST = 0
MIDDLE_MCP = 4  # HO-3D order

# ---------------------------------------------------------------------------------------------
# helpers


def _pair(pred: np.ndarray, gt: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim < 2 or pred.shape[-1] != 3:
        raise InputError(f"{name}: pred and gt must both be (..., J, 3), got {pred.shape} and {gt.shape}")
    return pred, gt


def joint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean error of every joint.

    Args:
        pred, gt: (..., J, 3) metres.

    Returns:
        (..., J) float64 metres.
    """
    pred, gt = _pair(pred, gt, "joint_errors")
    return np.linalg.norm(pred - gt, axis=-1)


# ---------------------------------------------------------------------------------------------
# hand joints


def mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint position error, no alignment.

    Args:
        pred, gt: (..., J, 3) metres.

    Returns:
        Mean over all frames and joints, millimetres.
    """
    return float(joint_errors(pred, gt).mean() * 1000.0)


def per_joint_mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean error of each joint over frames.

    Args:
        pred, gt: (F, J, 3) metres.

    Returns:
        (J,) float64 millimetres.
    """
    err = joint_errors(pred, gt)
    return err.reshape(-1, err.shape[-1]).mean(axis=0) * 1000.0


def root_relative(j: np.ndarray, root: int = WRIST) -> np.ndarray:
    """Subtract the root joint. ``j``: (..., J, 3) -> (..., J, 3)."""
    j = np.asarray(j, dtype=np.float64)
    return j - j[..., root : root + 1, :]


def rr_mpjpe_mm(pred: np.ndarray, gt: np.ndarray, root: int = WRIST) -> float:
    """Root-relative MPJPE: both skeletons translated so that their wrists are at the origin.

    Args:
        pred, gt: (..., J, 3) metres. root: index of the root joint (HO-3D wrist = 0).

    Returns:
        Millimetres.
    """
    pred, gt = _pair(pred, gt, "rr_mpjpe_mm")
    return mpjpe_mm(root_relative(pred, root), root_relative(gt, root))


def align_scale_translation(pred: np.ndarray, gt: np.ndarray, root: int = WRIST, ref: int = MIDDLE_MCP) -> np.ndarray:
    """HO-3D "scale and translation" alignment of a predicted skeleton to the ground truth.

    The prediction is scaled so that its root->ref bone (HO-3D: wrist -> middle MCP, joints
    0 -> 4) has the ground truth's length, then translated so that the roots coincide.
    A zero-length predicted bone leaves the scale unchanged.

    Args:
        pred, gt: (..., J, 3) metres.

    Returns:
        (..., J, 3) aligned prediction, metres.
    """
    pred, gt = _pair(pred, gt, "align_scale_translation")
    bone_p = np.linalg.norm(pred[..., ref, :] - pred[..., root, :], axis=-1)[..., None, None]
    bone_g = np.linalg.norm(gt[..., ref, :] - gt[..., root, :], axis=-1)[..., None, None]
    scale = np.where(bone_p > 0, bone_g / np.where(bone_p > 0, bone_p, 1.0), 1.0)
    return root_relative(pred, root) * scale + gt[..., root : root + 1, :]


def st_mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after :func:`align_scale_translation` (HO-3D "scale-translation aligned" error).

    Args:
        pred, gt: (..., 21, 3) metres, HO-3D order.

    Returns:
        Millimetres.
    """
    pred, gt = _pair(pred, gt, "st_mpjpe_mm")
    return mpjpe_mm(align_scale_translation(pred, gt), gt)


def procrustes(pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = False) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Similarity transform (scale, rotation, translation) that best maps ``pred`` onto ``gt``.

    Both sets are centred and normalised by their Frobenius norm, the orthogonal Procrustes
    problem is solved by SVD, and the result is rescaled (Umeyama 1991; HO-3D / FreiHAND
    ``align_w_scale``). The HO-3D scorer uses an unconstrained orthogonal matrix
    (``allow_reflection=True``); the default restricts it to a proper rotation (det = +1),
    which differs only for degenerate or near-mirrored predictions.

    Args:
        pred, gt: (N, 3) corresponding points (metres). N >= 1.
        allow_reflection: allow an improper orthogonal matrix.

    Returns:
        (aligned, s, R, t): aligned (N, 3) = s * pred @ R.T + t; s float; R (3, 3); t (3,).
    """
    pred, gt = _pair(pred, gt, "procrustes")
    if pred.ndim != 2:
        raise InputError(f"procrustes: expected (N, 3) point sets, got {pred.shape}")
    mp, mg = pred.mean(0), gt.mean(0)
    P, G = pred - mp, gt - mg
    nP, nG = np.linalg.norm(P), np.linalg.norm(G)
    if nP < 1e-12 or nG < 1e-12:  # degenerate: translation only
        return pred - mp + mg, 1.0, np.eye(3), mg - mp
    P, G = P / nP, G / nG
    U, S, Vt = np.linalg.svd(G.T @ P)  # maximise trace(R^T G^T P) over R with G ~ P R^T
    d = np.ones(3)
    if not allow_reflection and np.linalg.det(U @ Vt) < 0:
        d[-1] = -1.0
    R = U @ np.diag(d) @ Vt
    s = float((S * d).sum()) * nG / nP
    t = mg - s * R @ mp
    return s * pred @ R.T + t, s, R, t


def procrustes_align(pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = False) -> np.ndarray:
    """Procrustes-align every frame of ``pred`` onto ``gt``.

    Args:
        pred, gt: (F, N, 3) or (N, 3) metres.

    Returns:
        Aligned prediction, same shape.
    """
    pred, gt = _pair(pred, gt, "procrustes_align")
    if pred.ndim == 2:
        return procrustes(pred, gt, allow_reflection)[0]
    flat_p, flat_g = pred.reshape(-1, *pred.shape[-2:]), gt.reshape(-1, *gt.shape[-2:])
    out = np.stack([procrustes(p, g, allow_reflection)[0] for p, g in zip(flat_p, flat_g)])
    return out.reshape(pred.shape)


def pa_mpjpe_mm(pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = False) -> float:
    """MPJPE after per-frame Procrustes alignment (PA-MPJPE).

    Args:
        pred, gt: (F, J, 3) or (J, 3) metres.

    Returns:
        Millimetres.
    """
    return mpjpe_mm(procrustes_align(pred, gt, allow_reflection), gt)


def pck_curve(errors: np.ndarray, max_threshold: float = 0.05, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Percentage of correct keypoints as a function of the threshold.

    Args:
        errors: (...) joint errors, metres (e.g. :func:`joint_errors`).
        max_threshold: last threshold in metres (HO-3D: 0.05).
        n: number of evenly spaced thresholds from 0 to ``max_threshold`` (HO-3D: 100).

    Returns:
        (thresholds (n,) metres, pck (n,) fractions of errors ``<=`` each threshold).
    """
    e = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    if e.size == 0:
        raise InputError("pck_curve: no errors given")
    th = np.linspace(0.0, max_threshold, n)
    return th, np.searchsorted(e, th, side="right") / e.size


def auc(thresholds: np.ndarray, values: np.ndarray) -> float:
    """Area under a curve normalised by the threshold range (trapezoid rule), in [0, 1].

    Args:
        thresholds: (n,) increasing. values: (n,).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return float(trapezoid(values, thresholds) / (thresholds[-1] - thresholds[0]))


def pck_auc(errors: np.ndarray, max_threshold: float = 0.05, n: int = 100) -> float:
    """HO-3D AUC: PCK over 0-50 mm with 100 thresholds, trapezoid integral / range.

    Args:
        errors: (...) joint errors in metres.

    Returns:
        AUC in [0, 1].
    """
    return auc(*pck_curve(errors, max_threshold, n))


def success_rate_curve(pred: np.ndarray, gt: np.ndarray, max_threshold: float = 0.08, n: int = 81) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of frames whose worst joint error is within a threshold (NYU/ICVL protocol).

    Args:
        pred, gt: (F, J, 3) metres.
        max_threshold: last threshold, metres (the literature plots 0-80 mm).
        n: number of evenly spaced thresholds.

    Returns:
        (thresholds (n,) metres, rate (n,) fraction of frames with max error ``<=`` threshold).
    """
    worst = joint_errors(pred, gt).reshape(-1, np.shape(pred)[-2]).max(axis=1)
    return pck_curve(worst, max_threshold, n)


# ---------------------------------------------------------------------------------------------
# hand meshes


def f_score(pred_points: np.ndarray, gt_points: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """F-score between two point sets by nearest neighbours (FreiHAND / HO-3D; Knapitsch 2017).

    Precision = fraction of predicted points within ``threshold`` of some GT point, recall =
    fraction of GT points within ``threshold`` of some predicted point, F = 2PR / (P + R).
    The two sets may have different sizes/topologies. No alignment is done here.

    Args:
        pred_points: (N, 3) metres. gt_points: (M, 3) metres. threshold: metres (0.005, 0.015).

    Returns:
        (f, precision, recall), fractions in [0, 1].
    """
    p = np.asarray(pred_points, dtype=np.float64)
    g = np.asarray(gt_points, dtype=np.float64)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] != 3 or g.shape[1] != 3 or not len(p) or not len(g):
        raise InputError(f"f_score: expected (N,3) and (M,3) point sets, got {p.shape} and {g.shape}")
    d_pg = cKDTree(g).query(p)[0]
    d_gp = cKDTree(p).query(g)[0]
    prec = float(np.mean(d_pg <= threshold))
    rec = float(np.mean(d_gp <= threshold))
    f = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return f, prec, rec


def mesh_error_mm(pred_vertices: np.ndarray, gt_vertices: np.ndarray, align: bool = True) -> float:
    """Mean vertex-to-vertex error between meshes of the same topology (HO-3D "mesh error").

    Args:
        pred_vertices, gt_vertices: (F, V, 3) or (V, 3) metres, corresponding vertices.
        align: Procrustes-align each frame first (HO-3D reports the aligned error).

    Returns:
        Millimetres.
    """
    if align:
        pred_vertices = procrustes_align(pred_vertices, gt_vertices)
    return mpjpe_mm(pred_vertices, gt_vertices)


# ---------------------------------------------------------------------------------------------
# objects


def _rt(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if R.shape[-2:] != (3, 3) or t.shape[-1:] != (3,) or R.shape[:-2] != t.shape[:-1]:
        raise InputError(f"object pose: expected R (...,3,3) and t (...,3), got {R.shape} and {t.shape}")
    return R, t


def transform_points(R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``R x + t`` for model points.

    Args:
        R: (..., 3, 3). t: (..., 3). points: (N, 3).

    Returns:
        (..., N, 3).
    """
    R, t = _rt(R, t)
    return np.einsum("...ij,nj->...ni", R, np.asarray(points, dtype=np.float64)) + t[..., None, :]


def add(R_pred, t_pred, R_gt, t_gt, points: np.ndarray) -> np.ndarray:
    """ADD: mean distance between model points under the predicted and the GT pose.

    ``ADD = mean_x || (R_pred x + t_pred) - (R_gt x + t_gt) ||`` (Hinterstoisser et al. 2012).

    Args:
        R_pred, R_gt: (..., 3, 3) object->camera/world rotations. t_pred, t_gt: (..., 3) metres.
        points: (N, 3) model points, metres (object frame).

    Returns:
        (...) metres.
    """
    return np.linalg.norm(transform_points(R_pred, t_pred, points) - transform_points(R_gt, t_gt, points), axis=-1).mean(-1)


def adds(R_pred, t_pred, R_gt, t_gt, points: np.ndarray) -> np.ndarray:
    """ADD-S (ADI): mean over GT-posed points of the distance to the nearest predicted-posed point.

    For symmetric objects (Hinterstoisser et al. 2012; BOP ``adi``). Always ``<= ADD``.

    Args:
        as :func:`add`.

    Returns:
        (...) metres.
    """
    P = transform_points(R_pred, t_pred, points)
    G = transform_points(R_gt, t_gt, points)
    batch = P.shape[:-2]
    P, G = P.reshape(-1, *P.shape[-2:]), G.reshape(-1, *G.shape[-2:])
    out = np.array([cKDTree(p).query(g)[0].mean() for p, g in zip(P, G)])
    return out.reshape(batch)


def object_diameter(points: np.ndarray) -> float:
    """Largest distance between two points of the model (via the convex hull).

    Args:
        points: (N, 3) metres.

    Returns:
        Metres.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 2:
        raise InputError(f"object_diameter: expected (N>=2, 3) points, got {p.shape}")
    try:
        p = p[ConvexHull(p).vertices]
    except (QhullError, ValueError):
        pass  # flat or tiny point sets: use all points
    return float(pdist(p).max())


def pass_rate(errors: np.ndarray, diameter: float, fraction: float = 0.1) -> float:
    """Fraction of frames with ADD(-S) ``< fraction * diameter`` (classic 10 % criterion).

    Args:
        errors: (F,) metres. diameter: metres.
    """
    return float(np.mean(np.asarray(errors) < fraction * diameter))


def add_auc(errors: np.ndarray, max_threshold: float = 0.1) -> float:
    """Area under the ADD(-S) accuracy-threshold curve from 0 to ``max_threshold`` (PoseCNN).

    Computed exactly for the step curve ``acc(tau) = mean(e < tau)``:
    ``(1/T) * int_0^T acc = mean(max(0, 1 - e / T))``.

    Args:
        errors: (F,) metres. max_threshold: metres (0.1 = 10 cm).

    Returns:
        AUC in [0, 1].
    """
    e = np.asarray(errors, dtype=np.float64)
    return float(np.mean(np.clip(1.0 - e / max_threshold, 0.0, 1.0)))


def mssd(R_pred, t_pred, R_gt, t_gt, points: np.ndarray, symmetries: np.ndarray | None = None) -> np.ndarray:
    """BOP Maximum Symmetry-aware Surface Distance.

    ``MSSD = min_{S in symmetries} max_x || (R_pred x + t_pred) - (R_gt S x + t_gt) ||``
    (Hodan et al., BOP challenge 2020, Eq. 2), where each S maps the model onto itself.

    Args:
        R_pred, R_gt: (..., 3, 3); t_pred, t_gt: (..., 3) metres; points: (N, 3) model vertices.
        symmetries: (K, 4, 4) model-frame transforms (translation in metres); default identity.

    Returns:
        (...) metres.
    """
    points = np.asarray(points, dtype=np.float64)
    syms = np.eye(4)[None] if symmetries is None else np.asarray(symmetries, dtype=np.float64).reshape(-1, 4, 4)
    P = transform_points(R_pred, t_pred, points)
    best = None
    for S in syms:
        Sx = points @ S[:3, :3].T + S[:3, 3]
        e = np.linalg.norm(P - transform_points(R_gt, t_gt, Sx), axis=-1).max(-1)
        best = e if best is None else np.minimum(best, e)
    return best
