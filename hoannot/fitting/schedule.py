"""Optimisation schedules of HOnnotate (Sec. 4.2 multi-camera, Sec. 4.3 single-camera) as
plans: ordered lists of :class:`Step`, each optimising some frames with some variables free.

Multi-camera (Sec. 4.2):
    1. ``track``: frame by frame, each frame initialised by the previous frame's result;
    2. ``batch``: batches of ``batch_size`` frames optimised jointly with every term,
       overlapping by ``overlap`` frames that stay fixed, so that E_tc links the batches.

Single-camera (Sec. 4.3):
    1. ``grasp``: one hand pose in the object frame, shared by all frames, estimated on a
       random subset of ``grasp_frames`` frames (Eq. 12-13), together with those frames'
       object poses (a grasp fitted to fixed, noisy object poses inherits their errors:
       measured 55 mm hand MPJPE vs 15 mm, WebXR hand + YCB can, 1 camera);
    2. ``object``: frame by frame, the object pose with the hand attached to it by the grasp
       (so the hand occludes the object in the render), initialised by the previous frame;
    3. ``batch``: joint refinement of all parameters over batches, with E_tc; here E_tc also
       holds the hand still in the object's frame (``FitConfig.tc_grasp``, on by default for
       this schedule only): with one view, depth and silhouette alone let the hand drift along
       the line of sight (measured: hand MPJPE 10.1 mm after step 2, 12.0 mm after a
       refinement without it, 9.6 mm with it).

Both schedules then run ``FitConfig.finger_search`` rounds of: a ``fingers`` step (discrete
moves of one finger at a time, scored by the data energy, :mod:`hoannot.fitting.finger_search`;
not in HOnnotate) over every frame, and the ``batch`` pass again from its result (skipped by
:func:`hoannot.fitting.optimize.fit_sequence` when no finger moved).

The hand shape ``betas`` is estimated in the first multi-frame step (first ``batch`` step, or
the ``grasp`` step) and held fixed afterwards. A plan depends only on the config and the
number of frames and cameras, so a checkpoint can name the next step by its index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hoannot.io import InputError
from hoannot.fitting.config import FitConfig

StepKind = Literal["track", "batch", "grasp", "object", "fingers"]


@dataclass(frozen=True)
class Step:
    """One optimisation step.

    Attributes:
        kind: what is free (see module docstring).
        indices: positions of its frames in the sequence's frame list (sorted).
        iterations: Adam iterations (``fingers``: the moves it scores).
        frozen: how many leading frames stay fixed (batch overlaps).
        frozen_end: how many trailing frames stay fixed (the neighbours of a re-fitted window,
            :mod:`hoannot.fitting.refit`).
        fit_betas: also estimate the hand shape.
        init_from_previous: first copy the previous frame's result into this frame.
    """

    kind: StepKind
    indices: tuple[int, ...]
    iterations: int
    frozen: int = 0
    frozen_end: int = 0
    fit_betas: bool = False
    init_from_previous: bool = False


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """Positions of at most ``k`` evenly spaced items of ``n`` (first and last included):
    (min(n, k),) int64, ascending, no repeats. The frames a finger search, a restart's score or
    an init hypothesis' score read."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64))


def batches(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, stop) index ranges of ``size`` frames overlapping by ``overlap``.

    Raises:
        InputError: ``size <= overlap``.
    """
    if size <= overlap:
        raise InputError(f"fit config: batch_size ({size}) must exceed overlap ({overlap})")
    out, start = [], 0
    while True:
        stop = min(start + size, n)
        out.append((start, stop))
        if stop >= n:
            return out
        start = stop - overlap


def resolve_schedule(cfg: FitConfig, num_cameras: int) -> str:
    """``"multi"`` or ``"single"`` (``auto``: multi-camera when there is more than one camera)."""
    if cfg.schedule != "auto":
        return cfg.schedule
    return "multi" if num_cameras > 1 else "single"


def make_plan(cfg: FitConfig, num_frames: int, num_cameras: int) -> list[Step]:
    """The steps of a fit of ``num_frames`` frames seen by ``num_cameras`` cameras."""
    schedule = resolve_schedule(cfg, num_cameras)
    steps: list[Step] = []
    if schedule == "multi":
        if cfg.track_iterations > 0:
            steps += [Step("track", (i,), cfg.track_iterations, init_from_previous=i > 0) for i in range(num_frames)]
    else:
        rng = np.random.default_rng(cfg.seed)
        k = min(cfg.grasp_frames, num_frames)
        subset = tuple(int(i) for i in np.sort(rng.choice(num_frames, k, replace=False)))
        steps.append(Step("grasp", subset, cfg.grasp_iterations, fit_betas=cfg.fit_betas))
        steps += [Step("object", (i,), cfg.object_iterations, init_from_previous=i > 0) for i in range(num_frames)]
    first_batch = True
    for rnd in range(1 + cfg.finger_search):
        if rnd > 0:  # a finger search over every frame, then the batch pass again from its result
            from hoannot.fitting.finger_search import num_moves

            steps.append(Step("fingers", tuple(range(num_frames)), num_moves(cfg.finger_sweeps)))
        for bi, (start, stop) in enumerate(batches(num_frames, cfg.batch_size, cfg.overlap)):
            fit_betas = cfg.fit_betas and first_batch and schedule == "multi"
            steps.append(Step("batch", tuple(range(start, stop)), cfg.iterations,
                              frozen=min(cfg.overlap, stop - start) if bi > 0 else 0, fit_betas=fit_betas))  # fmt: skip
            first_batch = False
    return steps
