"""Re-fit chosen frames of a fit with their neighbours held fixed, so that E_tc links them.

The one core behind ``hoannot fit --refit FRAMES`` (issue 20.4: frames the quality pass
flagged, or frames a person picked) and the seams of a chunked fit (issue 22.2: the frames
around each chunk border, :mod:`hoannot.fitting.chunked`).

For each contiguous run of chosen frames (consecutive in the sequence's frame list):

1. **starts**: every frame of the run starts from the best of its own current pose and the
   nearest frame outside the run on each side, carried over in two ways: the neighbour's
   hand expressed in its object's frame and re-attached to this frame's object pose
   (``"left-grasp"``, ``"right-grasp"``: the grasp holds, the object pose is kept), and the
   neighbour's whole pose (``"left-copy"``, ``"right-copy"``: the object pose too, as the
   tracking step of HOnnotate Sec. 4.2 starts from the previous frame). "Best" is the lowest
   weighted data energy of that frame (HOnnotate Eq. 3 without E_tc, on the window's crops);
   the combination is kept only when the window's total energy (with E_tc) is lower than
   that of the current poses (as the tracking step's start is chosen,
   :func:`hoannot.fitting.steps.starting_poses`);
2. **window**: the run and up to ``context`` frames on each side (``FitConfig.overlap``, at
   least 1) are optimised as one batch step with every term on, the side frames frozen
   (:attr:`hoannot.fitting.schedule.Step.frozen` / ``frozen_end``) and the hand shape fixed;
3. only the run's frames take the new poses and quality; every other frame's values are
   returned untouched (bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from pytorch3d.transforms import axis_angle_to_matrix

from hoannot.io import InputError
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.config import FitConfig
from hoannot.fitting.objective import Objective
from hoannot.fitting.schedule import Step
from hoannot.fitting.quality import sequence_quality
from hoannot.fitting.steps import POSE_FIELDS, frame_data_energy, free_variables, minimise
from hoannot.models.hand import HandModel, change_frame
from hoannot.models.objects import ObjectModel

#: the start candidates of a re-fitted frame, in the order they are tried (ties: the first)
STARTS = ("current", "left-grasp", "left-copy", "right-grasp", "right-copy")


def parse_frames(spec: str, frames: list[int], flags: dict[int, bool] | None = None) -> list[int]:
    """The frame ids a ``--refit`` argument names, sorted.

    ``spec`` is ``"flagged"`` (the frames whose ``flag`` is true in ``flags``), or a comma list
    of frame ids and **inclusive** ranges of frame ids: ``"12:20"`` is frames 12 to 20, both
    included (the sequence's frames in that interval; ids need not be consecutive), ``"12:"``
    from 12 on, ``":20"`` up to 20; e.g. ``"3,7:9"``.

    Args:
        frames: the sequence's frame ids.
        flags: {frame id: flagged} from ``fit/quality.json`` (for ``"flagged"``).
    Returns:
        sorted frame ids (empty for ``"flagged"`` when nothing is flagged).
    Raises:
        InputError: an empty or malformed item, a range whose start exceeds its end or that
            holds none of the sequence's frames, or a frame id the sequence does not have (one
            line naming the item).
    """
    spec = spec.strip()
    if spec == "flagged":
        return sorted(f for f in frames if (flags or {}).get(int(f), False))
    known = set(int(f) for f in frames)
    span = f"({min(known)}..{max(known)})"

    def frame_id(text: str, item: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise InputError(f"--refit {spec!r}: {item!r} is not a frame id or a range A:B (expected 'flagged', "
                             "'12:20' or '3,5,7')") from None  # fmt: skip

    out: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        if ":" in item:
            a, _, b = item.partition(":")
            lo = frame_id(a, item) if a.strip() else min(known)
            hi = frame_id(b, item) if b.strip() else max(known)
            if lo > hi:
                raise InputError(f"--refit {spec!r}: range {item!r} starts after it ends (ranges are inclusive: 12:20)")
            got = [f for f in known if lo <= f <= hi]
            if not got:
                raise InputError(f"--refit {spec!r}: range {item!r} holds none of the sequence's frames {span}")
            out.update(got)
        else:
            f = frame_id(item, item)
            if f not in known:
                raise InputError(f"--refit {spec!r}: frame {f} is not one of the sequence's frames {span}")
            out.add(f)
    return sorted(out)


def contiguous_runs(selected: list[int], frames: list[int]) -> list[list[int]]:
    """``selected`` frame ids split into runs of frames consecutive in ``frames`` (sequence order)."""
    pos = {int(f): i for i, f in enumerate(frames)}
    idx = sorted(pos[int(f)] for f in selected)
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == pos[runs[-1][-1]] + 1:
            runs[-1].append(int(frames[i]))
        else:
            runs.append([int(frames[i])])
    return runs


def carry_over(poses: HandObjectPoses, src: int, dst: int, hand_model: HandModel, grasp: bool) -> None:
    """Start frame ``dst`` (a position in ``poses``) from frame ``src``, in place.

    Args:
        grasp: True: the hand of ``src`` in its object's frame, re-attached to ``dst``'s object
            pose (``x -> R_dst R_src^T (x - t_src) + t_dst``; articulation copied), the object
            pose of ``dst`` kept; False: every pose of ``src`` copied (hand and object).
    """
    if not grasp:
        for name in POSE_FIELDS:
            getattr(poses, name)[dst] = getattr(poses, name)[src]
        return
    device = next(iter(hand_model.buffers()), torch.zeros(0)).device  # the model stays where it is
    def f32(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)

    with torch.no_grad():
        R = axis_angle_to_matrix(f32(poses.obj_rot[[src, dst]]))
        R_rel = R[1] @ R[0].T
        t_rel = f32(poses.obj_transl[dst]) - R_rel @ f32(poses.obj_transl[src])
        go, tr = change_frame(hand_model, R_rel, t_rel, f32(poses.global_orient[[src]]),
                              f32(poses.transl[[src]]), f32(poses.betas[: hand_model.num_betas]))  # fmt: skip
    poses.global_orient[dst], poses.transl[dst] = go[0].cpu().numpy(), tr[0].cpu().numpy()
    poses.hand_pose[dst] = poses.hand_pose[src]


@dataclass
class RefitRun:
    """What happened to one run of re-fitted frames.

    Attributes:
        frames: the re-fitted frame ids.  fixed: the frozen side frames of the window.
        starts: per re-fitted frame, which start it took (one of :data:`STARTS`).
        energy_before, energy_start, energy_after: the window's total energy (HOnnotate Eq. 3
            with E_tc, as the optimiser sees it) at the current poses, at the chosen starts
            and after the optimisation.
        frame_energy_before, frame_energy_after: per re-fitted frame, its weighted data energy
            (Eq. 3 without E_tc) before and after.
    """

    frames: list[int]
    fixed: list[int]
    starts: list[str]
    energy_before: float
    energy_start: float
    energy_after: float
    frame_energy_before: list[float] = field(default_factory=list)
    frame_energy_after: list[float] = field(default_factory=list)


@dataclass
class RefitResult:
    """Poses and quality of the whole sequence after a re-fit.

    Attributes:
        poses: every frame's poses; those of frames outside ``runs`` bit for bit the given ones.
        quality: {key: (F,) array} the re-fitted frames' quality (:class:`hoannot.fitting.
            optimize.FitResult`), for the re-fitted frames only (``frames`` holds their ids).
        runs: one :class:`RefitRun` per contiguous run.
    """

    poses: HandObjectPoses
    quality: dict[str, np.ndarray]
    runs: list[RefitRun]


def _window_energy(objective: Objective, step: Step, poses: HandObjectPoses, obs) -> float:
    return objective.value(free_variables(step, poses, objective)[0], obs)


def refit_frames(
    seq: Sequence,
    poses: HandObjectPoses,
    selected: list[int],
    hand_model: HandModel,
    obj: ObjectModel,
    cfg: FitConfig,
    context: int | None = None,
    try_starts: bool = True,
    on_run=None,
) -> RefitResult:
    """Re-fit the frames ``selected`` of ``poses``, each contiguous run in a window with its
    neighbours held fixed (module docstring).

    Args:
        seq: the sequence (observations are read from it).
        poses: world-frame poses of every frame of ``seq`` (e.g. ``fit/poses.npz``).
        selected: frame ids to re-fit (not all of the sequence's frames: a run needs a neighbour).
        hand_model, obj: the fit's models.
        cfg: the fit's settings (``iterations`` per window, weights, crops...).
        context: frozen frames on each side of a run (default ``max(1, cfg.overlap)``).
        try_starts: False: start from the current poses only.
        on_run: called with each finished :class:`RefitRun`.
    Returns:
        :class:`RefitResult`.
    Raises:
        InputError: a frame that is not the sequence's, every frame selected (nothing to hold
            fixed), missing observations, or a diverging optimisation (names the frames).
    """
    frames = [int(f) for f in seq.frames]
    current = poses.select(frames)
    current.source = poses.source
    bad = sorted(set(int(f) for f in selected) - set(frames))
    if bad:
        raise InputError(f"{seq.root}: cannot re-fit frames {bad[:5]}: not the sequence's frames")
    if len(set(int(f) for f in selected)) >= len(frames):
        raise InputError(f"{seq.root}: cannot re-fit every frame with its neighbours fixed; run a full fit instead")
    context = max(1, cfg.overlap) if context is None else max(1, context)
    objective = Objective.make(seq, hand_model, obj, cfg)
    pos = {f: i for i, f in enumerate(frames)}
    chosen = set(int(f) for f in selected)
    runs_out: list[RefitRun] = []
    parts: list[dict] = []
    kw = {f.name: np.array(getattr(current, f.name), copy=True) for f in fields(HandObjectPoses)}
    out = HandObjectPoses(**kw)
    for run in contiguous_runs(sorted(chosen), frames):
        a, b = pos[run[0]], pos[run[-1]]
        left = [i for i in range(a - 1, max(-1, a - 1 - context), -1) if frames[i] not in chosen][::-1]
        right = [i for i in range(b + 1, min(len(frames), b + 1 + context)) if frames[i] not in chosen]
        # side frames must be contiguous with the run (a chosen frame stops them: it is in another run)
        left = [i for i in left if all(frames[j] not in chosen for j in range(i, a))]
        right = [i for i in right if all(frames[j] not in chosen for j in range(b + 1, i + 1))]
        win_idx = left + list(range(a, b + 1)) + right
        win_frames = [frames[i] for i in win_idx]
        step = Step("batch", tuple(range(len(win_idx))), cfg.iterations, frozen=len(left), frozen_end=len(right))
        torch.manual_seed(cfg.seed)
        obs = objective.observations(seq, win_frames, cfg.seed)
        start = out.select(win_frames)  # the window's current poses (earlier runs already merged)
        in_run = list(range(len(left), len(left) + len(run)))
        e_frames_before = frame_data_energy(objective, start, obs)
        e_before = _window_energy(objective, step, start, obs)
        starts = ["current"] * len(run)
        best = start
        if try_starts:
            cands = {"current": start}
            for side, nb in (("left", len(left) - 1 if left else None), ("right", len(left) + len(run) if right else None)):
                if nb is None:
                    continue
                for how in ("grasp", "copy"):
                    c = start.select(win_frames)
                    for j in in_run:
                        carry_over(c, nb, j, objective.hand_model, grasp=how == "grasp")
                    cands[f"{side}-{how}"] = c
            names = list(cands)
            e = np.stack([frame_data_energy(objective, cands[n], obs) for n in names])  # (K, B)
            mix = start.select(win_frames)
            for k, j in enumerate(in_run):
                pick = names[int(np.nanargmin(np.where(np.isfinite(e[:, j]), e[:, j], np.inf)))]
                starts[k] = pick
                for name in POSE_FIELDS:
                    getattr(mix, name)[j] = getattr(cands[pick], name)[j]
            if _window_energy(objective, step, mix, obs) < e_before:
                best = mix
            else:
                starts = ["current"] * len(run)
        e_start = _window_energy(objective, step, best, obs) if best is not start else e_before
        params, groups = free_variables(step, best, objective)
        where = f"re-fit of frames {run[0]}-{run[-1]}"
        minimise(params, groups, obs, objective, step.iterations, seq.root, where)
        fitted = params.to_poses(objective.hand_model)
        e_after = objective.value(params, obs)
        e_frames_after = frame_data_energy(objective, fitted, obs)
        # the fit's final quality pass (hoannot.fitting.quality: estimates and flags as the fit
        # computes them), over the window so the temporal jumps see the fixed neighbours
        q = sequence_quality(seq, fitted, objective)
        q.pop("frames", None)
        for k, j in enumerate(in_run):  # only the run's frames change: the frozen ones keep their bits
            for name in POSE_FIELDS:
                getattr(out, name)[pos[run[k]]] = getattr(fitted, name)[j]
        parts.append({key: np.asarray(v)[in_run] for key, v in q.items()})
        r = RefitRun(run, [frames[i] for i in left + right], starts, e_before, e_start, e_after,
                     [float(e_frames_before[j]) for j in in_run], [float(e_frames_after[j]) for j in in_run])  # fmt: skip
        runs_out.append(r)
        if on_run is not None:
            on_run(r)
    quality = {"frames": np.array([f for r in runs_out for f in r.frames], np.int64)}
    for key in parts[0] if parts else []:
        quality[key] = np.concatenate([p[key] if key in p else np.full(len(r.frames), np.nan, np.float32)
                                       for p, r in zip(parts, runs_out)])  # fmt: skip
    return RefitResult(out, quality, runs_out)
