"""Many sequences at once (``hoannot run``): the init -> fit -> export -> report chain of every
sequence as one Ray task, or one after another without Ray.

:func:`run_sequence` runs the chain of one sequence and never raises for a bad sequence: it
returns a summary row (status, per-stage seconds, flagged frames, mean IoUs). A stage whose
output is complete is skipped and ``fit`` always resumes from ``fit/ckpt/state.npz``, so a
rerun, or Ray's retry of a task whose worker died (``max_retries``), continues where the
sequence stopped instead of starting again. :func:`run_many` submits the tasks (to a local
Ray, or to the cluster at ``ray_address``), follows them with ``ray.wait`` in a rich view, and
writes the summary JSON. Ray does the scheduling and retrying; nothing here schedules.

On a cluster every node needs hoannot installed and the sequence folders at the same paths
(a shared filesystem): the tasks read and write them in place.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from hoannot.io import InputError, write_json
from hoannot.fitting.config import FitConfig

#: the chain, in order
STAGES = ("init", "fit", "export", "report")
#: Ray retries of a task whose worker process died (killed, out of memory, node lost)
MAX_RETRIES = 3
#: test hook: ``HOANNOT_RUN_KILL_FIT="NAME:MARKER"`` SIGKILLs the process fitting the sequence
#: folder named NAME once its first fit checkpoint is written, unless the file MARKER exists
#: (it is written first, holding the checkpoint's step): a worker dies mid-fit once
KILL_FIT_ENV = "HOANNOT_RUN_KILL_FIT"


@dataclass
class RunOptions:
    """Settings of every sequence's chain.

    Attributes:
        init_from_gt: initial poses from ground truth + noise (synthetic captures) instead
            of the automatic initialisation (``init --auto``).
        seed: init seed (noise, perception sampling).
        fit: the fit settings (:func:`hoannot.fitting.config.load_fit_config`).
        mano_model_path, ycb_dir: as for ``hoannot fit``.
        chunk_frames, workers: ``fit --chunk-frames N --workers W`` (None: the sequence in one
            process; :func:`hoannot.fitting.chunked.fit_chunked`).
    """

    init_from_gt: bool = False
    seed: int = 0
    fit: FitConfig = field(default_factory=FitConfig)
    mano_model_path: str | None = None
    ycb_dir: str | None = None
    chunk_frames: int | None = None
    workers: int = 2


def parse_stages(text: str) -> list[str]:
    """``"fit,export"`` -> ``["fit", "export"]`` in chain order.

    Raises:
        InputError: empty, or a name that is not a stage.
    """
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STAGES]
    if bad or not names:
        raise InputError(f"--stages {text!r}: expected a comma-separated subset of {','.join(STAGES)}")
    return [s for s in STAGES if s in names]


def _newer(out: Path, src: Path) -> bool:
    """``out`` exists and was written after ``src`` (or ``src`` does not exist)."""
    return out.is_file() and (not src.is_file() or out.stat().st_mtime >= src.stat().st_mtime)


def _fit_complete(root: Path, cfg: FitConfig) -> bool:
    """``fit/`` holds a finished fit of ``init/poses.npz`` with these settings.

    Raises:
        InputError: a finished fit with other settings, or of older initial poses (refitting
            would replace it).
    """
    info = root / "fit" / "info.json"
    if not ((root / "fit" / "poses.npz").is_file() and (root / "fit" / "quality.json").is_file() and info.is_file()):
        return False
    try:
        done = FitConfig(**json.loads(info.read_text())["config"])
    except Exception:  # an older or damaged info.json: let the fit (resuming) decide
        return False
    if done.digest() != cfg.digest():
        raise InputError(f"{root / 'fit'}: holds a finished fit with other settings; delete that folder to refit")
    if not _newer(root / "fit" / "poses.npz", root / "init" / "poses.npz"):
        raise InputError(f"{root / 'fit'}: holds a fit of older initial poses (init/ was rewritten); "
                         "delete that folder to refit")  # fmt: skip
    return True


def _quality_row(root: Path) -> dict:
    """Flagged frames and mean silhouette IoUs from ``fit/quality.json`` (empty without it)."""
    path = root / "fit" / "quality.json"
    if not path.is_file():
        return {}
    try:
        q = json.loads(path.read_text())
        frames = q.get("frames", list(range(len(q.get("flag", [])))))
        mean = lambda k: float(sum(q[k]) / len(q[k])) if q.get(k) else None  # noqa: E731
        return {"frames": len(frames), "frames_flagged": [int(f) for f, b in zip(frames, q.get("flag", [])) if b],
                "iou_hand": mean("iou_hand"), "iou_object": mean("iou_object")}  # fmt: skip
    except (ValueError, TypeError, KeyError):
        return {}


def _kill_hook(root: Path) -> None:
    """The :data:`KILL_FIT_ENV` test hook (a watcher thread; no-op unless the variable names this folder)."""
    name, _, marker = os.environ.get(KILL_FIT_ENV, "").partition(":")
    if name != root.name or not marker or Path(marker).exists():
        return
    ckpt = root / "fit" / "ckpt" / "state.npz"

    def watch() -> None:
        import numpy as np

        while True:
            try:
                step = int(np.load(ckpt)["next_step"])
            except (OSError, KeyError, ValueError):
                time.sleep(0.002)
                continue
            Path(marker).write_text(f"{step}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def run_sequence(seq: str | Path, stages: list[str], options: RunOptions,
                 on_stage: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Run ``stages`` (chain order) on one sequence folder; skip those already complete.

    A stage is complete when its output exists and is newer than the previous stage's
    (``init/poses.npz``; ``fit/poses.npz`` of these fit settings; ``labels/labels.npz``;
    ``report/index.html``), and no earlier stage ran in this call. ``fit`` always resumes
    from its checkpoint, so after an interruption the next call continues from the last
    finished step (with the same result as an uninterrupted fit). Torch runs one thread, so
    the labels are bit-identical whichever process runs this.

    Args:
        seq: the sequence folder.
        stages: from :data:`STAGES` (see :func:`parse_stages`).
        options: the chain's settings.
        on_stage: called with a stage's name before it runs (progress display).
    Returns:
        the summary row: ``sequence`` (path), ``name``, ``status`` (``"done"`` or
        ``"failed"``), ``error`` (one line, or None), ``failed_stage``, ``seconds``
        ({stage: s} of the stages that ran), ``skipped`` (stages already complete),
        ``resumed_from_step`` (the fit checkpoint's step it continued from, or None) and,
        once ``fit/quality.json`` exists, ``frames``, ``frames_flagged`` (frame ids),
        ``iou_hand``, ``iou_object`` (means over frames); ``traceback`` for an error that is
        not an :class:`InputError` (a bug rather than a bad sequence).
    Raises:
        nothing for a bad sequence or a failing stage (see ``status``); only
        ``KeyboardInterrupt`` / ``SystemExit`` pass through.
    """
    import torch

    torch.set_num_threads(1)  # determinism across processes (and fastest on shared cores)
    root = Path(seq).resolve()
    row: dict = {"sequence": str(root), "name": root.name, "status": "done", "error": None, "failed_stage": None,
                 "seconds": {}, "skipped": [], "resumed_from_step": None}  # fmt: skip
    cfg = options.fit
    ran = False
    stage = None
    try:
        if not (root / "sequence.yaml").is_file():
            raise InputError(f"{root / 'sequence.yaml'}: not found (not a sequence folder)")
        for stage in stages:
            if not ran:
                if stage == "init":
                    complete = (root / "init" / "poses.npz").is_file()
                elif stage == "fit":
                    complete = _fit_complete(root, cfg)
                elif stage == "export":
                    complete = _newer(root / "labels" / "labels.npz", root / "fit" / "poses.npz")
                else:
                    complete = _newer(root / "report" / "index.html", root / "fit" / "poses.npz")
                if complete:
                    row["skipped"].append(stage)
                    continue
            if on_stage is not None:
                on_stage(stage)
            t0 = time.perf_counter()
            _run_stage(root, stage, options, row)
            row["seconds"][stage] = round(time.perf_counter() - t0, 3)
            ran = True
    except Exception as e:  # one bad sequence must not stop the others
        row.update(status="failed", failed_stage=stage, error=str(e).replace("\n", " "))
        if not isinstance(e, InputError):
            row["error"] = f"{type(e).__name__}: {row['error']}"
            row["traceback"] = traceback.format_exc()
    row.update(_quality_row(root))
    return row


def _run_stage(root: Path, stage: str, options: RunOptions, row: dict) -> None:
    from hoannot.pipeline import run_export, run_fit, run_init

    mano, ycb = options.mano_model_path, options.ycb_dir
    if stage == "init":
        run_init(root, from_gt=options.init_from_gt, auto=not options.init_from_gt, seed=options.seed,
                 mano_model_path=mano, ycb_dir=ycb, device=options.fit.device, progress=False)  # fmt: skip
    elif stage == "fit":
        ckpt = root / "fit" / "ckpt" / "state.npz"
        if ckpt.is_file():
            import numpy as np

            with np.load(ckpt) as z:
                row["resumed_from_step"] = int(z["next_step"])
        _kill_hook(root)
        run_fit(root, options.fit, resume=True, mano_model_path=mano, ycb_dir=ycb, progress=False,
                chunk_frames=options.chunk_frames, workers=options.workers)  # fmt: skip
    elif stage == "export":
        run_export(root, "fit", mano, ycb)
    else:
        from hoannot.report import build_report

        build_report(root, "fit", options.fit.device, mano, ycb, progress=False, command=f"hoannot run {root}")


def _import_ray(ray_address: str | None):
    """The ``ray`` module, or None to run one sequence after another.

    Raises:
        InputError: ``ray_address`` given but Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        if ray_address:
            raise InputError(f"--ray-address {ray_address}: Ray is not installed (pip install 'hoannot[ray]')") from None
        return None
    return ray


class _View:
    """The rich view: one row per sequence (queued / running: stage / done / failed) under a
    count line. Rows are updated from the driver only."""

    def __init__(self, names: list[str]):
        self.state = {n: "queued" for n in names}
        self.t0 = time.perf_counter()

    def __rich__(self):
        from rich.console import Group

        counts = {k: 0 for k in ("done", "running", "failed", "queued")}
        for s in self.state.values():
            counts[s.split(":")[0]] += 1
        head = (f"hoannot run: {counts['done']} done, {counts['running']} running, {counts['failed']} failed, "
                f"{counts['queued']} queued ({time.perf_counter() - self.t0:.0f} s)")  # fmt: skip
        t = Table(box=None, show_header=False, pad_edge=False)
        colour = {"done": "green", "failed": "red", "running": "yellow", "queued": "dim"}
        for n, s in self.state.items():
            t.add_row(escape(n), f"[{colour[s.split(':')[0]]}]{s}[/]")
        return Group(head, t)


def run_many(
    seqs: list[str | Path],
    stages: list[str],
    options: RunOptions,
    ray_address: str | None = None,
    summary: str | Path | None = "hoannot_run_summary.json",
    console: Console | None = None,
    use_ray: bool | None = None,
    max_retries: int = MAX_RETRIES,
) -> list[dict]:
    """Run the chain on every sequence: one Ray task each, or one after another.

    With Ray installed (or ``use_ray=True``) the tasks go to the Ray instance this process
    is connected to, else to ``ray_address`` (an existing cluster), else to a local Ray
    started here (and stopped at the end). A task whose worker dies is retried by Ray up to
    ``max_retries`` times; the retry resumes from the sequence's checkpoints. Without Ray
    and without ``ray_address`` (or ``use_ray=False``) the sequences run here in turn.

    Args:
        seqs: sequence folders (duplicates dropped).
        stages: see :func:`parse_stages`.
        options: the chain's settings.
        ray_address: a Ray cluster's address (``ray://host:10001``, ``host:6379``, ``auto``).
        summary: where to write the summary JSON (None: not written).
        console: for the progress view (default: a new one on stdout).
        use_ray: None = Ray when installed or an address is given.
    Returns:
        the summary rows (:func:`run_sequence`), in the order of ``seqs``.
    Raises:
        InputError: no sequences, ``ray_address`` without Ray installed, or Ray refusing to
            start or connect (one line). Failing sequences do not raise: see their rows.
    """
    console = console or Console()
    paths = list(dict.fromkeys(str(Path(s).resolve()) for s in seqs))
    if not paths:
        raise InputError("hoannot run: no sequence folders given")
    ray = _import_ray(ray_address) if use_ray is not False else None
    if use_ray and ray is None:
        raise InputError("Ray is not installed (pip install 'hoannot[ray]')")
    names = [_label(p, paths) for p in paths]
    view = _View(names)
    t0 = time.perf_counter()
    with Live(view, console=console, refresh_per_second=2, transient=True):
        if ray is None:
            rows = []
            for p, n in zip(paths, names):
                rows.append(run_sequence(p, stages, options,
                                         on_stage=lambda st, n=n: view.state.__setitem__(n, f"running: {st}")))  # fmt: skip
                view.state[n] = rows[-1]["status"]
        else:
            rows = _run_ray(ray, paths, names, stages, options, ray_address, view, max_retries)
    mode = "ray" if ray is not None else "sequential"
    if summary is not None:
        write_json(summary, {"mode": mode, "ray_address": ray_address, "stages": stages,
                             "seconds": round(time.perf_counter() - t0, 3), "sequences": rows})  # fmt: skip
    console.print(summary_table(rows, mode, stages))
    return rows


def _label(path: str, paths: list[str]) -> str:
    """A sequence's display name: its folder name, or its full path when two share a name."""
    name = Path(path).name
    return name if sum(Path(p).name == name for p in paths) == 1 else path


def _run_ray(ray, paths, names, stages, options, ray_address, view, max_retries) -> list[dict]:
    """Submit one task per sequence and follow them with ``ray.wait`` (see :func:`run_many`)."""
    import logging

    started = False
    if not ray.is_initialized():
        kw = {} if ray_address else {"include_dashboard": False}
        try:
            ray.init(address=ray_address, log_to_driver=False, logging_level=logging.WARNING, **kw)
        except Exception as e:  # unreachable address, bad address, no local resources
            raise InputError(f"Ray: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        started = True
    try:
        board = ray.remote(num_cpus=0)(_Board).remote()
        gpus = 1 if options.fit.device.startswith("cuda") else 0  # one sequence per GPU (Ray hides the others)
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries)(_ray_task)
        refs = {task.remote(p, n, stages, options, board): (p, n) for p, n in zip(paths, names)}
        rows: dict[str, dict] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                p, n = refs[ref]
                try:
                    rows[p] = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died max_retries + 1 times, node lost...
                    msg = str(e).strip().splitlines()
                    rows[p] = {"sequence": p, "name": Path(p).name, "status": "failed", "failed_stage": None,
                               "error": f"{type(e).__name__}: {msg[0] if msg else ''}", "seconds": {}, "skipped": [],
                               "resumed_from_step": None, **_quality_row(Path(p))}  # fmt: skip
            running = ray.get(board.get.remote())
            for p, n in zip(paths, names):
                view.state[n] = rows[p]["status"] if p in rows else (f"running: {running[n]}" if n in running else "queued")
        return [rows[p] for p in paths]
    finally:
        if started:
            ray.shutdown()


class _Board:
    """Ray actor: the stage each task is in (tasks report, the driver reads)."""

    def __init__(self):
        self.stages: dict[str, str] = {}

    def set(self, name: str, stage: str) -> None:
        self.stages[name] = stage

    def get(self) -> dict[str, str]:
        return dict(self.stages)


def _ray_task(path: str, name: str, stages: list[str], options: RunOptions, board) -> dict:
    """One sequence's chain in a Ray worker."""
    board.set.remote(name, "starting")
    return run_sequence(path, stages, options, on_stage=lambda st: board.set.remote(name, st))


def summary_table(rows: list[dict], mode: str = "", stages: list[str] = STAGES) -> Table:
    """The summary as a rich table: status, seconds of each of ``stages`` ("skip": already
    complete), flagged frames / frames, mean IoUs, error."""
    t = Table(title=f"hoannot run ({mode})" if mode else "hoannot run", title_justify="left")
    numeric = (*stages, "flagged", "IoU hand", "IoU obj")
    for col in ("sequence", "status", *numeric, "error"):
        t.add_column(col, justify="right" if col in numeric else "left", overflow="fold")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        secs = [f"{r['seconds'][s]:.1f}s" if s in r["seconds"] else ("skip" if s in r["skipped"] else "") for s in stages]
        flagged = f"{len(r['frames_flagged'])}/{r['frames']}" if "frames_flagged" in r else "-"
        status = "[green]done[/]" if r["status"] == "done" else "[red]failed[/]"
        t.add_row(escape(r["name"]), status, *secs, flagged, fmt(r.get("iou_hand")), fmt(r.get("iou_object")),
                  escape(r["error"] or ""))  # fmt: skip
    return t


def run_cli(seqs, stages, ray_address, summary, init_from_gt, config, iterations, mano_model_path, ycb_dir, seed,
            console: Console, chunk_frames: int | None = None, workers: int = 2) -> int:  # fmt: skip
    """``hoannot run``: options -> :func:`run_many`; prints where the summary went.

    Returns:
        the exit code: 0 when every sequence is done, 1 when one failed, 130 on Ctrl-C.
    Raises:
        InputError: bad stages or fit config, or the errors of :func:`run_many`.
    """
    from hoannot.fitting.config import load_fit_config

    names = parse_stages(stages)
    options = RunOptions(init_from_gt=init_from_gt, seed=seed, fit=load_fit_config(config, iterations=iterations),
                         mano_model_path=str(mano_model_path) if mano_model_path else None,
                         ycb_dir=str(ycb_dir) if ycb_dir else None, chunk_frames=chunk_frames, workers=workers)  # fmt: skip
    if ray_address is None and _import_ray(None) is None:
        console.print("Ray is not installed (pip install 'hoannot[ray]'): running the sequences one after another",
                      markup=False, soft_wrap=True)  # fmt: skip
    try:
        rows = run_many(seqs, names, options, ray_address, summary, console)
    except KeyboardInterrupt:
        console.print("interrupted: the same command continues where each sequence stopped", markup=False)
        return 130
    failed = [r for r in rows if r["status"] != "done"]
    console.print(f"{len(rows) - len(failed)} done, {len(failed)} failed; wrote {summary}", markup=False, soft_wrap=True)
    return 1 if failed else 0
