"""Choosing among hand hypotheses by the fit's own energy (analysis by synthesis).

The grasp search (:mod:`hoannot.annotate.hand_search`) ranks its hypotheses by a cheap search
energy (points on the skin, skin inside the masks, contact). That energy can prefer a wrong
grasp where the fit's energy does not: measured on the WebXR hand holding YCB meshes (4-5
cameras, 8 frames, ``benchmarks/results/grasp_search_fit.json``), the cracker box's search
winner fits to 13.1 mm at fit energy 7.09 while a start grown from the true grasp fits to
5.1 mm at 5.63 -- the fit's energy knows the better start, the search's does not.

So each of the search's best K hypotheses is carried through the registered object poses into
the world, fitted briefly with the fit's own schedule and energies
(:func:`hoannot.fitting.optimize.fit_sequence` with few iterations), and scored by the fit's
final total energy (HOnnotate Eq. 3: the weighted sum of the per-term energies, each a mean
over the frames, as :meth:`hoannot.fitting.objective.Objective.total` sums them); the lowest wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.config import FitConfig, load_fit_config
from hoannot.fitting.optimize import FitResult, fit_sequence
from hoannot.models.hand import HandModel, change_frame
from hoannot.models.objects import ObjectModel

#: Adam iterations of each hypothesis' short fit (the fit's default is 100 per batch)
SHORT_ITERATIONS = 30


@dataclass
class HypothesisRanking:
    """Result of :func:`rank_hypotheses`.

    Attributes:
        energies: (K,) float64 fit energy (Eq. 3, :func:`fit_energy`) of each hypothesis after
            its short fit, in the order of the hypotheses given.
        chosen: index of the lowest energy.
        starts: the K world-frame starts (:func:`hypothesis_poses`).
        fitted: the K short-fitted world-frame poses (``source == "fit"``).
        seconds: wall time of the K short fits.
    """

    energies: np.ndarray
    chosen: int
    starts: list[HandObjectPoses]
    fitted: list[HandObjectPoses]
    seconds: float


def hypothesis_poses(hand_model: HandModel, hypotheses: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], k: int,
                     frames: np.ndarray, obj_rot: np.ndarray, obj_transl: np.ndarray, source: str) -> HandObjectPoses:  # fmt: skip
    """World-frame poses of every frame from object-frame hypothesis ``k``: the grasp held in
    the object's frame and carried through the object poses (world = object pose o grasp).

    Args:
        hypotheses: object-frame ``global_orient`` (K, 3), ``hand_pose`` (K, 45), ``transl``
            (K, 3) metres, ``betas`` (K, nb), float32 (:attr:`GraspSearch.hypotheses`).
        frames: (F,) frame ids. obj_rot, obj_transl: (F, 3) object -> world (axis-angle
            radians, metres).
    Returns:
        :class:`HandObjectPoses` with ``source``; float32.
    """
    from scipy.spatial.transform import Rotation

    F = len(frames)
    go, pose, tr, betas = (torch.as_tensor(np.asarray(x[k], np.float32)) for x in hypotheses)
    R = torch.as_tensor(Rotation.from_rotvec(np.asarray(obj_rot, np.float64)).as_matrix(), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(obj_transl, np.float32))
    with torch.no_grad():
        gw, tw = change_frame(hand_model, R, t, go[None].expand(F, 3), tr[None].expand(F, 3), betas)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return HandObjectPoses(np.asarray(frames), f32(gw.numpy()), f32(pose[None].expand(F, 45).numpy()), f32(betas.numpy()),
                           f32(tw.numpy()), f32(obj_rot), f32(obj_transl), source=source)  # fmt: skip


def fit_energy(result: FitResult, cfg: FitConfig) -> float:
    """The fit's final total energy (HOnnotate Eq. 3): sum over terms of the term's weight times
    its mean over the frames (``result.quality["E_<term>"]``), plus the shape prior
    ``betas_prior * ||betas||^2`` when the fit frees the shape -- the sum
    :meth:`hoannot.fitting.objective.Objective.total` minimises, over all frames."""
    q = result.quality
    e = sum(getattr(cfg.weights, k[2:]) * float(np.nanmean(v)) for k, v in q.items() if k.startswith("E_"))
    if cfg.fit_betas:
        e += cfg.betas_prior * float(np.square(result.poses.betas).sum())
    return float(e)


def short_fit_config(cfg: FitConfig, iterations: int = SHORT_ITERATIONS) -> FitConfig:
    """``cfg`` with ``iterations`` Adam iterations per step (and per tracking, grasp and object
    step where those are not 0) and no finger search (the full fit of the chosen start has
    it): the fit's schedule and energies, briefly."""
    short = {"iterations": iterations, "finger_search": 0}
    for name in ("track_iterations", "grasp_iterations", "object_iterations"):
        if getattr(cfg, name) > 0:
            short[name] = iterations
    return cfg.model_copy(update=short)


def rank_hypotheses(
    seq: Sequence,
    hand_model: HandModel,
    obj: ObjectModel,
    hypotheses: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    frames: np.ndarray,
    obj_rot: np.ndarray,
    obj_transl: np.ndarray,
    cfg: FitConfig | None = None,
    iterations: int = SHORT_ITERATIONS,
) -> HypothesisRanking:
    """Fit each hand hypothesis briefly and rank them by the fit's energy (module docstring).

    Args:
        seq: the sequence (its ``segmentation/``, depth and 2D joints are what the fit reads).
        hand_model: the hand model the hypotheses are in. obj: the object model.
        hypotheses: K object-frame hypotheses (:func:`hypothesis_poses`), e.g. the grasp
            search's best K.
        frames: (F,) the sequence's frame ids. obj_rot, obj_transl: (F, 3) registered object
            -> world poses (axis-angle radians, metres).
        cfg: the fit settings (default: the fit's defaults); ``iterations`` replaces its
            ``iterations`` (and ``track_iterations``, ``grasp_iterations``,
            ``object_iterations`` where not 0) for the short fits.
    Returns:
        :class:`HypothesisRanking`.
    Raises:
        InputError: as :func:`hoannot.fitting.optimize.fit_sequence` (missing observations,
            a diverged fit).
        ValueError: no hypothesis.
    """
    K = len(hypotheses[0])
    if K == 0:
        raise ValueError("rank_hypotheses: no hypothesis")
    scfg = short_fit_config(cfg if cfg is not None else load_fit_config(None), iterations)
    t0 = time.perf_counter()
    starts, fitted, energies = [], [], []
    for k in range(K):
        start = hypothesis_poses(hand_model, hypotheses, k, frames, obj_rot, obj_transl, f"hypothesis {k}")
        res = fit_sequence(seq, start, hand_model, obj, scfg, progress=False)
        starts.append(start)
        fitted.append(res.poses)
        energies.append(fit_energy(res, scfg))
    e = np.asarray(energies, np.float64)
    return HypothesisRanking(e, int(np.argmin(e)), starts, fitted, round(time.perf_counter() - t0, 1))


def estimated_hand_error(seq: Sequence, hand_model: HandModel, obj: ObjectModel, poses: HandObjectPoses,
                         cfg: FitConfig | None = None) -> np.ndarray:
    """Per-frame estimated hand MPJPE of any poses, without ground truth: the fit's own quality
    pass (:func:`hoannot.fitting.quality.sequence_quality`: Laplace std, point and mask
    residuals, joint limits, temporal jumps and the depth energy, through the shipped
    calibration; none of its features reads the 2D joints).

    Used to choose between whole-sequence starts (the grasp searches with and without the 2D
    joints): on the 10 auto_annotation captures the start with the lower mean estimate was the
    one that fitted better on 8 (2 of the 3 held out); the misses were by 0.4 mm and, on an
    estimate tie (7.38 vs 7.32 mm), 4.6 mm (``benchmarks/results/auto_annotation.md``); on 6
    captures held out from the rule, 5 (a miss by 0.3 mm; ``auto_annotation_validation.md``). It
    ranks near-duplicate hypotheses of one search no better than the search's energy does.

    Args:
        poses: world-frame poses of frames of ``seq`` (its ``segmentation/`` and depth are read
            as the fit reads them).
        cfg: the fit settings (crops, points, batch size; default: the fit's defaults).
    Returns:
        (F,) float32 estimated hand MPJPE, mm, in the order of ``poses.frames``.
    Raises:
        InputError: a missing or bad observation (names the file); no shipped calibration
            (``hoannot/fitting/qa_calibration.json``: the package is incomplete).
    """
    from hoannot.fitting.objective import Objective
    from hoannot.fitting.quality import CALIBRATION_PATH, load_calibration, sequence_quality
    from hoannot.io import InputError

    cal = load_calibration()
    if cal is None:
        raise InputError(f"{CALIBRATION_PATH}: file not found (the error-estimate calibration ships with hoannot; reinstall)")
    cfg = cfg if cfg is not None else load_fit_config(None)
    q = sequence_quality(seq, poses, Objective.make(seq, hand_model, obj, cfg), cal)
    return np.asarray(q["hand_error_est_mm"], np.float32)
