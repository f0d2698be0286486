"""The stages behind the CLI, one function each: init -> fit -> export (and eval, demo).

Each stage reads what the previous one wrote into the sequence folder and writes its own
sub-folder atomically (see :mod:`hoannot.datasets.sequence` for the layout), so a stage
can be rerun, and an interrupted fit resumed, without losing earlier results.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from hoannot.io import InputError, exclusive_lock, json_bytes, npz_bytes, replace_dir, write_files
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.loaders import load_hand_model, load_sequence_object
from hoannot.datasets.sequence import Sequence, open_sequence
from hoannot.fitting.config import FitConfig, load_fit_config
from hoannot.models.objects import ObjectModel, load_object, resolve_mesh_path


def _copy_tree(src: Path, dst: Path) -> None:
    """Replace ``dst`` by a copy of ``src`` (copied beside it first, then renamed; a failed
    copy leaves ``dst`` as it was, :func:`hoannot.io.replace_dir`)."""
    replace_dir(dst, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True))


def run_perception_stage(
    seq: Sequence,
    perception: str = "auto",
    seg_weights: str | Path | None = None,
    kp_weights: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    kp_detector: str = "cpm",
    obj: ObjectModel | None = None,
    geometry: bool = True,
    seed: int = 0,
) -> str:
    """Make ``segmentation/`` and ``keypoints2d/`` for the automatic initialisation.

    Args:
        perception: ``"auto"`` (keep both folders when present, else run the models),
            ``"model"`` (run DeepLabV3+ and the CPM, :func:`hoannot.annotate.perception.
            run_perception`) or ``"gt"`` (copy a synthetic capture's ``gt/`` ones: an upper
            bound that isolates the initialisation from perception errors).
        kp_detector: ``"cpm"`` or ``"mediapipe"`` (:func:`hoannot.annotate.perception.
            load_detector`).
        obj, geometry, seed: the geometric segmentation (``"model"``; see
            :func:`hoannot.annotate.perception.run_perception`).
    Returns:
        one line saying what was used.
    Raises:
        InputError: unknown mode, no ground truth for ``"gt"``, or missing weights (the
            message gives the training command).
    """
    root = seq.root
    if perception == "gt":
        for name in ("segmentation", "keypoints2d"):
            src = root / "gt" / name
            if not src.is_dir():
                raise InputError(f"{src}: no ground-truth {name} to copy (--perception gt is for synthetic captures)")
            _copy_tree(src, root / name)
        return "perception: segmentation and 2D joints copied from ground truth (gt/)"
    if perception == "auto" and (root / "segmentation").is_dir() and (root / "keypoints2d").is_dir():
        return "perception: existing segmentation/ and keypoints2d/"
    if perception not in ("auto", "model"):
        raise InputError(f"--perception {perception!r}: expected auto, model or gt")
    from hoannot.annotate.perception import run_perception

    return "perception: " + run_perception(root, seg_weights, kp_weights, device, progress=progress,
                                           kp_detector=kp_detector, obj=obj, geometry=geometry, seed=seed)


def run_init(
    seq_dir: str | Path,
    poses_file: str | Path | None = None,
    from_gt: bool = False,
    noise_deg: float = 10.0,
    noise_mm: float = 15.0,
    pose_noise_rad: float = 0.1,
    segmentation_from_gt: bool | None = None,
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    seed: int = 0,
    auto: bool = False,
    perception: str = "auto",
    seg_weights: str | Path | None = None,
    kp_weights: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    kp_detector: str = "cpm",
    geometry: bool = True,
    hand_init: str = "search",
    hypotheses: int = 1,
    search_joints: float | tuple[float, ...] | None = None,
) -> tuple[HandObjectPoses, str]:
    """Validate a sequence and write ``init/poses.npz`` (+ ``segmentation/`` when asked).

    Three sources of initial poses, in this order: a file (``poses_file``), the automatic
    initialisation (``auto``: segmentation and 2D joints, see :func:`run_perception_stage`,
    then :func:`hoannot.annotate.init2d.initialize_sequence`: HOnnotate Eq. 11 with several
    cameras, Eq. 12 with one, object by point-cloud registration), or ground truth plus
    noise (``from_gt``, synthetic captures).

    Args:
        seq_dir: the sequence folder.
        poses_file: initial poses from a file (world frame, :class:`HandObjectPoses`).
        from_gt: initial poses from ``gt/poses.npz`` plus noise of the given sizes
            (degrees, millimetres, radians per joint).
        segmentation_from_gt: copy ``gt/segmentation`` to ``segmentation/`` (default:
            with ``from_gt``, when no ``segmentation/`` exists and a ground truth one does).
        auto, perception, seg_weights, kp_weights, device, kp_detector, geometry: the
            automatic initialisation (:func:`run_perception_stage`; ``geometry``: labels
            decided by the depth, :mod:`hoannot.annotate.foreground`).
        hand_init: with ``auto``: ``"search"`` or ``"joints"`` (:func:`hoannot.annotate.init2d.
            initialize_sequence`).
        hypotheses: with ``auto`` and ``"search"``: how many of the search's hypotheses are
            fitted briefly and ranked by the fit's energy (1: the search's winner;
            :mod:`hoannot.annotate.hypotheses`).
        search_joints: with ``auto`` and ``"search"``: weights of the 2D joints in the grasp
            search, one search each, the start with the lowest estimated hand error kept (0:
            not used; default :data:`hoannot.annotate.init2d.SEARCH_JOINTS`;
            :func:`hoannot.annotate.init2d.initialize_sequence`).
    Returns:
        (poses, a one-paragraph summary of what was done).
    Raises:
        InputError: invalid sequence (:func:`hoannot.datasets.validate.validate_sequence`),
            a mesh with a non-finite vertex, bad initial poses (non-finite, beyond 10 m, frames
            not the sequence's: :func:`hoannot.datasets.validate.check_poses`), a bad
            ``device``, no source of initial poses, or a perception or registration failure
            (names the file). An object larger than 2 m is a warning in the summary.
        OSError: a file could not be written (names it); ``init/`` is then as it was.
    """
    from hoannot.annotate.initialize import from_file, from_ground_truth
    from hoannot.datasets.validate import check_device, check_object_model, check_poses, validate_sequence

    from hoannot.annotate.init2d import HAND_INITS, SEARCH_JOINTS, check_search_joints

    if auto and hand_init not in HAND_INITS:  # before the (long) perception stage
        raise InputError(f"--hand-init {hand_init!r}: expected one of {', '.join(HAND_INITS)}")
    if auto and hypotheses < 1:
        raise InputError(f"--hypotheses {hypotheses}: expected at least 1")
    if auto:
        search_joints = check_search_joints(SEARCH_JOINTS if search_joints is None else search_joints)
    if auto:
        check_device(device)
    seq_dir = Path(seq_dir)
    report = validate_sequence(seq_dir, ycb_dir=Path(ycb_dir) if ycb_dir is not None else None)
    seq = open_sequence(seq_dir)
    if not report.object_mesh.startswith(("ycb:", "primitive:")) or ycb_dir is not None:
        obj = load_sequence_object(seq, ycb_dir, strict=False)  # the mesh: finite; its size, a warning
        report.warnings += check_object_model(obj, seq.root / "sequence.yaml", False, f"object {report.object_mesh!r}")
    lines = [report.summary()]
    gt_seg = seq.root / "gt" / "segmentation"
    if segmentation_from_gt is None:
        segmentation_from_gt = not auto and not (seq.root / "segmentation").exists() and gt_seg.is_dir()
    if segmentation_from_gt:
        if not gt_seg.is_dir():
            raise InputError(f"{gt_seg}: no ground-truth segmentation to copy")
        _copy_tree(gt_seg, seq.root / "segmentation")
        lines.append("segmentation: copied from ground truth (gt/segmentation)")
    hand_model = load_hand_model(seq, mano_model_path)
    if poses_file is not None:
        poses = from_file(poses_file)
    elif auto:
        from hoannot.annotate.init2d import initialize_sequence

        obj = load_sequence_object(seq, ycb_dir, strict=False)
        lines.append(run_perception_stage(seq, perception, seg_weights, kp_weights, device, progress, kp_detector,
                                          obj, geometry, seed))  # fmt: skip
        poses = initialize_sequence(seq, hand_model, obj, seed=seed, hand_init=hand_init, hypotheses=hypotheses,
                                    search_joints=search_joints, fit_cfg=load_fit_config(None, device=device))
    elif from_gt:
        gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
        obj = load_sequence_object(seq, ycb_dir, strict=False)
        poses = from_ground_truth(gt, hand_model, obj.points.mean(0), noise_deg, noise_mm, pose_noise_rad, seed)
    else:
        raise InputError(f"{seq_dir}: no initial poses: pass --auto (from segmentation and 2D joints), --poses FILE or --from-gt")
    src = poses_file if poses_file is not None else f"initial poses ({poses.source})"
    check_poses(poses, src, seq.frames)  # whatever the source: finite, in metres, the sequence's frames
    missing = sorted(set(seq.frames) - set(int(f) for f in poses.frames))
    if missing:
        raise InputError(f"{src}: initial poses lack frames {missing[:5]}{'...' if len(missing) > 5 else ''}")
    arrays = {f.name: np.asarray(getattr(poses, f.name)) for f in fields(poses)}  # as HandObjectPoses.save
    write_files({seq.root / "init" / "poses.npz": npz_bytes(**arrays),  # both files or neither
                 seq.root / "init" / "info.json": json_bytes({"source": poses.source, "hand_model": hand_model.name})})  # fmt: skip
    lines.append(f"initial poses: {poses.source}")
    return poses, "\n".join(lines)


def run_fit(
    seq_dir: str | Path,
    cfg: FitConfig,
    resume: bool = False,
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    progress: bool = True,
    threads: int | None = None,
    deterministic: bool = False,
    chunk_frames: int | None = None,
    workers: int = 2,
    executor: str = "auto",
):
    """Fit ``init/poses.npz`` to the observations; writes ``fit/poses.npz`` and ``fit/quality.json``,
    then draws the report's pictures of the fitted poses into ``fit/layers/`` (:func:`keep_layers`).

    Holds ``fit/.lock`` meanwhile, so a second fit of the same sequence is refused.

    Args:
        threads: torch CPU threads for the fit (None: torch's default, one per core). The
            result depends on it: more threads sum in another order, and Adam amplifies the
            float noise (README, "Reruns and thread counts").
        deterministic: one thread and ``torch.use_deterministic_algorithms``: the same labels
            on any machine's thread count (CPU only). Both settings are restored afterwards and
            recorded in ``fit/info.json``.
        chunk_frames: fit chunks of this many frames in parallel, ``workers`` at a time (Ray
            tasks, or processes: ``executor``), then re-fit the seams
            (:func:`hoannot.fitting.chunked.fit_chunked`; multi-camera schedule only; each
            chunk on one torch thread, ``threads`` is for the seams). ``fit/info.json`` records
            the chunks and seams.
    Returns:
        :class:`hoannot.fitting.optimize.FitResult`.
    Raises:
        InputError: bad inputs, checked before anything is fitted or written: the sequence
            (:func:`hoannot.datasets.validate.validate_sequence` for ``"fit"``: calibration,
            object, depth and segmentation headers), ``init/poses.npz`` (unreadable,
            non-finite, beyond 10 m), the object (non-finite or larger than 2 m); and as each
            batch's images are read (:func:`hoannot.fitting.observations.load_observations`:
            labels, all-zero or implausible depth, no hand); another fit of this sequence
            is running, or ``deterministic`` with CUDA or with ``threads`` > 1.
        OSError: a file could not be written (names it); ``fit/poses.npz``, ``quality.json``
            and ``info.json`` are then as they were (the checkpoint holds the steps done).
    """
    import torch

    from hoannot.fitting.optimize import fit_sequence, save_fit

    if deterministic and cfg.device != "cpu":
        raise InputError(f"--deterministic: runs on the CPU only (device {cfg.device!r}: the GPU rasterizer's "
                         "backward sums with atomics, in no fixed order)")  # fmt: skip
    if deterministic and threads not in (None, 1):
        raise InputError(f"--deterministic runs on one thread; drop --threads {threads}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: expected 1 or more")
    from hoannot.datasets.validate import open_validated

    from hoannot.fitting.observations import check_hand_seen

    seq = open_validated(seq_dir, "fit", Path(ycb_dir) if ycb_dir else None, segmentation=cfg.segmentation)
    check_hand_seen(seq, cfg.segmentation)
    init = HandObjectPoses.load(seq.root / "init" / "poses.npz", seq.frames)
    hand_model = load_hand_model(seq, mano_model_path)
    obj = load_sequence_object(seq, ycb_dir, cfg.object_max_faces)
    t0 = time.perf_counter()
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if deterministic:
            threads = 1
            torch.use_deterministic_algorithms(True)
        if threads is not None:
            torch.set_num_threads(int(threads))
        with exclusive_lock(seq.root / "fit" / ".lock", "`hoannot fit` on this sequence"):  # two fits would mix fit/
            extra = {}
            if chunk_frames is not None:
                from hoannot.fitting.chunked import fit_chunked

                result, rec = fit_chunked(seq, hand_model, obj, cfg, seq.root / "fit", chunk_frames, workers, resume,
                                          executor=executor, mano_model_path=mano_model_path, ycb_dir=ycb_dir)  # fmt: skip
                extra = {"chunked": {"chunk_frames": chunk_frames, "workers": workers, "executor": rec["executor"],
                                     "chunks": rec["chunks"], "seams": rec["seams"],
                                     "seam_context": rec["seam_context"], "seam_iterations": rec["seam_iterations"],
                                     "seconds_chunks": rec["seconds_chunks"], "seconds_seams": rec["seconds_seams"]}}  # fmt: skip
            else:
                result = fit_sequence(seq, init, hand_model, obj, cfg, seq.root / "fit", resume=resume, progress=progress)
            save_fit(seq.root / "fit", result, {
                "config": cfg.model_dump(), "seconds": time.perf_counter() - t0, "hand_model": hand_model.name,
                "init_source": init.source, "threads": torch.get_num_threads(), "deterministic": deterministic,
                "finger_search": result.fingers, "restarts": result.restarts, **extra})  # fmt: skip
            shutil.rmtree(seq.root / "fit" / "refit", ignore_errors=True)  # an earlier re-fit's before state is stale now
            keep_layers(seq, result.poses, hand_model, obj, cfg, progress)
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
    return result


def keep_layers(seq: Sequence, poses: HandObjectPoses, hand_model, obj: ObjectModel, cfg: FitConfig,
                progress: bool = True) -> int | None:
    """The fit's last step: draw the report's layers of the poses it just saved into
    ``fit/layers/`` (:func:`hoannot.report.panels.update_layers`; only frames whose poses or
    observations changed since they were drawn), so ``hoannot report`` of a fit draws nothing.

    The fit is already saved: a failure here loses nothing and is a warning (the report
    then draws the frames itself and names the unreadable file).

    Args:
        poses: the world-frame poses written to ``fit/poses.npz`` (all frames).
        hand_model, obj: the fit's models (:class:`hoannot.models.hand.HandModel`, the object
            decimated to ``cfg.object_max_faces``).
        cfg: the fit's settings (observed labels, device).
    Returns:
        the number of frames drawn, or None on a failure.
    """
    import warnings

    from hoannot.report.panels import update_layers

    fit_dir = seq.root / "fit"
    try:
        return update_layers(seq, fit_dir, poses, hand_model, obj, cfg.segmentation, device=cfg.device, progress=progress)
    except (InputError, OSError) as e:
        warnings.warn(f"{fit_dir / 'layers'}: the report's pictures were not drawn ({e}); `hoannot report` draws them",
                      stacklevel=2)  # fmt: skip
        return None


#: fit options a re-fit takes from the command line; the others are the fit's own (fit/info.json)
REFIT_OVERRIDES = ("iterations", "device", "weights")


def run_refit(
    seq_dir: str | Path,
    frames: str,
    overrides: dict | None = None,
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    threads: int | None = None,
    command: str | None = None,
):
    """``hoannot fit SEQ --refit FRAMES``: re-fit some frames of a finished fit with their
    neighbours held fixed (:func:`hoannot.fitting.refit.refit_frames`), every other frame's
    entries of ``fit/poses.npz`` and ``fit/quality.json`` kept byte for byte.

    The settings are those of the fit (``fit/info.json``; the device ``cpu`` unless
    overridden) with ``overrides`` (only the keys of :data:`REFIT_OVERRIDES`) on top, so the re-fitted frames' quality is measured as the
    others'. Writes, all at once (:func:`hoannot.io.write_files`): ``fit/poses.npz``,
    ``fit/quality.json``, ``fit/info.json`` (a ``refits`` entry appended) and ``fit/refit/``:
    ``before_poses.npz`` and ``before_quality.json`` (the re-fitted frames as they were) and
    ``refit.json`` (frames, runs, fixed neighbours, chosen starts, energies before/after,
    command, config digest). A later re-fit replaces ``fit/refit/``. Holds ``fit/.lock``.

    Args:
        frames: ``"flagged"``, ``"12:20"`` (inclusive), ``"3,5,7"``
            (:func:`hoannot.fitting.refit.parse_frames`).
        overrides: e.g. ``{"iterations": 50}``; ``weights`` a partial dict.
        threads: torch CPU threads (None: torch's default).
        command: the command line, recorded.
    Returns:
        (:class:`hoannot.fitting.refit.RefitResult`, its ``refit.json`` dict); the result is
        None when nothing was selected (``flagged`` with no flagged frame: nothing written).
    Raises:
        InputError: no fit yet (``fit/poses.npz``, ``quality.json``), a bad frame selection,
            an override that is not allowed, bad inputs (as :func:`run_fit`), another fit of
            this sequence running.
        OSError: a file could not be written; ``fit/`` is then as it was.
    """
    import datetime
    import json

    import torch

    from hoannot.datasets.validate import open_validated
    from hoannot.fitting.config import load_fit_config
    from hoannot.fitting.refit import parse_frames, refit_frames

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and v != {}}
    bad = sorted(set(overrides) - set(REFIT_OVERRIDES))
    if bad:
        raise InputError(f"--refit uses the settings of the fit it corrects (fit/info.json); drop --"
                         f"{bad[0].replace('_', '-')} (allowed: --iterations, --device, --weight)")  # fmt: skip
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: expected 1 or more")
    seq_dir = Path(seq_dir)
    fit_dir = seq_dir / "fit"
    for name in ("poses.npz", "quality.json"):
        if not (fit_dir / name).is_file():
            raise InputError(f"{fit_dir / name}: no fit to re-fit yet; run `hoannot fit {seq_dir}` first")
    info_path = fit_dir / "info.json"
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{info_path}: unreadable JSON ({type(e).__name__})") from None
    base = {**(info.get("config") or {}), "device": "cpu"}  # the device is this run's (--device), not the fit's
    if "weights" in overrides:
        overrides["weights"] = {**base.get("weights", {}), **overrides["weights"]}
    cfg = load_fit_config(None, **{**base, **overrides})
    seq = open_validated(seq_dir, "fit", Path(ycb_dir) if ycb_dir else None, segmentation=cfg.segmentation)
    poses = HandObjectPoses.load(fit_dir / "poses.npz", seq.frames)
    try:
        raw_quality = json.loads((fit_dir / "quality.json").read_text())
        q_frames = [int(f) for f in raw_quality["frames"]]
        flags = dict(zip(q_frames, (bool(x) for x in raw_quality.get("flag", [False] * len(q_frames)))))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{fit_dir / 'quality.json'}: not a fit's quality file ({type(e).__name__})") from None
    selected = parse_frames(frames, seq.frames, flags)
    if not selected:
        return None, {"frames": [], "note": f"--refit {frames}: no frame selected (none flagged)"}
    hand_model = load_hand_model(seq, mano_model_path)
    obj = load_sequence_object(seq, ycb_dir, cfg.object_max_faces)
    t0 = time.perf_counter()
    saved = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        with exclusive_lock(fit_dir / ".lock", "`hoannot fit` on this sequence"):
            result = refit_frames(seq, poses, selected, hand_model, obj, cfg)
            qi = {f: i for i, f in enumerate(q_frames)}
            before_q = {k: [v[qi[f]] for f in selected] if isinstance(v, list) and len(v) == len(q_frames) else v
                        for k, v in raw_quality.items()}  # fmt: skip
            new_q = {k: list(v) if isinstance(v, list) and len(v) == len(q_frames) else v for k, v in raw_quality.items()}
            ri = {int(f): i for i, f in enumerate(result.quality["frames"])}
            for k, v in new_q.items():
                if k == "frames" or not isinstance(v, list) or len(v) != len(q_frames):
                    continue
                for f in selected:  # a key the re-fit does not compute (an estimate of another pass) is cleared
                    v[qi[f]] = np.asarray(result.quality[k][ri[f]]).tolist() if k in result.quality else None
            arrays = {f.name: np.asarray(getattr(result.poses, f.name)) for f in fields(HandObjectPoses)}
            arrays["source"] = np.asarray(poses.source)
            before = poses.select(selected)
            record = {
                "frames": selected, "selection": frames, "command": command,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "config_digest": cfg.digest(), "seconds": round(time.perf_counter() - t0, 3),
                "runs": [{"frames": r.frames, "fixed": r.fixed, "starts": r.starts, "energy_before": r.energy_before,
                          "energy_start": r.energy_start, "energy_after": r.energy_after,
                          "frame_energy_before": r.frame_energy_before, "frame_energy_after": r.frame_energy_after}
                         for r in result.runs],
            }  # fmt: skip
            info = {**info, "refits": [*info.get("refits", []), {k: record[k] for k in
                                                                 ("frames", "selection", "command", "date", "config_digest", "seconds")}]}  # fmt: skip
            write_files({
                fit_dir / "poses.npz": npz_bytes(**arrays),
                fit_dir / "quality.json": json_bytes(new_q),
                fit_dir / "info.json": json_bytes(info),
                fit_dir / "refit" / "before_poses.npz": npz_bytes(**{f.name: np.asarray(getattr(before, f.name))
                                                                     for f in fields(HandObjectPoses)}),
                fit_dir / "refit" / "before_quality.json": json_bytes(before_q),
                fit_dir / "refit" / "refit.json": json_bytes(record),
            })  # fmt: skip
            keep_layers(seq, result.poses, hand_model, obj, cfg, progress=False)  # draws the re-fitted frames only
    finally:
        torch.set_num_threads(saved)
    return result, record


def run_export(
    seq_dir: str | Path,
    stage: str = "fit",
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    format: str = "ho3d",
) -> Path:
    """Export ``<stage>/poses.npz`` (``fit`` or ``init``) to ``labels/`` (``labels_init/``).

    ``format``: ``"ho3d"`` (``ho3d/<cam>/meta/*.pkl``) or ``"dexycb"`` (a DexYCB dataset folder
    ``dexycb/``, :func:`hoannot.datasets.dexycb.export_dexycb`); ``labels.npz`` either way.

    Returns:
        the path of ``labels.npz``.
    Raises:
        InputError: unknown stage or format, missing or bad poses, sequence or object
            (:func:`hoannot.datasets.validate.validate_sequence` for ``"export"``,
            :func:`hoannot.datasets.validate.check_poses`, an object larger than 2 m).
        OSError: a file could not be written (names it); the labels folder is then as it was.
    """
    import json

    from hoannot.datasets.export import export_labels

    if format not in ("ho3d", "dexycb"):
        raise InputError(f"--format {format!r}: expected ho3d or dexycb")
    if stage not in ("fit", "init"):
        raise InputError(f"--stage {stage!r}: expected fit or init")
    from hoannot.datasets.validate import open_validated

    seq = open_validated(seq_dir, "export", Path(ycb_dir) if ycb_dir else None)
    poses = HandObjectPoses.load(seq.root / stage / "poses.npz", seq.frames)
    qpath = seq.root / stage / "quality.json"
    quality = {k: np.asarray(v) for k, v in json.loads(qpath.read_text()).items()} if qpath.is_file() else None
    hand_model = load_hand_model(seq, mano_model_path)
    obj = load_sequence_object(seq, ycb_dir)
    out = seq.root / "labels" if stage == "fit" else seq.root / "labels_init"
    then = None
    if format == "dexycb":
        from hoannot.datasets.dexycb import export_dexycb

        then = lambda folder: export_dexycb(seq, poses, hand_model, obj, folder / "dexycb")  # noqa: E731
    return export_labels(seq, poses, hand_model, obj, out, quality, ho3d=format == "ho3d", then=then)


def synth_sequence(
    out: str | Path,
    object_spec: str = "primitive:box:0.055,0.075,0.11",
    hand: str = "open",
    cameras: int | None = None,
    frames: int | None = None,
    seed: int = 0,
    noise: bool | None = None,
    **cfg_kw,
) -> Sequence:
    """Render a synthetic capture (see :mod:`hoannot.synthesis.capture`) of a grasp.

    Args:
        object_spec: mesh path, YCB folder or primitive spec.
        hand: ``"open"`` (the bundled model) or a path to a skinned glTF hand (e.g. the
            WebXR hand, an independent subject).
        cameras, frames, noise, cfg_kw: :class:`~hoannot.synthesis.config.SynthConfig` fields;
            None: the field's default.
    Raises:
        InputError: a setting the config refuses (names it and the value), a bad object spec.
    """
    from pydantic import ValidationError

    from hoannot.annotate.configs import validation_message
    from hoannot.synthesis.subjects import make_subject
    from hoannot.synthesis.capture import SynthConfig, make_capture

    settings = {k: v for k, v in dict(cameras=cameras, frames=frames, seed=seed, noise=noise, **cfg_kw).items() if v is not None}
    try:
        cfg = SynthConfig(name=Path(out).name, **settings)
    except ValidationError as e:
        raise InputError(validation_message(e, "synth", settings)) from None
    obj = load_object(object_spec, max_faces=2000)
    subject = make_subject(hand, obj, seed)
    spec = object_spec if object_spec.startswith("primitive:") else str(resolve_mesh_path(object_spec).resolve())
    return make_capture(out, obj, subject, cfg, spec)
