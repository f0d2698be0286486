"""What each kind of step of a plan (:mod:`hoannot.fitting.schedule`) does: the one place
where step kinds are interpreted.

A step of kind

- ``track`` (HOnnotate Sec. 4.2, stage 1): frees one frame's hand and object poses; starts
  from the previous frame's result when that has the lower energy;
- ``batch`` (Sec. 4.2 stage 2, Sec. 4.3 stage 3): frees the poses of its frames except the
  ``frozen`` leading and ``frozen_end`` trailing ones, with E_tc linking them;
- ``grasp`` (Sec. 4.3 stage 1, Eq. 12-13): frees one hand pose in the object frame, shared by
  every frame, together with the object poses of its frames; its result re-poses the hand of
  every frame of the sequence;
- ``object`` (Sec. 4.3 stage 2): frees one frame's object pose, the hand attached to it by the
  grasp; starts from the previous frame's object pose when that has the lower energy;

- ``fingers`` (not in HOnnotate): no Adam; discrete moves of one finger at a time scored by the
  data energy, run by :func:`hoannot.fitting.finger_search.finger_step` (it reads its
  observations in batches, so :func:`hoannot.fitting.optimize.fit_sequence` calls it directly);

and any of them may also free the hand shape ``betas`` (``Step.fit_betas``).
:func:`run_step` runs a step; its parts (:func:`starting_poses`, :func:`free_variables`,
:func:`minimise`, :func:`apply_step`) and :func:`frame_data_energy` are public for the re-fit,
the finger search and the benchmarks.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from hoannot.datasets.poses import HandObjectPoses
from hoannot.fitting.objective import Objective
from hoannot.fitting.observations import Observations
from hoannot.fitting.parameters import GraspParameters, PoseParameters
from hoannot.fitting.schedule import Step
from hoannot.io import InputError

#: iterations between the loop's host reads (divergence check, progress); none in between, so
#: on a GPU the iterations queue without synchronising
CHECK_EVERY = 5
#: the per-frame pose fields a step writes back
POSE_FIELDS = ("global_orient", "hand_pose", "transl", "obj_rot", "obj_transl")


def free_variables(step: Step, poses: HandObjectPoses, objective: Objective):
    """The free variables of a step over its frames' poses, and their Adam parameter groups.

    Args:
        step: the step (its kind decides what is free).
        poses: the world-frame poses of the step's frames, in its order.
        objective: supplies the hand model, device and learning rates.
    Returns:
        (params, groups): :class:`GraspParameters` (``grasp``, ``object``) or
        :class:`PoseParameters` (``track``, ``batch``, frozen frames marked), and the
        ``torch.optim.Adam`` groups (``lr_rot`` / ``lr_pose`` / ``lr_transl`` / ``lr_betas``).
    """
    cfg, hand_model, device = objective.cfg, objective.hand_model, objective.device
    if step.kind in ("grasp", "object"):
        params = GraspParameters(poses, hand_model, hand_model.num_betas, device)
        if step.kind == "grasp":  # Eq. 12-13: the grasp and the object poses of its frames together
            groups = [{"params": [params.grasp_orient, params.obj_delta], "lr": cfg.lr_rot},
                      {"params": [params.grasp_pose], "lr": cfg.lr_pose},
                      {"params": [params.grasp_transl, params.obj_transl], "lr": cfg.lr_transl}]  # fmt: skip
        else:
            groups = [{"params": [params.obj_delta], "lr": cfg.lr_rot}, {"params": [params.obj_transl], "lr": cfg.lr_transl}]
    else:
        params = PoseParameters(poses, hand_model.num_betas, device)
        params.frozen[: step.frozen] = True
        if step.frozen_end:
            params.frozen[-step.frozen_end :] = True
        groups = [
            {"params": [params.global_orient, params.obj_delta], "lr": cfg.lr_rot},
            {"params": [params.hand_pose], "lr": cfg.lr_pose},
            {"params": [params.transl, params.obj_transl], "lr": cfg.lr_transl},
        ]
    params.betas.requires_grad_(step.fit_betas)
    if step.fit_betas:
        groups.append({"params": [params.betas], "lr": cfg.lr_betas})
    return params, groups


def frame_data_energy(objective: Objective, poses: HandObjectPoses, obs: Observations) -> np.ndarray:
    """(B,) float64 weighted data energy of each frame of ``poses`` (HOnnotate Eq. 3 without
    E_tc, which links frames) on ``obs`` (the same frames, same order); no gradients."""
    params, _ = free_variables(Step("batch", tuple(range(len(poses))), 0), poses, objective)
    return objective.frame_data_energy(params, obs).cpu().numpy().astype(np.float64)


def copy_previous(current: HandObjectPoses, i: int) -> HandObjectPoses:
    """``current`` with frame ``i`` (a position) set to frame ``i - 1``'s poses: every pose
    (``track``) or, for ``object`` steps, the object pose and the hand attached to it by the
    grasp (the hand parameters are the grasp's and the same in both frames)."""
    kw = {f.name: np.array(getattr(current, f.name), copy=True) for f in fields(HandObjectPoses)}
    for name in POSE_FIELDS:
        kw[name][i] = kw[name][i - 1]
    return HandObjectPoses(**kw)


def starting_poses(step: Step, current: HandObjectPoses, frames: list[int], obs: Observations,
                   objective: Objective) -> HandObjectPoses:  # fmt: skip
    """The poses of every frame a step starts from.

    For a step with ``init_from_previous`` (``track``, ``object``), its frame takes the previous
    frame's result where that has the lower energy (Eq. 3) on the step's observations:
    HOnnotate tracks from the previous frame, but a per-frame initialisation from 2D joints
    (Eq. 11) is often closer after fast motion. Other steps start from ``current``.

    Args:
        current: poses of every frame of the sequence (positions as in ``frames``).
        frames: the sequence's frame ids.
        obs: the observations of the step's frames.
    """
    if not step.init_from_previous:
        return current
    step_frames = [frames[i] for i in step.indices]
    candidate = copy_previous(current, step.indices[0])
    energy = [objective.value(free_variables(step, c.select(step_frames), objective)[0], obs) for c in (current, candidate)]
    return candidate if energy[1] < energy[0] else current


def minimise(params, groups, obs: Observations, objective: Objective, iterations: int, root: Path, where: str,
             on_check=None, on_iteration=None) -> None:  # fmt: skip
    """Minimise Eq. 3 of ``params`` with Adam for ``iterations`` iterations, frozen frames held
    (:meth:`PoseParameters.zero_frozen_grads`).

    Args:
        params: :class:`PoseParameters` or :class:`GraspParameters` (changed in place).
        groups: Adam parameter groups (:func:`free_variables`).
        where: names the step in a divergence error (``"batch step 2, frames 18-37"``).
        on_check: called every :data:`CHECK_EVERY` iterations with the energies as text.
        on_iteration: called after every iteration.
    Raises:
        InputError: a non-finite energy (names ``root``, ``where`` and the terms).
    """
    opt = torch.optim.Adam(groups)
    for it in range(iterations):
        opt.zero_grad(set_to_none=True)
        terms = objective.energies(params, obs)
        loss = objective.total(terms, params)
        check = it % CHECK_EVERY == 0 or it == iterations - 1
        if check:  # the only host read of the loop: one every CHECK_EVERY iterations
            vals = torch.stack([loss.detach()] + [v.detach().mean() for v in terms.values()]).tolist()
            if not np.isfinite(vals[0]):
                bad = [k for k, v in zip(terms, vals[1:]) if not np.isfinite(v)] or ["the pose parameters"]
                raise InputError(f"{root}: fit diverged ({where}, iteration {it}): non-finite {', '.join(bad)}; check "
                                 "this sequence's keypoints2d/, segmentation/ and depth")  # fmt: skip
        loss.backward()
        params.zero_frozen_grads()
        opt.step()
        if check and on_check is not None:
            on_check(" ".join(f"{k}={v:.3g}" for k, v in zip(terms, vals[1:])))
        if on_iteration is not None:
            on_iteration()


def merge_poses(current: HandObjectPoses, batch: HandObjectPoses, batch_frames: list[int]) -> HandObjectPoses:
    """``current`` with the per-frame poses of ``batch_frames`` (ids) taken from ``batch`` (in
    that order) and ``batch``'s ``betas``."""
    index = {int(f): i for i, f in enumerate(current.frames)}
    idx = np.array([index[int(f)] for f in batch_frames])
    kw = {f.name: np.array(getattr(current, f.name), copy=True) for f in fields(HandObjectPoses)}
    for name in POSE_FIELDS:
        kw[name][idx] = getattr(batch, name)
    kw["betas"] = batch.betas
    return HandObjectPoses(**kw)


def apply_step(step: Step, current: HandObjectPoses, params, frames: list[int], objective: Objective) -> HandObjectPoses:
    """The sequence's poses after a step: its frames' poses from ``params``; after a
    ``grasp`` step also every other frame's hand, re-posed by the shared grasp in its
    object's frame (Eq. 12)."""
    hand_model = objective.hand_model
    step_frames = [frames[i] for i in step.indices]
    current = merge_poses(current, params.to_poses(hand_model), step_frames)
    if step.kind == "grasp":
        whole = GraspParameters(current, hand_model, hand_model.num_betas, objective.device)
        with torch.no_grad():
            for name in ("grasp_orient", "grasp_pose", "grasp_transl", "betas"):
                getattr(whole, name).copy_(getattr(params, name))
        current = merge_poses(current, whole.to_poses(hand_model), frames)
    return current


def run_step(step: Step, current: HandObjectPoses, frames: list[int], obs: Observations, objective: Objective,
             root: Path, where: str, on_check=None, on_iteration=None):  # fmt: skip
    """One step of a plan: its start (:func:`starting_poses`), its free variables
    (:func:`free_variables`), ``step.iterations`` of Adam (:func:`minimise`) and the result
    merged into the sequence (:func:`apply_step`).

    Args:
        step: the step.
        current: world-frame poses of every frame (positions as in ``frames``).
        frames: the sequence's frame ids.
        obs: the observations of the step's frames.
        root, where, on_check, on_iteration: as in :func:`minimise`.
    Returns:
        (poses, params): every frame's poses after the step and the step's fitted parameters.
    Raises:
        InputError: a diverging optimisation (:func:`minimise`).
    """
    start = starting_poses(step, current, frames, obs, objective)
    params, groups = free_variables(step, start.select([frames[i] for i in step.indices]), objective)
    minimise(params, groups, obs, objective, step.iterations, root, where, on_check, on_iteration)
    return apply_step(step, start, params, frames, objective), params
