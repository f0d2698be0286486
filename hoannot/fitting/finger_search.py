"""Finger search: discrete moves of one finger at a time, scored by the fit's own energy.

Gradient descent on Eq. 3 (HOnnotate) repairs a start's wrist and shape but not a finger that
starts on the wrong side of a barrier: a pinky held straight where the true one is curled into
the palm stays straight, although the fit's energy is clearly lower at the true articulation
(``benchmarks/results/auto_diagnosis.md``: with the true finger angles the same fit ends at the
floor; the data energy of that fit is lower than the automatic start's fit). A step of
``kind == "fingers"`` (:mod:`hoannot.fitting.schedule`, after the batch pass) therefore tries
large moves the optimiser cannot take:

1. **moves** (:data:`MOVES`): for each finger in turn (MANO joint order: index, middle, pinky,
   ring, thumb), bend its two distal joints together by +-0.25/0.5/1/1.5 rad about their flexion
   axes, its proximal joint by +-0.25/0.5 rad of flexion or +-0.15/0.3 rad of abduction (the
   open hand's anatomical axes, :func:`hoannot.models.hand.open_hand_axes`); and, for the four
   long fingers, **copy** the articulation of another long finger (0.75 or 1 times its three
   joints' flexion/abduction/twist, carried over in each joint's anatomical axes): fingers of a
   grasp curl alike, and a ring finger held straight beside a curled pinky is the common
   failure a one-joint move cannot undo (meat_c's automatic start, 11.91 -> 5.57 mm in
   ``benchmarks/results/auto_annotation.md`` at commit 921d368). A move stops at the joint
   limits of E_joint (HOnnotate Eq. 8): a component it would push past the box is clipped to
   it, so bending a finger whose middle joint is near its limit still curls the distal one
   (mustard_c's automatic fit, data energy 54.81: ring distal +0.75 raises it to 243.09
   unclipped, by E_joint, and lowers it to 54.55 clipped; fitted from that cached start, the
   search now takes the ring's distal flexion and the fit ends at 7.68 mm instead of 10.11,
   its ground-truth start at 4.75 instead of 4.72);
2. **score**: each move is applied to every frame of an evenly spaced subset of at most
   ``FitConfig.finger_frames`` frames (a grasp is mostly one articulation for many frames) and
   scored by the sum of their weighted data energies (Eq. 3 without E_tc,
   :func:`hoannot.fitting.steps.frame_data_energy`); the lowest sum wins, the
   current articulation included, so a finger moves only when the energy says so. The fingers
   are searched one after another, each seeing the moves already taken (greedy coordinate
   search), in up to ``FitConfig.finger_sweeps`` sweeps over the five fingers: a finger may
   need more than one move (meat_d's automatic start: index and pinky distal +0.25 in the first
   sweep, index abduction +0.15 in the second, index distal +0.25 again in the third), and a
   sweep that moves nothing ends the search;
3. **apply**: the chosen moves are added to the hand pose of every frame, one after another and
   each stopped at the joint limits, as the search scored them (:func:`apply_moves`); a frame keeps
   them only where its own data energy drops (frames whose grasp differs keep theirs);
   the batch pass that follows (:func:`hoannot.fitting.schedule.make_plan`) re-fits every frame
   from there. When no finger moved, the fit skips that pass
   (:func:`hoannot.fitting.optimize.fit_sequence`): the labels are then those of a fit without
   the search.

Measured (``benchmarks/results/finger_search.md``): see the docstring of
:attr:`hoannot.fitting.config.FitConfig.finger_search`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hoannot.datasets.poses import HandObjectPoses
from hoannot.fitting.objective import Objective
from hoannot.fitting.observations import Observations
from hoannot.fitting.schedule import Step, evenly_spaced
from hoannot.fitting.steps import frame_data_energy

#: MANO joint positions (of the 15 in ``hand_pose``) of each finger: proximal, middle, distal
FINGERS: dict[str, tuple[int, int, int]] = {
    "index": (0, 1, 2), "middle": (3, 4, 5), "pinky": (6, 7, 8), "ring": (9, 10, 11), "thumb": (12, 13, 14)}  # fmt: skip
#: (name, joints of the finger moved (positions in FINGERS' triple), axis: 0 flexion / 1 abduction,
#: angles in radians) of the moves tried on each finger
MOVES: tuple[tuple[str, tuple[int, ...], int, tuple[float, ...]], ...] = (
    ("distal flexion", (1, 2), 0, (-1.5, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 1.5)),
    ("proximal flexion", (0,), 0, (-0.5, -0.25, 0.25, 0.5)),
    ("proximal abduction", (0,), 1, (-0.3, -0.15, 0.15, 0.3)),
)


#: fingers whose articulation a long finger may copy (the thumb's joints differ), and the scales
LONG_FINGERS: tuple[str, ...] = ("index", "middle", "pinky", "ring")
COPY_SCALES: tuple[float, ...] = (0.75, 1.0)


def num_moves(sweeps: int = 1) -> int:
    """How many moves a finger search of ``sweeps`` sweeps scores at most (the ``iterations``
    of a ``fingers`` step)."""
    copies = len(LONG_FINGERS) * (len(LONG_FINGERS) - 1) * len(COPY_SCALES)
    return sweeps * (len(FINGERS) * sum(len(angles) for *_, angles in MOVES) + copies)


def describe(move: dict) -> str:
    """One move record of :func:`search_fingers` as text, e.g. ``pinky distal flexion +1.5`` or
    ``ring copy pinky x0.75``."""
    if "scale" in move:
        return f"{move['finger']} {move['move']} x{move['scale']:g}"
    return f"{move['finger']} {move['move']} {move['angle_rad']:+g}"


def move_delta(finger: str, joints: tuple[int, ...], axis: int, angle: float, axes: np.ndarray) -> np.ndarray:
    """(15, 3) float32 axis-angle increment of one move (added to a (15, 3) ``hand_pose``).

    Args:
        axes: (15, 3, 3) the joints' anatomical axes (:func:`hoannot.models.hand.open_hand_axes`).
    """
    d = np.zeros((15, 3), np.float32)
    for k in joints:
        j = FINGERS[finger][k]
        d[j] = angle * axes[j, axis]
    return d


def copy_delta(finger: str, source: str, scale: float, hand_pose: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(15, 3) float32 increment that gives ``finger`` ``scale`` times the articulation of
    ``source`` (both in :data:`LONG_FINGERS`), averaged over frames (a move is one increment
    shared by every frame).

    Each of ``source``'s three joints is written in its anatomical axes (flexion, abduction,
    twist) and rebuilt about the same axes of ``finger``'s joint at the same position along the
    finger; rotation vectors are treated as linear in these axes (the joints' rotations are
    mostly about one axis). Ours, not in HOnnotate.

    Args:
        hand_pose: (B, 45) axis-angle of the frames the move is scored on, radians.
        axes: (15, 3, 3) :func:`hoannot.models.hand.open_hand_axes`.
    """
    hp = hand_pose.reshape(len(hand_pose), 15, 3)
    d = np.zeros((15, 3), np.float32)
    for j, js in zip(FINGERS[finger], FINGERS[source]):
        target = scale * (hp[:, js] @ axes[js].T) @ axes[j]
        d[j] = (target - hp[:, j]).mean(axis=0)
    return d


def _with_delta(poses: HandObjectPoses, delta: np.ndarray, where: np.ndarray | None = None,
                limits: tuple[np.ndarray, np.ndarray] | None = None) -> HandObjectPoses:  # fmt: skip
    """A copy of ``poses`` with ``delta`` (15, 3) added to the hand pose of every frame (or of
    the frames where ``where`` (B,) bool is true).

    With ``limits`` ((45,) lower, (45,) upper: the joint-limit box of E_joint), a move stops at
    the box: each changed component is clipped to it, or to where it already was when that lies
    outside (a component the move leaves alone keeps its value)."""
    out = poses.select(poses.frames)
    hp = out.hand_pose.reshape(len(out), 15, 3)
    mask = np.ones(len(out), bool) if where is None else where
    moved = hp[mask] + delta
    if limits is not None:
        lo, hi = (np.asarray(x, np.float32).reshape(15, 3) for x in limits)
        moved = np.clip(moved, np.minimum(lo, hp[mask]), np.maximum(hi, hp[mask]))
    hp[mask] = moved
    out.hand_pose = hp.reshape(len(out), 45).astype(np.float32)
    return out


def apply_moves(poses: HandObjectPoses, increments: list[np.ndarray], limits: tuple[np.ndarray, np.ndarray],
                where: np.ndarray | None = None) -> HandObjectPoses:  # fmt: skip
    """``poses`` with the moves of :func:`search_fingers` added one after another, each stopped
    at the joint-limit box ``limits`` (:func:`_with_delta`; only on the frames where ``where``
    (B,) bool is true): the articulation the search scored. Adding their sum once would differ
    where a move was clipped, and a later move back on that joint would then change nothing.

    Args:
        poses: world-frame poses of B frames.
        increments: (15, 3) float32 axis-angle increments, in the order they were taken.
    """
    out = poses.select(poses.frames)
    for d in increments:
        out = _with_delta(out, d, where, limits)
    return out


def _limits(objective: Objective) -> tuple[np.ndarray, np.ndarray]:
    """(45,) lower and upper joint limits of E_joint (HOnnotate Eq. 8) of the objective's hand."""
    return objective.hand_model.limits.lower, objective.hand_model.limits.upper


def search_fingers(
    objective: Objective,
    poses: HandObjectPoses,
    obs: Observations,
    on_move: Callable[[], None] | None = None,
    sweeps: int = 1,
) -> tuple[np.ndarray, list[dict]]:
    """Greedy search of one shared articulation change on some frames (module docstring, 1-2).

    Args:
        objective: the fit's objective.
        poses: world-frame poses of the scored frames (B of them).
        obs: their observations (same order).
        on_move: called after each scored move (progress; also once for each move a sweep
            that ended the search early did not score, so a bar of ``num_moves(sweeps)`` ends full).
        sweeps: most sweeps over the five fingers (a sweep that moves nothing ends the search).
    Returns:
        (increments, taken): the (15, 3) float32 axis-angle increment of each move taken, in
        order (empty when nothing helps; :func:`apply_moves` adds them one after another, each
        stopped at the joint limits, as the search scored them), and one dict per move taken:
        ``finger``, ``move``, ``angle_rad`` (rotation moves) or ``scale`` (copy moves, ``move``
        is ``"copy <finger>"``), ``sweep`` (0-based), ``energy_before``, ``energy_after`` (sums
        over the B frames).
    """
    from hoannot.models.hand import open_hand_axes

    axes = open_hand_axes().astype(np.float32)
    limits = _limits(objective)
    here = poses  # the scored frames with the moves taken so far
    increments: list[np.ndarray] = []
    current = frame_data_energy(objective, poses, obs).sum()
    taken: list[dict] = []
    for sweep in range(sweeps):
        moved = False
        for finger in FINGERS:
            candidates = [(move_delta(finger, joints, axis, angle, axes), {"move": name, "angle_rad": angle})
                          for name, joints, axis, angles in MOVES for angle in angles]  # fmt: skip
            if finger in LONG_FINGERS:
                candidates += [(copy_delta(finger, src, scale, here.hand_pose, axes), {"move": f"copy {src}", "scale": scale})
                               for src in LONG_FINGERS if src != finger for scale in COPY_SCALES]  # fmt: skip
            best = (current, None, None)
            for d, what in candidates:
                e = frame_data_energy(objective, _with_delta(here, d, limits=limits), obs).sum()
                if np.isfinite(e) and e < best[0]:
                    best = (e, d, what)
                if on_move is not None:
                    on_move()
            if best[1] is not None:
                taken.append({"finger": finger, **best[2], "sweep": sweep,
                              "energy_before": round(float(current), 6), "energy_after": round(float(best[0]), 6)})  # fmt: skip
                here, current, moved = _with_delta(here, best[1], limits=limits), best[0], True
                increments.append(best[1])
        if not moved:
            if on_move is not None:
                for _ in range(num_moves(sweeps - sweep - 1)):
                    on_move()
            break
    return increments, taken


def finger_step(
    step: Step,
    current: HandObjectPoses,
    frames: list[int],
    load_obs: Callable[[list[int]], Observations],
    objective: Objective,
    on_check: Callable[[str], None] | None = None,
    on_iteration: Callable[[], None] | None = None,
) -> tuple[HandObjectPoses, dict]:
    """A ``fingers`` step: search on a subset of the step's frames, then apply frame by frame
    (module docstring, 1-3).

    Args:
        step: the step; its ``indices`` are the frames the moves may be applied to.
        current: world-frame poses of every frame of the sequence (positions as in ``frames``).
        frames: the sequence's frame ids.
        load_obs: observations of a list of frame ids (loaded in batches of
            ``FitConfig.batch_size`` frames, so a long sequence is never held at once).
        on_check: called with a one-line summary (progress text).
        on_iteration: called after each scored move.
    Returns:
        (poses, record): every frame's poses (the hand poses of the frames that took the moves
        changed, everything else bit for bit ``current``), and ``{"moves": [...]`` (as
        :func:`search_fingers`), ``"frames_changed": n, "frames": n}``.
    Raises:
        InputError: as ``load_obs``.
    """
    cfg = objective.cfg
    idx = list(step.indices)
    subset = [frames[idx[int(i)]] for i in evenly_spaced(len(idx), cfg.finger_frames)]
    increments, taken = search_fingers(objective, current.select(subset), load_obs(subset), on_iteration, cfg.finger_sweeps)
    record = {"moves": taken, "frames_changed": 0, "frames": len(idx)}
    if not taken:
        return current, record
    limits = _limits(objective)
    keep = np.zeros(len(frames), bool)  # per position in `frames`: the frame takes the moves
    for a in range(0, len(idx), cfg.batch_size):
        pos = idx[a : a + cfg.batch_size]
        before = current.select([frames[i] for i in pos])
        obs = load_obs([frames[i] for i in pos])
        after = frame_data_energy(objective, apply_moves(before, increments, limits), obs)
        keep[pos] = after < frame_data_energy(objective, before, obs)
    out = apply_moves(current, increments, limits, keep)
    out.source = current.source
    record["frames_changed"] = int(keep.sum())
    if on_check is not None:
        on_check(", ".join(describe(m) for m in taken)
                 + f" ({record['frames_changed']}/{len(idx)} frames)")  # fmt: skip
    return out, record
