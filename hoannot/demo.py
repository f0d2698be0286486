"""``hoannot demo``: the whole pipeline on a small built-in synthetic capture.

synth (bundled open hand grasping a box primitive, C cameras, depth noise on) ->
init (ground truth + 10 deg / 15 mm noise, segmentation from ground truth; or, with
``auto``, ``init --auto``: the shipped models, geometric labels and the grasp search, nothing
from ``gt/``) -> fit -> export -> eval, and a before/after table of hand MPJPE and object
ADD. Needs nothing outside the installed package.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hoannot.io import InputError
from hoannot.fitting.config import load_fit_config
from hoannot.pipeline import run_export, run_fit, run_init, synth_sequence

DEMO_OBJECT = "primitive:box:0.055,0.075,0.11"


def run_demo(
    out: str | Path,
    cameras: int = 2,
    frames: int = 6,
    iterations: int = 60,
    seed: int = 0,
    console: Console | None = None,
    auto: bool = False,
) -> Table:
    """Run the demo into ``out`` (created; must not hold a sequence yet).

    Args:
        auto: initialise without ground truth (``init --auto``) instead of from ground truth + noise.

    Returns:
        a rich table: metric, initialisation, fit, improvement.
    Raises:
        InputError: ``out`` already holds a sequence.
    """
    from hoannot.evaluation.report import run_eval

    console = console or Console()
    out = Path(out)
    if (out / "sequence.yaml").exists():
        raise InputError(f"{out}: already holds a sequence; choose a new folder")
    t0 = time.perf_counter()
    with console.status("rendering a synthetic capture"):
        synth_sequence(out, DEMO_OBJECT, "open", cameras, frames, seed, noise=True, rotation_deg=20.0, translation_m=0.02)
    console.print(f"synth: {cameras} cameras x {frames} frames -> {out}")
    if auto:
        _, summary = run_init(out, auto=True, perception="model", seed=seed, progress=True)
    else:
        _, summary = run_init(out, from_gt=True, seed=seed)
    console.print(summary)
    cfg = load_fit_config(None, iterations=iterations, batch_size=max(frames, 2), overlap=1)
    run_fit(out, cfg)
    run_export(out, "init")
    run_export(out, "fit")
    before = run_eval(out / "labels_init" / "labels.npz", out, out / "eval_init")
    after = run_eval(out, out, out / "eval")
    how = "init --auto, no ground truth" if auto else "init from ground truth + noise"
    table = Table(title=f"hoannot demo ({how}; {time.perf_counter() - t0:.0f} s)")
    for col in ("metric", "initialisation", "fit", "fit / init"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, name in (("mpjpe_mm", "hand MPJPE (mm)"), ("pa_mpjpe_mm", "hand PA-MPJPE (mm)"), ("add_mm", "object ADD (mm)"),
                      ("adds_mm", "object ADD-S (mm)")):  # a box has symmetric poses: ADD-S does not count them as errors
        if key in before and key in after:
            table.add_row(name, f"{before[key]:.1f}", f"{after[key]:.1f}", f"{after[key] / max(before[key], 1e-9):.2f}")
    return table
