"""Fit hand and object poses to a sequence along a schedule; resumable.

HOnnotate Sec. 4.2 (multi-camera) and 4.3 (single camera) in three parts, read top-down in
:func:`fit_sequence`:

1. the plan (:func:`hoannot.fitting.schedule.make_plan`): track frame by frame, then overlapping
   batches of frames jointly (multi-camera); or a shared grasp, the object per frame, then
   batches (single camera);
2. the objective (:class:`hoannot.fitting.objective.Objective`, Eq. 3), built once: models,
   renderer and the resolved config;
3. each step (:func:`hoannot.fitting.steps.run_step`: start, free variables, Adam, merge),
   on the observations of its frames only, so memory is bounded by the batch size, not by
   the sequence length; a ``fingers`` step (:func:`hoannot.fitting.finger_search.finger_step`)
   reads its frames' observations batch by batch itself;

then the quality pass (:func:`hoannot.fitting.quality.sequence_quality`) on the final poses.
With ``FitConfig.restarts`` > 1 the whole plan runs that many times with other depth-point
samples (:func:`fit_plan` each) and the fit with the lowest data energy is kept.

After every step the state (all poses so far, next step) is written atomically to
``<out>/ckpt/state.npz``; ``resume=True`` continues from it and gives the same result as an
uninterrupted run (every step is seeded from the config).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from hoannot.io import InputError, json_bytes, npz_bytes, write_files, write_npz
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.config import FitConfig
from hoannot.fitting.objective import Objective
from hoannot.fitting.quality import frame_quality, merge_quality, sequence_quality
from hoannot.fitting.schedule import evenly_spaced, make_plan
from hoannot.fitting.finger_search import finger_step
from hoannot.fitting.steps import frame_data_energy, run_step
from hoannot.models.hand import HandModel
from hoannot.models.objects import ObjectModel


@dataclass
class FitResult:
    """Fitted poses and per-frame quality.

    Attributes:
        poses: world-frame poses of every frame (``source == "fit"``).
        quality: per-frame arrays (F,) of :func:`hoannot.fitting.quality.sequence_quality`:
            ``frames``, ``E_<term>`` final energies, ``iou_hand``, ``iou_object`` silhouette
            IoU against the segmentation (crop), ``depth_residual_mm`` median |rendered -
            observed| depth, the error features, ``hand_error_est_mm`` and
            ``object_error_est_mm`` (estimated hand MPJPE and object ADD without ground truth;
            absent when the package has no calibration: ``error_est_calibrated`` False),
            ``flag`` bool: the frame looks wrong. A fit stopped early (``stop_after``) has the
            last steps' residuals and hard flags only.
        fingers: one record per ``fingers`` step of the fit (a resumed fit: those before its
            checkpoint too, kept in it; a chunked fit: every chunk's, with its ``chunk`` index):
            ``step`` (1-based) and :func:`hoannot.fitting.finger_search.finger_step`'s record (the
            moves taken, how many frames took them).
        restarts: with ``FitConfig.restarts > 1``: ``seeds``, ``energies`` (the data energy of
            each restart's fit on ``frames``), ``chosen`` (its index); else None.
    """

    poses: HandObjectPoses
    quality: dict[str, np.ndarray]
    fingers: list[dict] = field(default_factory=list)
    restarts: dict | None = None


def inputs_digest(seq: Sequence, init: HandObjectPoses) -> str:
    """Short hash of what a fit starts from: the initial poses of the sequence's frames, the
    sequence header and calibration, the 2D joints, and the name and content of every depth
    and segmentation image of those frames (a segmentation made again by ``init --auto`` has
    the same size but other labels; hashing 1000 frames x 5 cameras of 320 x 240 reads about
    0.5 GB, a second or two, against minutes per frame of fitting)."""
    h = hashlib.sha1()
    for f in fields(HandObjectPoses):
        if f.name != "source":
            h.update(np.ascontiguousarray(getattr(init, f.name)).tobytes())
    for name in ("sequence.yaml", "calibration/cameras.json"):
        if (seq.root / name).is_file():
            h.update((seq.root / name).read_bytes())
    for p in sorted((seq.root / "keypoints2d").glob("*/*.npz")) + sorted((seq.root / "keypoints2d").glob("*.npz")):
        h.update(p.read_bytes())
    for cam in seq.cameras:
        for fr in seq.frames:
            for p in (seq.depth_path(cam.name, fr), seq.segmentation_path(cam.name, fr)):
                h.update(f"{p.relative_to(seq.root)}:".encode())
                h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:12]


def _save_state(path: Path, poses: HandObjectPoses, next_step: int, quality: dict, digest: str, inputs: str,
                fingers: list[dict]) -> None:  # fmt: skip
    arrays = {f.name: np.asarray(getattr(poses, f.name)) for f in fields(HandObjectPoses)}
    arrays.update({"q_" + k: v for k, v in quality.items()})
    write_npz(path, next_step=np.int64(next_step), config_digest=np.asarray(digest), inputs_digest=np.asarray(inputs),
              fingers=np.asarray(json.dumps(fingers)), **arrays)  # fmt: skip


def _load_state(path: Path, digest: str, inputs: str):
    with np.load(path, allow_pickle=False) as z:
        if str(z["config_digest"]) != digest:
            raise InputError(f"{path}: checkpoint was written with other fit settings; rerun without --resume")
        if "inputs_digest" not in z.files or str(z["inputs_digest"]) != inputs:
            raise InputError(f"{path}: checkpoint was made from other inputs (initial poses, frames, calibration, "
                             "2D joints or images changed since); rerun without --resume")  # fmt: skip
        poses = HandObjectPoses(**{f.name: z[f.name] for f in fields(HandObjectPoses)})
        quality = {k[2:]: z[k] for k in z.files if k.startswith("q_")}
        fingers = json.loads(str(z["fingers"])) if "fingers" in z.files else []
        return poses, int(z["next_step"]), quality, fingers


#: seed offset between restarts (FitConfig.restarts)
RESTART_SEED_STEP = 1000


def fit_sequence(
    seq: Sequence,
    init: HandObjectPoses,
    hand_model: HandModel,
    obj: ObjectModel,
    cfg: FitConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> FitResult:
    """Optimise hand and object poses of every frame of ``seq`` along the config's schedule,
    ``FitConfig.restarts`` times (each with the seed ``cfg.seed + 1000 k``, so other depth-point
    samples; checkpoints under ``out_dir/restarts/k``), keeping the fit with the lowest data
    energy (HOnnotate Eq. 3 without E_tc) on ``FitConfig.finger_frames`` evenly spaced frames
    read with ``cfg.seed``. With one restart, one fit (:func:`fit_plan`).

    Args and raises: as :func:`fit_plan`.
    Returns:
        :class:`FitResult` of the chosen restart, with ``restarts`` recorded.
    """
    if cfg.restarts <= 1:
        return fit_plan(seq, init, hand_model, obj, cfg, out_dir, resume, progress, stop_after)
    seeds = [cfg.seed + RESTART_SEED_STEP * k for k in range(cfg.restarts)]
    results = [fit_plan(seq, init, hand_model, obj, cfg.model_copy(update={"seed": s, "restarts": 1}),
                        None if out_dir is None else Path(out_dir) / "restarts" / str(k), resume, progress, stop_after)
               for k, s in enumerate(seeds)]  # fmt: skip
    frames = list(seq.frames)
    subset = [frames[i] for i in evenly_spaced(len(frames), cfg.finger_frames)]
    energies = data_energies(seq, hand_model, obj, cfg, [r.poses for r in results], subset)
    k = int(np.argmin(energies))
    best = results[k]
    best.restarts = {"seeds": seeds, "energies": energies, "chosen": k, "frames": subset}
    return best


def data_energies(seq: Sequence, hand_model: HandModel, obj: ObjectModel, cfg: FitConfig,
                  candidates: list[HandObjectPoses], frames: list[int]) -> list[float]:  # fmt: skip
    """The data energy (HOnnotate Eq. 3 without E_tc: :func:`hoannot.fitting.steps.frame_data_energy`)
    of each of several pose sets of one sequence, summed over ``frames``, all read against the
    same observations (``cfg.seed``'s depth-point samples), so their energies compare.

    Args:
        candidates: world-frame poses, each holding at least ``frames``.
        frames: frame ids (the observations of all of them are held at once: a few).
    Returns:
        one float per candidate, in order.
    Raises:
        InputError: as :func:`hoannot.fitting.observations.load_observations`.
    """
    objective = Objective.make(seq, hand_model, obj, cfg)
    obs = objective.observations(seq, frames, cfg.seed)
    return [float(frame_data_energy(objective, p.select(frames), obs).sum()) for p in candidates]


def fit_plan(
    seq: Sequence,
    init: HandObjectPoses,
    hand_model: HandModel,
    obj: ObjectModel,
    cfg: FitConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> FitResult:
    """Optimise hand and object poses of every frame of ``seq`` along the config's schedule.

    Args:
        seq: the sequence (observations are read from it).
        init: initial world-frame poses of (at least) the sequence's frames.
        hand_model: MANO-layout hand model.
        obj: object model (its decimated mesh is rendered).
        cfg: settings (schedule, weights, iterations...).
        out_dir: folder for ``ckpt/state.npz`` (None: no checkpoints).
        resume: continue from the checkpoint in ``out_dir``.
        progress: show a rich progress bar with the current energies.
        stop_after: stop after this many steps (for tests of resuming).
    Returns:
        :class:`FitResult`.
    Raises:
        InputError: missing observations, an init without the sequence's frames, a
            checkpoint written with other settings or from other inputs (:func:`inputs_digest`),
            or a non-finite energy (checked
            every 5 iterations; names the step, frames and terms).
    """
    frames = list(seq.frames)
    try:
        current = init.select(frames)
    except KeyError as e:
        raise InputError(f"initial poses lack frame {e}") from None
    current.source = "fit"
    plan = make_plan(cfg, len(frames), len(seq.cameras))
    ckpt = Path(out_dir) / "ckpt" / "state.npz" if out_dir is not None else None
    inputs = inputs_digest(seq, current) if ckpt is not None else ""
    quality: dict[str, np.ndarray] = {}
    first = 0
    fingers: list[dict] = []
    if resume and ckpt is not None and ckpt.is_file():
        current, first, quality, fingers = _load_state(ckpt, cfg.digest(), inputs)
    objective = Objective.make(seq, hand_model, obj, cfg)
    last = len(plan) if stop_after is None else min(len(plan), first + stop_after)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[energies]}")]  # fmt: skip
    with Progress(*cols, disable=not progress, transient=False) as bar:
        task = bar.add_task("fit", total=sum(s.iterations for s in plan[first:]), energies="")
        si = first
        while si < last:
            step, following = plan[si], si + 1
            step_frames = [frames[i] for i in step.indices]
            where = f"{step.kind} step {si + 1}, frames {step_frames[0]}-{step_frames[-1]}"
            bar.update(task, description=f"{step.kind} {si + 1}/{len(plan)} frames {step_frames[0]}-{step_frames[-1]}")
            torch.manual_seed(cfg.seed + si)

            def load(fr: list[int], seed: int = cfg.seed + si):
                try:
                    return objective.observations(seq, fr, seed)
                except InputError:  # bad input (hoannot.datasets.validate): the error line alone, no half bar
                    bar.live.transient = True
                    raise

            show, advance = (lambda text: bar.update(task, energies=text)), (lambda: bar.advance(task))
            if step.kind == "fingers":  # reads its frames' observations in batches itself
                current, record = finger_step(step, current, frames, load, objective, show, advance)
                fingers.append({"step": si + 1, **record})
                params = None
                if not record["moves"] and cfg.finger_pass == "moved":  # nothing moved: the pass after it is skipped
                    following = next((k for k in range(si + 1, len(plan)) if plan[k].kind == "fingers"), len(plan))
                    bar.advance(task, sum(s.iterations for s in plan[si + 1 : following]))
            else:
                obs = load(step_frames)
                current, params = run_step(step, current, frames, obs, objective, seq.root, where, show, advance)
            if last < len(plan) and params is not None and step.kind != "grasp":
                # a fit stopped early returns its last steps' residuals; a finished one gets
                # its quality from the final pass below, which renders every frame once
                quality = merge_quality(quality, frame_quality(objective, params, obs), step_frames, frames)
            if ckpt is not None:
                _save_state(ckpt, current, following, quality, cfg.digest(), inputs, fingers)
            _signal_hook(si + 1)
            si = following
    current.source = "fit"
    if si >= len(plan):  # the whole plan ran: estimate errors on the final poses
        quality = sequence_quality(seq, current, objective)
    return FitResult(current, quality, fingers)


def _signal_hook(steps_done: int) -> None:
    """Test hook: ``HOANNOT_SIGNAL_AFTER_STEP="K:NAME"`` sends this process signal SIGNAME
    (e.g. ``2:KILL``, ``1:INT``) once step K's checkpoint is written, so tests can interrupt a
    fit at an exact point instead of racing it with a timer."""
    spec = os.environ.get("HOANNOT_SIGNAL_AFTER_STEP")
    if spec:
        k, _, name = spec.partition(":")
        if int(k) == steps_done:
            os.kill(os.getpid(), getattr(signal, "SIG" + name))


def save_fit(out_dir: str | Path, result: FitResult, info: dict | None = None) -> None:
    """Write ``fit/poses.npz``, ``fit/quality.json`` (and ``info.json`` when given) atomically,
    all of them or none (:func:`hoannot.io.write_files`).

    Raises:
        OSError: a file could not be written (names it); the folder's files are then unchanged.
    """
    out = Path(out_dir)
    files = {out / "poses.npz": npz_bytes(**{f.name: np.asarray(getattr(result.poses, f.name))
                                              for f in fields(HandObjectPoses)}),
             out / "quality.json": json_bytes({k: np.asarray(v).tolist() for k, v in result.quality.items()})}  # fmt: skip
    if info is not None:
        files[out / "info.json"] = json_bytes(info)
    write_files(files)
