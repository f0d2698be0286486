"""Fit accuracy from the automatic initialisation (``hoannot init --auto``) against the fit
from a ground-truth-plus-noise initialisation, on the same synthetic capture.

Scene: the WebXR hand (../shared/data/hands, not our fitting model, nor the hand the
perception models were trained on) holding a YCB object (../shared/data/ycb), depth noise on.
Three initialisations, each then fitted with the same settings:

* ``gt_noise``: ground truth + 10 deg / 15 mm (+ 0.1 rad per joint), masks from ground truth
  (the reference of ``benchmarks/fit.py`` and the fitting tests);
* ``auto_gt_perception``: ``init --auto --perception gt``: ground-truth masks and 2D joints,
  so only the initialisation itself (Eq. 11/12 + object registration) is measured;
* ``auto_model_perception``: ``init --auto --perception model`` with trained weights
  (``--weights-dir``, from ``benchmarks/perception.py``; its RGB-D segmentation network when
  there is one): the whole pipeline, no ground truth.
  Skipped when no weights are found.
* ``auto_model_perception_mediapipe``: the same, with MediaPipe Hands for the 2D joints
  (``--kp-detector mediapipe``; needs ``pip install "hoannot[mediapipe]"``, skipped without).

Writes ``benchmarks/results/init_fit.json`` and, for the whole pipeline, the fit-from-init
keys ``hand_mpjpe_mm``/``object_add_mm`` of ``benchmarks/results/perception.json``.

    python benchmarks/init_fit.py [--cameras 2] [--frames 4] [--weights-dir DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import RESULTS, SHARED, stamp, write_result

from hoannot.io import InputError, write_json
from hoannot.evaluation.report import run_eval
from hoannot.fitting.config import load_fit_config
from hoannot.pipeline import run_export, run_fit, run_init, synth_sequence

INPUTS = ("calibration", "calibration.json", "depth", "gt", "rgb", "sequence.yaml")


def _copy_inputs(src: Path, dst: Path) -> None:
    """The capture as a user would have it (no init, masks or joints), plus gt/ for scoring."""
    dst.mkdir(parents=True)
    for name in INPUTS:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, dst / name)
        elif p.is_file():
            shutil.copy2(p, dst / name)


def _errors(labels: Path, seq: Path) -> dict:
    m = run_eval(labels, seq)
    return {"hand_mpjpe_mm": round(m["mpjpe_mm"], 2), "hand_pa_mpjpe_mm": round(m["pa_mpjpe_mm"], 2),
            "object_add_mm": round(m["add_mm"], 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--object", default="010_potted_meat_can")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--crop-size", type=int, default=64)
    ap.add_argument("--weights-dir", default="/tmp/hoannot_perception")
    ap.add_argument("--out", default=str(RESULTS / "init_fit.json"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    hand = SHARED / "hands" / "webxr_generic_hand" / "right.glb"
    if not hand.is_file():
        sys.exit(f"{hand}: not found (this benchmark needs ../shared)")
    cfg = load_fit_config(None, iterations=a.iterations, batch_size=a.frames, overlap=1, crop_size=a.crop_size)
    weights = Path(a.weights_dir)
    seg = weights / "segmentation_rgbd.pt"  # the RGB-D network when trained: every capture has depth
    seg = seg if seg.is_file() else weights / "segmentation.pt"
    variants = {
        "gt_noise": dict(from_gt=True),
        "auto_gt_perception": dict(auto=True, perception="gt"),
        "auto_model_perception": dict(auto=True, perception="model", seg_weights=seg,
                                      kp_weights=weights / "keypoints.pt"),  # fmt: skip
        "auto_model_perception_mediapipe": dict(auto=True, perception="model", seg_weights=seg,
                                                kp_detector="mediapipe"),  # fmt: skip
    }
    res: dict = {**stamp(__file__, config_digest=cfg.digest(), data={"hand": hand, a.object: SHARED / "ycb" / a.object},
                         weights={"segmentation": seg, "keypoints": weights / "keypoints.pt"}), "hand": hand.name,
                 "object": a.object, "cameras": a.cameras, "frames": a.frames, "size": [160, 120],
                 "fit_config": {"iterations": a.iterations, "batch_size": a.frames, "crop_size": a.crop_size}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "capture"
        synth_sequence(base, str(SHARED / "ycb" / a.object), str(hand), a.cameras, a.frames, seed=0, noise=True,
                       width=160, height=120, focal=150.0)  # fmt: skip
        for name, kw in variants.items():
            seq = Path(tmp) / name
            _copy_inputs(base, seq)
            if kw.get("perception") == "model" and not seg.is_file():
                res[name] = {"skipped": f"no weights in {weights} (run benchmarks/perception.py)"}
                continue
            t0 = time.perf_counter()
            try:
                _, summary = run_init(seq, seed=0, **kw)
            except InputError as e:
                res[name] = {"init_failed": str(e)}
                continue
            t_init = time.perf_counter() - t0
            run_export(seq, "init")
            t0 = time.perf_counter()
            run_fit(seq, cfg, progress=False)
            t_fit = time.perf_counter() - t0
            run_export(seq, "fit")
            res[name] = {"init": _errors(seq / "labels_init" / "labels.npz", seq), "fit": _errors(seq, seq),
                         "init_seconds": round(t_init, 1), "fit_seconds": round(t_fit, 1),
                         "init_summary": summary.splitlines()[-1]}  # fmt: skip
            print(name, json.dumps(res[name]), flush=True)
    ref = res["gt_noise"]["fit"]
    for name in ("auto_gt_perception", "auto_model_perception", "auto_model_perception_mediapipe"):
        if "fit" in res[name]:
            f = res[name]["fit"]
            res[name]["within_20pct_of_gt_noise_fit"] = bool(
                f["hand_mpjpe_mm"] <= 1.2 * ref["hand_mpjpe_mm"] and f["object_add_mm"] <= 1.2 * ref["object_add_mm"])
    write_result(a.out, res)
    perception = RESULTS / "perception.json"
    if perception.is_file() and "fit" in res["auto_model_perception"]:
        p = json.loads(perception.read_text())
        p["hand_mpjpe_mm"] = res["auto_model_perception"]["fit"]["hand_mpjpe_mm"]
        p["object_add_mm"] = res["auto_model_perception"]["fit"]["object_add_mm"]
        if "fit" in res["auto_model_perception_mediapipe"]:
            p["hand_mpjpe_mm_mediapipe"] = res["auto_model_perception_mediapipe"]["fit"]["hand_mpjpe_mm"]
            p["object_add_mm_mediapipe"] = res["auto_model_perception_mediapipe"]["fit"]["object_add_mm"]
        p["fit_from_init"] = {"source": "benchmarks/results/init_fit.json", **{k: res[k] for k in variants}}
        write_json(perception, p)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
