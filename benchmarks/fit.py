"""Fitting speed and accuracy on a synthetic capture with ground truth.

Default scene: the WebXR hand (../shared/data/hands, not our fitting model) holding the
scanned YCB potted meat can (../shared/data/ycb), depth noise on; the bundled open hand and a
box primitive when ../shared is absent. Initialisation: ground truth + 10 deg / 15 mm
(+ 0.1 rad per joint); fitting at the default :class:`~hoannot.fitting.config.FitConfig`.
Writes ``benchmarks/results/fit.json``.

    python benchmarks/fit.py [--cameras 2] [--frames 8] [--iterations N] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from harness import SHARED, WEBXR_HAND, stamp, write_result

from hoannot.evaluation.report import run_eval
from hoannot.fitting.config import FitConfig, load_fit_config
from hoannot.pipeline import run_export, run_fit, run_init, synth_sequence


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=FitConfig().iterations)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fit.json"))
    a = ap.parse_args()
    webxr = WEBXR_HAND
    if webxr.is_file():
        obj, hand = str(SHARED / "ycb" / "010_potted_meat_can"), str(webxr)
    else:
        obj, hand = "primitive:box:0.055,0.075,0.11", "open"
    with tempfile.TemporaryDirectory() as tmp:
        seq = Path(tmp) / "seq"
        synth_sequence(seq, obj, hand, a.cameras, a.frames, seed=0, noise=True)
        run_init(seq, from_gt=True, seed=0)
        cfg = load_fit_config(None, iterations=a.iterations)
        t0 = time.perf_counter()
        run_fit(seq, cfg, progress=False)
        seconds = time.perf_counter() - t0
        run_export(seq, "init")
        run_export(seq, "fit")
        before = run_eval(seq / "labels_init" / "labels.npz", seq)
        after = run_eval(seq, seq)
    res = {
        **stamp(__file__, config_digest=cfg.digest(), data={"hand": hand, "object": obj} if webxr.is_file() else None),
        "hand": Path(hand).name, "object": Path(obj).name,
        "cameras": a.cameras, "frames": a.frames, "iterations": a.iterations, "crop_size": cfg.crop_size,
        "seconds_per_frame": round(seconds / a.frames, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hand_mpjpe_mm_before": round(before["mpjpe_mm"], 2), "hand_mpjpe_mm_after": round(after["mpjpe_mm"], 2),
        "object_add_mm_before": round(before["add_mm"], 2), "object_add_mm_after": round(after["add_mm"], 2),
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    write_result(a.out, res)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
