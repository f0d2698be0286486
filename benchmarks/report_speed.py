"""``hoannot report SEQ/`` against ``hoannot export SEQ/`` on the same captures (issue 20.1:
"1000 frames x 5 cameras must not take longer than the export does").

Captures: the WebXR hand (../shared/data/hands, not our fitting model) holding a scanned YCB
object (../shared/data/ycb), 5 cameras at 320 x 240 (focal 300 px), depth noise on, made by
:func:`hoannot.pipeline.synth_sequence`; ``init --from-gt`` (ground truth + 10 deg / 15 mm /
0.1 rad per joint). ``CAPTURES``: 1000 frames of the mustard bottle and 200 of the potted
meat can.

``fit/`` outputs: a real fit of 1000 frames is unaffordable on this 2-core CPU (minutes per
frame), and neither the export nor the report depends on how well the poses fit, so
``fit/`` holds the initial poses scored by the fit's own final quality pass
(:func:`hoannot.fitting.quality.sequence_quality` with the default :class:`FitConfig`: the
energies, IoUs, depth residuals, error estimates and flags of ``fit/quality.json``), written
by the fit's own writer (:func:`hoannot.fitting.optimize.save_fit`, ``fit/info.json`` saying
so). The flags are many (the initial poses are noisy), which is the report's worst case.

Timing, per capture, in one run: the commands as a user runs them (a fresh Python process
each: imports, validation and models included), ``hoannot export SEQ/`` (default format
ho3d) and ``hoannot report SEQ/``, alternated ``--repeats`` times (and once more after the old
report's run); the median of each and their ratio (report / export; the target is <= 1). ``--base`` (default: the commit this
branch left main at, before the report was made faster) runs the report of that commit's
code (``git archive``) on the same capture in the same run: ``old_report_seconds`` and the
speedup. Before them, the fit's last step that draws the report's layers into ``fit/layers/``
(:func:`hoannot.pipeline.keep_layers`), timed in-process on a fresh ``fit/layers/``: the cost
moved from the report into the fit.

Resumable: captures and their ``fit/`` are cached under ``--work``
(``/tmp/hoannot_report_speed``) and reused when present. Writes
``benchmarks/results/report_speed.{json,md}``.

    python benchmarks/report_speed.py [--captures mustard,meat] [--repeats 2] [--base COMMIT] [--no-old-large]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import REPO, SHARED, WEBXR_HAND, settings_digest, stamp, write_result

#: name -> (YCB object, frames, grasp seed)
CAPTURES = {"mustard": ("006_mustard_bottle", 1000, 1), "meat": ("010_potted_meat_can", 200, 2)}
CAMERAS, WIDTH, HEIGHT, FOCAL = 5, 320, 240, 300.0
TARGET_RATIO = 1.0  # report seconds / export seconds
CLI = "from hoannot.cli import app; app()"


def make_capture(work: Path, name: str) -> Path:
    """The capture, its initial poses and its ``fit/`` (see the module docstring); cached."""
    import torch

    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.poses import HandObjectPoses
    from hoannot.datasets.sequence import open_sequence
    from hoannot.fitting.config import FitConfig
    from hoannot.fitting.objective import Objective
    from hoannot.fitting.optimize import FitResult, save_fit
    from hoannot.fitting.quality import sequence_quality
    from hoannot.pipeline import run_init, synth_sequence

    obj_name, frames, seed = CAPTURES[name]
    out = work / f"{name}_{CAMERAS}x{frames}_{WIDTH}x{HEIGHT}"
    if not (out / "init" / "poses.npz").is_file():
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        synth_sequence(out, str(SHARED / "ycb" / obj_name), str(WEBXR_HAND), cameras=CAMERAS, frames=frames, seed=seed,
                       noise=True, width=WIDTH, height=HEIGHT, focal=FOCAL)  # fmt: skip
        run_init(out, from_gt=True, seed=seed)
        print(f"{name}: capture made in {time.perf_counter() - t0:.0f} s", flush=True)
    if not (out / "fit" / "quality.json").is_file():
        t0 = time.perf_counter()
        seq = open_sequence(out)
        cfg = FitConfig()
        init = HandObjectPoses.load(out / "init" / "poses.npz", seq.frames)
        hand_model = load_hand_model(seq)
        obj = load_sequence_object(seq, None, cfg.object_max_faces)
        with torch.no_grad():
            q = sequence_quality(seq, init, Objective.make(seq, hand_model, obj, cfg))
        poses = dataclasses.replace(init, source="fit")
        save_fit(out / "fit", FitResult(poses, q), {
            "config": cfg.model_dump(), "hand_model": hand_model.name, "init_source": init.source,
            "command": "benchmarks/report_speed.py: the initial poses scored by the fit's quality pass (no optimisation)"})  # fmt: skip
        print(f"{name}: fit/ written in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def base_tree(work: Path, commit: str) -> Path:
    """``hoannot/`` of ``commit`` extracted under ``work`` (cached): the old report's code."""
    full = subprocess.run(["git", "rev-parse", commit], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    out = work / f"base_{full[:12]}"
    if not (out / "hoannot" / "__init__.py").is_file():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", full, "hoannot"], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def timed(args: list[str], pythonpath: Path) -> float:
    """Seconds of ``hoannot ARGS`` in a fresh process whose ``hoannot`` is ``pythonpath``'s.

    Raises:
        RuntimeError: the command failed (its output's tail).
    """
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "COLUMNS": "120"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, cwd="/tmp")
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"hoannot {' '.join(args)} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return seconds


def fit_layer_step(seq: Path) -> dict:
    """In-process seconds of the fit's last step, which draws the report's layers of its poses
    (:func:`hoannot.pipeline.keep_layers` into ``fit/layers/``, drawn afresh here), and per view."""
    import shutil

    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.poses import HandObjectPoses
    from hoannot.datasets.sequence import open_sequence
    from hoannot.fitting.config import FitConfig
    from hoannot.pipeline import keep_layers

    s = open_sequence(seq)
    cfg = FitConfig()
    hand_model, obj = load_hand_model(s), load_sequence_object(s, None, cfg.object_max_faces)
    shutil.rmtree(seq / "fit" / "layers", ignore_errors=True)
    poses = HandObjectPoses.load(seq / "fit" / "poses.npz", s.frames)
    t0 = time.perf_counter()
    drawn = keep_layers(s, poses, hand_model, obj, cfg, progress=False)
    seconds = time.perf_counter() - t0
    views = len(s.frames) * len(s.cameras)
    assert drawn == len(s.frames), drawn
    return {"fit_layers_seconds": round(seconds, 2), "ms_per_view": round(1000 * seconds / views, 2)}


def measure(seq: Path, name: str, repeats: int, old: Path | None) -> dict:
    """The fit's layer step, then export and report seconds (alternated) and the old report's."""
    obj_name, frames, _ = CAPTURES[name]
    load0 = os.getloadavg()
    layers = fit_layer_step(seq)
    print(f"{name}: the fit's layer step {layers['fit_layers_seconds']:.1f} s", flush=True)
    exp, rep, old_s = [], [], []
    for i in range(repeats):
        exp.append(timed(["export", str(seq)], REPO))
        rep.append(timed(["report", str(seq)], REPO))
        print(f"{name} #{i}: export {exp[-1]:.1f} s, report {rep[-1]:.1f} s", flush=True)
    if old is not None:
        old_s.append(timed(["report", str(seq)], old))
        print(f"{name}: old report {old_s[-1]:.1f} s", flush=True)
        exp.append(timed(["export", str(seq)], REPO))  # the same load as the old report's, as far as can be
        rep.append(timed(["report", str(seq)], REPO))
    e, r = statistics.median(exp), statistics.median(rep)
    views = frames * CAMERAS
    q = json.loads((seq / "fit" / "quality.json").read_text())
    res = {"capture": name, "object": obj_name, "frames": frames, "cameras": CAMERAS, "image_size": f"{WIDTH}x{HEIGHT}",
           "views": views, "flagged_frames": int(sum(q["flag"])),
           "export_seconds": round(e, 2), "report_seconds": round(r, 2), "ratio": round(r / e, 3),
           "meets_target": r / e <= TARGET_RATIO, "export_runs": [round(x, 2) for x in exp],
           "report_runs": [round(x, 2) for x in rep], "report_ms_per_view": round(1000 * r / views, 2),
           "report_bytes": sum(p.stat().st_size for p in (seq / "report").rglob("*") if p.is_file()),
           "loadavg_before": [round(x, 2) for x in load0]}  # fmt: skip
    if old_s:
        res.update(old_report_seconds=round(old_s[0], 2), old_over_export=round(old_s[0] / e, 3),
                   speedup=round(old_s[0] / r, 2))  # fmt: skip
    res.update(layers)
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


def markdown(res: dict) -> str:
    L = ["# Report vs export speed (issue 20.1)", "",
         f"`{res['command']}` at `{res['git_commit']}` ({res['date']}; package digest `{res['package_digest']}`). "
         f"{CAMERAS} cameras at {WIDTH}x{HEIGHT}; each command in a fresh process (imports included), export "
         f"(`--format ho3d`) and report alternated {res['repeats']} time(s) plus once after the old report, medians; "
         f"old report: the code of "
         f"`{res['base_commit'][:12]}`.", "",
         "| capture | frames x cameras | export s | report s | report / export | target <= 1 | old report s | "
         "speedup | fit's layer step s (ms / view) | report MB | load avg |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in res["captures"]:
        L.append(f"| {c['capture']} ({c['object']}) | {c['frames']} x {c['cameras']} | {c['export_seconds']} | "
                 f"{c['report_seconds']} | {c['ratio']} | {'met' if c['meets_target'] else 'NOT met'} | "
                 f"{c.get('old_report_seconds', '-')} | {c.get('speedup', '-')} | {c['fit_layers_seconds']} ({c['ms_per_view']}) | "
                 f"{c['report_bytes'] / 1e6:.1f} | {c['loadavg_before'][0]} -> {c['loadavg_after'][0]} |")  # fmt: skip
    L += ["", "`fit/` is the initial poses scored by the fit's own quality pass and written by its own writer "
          "(a real fit of 1000 frames is unaffordable here; neither command depends on the fit's accuracy). "
          "The machine is shared (2 cores): compare the ratio, measured on the same capture in the same run.", "",
          "The report takes each frame's pictures from `fit/layers/`, which the fit draws as its last step "
          "(`hoannot.pipeline.keep_layers`, timed in-process above, drawn afresh in this run: what a fit pays for them; "
          "a real fit costs about 75 s per frame at 5 cameras on this CPU), and draws only frames whose pose or "
          "observations changed since. Report MB counts those files, which are hard links into `fit/layers/`."]  # fmt: skip
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captures", default=",".join(CAPTURES), help=f"comma list of {', '.join(CAPTURES)}")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--base", default=None, help="commit of the old report (default: merge-base with main)")
    ap.add_argument("--no-old", action="store_true", help="skip the old report")
    ap.add_argument("--no-old-large", action="store_true", help="skip the old report on captures over 500 frames")
    ap.add_argument("--work", default="/tmp/hoannot_report_speed")
    ap.add_argument("--out", default="report_speed")
    ap.add_argument("--prepare", action="store_true", help="only make the captures")
    a = ap.parse_args()
    if not WEBXR_HAND.is_file():
        sys.exit(f"{WEBXR_HAND}: the WebXR hand from ../shared is needed")
    work = Path(a.work)
    names = [n.strip() for n in a.captures.split(",") if n.strip()]
    base = a.base or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, capture_output=True, text=True,
                                    check=True).stdout.strip()  # fmt: skip
    seqs = {n: make_capture(work, n) for n in names}
    if a.prepare:
        return
    old = None if a.no_old else base_tree(work, base)
    st = stamp(__file__, config_digest=settings_digest({"captures": {n: CAPTURES[n] for n in names}, "cameras": CAMERAS,
                                                        "size": [WIDTH, HEIGHT], "focal": FOCAL}),
               data={"ycb": SHARED / "ycb", "webxr_hand": WEBXR_HAND})  # fmt: skip
    caps = []
    for n in names:
        use_old = old if not (a.no_old_large and CAPTURES[n][1] > 500) else None
        caps.append(measure(seqs[n], n, a.repeats, use_old))
    res = {**st, "base_commit": subprocess.run(["git", "rev-parse", base], cwd=REPO, capture_output=True, text=True,
                                               check=True).stdout.strip(),
           "repeats": a.repeats, "target_ratio": TARGET_RATIO, "captures": caps,
           "meets_target_1000x5": all(c["meets_target"] for c in caps if c["frames"] >= 1000 and c["cameras"] >= 5)
           if any(c["frames"] >= 1000 for c in caps) else None}  # fmt: skip
    path = write_result(a.out, res, markdown(res))
    print(markdown(res))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
