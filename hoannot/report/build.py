"""Gather a stage's poses, quality and pictures, and write ``SEQ/report/``.

The pictures are :mod:`hoannot.report.panels`' layers: taken from ``fit/layers/`` (the fit
draws them at the end) where they show the poses being reported, drawn here otherwise (``init``
poses, a re-fit's "before" state, poses changed since). The per-frame numbers of the timelines
come from ``fit/quality.json``; for ``init`` poses (which have no quality file) they are
computed with the fit's own quality function on the fit's crops, so an initialisation and a
fit are judged by the same numbers and the same flag thresholds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import numpy as np

import hoannot
from hoannot.io import InputError, atomic_write
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.config import FitConfig
from hoannot.fitting.quality import FLAG_DEPTH_MM, FLAG_IOU_HAND, FLAG_IOU_OBJECT, load_calibration
from hoannot.models.hand import HandModel
from hoannot.models.objects import ObjectModel
from hoannot.report.panels import (DEPTH_MAX_MM, EXTRA_RGB, HAND_RGB, MISSED_RGB, OBJECT_RGB, PANELS, RENDER_WIDTH,
                                   SWAPPED_RGB, _colormap, render_panels)  # fmt: skip

STAGES = ("fit", "init")
THUMB_WIDTH = 160  # px: the panels shown in the page
SVG_W, SVG_H, SVG_L, SVG_R, SVG_T, SVG_B = 900, 110, 56, 10, 8, 18
SERIES_COLOURS = ("#e8590c", "#1c7ed6", "#2b8a3e", "#862e9c")


def _rgb_hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


# ---- inputs ------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable JSON ({type(e).__name__}: {e})".splitlines()[0]) from None


def load_quality(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``quality.json`` written by :func:`hoannot.fitting.optimize.save_fit`.

    Returns:
        per-frame arrays of equal length F: ``frames`` (F,) int64, ``flag`` (F,) bool, and
        every other key as (F,) float64 (``E_<term>``, ``iou_hand``, ``iou_object``,
        ``depth_residual_mm``, an optional ``*_error_est_mm``...), None turned into NaN.
    Raises:
        InputError: unreadable file, no ``frames``, or arrays of other lengths (names the file).
    """
    path = Path(path)
    raw = _read_json(path)
    if not isinstance(raw, dict) or "frames" not in raw:
        raise InputError(f"{path}: expected per-frame arrays with a 'frames' entry")
    q: dict[str, np.ndarray] = {"frames": np.asarray(raw["frames"], np.int64)}
    for k, v in raw.items():
        if k == "frames" or not isinstance(v, list):
            continue
        if len(v) != len(q["frames"]):
            raise InputError(f"{path}: {k!r} has {len(v)} values for {len(q['frames'])} frames")
        q[k] = np.asarray(v, bool) if k == "flag" else np.array([np.nan if x is None else x for x in v], np.float64)
    return q


def fit_config(seq: Sequence) -> tuple[FitConfig, str, str]:
    """The settings of the sequence's fit (``fit/info.json``, else the defaults), where they
    come from, and their digest (:meth:`FitConfig.digest`; a config this version cannot read
    is hashed as stored)."""
    p = seq.root / "fit" / "info.json"
    raw = _read_json(p).get("config") if p.is_file() else None
    if isinstance(raw, dict):
        try:  # the device does not change results (nor the digest); this machine may lack it
            cfg = FitConfig.model_validate({**raw, "device": "cpu"})
            return cfg, "fit/info.json", cfg.digest()
        except ValueError:
            digest = hashlib.sha1(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
            return FitConfig(), "defaults (fit/info.json's config is not this version's)", f"{digest} (as stored)"
    cfg = FitConfig()
    return cfg, "defaults (no fit/info.json)", cfg.digest()


def load_stage(seq_dir: str | Path, stage: str) -> tuple[Sequence, HandObjectPoses, list[int]]:
    """Open a sequence and its ``fit`` or ``init`` poses, restricted to the sequence's frames.

    Returns:
        the sequence, its poses (world frame) of exactly ``frames``, and ``frames`` (the
        sequence's frame ids that have a pose, in the sequence's order).
    Raises:
        InputError: unknown stage, a bad sequence (:func:`hoannot.datasets.validate.
            validate_sequence` for ``"report"``), missing or malformed ``STAGE/poses.npz``
            (:func:`hoannot.datasets.validate.check_poses`), or no pose for any frame (names
            the file).
    """
    if stage not in STAGES:
        raise InputError(f"--stage {stage!r}: expected fit or init")
    from hoannot.datasets.validate import open_validated

    seq = open_validated(seq_dir, "report")
    pose_path = seq.root / stage / "poses.npz"
    if not pose_path.is_file():
        raise InputError(f"{pose_path}: file not found (run `hoannot {stage} {seq_dir}` first)")
    poses = HandObjectPoses.load(pose_path, seq.frames)
    have = {int(f) for f in poses.frames}
    frames = [f for f in seq.frames if f in have]
    if not frames:
        raise InputError(f"{pose_path}: no pose for any frame of {seq.root / 'sequence.yaml'}")
    return seq, poses.select(frames), frames


def compute_quality(
    seq: Sequence,
    poses: HandObjectPoses,
    hand_model: HandModel,
    obj: ObjectModel,
    cfg: FitConfig,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Per-frame quality of any poses, as the fit computes it after a step (its energies,
    silhouette IoU and depth residual on the fit's crops, and its flag).

    Args:
        poses: world-frame poses of the frames to score (e.g. ``init/poses.npz``).
        cfg: the fit's settings (crop size, weights, segmentation source, ...).
    Returns:
        the arrays of ``fit/quality.json`` (:class:`hoannot.fitting.optimize.FitResult`).
    Raises:
        InputError: a missing observation (segmentation, depth), naming the file.
    """
    from hoannot.fitting.objective import Objective
    from hoannot.fitting.quality import sequence_quality

    objective = Objective.make(seq, hand_model, obj, cfg.model_copy(update={"device": device}))
    return sequence_quality(seq, poses, objective)


# ---- page data ---------------------------------------------------------------------------


def _fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def _chart(title: str, unit: str, frames: list[int], series: list[tuple[str, np.ndarray, str]],
           flags: np.ndarray | None, thresholds=(), yrange=None) -> dict:
    """Polyline coordinates of one timeline (the SVG itself is drawn by the template)."""
    F = len(frames)
    pw, ph = SVG_W - SVG_L - SVG_R, SVG_H - SVG_T - SVG_B
    xs = [SVG_L + (pw * i / (F - 1) if F > 1 else pw / 2) for i in range(F)]
    finite = np.concatenate([v[np.isfinite(v)] for _, v, _ in series] + [np.asarray([t for t, _ in thresholds], float)])
    lo, hi = yrange or ((min(0.0, float(finite.min())), float(finite.max())) if finite.size else (0.0, 1.0))
    if not hi > lo:
        hi = lo + 1.0
    y = lambda v: SVG_T + ph * (1 - (v - lo) / (hi - lo))  # noqa: E731
    out_series = []
    for name, values, colour in series:
        segments, cur = [], []
        for x, v in zip(xs, values):
            if np.isfinite(v):
                cur.append(f"{x:.1f},{y(v):.1f}")
            elif cur:
                segments.append(cur)
                cur = []
        if cur:
            segments.append(cur)
        out_series.append({"name": name, "colour": colour, "lines": [" ".join(s) for s in segments if len(s) > 1],
                           "dots": [p.split(",") for s in segments if len(s) == 1 for p in s],
                           "mean": _fmt(float(np.nanmean(values)) if np.isfinite(values).any() else math.nan)})  # fmt: skip
    half = max(pw / max(F, 1), 2.0) / 2  # a frame's band, inside the plot
    spans = [(i, max(SVG_L, xs[i] - half), min(SVG_W - SVG_R, xs[i] + half)) for i in range(F)
             if flags is not None and flags[i]]  # fmt: skip
    bands = [{"x": f"{a:.1f}", "w": f"{b - a:.1f}", "frame": frames[i]} for i, a, b in spans]
    step = max(1, math.ceil(F / 10))
    return {
        "title": title, "unit": unit, "series": out_series, "bands": bands,
        "thresholds": [{"y": f"{y(t):.1f}", "label": label} for t, label in thresholds if lo <= t <= hi],
        "ylo": _fmt(lo), "yhi": _fmt(hi), "ylo_y": f"{y(lo):.1f}", "yhi_y": f"{y(hi) + 8:.1f}",
        "xticks": [{"x": f"{xs[i]:.1f}", "label": frames[i]} for i in range(0, F, step)],
        "x0": SVG_L, "x1": SVG_W - SVG_R, "ybase": f"{SVG_T + ph:.1f}",
    }  # fmt: skip


def _error_keys(q: dict) -> list[str]:
    return sorted(k for k in q if k.endswith("_error_est_mm"))


def _flag_rules(q: dict[str, np.ndarray]):
    """What flagged ``q``'s frames: ``(hard, calibration)``: the IoU/depth thresholds apply
    (no calibrated estimate, or a calibration that keeps them), and the calibration whose
    estimate thresholds apply (None without estimates)."""
    cal = load_calibration() if _error_keys(q) else None
    return (cal is None or cal.hard_flags), cal


def timeline_charts(q: dict[str, np.ndarray], frames: list[int]) -> list[dict]:
    """Timelines over ``frames``: every ``E_<term>``, both IoUs, the depth residual, any
    ``*_error_est_mm`` and the flags (flagged frames are shaded in every chart)."""
    index = {int(f): i for i, f in enumerate(q["frames"])}
    pick = lambda k: np.array([q[k][index[f]] if f in index else np.nan for f in frames], np.float64)  # noqa: E731
    flags = np.array([bool(q["flag"][index[f]]) if f in index else False for f in frames]) if "flag" in q else None
    c = SERIES_COLOURS
    hard, cal = _flag_rules(q)
    charts = [_chart(k, "", frames, [("", pick(k), c[0])], flags) for k in sorted(k for k in q if k.startswith("E_"))]
    ious = [(name, pick(k), colour) for k, name, colour in (("iou_hand", "hand", _rgb_hex(HAND_RGB)),
                                                            ("iou_object", "object", _rgb_hex(OBJECT_RGB))) if k in q]
    if ious:
        charts.append(_chart("silhouette IoU", "", frames, ious, flags, yrange=(0.0, 1.0),
                             thresholds=[(FLAG_IOU_HAND, f"hand flag < {FLAG_IOU_HAND}"),
                                         (FLAG_IOU_OBJECT, f"object flag < {FLAG_IOU_OBJECT}")] if hard else []))  # fmt: skip
    if "depth_residual_mm" in q:
        charts.append(_chart("depth residual", "mm", frames, [("median", pick("depth_residual_mm"), c[2])], flags,
                             thresholds=[(FLAG_DEPTH_MM, f"flag > {FLAG_DEPTH_MM:g} mm")] if hard else []))  # fmt: skip
    errs = _error_keys(q)
    if errs:
        charts.append(_chart("error estimate", "mm", frames,
                             [(k.removesuffix("_error_est_mm"), pick(k), c[i % len(c)]) for i, k in enumerate(errs)],
                             flags, thresholds=[] if cal is None else [(cal.hand_flag_mm, f"hand flag > {cal.hand_flag_mm:.1f} mm"),
                                                (cal.object_flag_mm, f"object flag > {cal.object_flag_mm:.1f} mm")]))  # fmt: skip
    if flags is not None:
        charts.append(_chart(f"flags: {int(flags.sum())} of {len(frames)} frames", "", frames, [], flags, yrange=(0.0, 1.0)))
    return charts


def _reasons(q: dict, i: int) -> list[str]:
    out = []
    hard, cal = _flag_rules(q)
    ih, io, d = (float(q[k][i]) if k in q else math.nan for k in ("iou_hand", "iou_object", "depth_residual_mm"))
    if hard and ih < FLAG_IOU_HAND:
        out.append(f"hand IoU {ih:.2f} < {FLAG_IOU_HAND}")
    if hard and io < FLAG_IOU_OBJECT:
        out.append(f"object IoU {io:.2f} < {FLAG_IOU_OBJECT}")
    if hard and d > FLAG_DEPTH_MM:
        out.append(f"depth residual {d:.1f} mm > {FLAG_DEPTH_MM:g}")
    elif not np.isfinite(d):
        out.append("no depth residual (rendering and observation do not overlap)")
    if not (np.isfinite(ih) and np.isfinite(io)):
        out.append("no IoU (frame not scored)")
    if cal is not None:
        for kind, limit in (("hand", cal.hand_flag_mm), ("object", cal.object_flag_mm)):
            v = float(q.get(f"{kind}_error_est_mm", [math.nan] * (i + 1))[i])
            if v > limit:
                out.append(f"{kind} error estimate {v:.1f} mm > {limit:.1f}")
    return out


def severity(q: dict[str, np.ndarray], i: int) -> float:
    """How bad frame ``i`` of quality ``q`` looks, for sorting: the largest ``*_error_est_mm``
    when the quality has one, else the largest relative violation of a flag threshold
    (``1 - IoU / threshold`` for each IoU, ``residual / threshold - 1`` for the depth);
    missing values count as the worst (``inf``)."""
    errs = _error_keys(q)
    vals = [float(q[k][i]) for k in errs] if errs else [
        1 - float(q["iou_hand"][i]) / FLAG_IOU_HAND if "iou_hand" in q else -math.inf,
        1 - float(q["iou_object"][i]) / FLAG_IOU_OBJECT if "iou_object" in q else -math.inf,
        float(q["depth_residual_mm"][i]) / FLAG_DEPTH_MM - 1 if "depth_residual_mm" in q else -math.inf,
    ]  # fmt: skip
    return max(math.inf if math.isnan(v) else v for v in vals)


def flagged_rows(q: dict[str, np.ndarray], frames: list[int]) -> list[dict]:
    """Flagged frames of ``frames``, worst first (:func:`severity`, then frame id)."""
    if "flag" not in q:
        return []
    shown = set(frames)
    idx = [i for i, f in enumerate(q["frames"]) if bool(q["flag"][i]) and int(f) in shown]
    idx.sort(key=lambda i: (-severity(q, i), int(q["frames"][i])))
    at = lambda k, i: _fmt(float(q[k][i])) if k in q else "–"  # noqa: E731
    return [{
        "frame": int(q["frames"][i]), "anchor": f"f{int(q['frames'][i]):06d}", "severity": _fmt(severity(q, i)),
        "reasons": _reasons(q, i), "iou_hand": at("iou_hand", i), "iou_object": at("iou_object", i),
        "depth": at("depth_residual_mm", i), "errors": [at(k, i) for k in _error_keys(q)],
    } for i in idx]  # fmt: skip


def _git_commit() -> str:
    """``<commit>`` (``+ local changes`` when modified) of the hoannot checkout, or why none."""
    root = Path(hoannot.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "none (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return head.stdout.strip() + (" + local changes" if dirty else "")


def provenance(seq: Sequence, stage: str, info: dict, cfg_source: str, cfg_digest: str, poses: HandObjectPoses,
               quality_source: str, command: str | None, pictures: str = "") -> list[tuple[str, str]]:
    """(label, value) rows describing where the report's poses, numbers and pictures come from."""
    rows = [("sequence", str(seq.root.resolve())), ("stage", f"{stage} ({stage}/poses.npz, source {poses.source!r})"),
            ("hoannot version", hoannot.__version__), ("git commit", _git_commit()),
            ("fit config digest", f"{cfg_digest} ({cfg_source})")]  # fmt: skip
    for key, label in (("init_source", "initial poses"), ("source", "initial poses"), ("hand_model", "hand model")):
        if key in info:
            rows.append((label, str(info[key])))
    if "seconds" in info:
        rows.append(("fit time", f"{float(info['seconds']):.1f} s"))
    rows.append((f"{stage} command", str(info.get("command", "not recorded"))))
    rows.append(("quality", quality_source))
    if pictures:
        rows.append(("pictures", pictures))
    if command:
        rows.append(("report command", command))
    return rows


def load_refit(seq: Sequence, frames: list[int]) -> dict | None:
    """The last re-fit of ``fit/`` (``fit/refit/``, :func:`hoannot.pipeline.run_refit`), or None.

    Returns:
        ``record`` (``refit.json``), ``poses`` (the re-fitted frames' poses before it, world
        frame), ``quality`` (theirs before it, as :func:`load_quality`), ``frames`` (those of
        them in ``frames``) and ``starts`` ({frame: start taken}).
    Raises:
        InputError: a damaged ``fit/refit/`` (names the file).
    """
    d = seq.root / "fit" / "refit"
    if not (d / "refit.json").is_file():
        return None
    record = _read_json(d / "refit.json")
    poses = HandObjectPoses.load(d / "before_poses.npz", seq.frames)
    quality = load_quality(d / "before_quality.json")
    shown = set(frames)
    starts = {f: s for r in record.get("runs", []) for f, s in zip(r.get("frames", []), r.get("starts", []))}
    return {"record": record, "poses": poses, "quality": quality, "starts": starts,
            "frames": [int(f) for f in poses.frames if int(f) in shown]}  # fmt: skip


def _pct(v: float) -> str:
    return f"{100.0 * v:.4g}%"


def _view_row(seq: Sequence, stats: dict, f: int, c: str, prefix: str = "") -> dict:
    """Page data of camera ``c`` of frame ``f``: its numbers, its RGB image (relative to
    ``report/``) and, when anything is rendered or observed, its layers' box over the image and
    where each panel's layer lies in the frame's layer image (CSS percentages, so the same
    markup serves the thumbnail and the render size)."""
    H, W = stats["sizes"][c]
    st = stats[(f, c)]
    rgb = os.path.relpath(seq.rgb_path(c, f), seq.root / "report").replace(os.sep, "/")
    row = {"camera": c, "anchor": f"f{f:06d}-{c}{'-before' if prefix else ''}", "H": H, "W": W,
           "t": f"{min(1.0, THUMB_WIDTH / W):.4g}", "rgb": quote(rgb), "box": None,
           "panels": [{"name": p, "dim": p != "overlay", "style": ""} for p in PANELS],
           "iou_hand": _fmt(st["iou_hand"]), "iou_object": _fmt(st["iou_object"]), "depth": _fmt(st["depth_residual_mm"])}  # fmt: skip
    if st["cell"] is not None:
        y0, y1, x0, x1, ay, axs = st["cell"]
        AW = st["atlas"][1]
        h, w = y1 - y0, x1 - x0
        row["layer"] = f"{prefix}layers/{f:06d}.png"
        row["box"] = f"left:{_pct(x0 / W)};top:{_pct(y0 / H)};width:{_pct(w / W)};height:{_pct(h / H)}"
        for p, ax in zip(row["panels"], axs):
            p["style"] = f"width:{_pct(AW / w)};left:{_pct(-ax / w)};top:{_pct(-ay / h)}"
    return row


def _before_row(seq: Sequence, refit: dict, f: int, stats: dict) -> dict:
    """A re-fitted frame's numbers (and, with ``stats``, its panels) before the re-fit (page data)."""
    q = refit["quality"]
    i = int(np.flatnonzero(q["frames"] == f)[0])
    val = lambda k: _fmt(q[k][i]) if k in q else "–"  # noqa: E731
    return {"flag": bool(q["flag"][i]) if "flag" in q else False, "iou_hand": val("iou_hand"),
            "iou_object": val("iou_object"), "depth": val("depth_residual_mm"), "start": refit["starts"].get(f, "–"),
            "views": [_view_row(seq, stats, f, c, "before/") for c in seq.camera_names] if stats else []}  # fmt: skip


def refit_rows(refit: dict, q: dict[str, np.ndarray]) -> list[dict]:
    """One row per re-fitted frame: start taken, IoUs, depth residual and flag before -> after."""
    qi = {int(f): i for i, f in enumerate(q["frames"])}
    rows = []
    for f in refit["frames"]:
        b = _before_row(None, refit, f, {})
        i = qi.get(f)
        val = lambda k, i=i: _fmt(q[k][i]) if i is not None and k in q else "–"  # noqa: E731
        rows.append({"frame": f, "anchor": f"f{f:06d}", "start": b["start"],
                     "iou_hand": (b["iou_hand"], val("iou_hand")), "iou_object": (b["iou_object"], val("iou_object")),
                     "depth": (b["depth"], val("depth_residual_mm")),
                     "flag": (b["flag"], bool(i is not None and "flag" in q and q["flag"][i]))})  # fmt: skip
    return rows


# ---- the report --------------------------------------------------------------------------


def build_report(
    seq_dir: str | Path,
    stage: str = "fit",
    device: str = "cpu",
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    width: int = RENDER_WIDTH,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Write ``SEQ/report/index.html`` and its images for the ``fit`` or ``init`` poses.

    The folder is built beside ``report/`` and swapped in when complete, so an interrupted
    build leaves the previous report as it was.

    Args:
        seq_dir: the sequence folder.
        stage: ``"fit"`` (``fit/poses.npz`` and ``fit/quality.json``) or ``"init"``
            (``init/poses.npz``; quality computed with the fit's settings, or the defaults).
        device: torch device for rendering (``cpu``, ``cuda``).
        mano_model_path, ycb_dir: as for ``hoannot fit`` (the models must be the fit's).
        width: panel render width, pixels (at most the cameras' own).
        progress: show a rich progress bar.
        command: the command line to record in the provenance.
    Returns:
        path of ``index.html``.
    Raises:
        InputError: unknown stage, no sequence, missing or malformed poses or quality file
            (names the file).
    """
    from jinja2 import Environment, PackageLoader, StrictUndefined

    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    if width < 8:
        raise InputError(f"--width {width}: expected at least 8 pixels")
    seq, poses, frames = load_stage(seq_dir, stage)
    info_path = seq.root / stage / "info.json"
    info = _read_json(info_path) if info_path.is_file() else {}
    cfg, cfg_source, cfg_digest = fit_config(seq)
    if device != cfg.device:
        try:
            cfg = cfg.model_copy(update={"device": FitConfig.model_validate({"device": device}).device})
        except ValueError as e:
            raise InputError(f"--device {device!r}: {str(e).splitlines()[-1]}") from None
    hand_model = load_hand_model(seq, mano_model_path)
    obj = load_sequence_object(seq, ycb_dir, cfg.object_max_faces)

    qpath = seq.root / stage / "quality.json"
    note = ""
    if qpath.is_file():
        quality, quality_source = load_quality(qpath), f"{stage}/quality.json"
    else:
        try:
            quality = compute_quality(seq, poses, hand_model, obj, cfg, device)
            quality_source = f"computed for this report with the fit's quality pass (config: {cfg_source})"
        except InputError as e:  # e.g. no segmentation yet: the images are still worth a look
            quality, quality_source, note = None, "none", f"no per-frame quality: {e}"

    refit = load_refit(seq, frames) if stage == "fit" else None
    root = seq.root / "report"
    tmp = seq.root / ".report.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        keep = seq.root / "fit" if stage == "fit" else None  # the fit's own drawings (pipeline.keep_layers)
        stats = render_panels(seq, poses, hand_model, obj, tmp, frames, cfg.segmentation, width, device, progress, keep=keep)
        pictures = f"{stats['drawn']} frame(s) drawn for this report"
        if keep is not None:
            pictures = f"{len(frames) - stats['drawn']} frame(s) as the fit drew them (fit/layers/), " + pictures
        before_stats = {}
        if refit is not None:  # the re-fitted frames as they were, panels under before/
            before_stats = render_panels(seq, refit["poses"], hand_model, obj, tmp / "before", refit["frames"],
                                         cfg.segmentation, width, device, False)  # fmt: skip
        q = quality or {"frames": np.asarray(frames, np.int64)}
        qi = {int(f): i for i, f in enumerate(q["frames"])}
        cams = seq.camera_names
        frame_rows = []
        for f in frames:
            i = qi.get(f)
            val = lambda k, i=i: _fmt(q[k][i]) if i is not None and k in q else "–"  # noqa: E731
            frame_rows.append({
                "frame": f, "anchor": f"f{f:06d}", "flag": bool(i is not None and "flag" in q and q["flag"][i]),
                "iou_hand": val("iou_hand"), "iou_object": val("iou_object"), "depth": val("depth_residual_mm"),
                "errors": [(k.removesuffix("_error_est_mm"), val(k)) for k in _error_keys(q)],
                "energies": [(k, val(k)) for k in sorted(k for k in q if k.startswith("E_"))],
                "views": [_view_row(seq, stats, f, c) for c in cams],
                "before": _before_row(seq, refit, f, before_stats) if refit is not None and f in refit["frames"] else None,
            })  # fmt: skip
        lut = _colormap()
        env = Environment(loader=PackageLoader("hoannot.report", "templates"), autoescape=True,
                          undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
        html = env.get_template("index.html.j2").render(
            title=f"{seq.config.name}: {stage}", stage=stage, cameras=cams, n_frames=len(frames),
            provenance=provenance(seq, stage, info, cfg_source, cfg_digest, poses, quality_source, command, pictures),
            note=note, charts=timeline_charts(q, frames) if quality is not None else [],
            flagged=flagged_rows(q, frames) if quality is not None else None,
            error_names=[k.removesuffix("_error_est_mm") for k in _error_keys(q)],
            refitted=refit_rows(refit, q) if refit is not None else None,
            frames=frame_rows, panels=PANELS, svg_w=SVG_W, svg_h=SVG_H,
            colours={"hand": _rgb_hex(HAND_RGB), "object": _rgb_hex(OBJECT_RGB), "missed": _rgb_hex(MISSED_RGB),
                     "extra": _rgb_hex(EXTRA_RGB), "swapped": _rgb_hex(SWAPPED_RGB)},
            colour_bar=[{"offset": f"{t:.3f}", "colour": _rgb_hex(lut[round(t * 255)])} for t in np.linspace(0, 1, 11)],
            depth_max=f"{DEPTH_MAX_MM:g}", depth_ticks=[f"{DEPTH_MAX_MM * t:g}" for t in (0, 0.25, 0.5, 0.75, 1)],
        )  # fmt: skip
        with atomic_write(tmp / "index.html", "w") as fh:
            fh.write(html)
        old = seq.root / ".report.old"
        shutil.rmtree(old, ignore_errors=True)
        if root.exists():
            root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "index.html"
