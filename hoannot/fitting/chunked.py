"""A long sequence fitted in chunks in parallel, then its seams re-fitted (issue 22.2).

``fit --chunk-frames N``: the sequence's frames are split into consecutive chunks of ``N``
frames (the last may be shorter); each chunk is fitted with the normal multi-camera schedule
(:func:`hoannot.fitting.optimize.fit_sequence` on the chunk's frames, one torch thread), ``workers``
at a time (:func:`resolve_executor`): by default in local processes, this one fitting every
``workers``-th chunk itself with the models it has loaded while ``workers - 1`` spawned
processes fit the others; as Ray tasks when this process is connected to Ray (``hoannot run``
on a cluster) or with ``executor="ray"``. Each chunk checkpoints in
``<out>/chunks/<k>/ckpt/state.npz``, so a killed chunked fit resumes (``resume=True``) with
the chunks it had finished.

The chunks are then joined: every frame takes its chunk's poses, the hand shape ``betas`` is
chunk 0's (estimated on the sequence's first batch, as the sequential fit does), and the
frames around each border, ``seam`` on each side (default ``FitConfig.overlap``), are
re-fitted with ``SEAM_CONTEXT`` frames beyond them held fixed
(:func:`hoannot.fitting.refit.refit_frames`, ``iterations // SEAM_ITERATION_DIVISOR`` Adam
iterations), so that E_tc links the chunks as the batches' overlaps link them in a sequential fit.

The single-camera schedule is refused: its grasp (HOnnotate Sec. 4.3) is one hand pose
shared by all frames, which chunks fitted apart would each estimate differently.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from hoannot.io import InputError
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.config import FitConfig
from hoannot.fitting.optimize import FitResult, fit_sequence
from hoannot.fitting.quality import merge_quality
from hoannot.fitting.schedule import resolve_schedule
from hoannot.models.hand import HandModel
from hoannot.models.objects import ObjectModel

#: Ray retries of a chunk whose worker died (it resumes from the chunk's checkpoint)
MAX_RETRIES = 2
#: fixed frames on each side of a seam's re-fitted frames
SEAM_CONTEXT = 1
#: a seam runs ``FitConfig.iterations // SEAM_ITERATION_DIVISOR`` Adam iterations: its frames
#: start from their chunks' converged fits. Measured on the 40-frame scale capture (meat, 3
#: cameras, 60 iterations), against the sequential fit: hand MPJPE / object ADD deltas +0.017 /
#: -0.014 mm with 60 iterations and 2 fixed frames a side, +0.044 / +0.009 mm with 30 and 1, in
#: about 40 % of the seam's time
SEAM_ITERATION_DIVISOR = 2


def chunk_ranges(num_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[start, stop) positions of consecutive chunks of ``chunk_frames`` frames.

    Raises:
        InputError: ``chunk_frames`` < 2.
    """
    if chunk_frames < 2:
        raise InputError(f"--chunk-frames {chunk_frames}: expected 2 or more")
    return [(a, min(a + chunk_frames, num_frames)) for a in range(0, num_frames, chunk_frames)]


def sub_sequence(seq: Sequence, frames: list[int]) -> Sequence:
    """``seq`` restricted to ``frames`` (same folder, cameras and header otherwise)."""
    return Sequence(seq.root, seq.config.model_copy(update={"frames": [int(f) for f in frames]}), seq.cameras)


def fit_chunk(root: str, frames: list[int], cfg: FitConfig, out_dir: str, resume: bool,
              mano_model_path: str | None = None, ycb_dir: str | None = None) -> FitResult:  # fmt: skip
    """Fit one chunk (``frames`` of the sequence at ``root``) from ``init/poses.npz`` with the
    normal schedule, on one torch thread; checkpoints in ``out_dir/ckpt/`` (a worker's task).

    Raises:
        InputError: as :func:`hoannot.fitting.optimize.fit_sequence`.
    """
    import torch

    from hoannot.datasets.sequence import open_sequence
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    torch.set_num_threads(1)
    seq = open_sequence(root)
    init = HandObjectPoses.load(seq.root / "init" / "poses.npz", seq.frames)
    hand_model = load_hand_model(seq, mano_model_path)
    obj = load_sequence_object(seq, ycb_dir, cfg.object_max_faces)
    return fit_sequence(sub_sequence(seq, frames), init, hand_model, obj, cfg, out_dir, resume=resume, progress=False)


def _ray_connected():
    """The ``ray`` module when this process is already connected to a Ray instance (``hoannot
    run`` on a cluster, or inside a Ray task), else None. Ray is not imported for this."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def resolve_executor(executor: str) -> str:
    """``"ray"`` or ``"process"``: ``auto`` is Ray when this process is connected to a Ray
    instance already, else local processes (starting a local Ray for one fit costs about half
    a minute on 2 cores: measured 27 s for import, start, two tasks' imports and shutdown).

    Raises:
        InputError: an unknown executor.
    """
    if executor not in ("auto", "ray", "process"):
        raise InputError(f"--executor {executor!r}: expected auto, ray or process")
    if executor == "auto":
        return "ray" if _ray_connected() is not None else "process"
    return executor


def _run_tasks(args: list[tuple], workers: int, executor: str, local) -> list[FitResult]:
    """:func:`fit_chunk` of every argument tuple, ``workers`` at a time.

    ``"process"``: this process fits every ``workers``-th chunk itself (``local``, with the
    models it has loaded) while a pool of ``workers - 1`` spawned processes fits the others,
    so only ``workers - 1`` processes start and their start-up overlaps this process's
    first chunk. ``"ray"``: every chunk is a Ray task (on the connected instance, or a local
    one of ``workers`` CPUs started here), retried from its checkpoint when its worker dies.
    """
    if executor == "process":
        mine = [k for k in range(len(args)) if k % workers == 0]
        others = [k for k in range(len(args)) if k % workers != 0]
        results: dict[int, FitResult] = {}
        if not others:
            return [local(*a) for a in args]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {k: pool.submit(fit_chunk, *args[k]) for k in others}
            for k in mine:
                results[k] = local(*args[k])
            for k, fut in futures.items():
                results[k] = fut.result()
        return [results[k] for k in range(len(args))]
    ray = _ray_connected()
    started = ray is None
    if started:
        try:
            import ray
        except ImportError:
            raise InputError("--executor ray: Ray is not installed (pip install 'hoannot[ray]')") from None
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(fit_chunk)
        refs = [task.remote(*a) for a in args]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:  # a chunk's bad input: its one line, not Ray's traceback
            cause = getattr(e, "cause", None)
            if isinstance(cause, InputError):
                raise InputError(str(cause)) from None
            raise
    finally:
        if started:
            ray.shutdown()


def _per_frame(q: dict) -> dict:
    """A quality dict without its ``frames`` ids (what :func:`merge_quality` merges)."""
    return {k: v for k, v in q.items() if k != "frames"}


def fit_chunked(
    seq: Sequence,
    hand_model: HandModel,
    obj: ObjectModel,
    cfg: FitConfig,
    out_dir: str | Path,
    chunk_frames: int,
    workers: int = 2,
    resume: bool = False,
    seam: int | None = None,
    executor: str = "auto",
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    seam_context: int = SEAM_CONTEXT,
    seam_iterations: int | None = None,
) -> tuple[FitResult, dict]:
    """Fit ``seq`` in chunks of ``chunk_frames`` frames in parallel, then re-fit the seams
    (module docstring). The initial poses are ``seq``'s ``init/poses.npz``.

    Args:
        hand_model, obj: the fit's models (for the chunks this process fits and the seams).
        out_dir: the fit folder; chunks checkpoint in ``out_dir/chunks/<k>/``.
        workers: chunks fitted at once.
        resume: continue the chunks from their checkpoints (else ``out_dir/chunks/`` is cleared).
        seam: frames re-fitted on each side of a border (default ``max(1, cfg.overlap)``).
        executor: ``"auto"``, ``"ray"`` or ``"process"`` (:func:`resolve_executor`).
        mano_model_path, ycb_dir: how the workers load the models (as :func:`hoannot.pipeline.run_fit`).
        seam_context: fixed frames on each side of a seam's re-fitted frames.
        seam_iterations: Adam iterations of a seam (default ``cfg.iterations // SEAM_ITERATION_DIVISOR``:
            the seam's frames start from their chunks' converged fits; only E_tc across the border is new).
    Returns:
        (:class:`FitResult` of every frame, a record: ``chunks`` (frame ranges), ``seams``
        (re-fitted frames per border), ``seam_context``, ``seam_iterations``, ``chunk_results``
        (each chunk's poses before the seams were re-fitted, :class:`HandObjectPoses`),
        ``seconds_chunks``, ``seconds_seams``, ``executor``).
    Raises:
        InputError: ``chunk_frames`` < 2, ``workers`` < 1, the single-camera schedule, a
            chunk's bad input (as :func:`fit_sequence`), a checkpoint of other settings.
    """
    import torch

    from hoannot.fitting.refit import refit_frames

    if resolve_schedule(cfg, len(seq.cameras)) != "multi":
        raise InputError(f"{seq.root}: --chunk-frames fits the multi-camera schedule only: the single-camera one fits one "
                         "grasp shared by all frames, which chunks fitted apart would each estimate differently; "
                         "fit this sequence without --chunk-frames")  # fmt: skip
    if workers < 1:
        raise InputError(f"--workers {workers}: expected 1 or more")
    executor = resolve_executor(executor)
    frames = [int(f) for f in seq.frames]
    ranges = chunk_ranges(len(frames), chunk_frames)
    chunks_dir = Path(out_dir) / "chunks"
    if not resume:
        shutil.rmtree(chunks_dir, ignore_errors=True)
    args = [(str(seq.root), frames[a:b], cfg, str(chunks_dir / f"{k:03d}"), resume,
             str(mano_model_path) if mano_model_path else None, str(ycb_dir) if ycb_dir else None)
            for k, (a, b) in enumerate(ranges)]  # fmt: skip
    init = HandObjectPoses.load(seq.root / "init" / "poses.npz", seq.frames)

    def local(root, chunk, cfg_, chunk_out, resume_, *_models) -> FitResult:  # a chunk in this process, one thread
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fit_sequence(sub_sequence(seq, chunk), init, hand_model, obj, cfg_, chunk_out, resume=resume_,
                                progress=False)  # fmt: skip
        finally:
            torch.set_num_threads(threads)

    t0 = time.perf_counter()
    if len(ranges) == 1:
        results = [local(*args[0])]
    else:
        results = _run_tasks(args, min(workers, len(ranges)), executor, local)
    t_chunks = time.perf_counter() - t0
    kw = {name: np.concatenate([getattr(r.poses, name) for r in results])
          for name in ("frames", "global_orient", "hand_pose", "transl", "obj_rot", "obj_transl")}  # fmt: skip
    joined = HandObjectPoses(**kw, betas=results[0].poses.betas, source="fit")
    quality: dict = {}
    for r in results:
        quality = merge_quality(quality, _per_frame(r.quality), [int(f) for f in r.quality["frames"]], frames)
    seam = max(1, cfg.overlap) if seam is None else max(1, seam)
    if seam_iterations is None:
        seam_iterations = max(1, cfg.iterations // SEAM_ITERATION_DIVISOR)
    seams = []
    for k, (a, _) in enumerate(ranges[1:], start=1):
        lo, hi = max(ranges[k - 1][0], a - seam), min(ranges[k][1], a + seam)
        seams.append(frames[lo:hi])
    t1 = time.perf_counter()
    selected = sorted({f for s in seams for f in s})
    out = joined
    if selected and len(selected) < len(frames):
        # the seam's frames start from their chunks' converged poses: no neighbour starts are tried
        refit = refit_frames(seq, joined, selected, hand_model, obj, cfg.model_copy(update={"iterations": seam_iterations}),
                             context=seam_context, try_starts=False)  # fmt: skip
        out = refit.poses
        out.source = "fit"
        quality = merge_quality(quality, _per_frame(refit.quality), [int(f) for f in refit.quality["frames"]], frames)
    record = {"chunks": [frames[a:b] for a, b in ranges], "seams": seams, "seam_context": seam_context,
              "seam_iterations": seam_iterations, "chunk_results": joined,
              "seconds_chunks": t_chunks, "seconds_seams": time.perf_counter() - t1,
              "executor": "single" if len(ranges) == 1 else executor}  # fmt: skip
    fingers = [{"chunk": k, **f} for k, r in enumerate(results) for f in r.fingers]  # each chunk searches its own frames
    return FitResult(out, quality, fingers), record
