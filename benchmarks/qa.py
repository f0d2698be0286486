"""Per-frame error estimate without ground truth (``hoannot.fitting.quality``): calibration and score.

Captures: the WebXR hand (../shared/data/hands, not our fitting model) holding real YCB meshes
(../shared/data/ycb), 4-5 cameras at 320 x 240, 8 frames (``CAPTURES``, made as
``benchmarks/auto_annotation.py`` makes them). Each capture is fitted ``RUNS`` times, each run
starting from ``init --from-gt`` (ground truth + 10 deg / 15 mm / 0.1 rad per joint, masks
from ground truth) with deliberately bad frames (``corrupt``), chosen per run:

* ``wrong_start`` (2 frames): the initial hand moved 40 mm and turned 40 deg, its fingers
  bent by 0.3 rad noise; the first of them also has its object moved 30 mm and turned 30 deg;
* ``occluded`` (1 frame): the hand is cut out of the segmentation of every camera but one;
* ``hand_missed`` (1 frame): no hand pixel in any camera's segmentation.

Then ``fit`` at default settings. The truth per frame: hand MPJPE (our fitted joints against
the WebXR hand's, HO-3D order) and object ADD (ADD-S for a symmetric object), mm. The
features are recomputed on the cached fitted poses by :func:`hoannot.fitting.quality.
sequence_quality` (uncalibrated), so a change of the estimator needs no refit.

Split: the calibration (:func:`hoannot.fitting.quality.fit_calibration`) is fitted on the
runs of ``CALIBRATION`` and scored on the runs of the other captures (``SCORED``); the
swapped split is reported as a check. ``--calibrate`` writes the calibration fitted on
``CALIBRATION`` to ``hoannot/fitting/qa_calibration.json`` (the shipped one); without it the
shipped calibration is scored.

Fits are cached under ``--work`` per run, keyed by the corruption and the fit config digest,
so an interrupted run resumes. Writes ``benchmarks/results/qa.{json,md}``.

    python benchmarks/qa.py [--work /tmp/hoannot_qa] [--calibrate]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from auto_annotation import CAPTURES, _copy_inputs, data_files, make_capture
from harness import stamp, write_result
from scipy.spatial.transform import Rotation
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = ["mustard_a", "cracker_a", "meat_a"]
SCORED = ["mustard_b", "cracker_b", "meat_b"]
RUNS = (0, 1)  # corruption seeds per capture
BAD_MM, GOOD_MM = 10.0, 6.0  # the targets' "bad" and "good" hand errors


def corruption(seed: int, frames: int) -> dict:
    """Which frames get which defect in run ``seed`` (first and last frames stay clean)."""
    rng = np.random.default_rng(100 + seed)
    pick = [int(i) for i in rng.choice(np.arange(1, frames - 1), 4, replace=False)]
    return {"wrong_start": sorted(pick[:2]), "wrong_object": pick[0], "occluded": pick[2], "hand_missed": pick[3],
            "hand_shift_mm": 40.0, "hand_turn_deg": 40.0, "finger_noise_rad": 0.3, "object_shift_mm": 30.0,
            "object_turn_deg": 30.0, "seed": seed}  # fmt: skip


def _turn(rotvec: np.ndarray, deg: float, rng) -> np.ndarray:
    axis = rng.normal(size=3)
    return (Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(deg)) * Rotation.from_rotvec(rotvec)).as_rotvec()


def _shift(rng, mm: float) -> np.ndarray:
    d = rng.normal(size=3)
    return d / np.linalg.norm(d) * mm / 1000


def corrupt(dst: Path, spec: dict) -> None:
    """Apply ``spec`` to ``dst``'s ``init/poses.npz`` and ``segmentation/``."""
    from hoannot.io import read_image, write_image
    from hoannot.datasets.poses import HandObjectPoses
    from hoannot.datasets.sequence import open_sequence

    seq = open_sequence(dst)
    frames = list(seq.frames)
    init = HandObjectPoses.load(dst / "init" / "poses.npz")
    kw = {f.name: np.array(getattr(init, f.name), copy=True) for f in fields(HandObjectPoses)}
    rng = np.random.default_rng(spec["seed"])
    for i in spec["wrong_start"]:
        kw["transl"][i] += _shift(rng, spec["hand_shift_mm"])
        kw["global_orient"][i] = _turn(kw["global_orient"][i], spec["hand_turn_deg"], rng)
        kw["hand_pose"][i] += rng.normal(0, spec["finger_noise_rad"], 45)
    i = spec["wrong_object"]
    kw["obj_transl"][i] += _shift(rng, spec["object_shift_mm"])
    kw["obj_rot"][i] = _turn(kw["obj_rot"][i], spec["object_turn_deg"], rng)
    HandObjectPoses(**kw).save(dst / "init" / "poses.npz")
    for i, keep in ((spec["occluded"], 1), (spec["hand_missed"], 0)):
        for c in seq.cameras[keep:]:
            p = seq.segmentation_path(c.name, frames[i])
            lab = read_image(p)
            lab[lab == 1] = 0
            write_image(p, lab)


def truth(dst: Path, poses) -> tuple[np.ndarray, np.ndarray]:
    """(F,) hand MPJPE and object ADD (ADD-S when symmetric) of ``poses``, mm."""
    from hoannot.datasets.poses import GroundTruth
    from hoannot.datasets.sequence import open_sequence
    from hoannot.evaluation.metrics import add, adds
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    seq = open_sequence(dst)
    gt = GroundTruth.load(dst / "gt" / "poses.npz")
    gi = np.array([{int(f): i for i, f in enumerate(gt.frames)}[int(f)] for f in poses.frames])
    hm, obj = load_hand_model(seq), load_sequence_object(seq)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        J = hm(t(poses.global_orient), t(poses.hand_pose), t(poses.betas), t(poses.transl)).joints.numpy()
    hand = np.linalg.norm(J - gt.hand_joints[gi], axis=-1).mean(-1) * 1000
    f = adds if obj.symmetric else add
    Rp, Rg = Rotation.from_rotvec(poses.obj_rot).as_matrix(), Rotation.from_rotvec(gt.obj_rot[gi]).as_matrix()
    objerr = f(Rp, poses.obj_transl, Rg, gt.obj_transl[gi], np.asarray(obj.points)) * 1000
    return hand.astype(np.float64), np.asarray(objerr, np.float64)


def run_one(work: Path, name: str, seed: int, fit_digest: str, fit: bool = True) -> dict | None:
    """Fit one corrupted run (cached), then its features on the fitted poses and the truth
    (None when the run has no cached fit and ``fit`` is False)."""
    from hoannot.datasets.poses import HandObjectPoses
    from hoannot.fitting.config import load_fit_config
    from hoannot.fitting.objective import Objective
    from hoannot.fitting.quality import sequence_quality
    from hoannot.pipeline import run_fit, run_init
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.sequence import open_sequence

    cap = make_capture(work, name)
    spec = corruption(seed, CAPTURES[name][3])
    key = hashlib.sha256(json.dumps({"spec": spec, "fit": fit_digest}, sort_keys=True).encode()).hexdigest()[:12]
    dst = work / "runs" / f"{name}_r{seed}"
    done = dst / "qa_key.json"
    seconds = None
    if not (done.is_file() and json.loads(done.read_text()).get("key") == key):
        if not fit:
            return None
        started = dst / "qa_started.json"  # inputs corrupted: an interrupted fit resumes from its checkpoint
        if not (started.is_file() and json.loads(started.read_text()).get("key") == key):
            shutil.rmtree(dst, ignore_errors=True)
            _copy_inputs(cap, dst)
            run_init(dst, from_gt=True, seed=seed)
            corrupt(dst, spec)
            started.write_text(json.dumps({"key": key}))
        t0 = time.perf_counter()
        run_fit(dst, load_fit_config(None), resume=True, progress=False)
        seconds = round(time.perf_counter() - t0, 1)
        done.write_text(json.dumps({"key": key, "fit_seconds": seconds}))
    seconds = json.loads(done.read_text())["fit_seconds"]
    seq = open_sequence(dst)
    poses = HandObjectPoses.load(dst / "fit" / "poses.npz", seq.frames)
    cfg = load_fit_config(None)
    hm, obj = load_hand_model(seq), load_sequence_object(seq, None, cfg.object_max_faces)
    t0 = time.perf_counter()
    q = sequence_quality(seq, poses, Objective.make(seq, hm, obj, cfg), calibration=None)
    t_q = round(time.perf_counter() - t0, 2)
    hand, objerr = truth(dst, poses)
    labels = {i: k for k in ("occluded", "hand_missed") for i in [spec[k]]}
    for i in spec["wrong_start"]:
        labels[i] = "wrong_start" + ("+object" if i == spec["wrong_object"] else "")
    return {"name": name, "run": seed, "capture_object": CAPTURES[name][0], "cameras": CAPTURES[name][2],
            "corruption": spec, "fit_seconds": seconds, "quality_pass_seconds": t_q,
            "frame_kind": [labels.get(i, "clean") for i in range(len(poses.frames))],
            "quality": {k: np.asarray(v).tolist() for k, v in q.items()},
            "hand_mpjpe_mm": hand.round(3).tolist(), "object_add_mm": objerr.round(3).tolist()}  # fmt: skip


def _q(r: dict) -> dict:
    return {k: np.asarray(v, bool if k in ("flag", "error_est_calibrated") else np.float64) for k, v in r["quality"].items()}


def score(runs: list[dict], cal) -> dict:
    """Spearman, flag recall and false-flag rate of ``cal`` over ``runs``, and per frame."""
    from hoannot.fitting.quality import apply_calibration

    est_h, est_o, th, to, flags, kinds, per_run = [], [], [], [], [], [], []
    for r in runs:
        q = apply_calibration(_q(r), cal)
        h, o = np.asarray(r["hand_mpjpe_mm"]), np.asarray(r["object_add_mm"])
        est_h.append(q["hand_error_est_mm"])
        est_o.append(q["object_error_est_mm"])
        th.append(h)
        to.append(o)
        flags.append(q["flag"])
        kinds += r["frame_kind"]
        bad, good = h > BAD_MM, h < GOOD_MM
        per_run.append({
            "capture": r["name"], "run": r["run"], "frames": len(h),
            "spearman_hand": round(float(spearmanr(q["hand_error_est_mm"], h)[0]), 3),
            "spearman_object": round(float(spearmanr(q["object_error_est_mm"], o)[0]), 3),
            "frames_over_10mm": int(bad.sum()), "flagged_over_10mm": int((q["flag"] & bad).sum()),
            "frames_under_6mm": int(good.sum()), "flagged_under_6mm": int((q["flag"] & good).sum()),
            "per_frame": [{"frame": int(f), "kind": k, "hand_mpjpe_mm": round(float(a), 2),
                           "hand_error_est_mm": round(float(b), 2), "object_add_mm": round(float(c), 2),
                           "object_error_est_mm": round(float(d), 2), "flag": bool(g)}
                          for f, k, a, b, c, d, g in zip(r["quality"]["frames"], r["frame_kind"], h,
                                                          q["hand_error_est_mm"], o, q["object_error_est_mm"], q["flag"])],
        })  # fmt: skip
    eh, eo, th, to, fl = (np.concatenate(x) for x in (est_h, est_o, th, to, flags))
    bad, good = th > BAD_MM, th < GOOD_MM
    return {
        "frames": int(len(th)),
        "spearman_hand": round(float(spearmanr(eh, th)[0]), 3),
        "spearman_object": round(float(spearmanr(eo, to)[0]), 3),
        "flag_recall_over_10mm": round(float(fl[bad].mean()), 3) if bad.any() else None,
        "flag_rate_under_6mm": round(float(fl[good].mean()), 3) if good.any() else None,
        "frames_over_10mm": int(bad.sum()), "frames_under_6mm": int(good.sum()),
        "hand_est_over_true_median": round(float(np.median(eh / th)), 3),
        "per_kind": {k: {"frames": int(sum(1 for x in kinds if x == k)),
                         "hand_mpjpe_mm_median": round(float(np.median(th[[x == k for x in kinds]])), 2),
                         "hand_error_est_mm_median": round(float(np.median(eh[[x == k for x in kinds]])), 2),
                         "flagged": int(fl[[x == k for x in kinds]].sum())} for k in sorted(set(kinds))},
        "runs": per_run,
    }  # fmt: skip


def markdown(res: dict) -> str:
    s = res["scored"]
    lines = [
        "# Per-frame error estimate without ground truth",
        "",
        f"`{res['command']}` at `{res['git_commit']}` ({res['date']}, package digest `{res['package_digest']}`, "
        f"fit config digest `{res['fit_config_digest']}`).",
        f"Calibration fitted on {', '.join(res['calibration_split']['calibration_captures'])}; scored on "
        f"{', '.join(res['calibration_split']['scored_captures'])} ({s['frames']} frames, {len(RUNS)} corrupted runs per capture).",
        "",
        f"- Spearman (estimated vs true per-frame hand MPJPE): **{s['spearman_hand']}** (target >= 0.6); object ADD: "
        f"{s['spearman_object']}",
        f"- flagged among frames with hand error > 10 mm: **{s['flag_recall_over_10mm']}** ({s['frames_over_10mm']} frames, "
        "target >= 0.8)",
        f"- flagged among frames with hand error < 6 mm: **{s['flag_rate_under_6mm']}** ({s['frames_under_6mm']} frames, "
        "target <= 0.1)",
        f"- swapped split (calibrated on the scored captures, scored on the calibration ones): Spearman "
        f"{res['swapped']['spearman_hand']}, recall {res['swapped']['flag_recall_over_10mm']}, false flags "
        f"{res['swapped']['flag_rate_under_6mm']}",
        f"- thresholds: hand {res['calibration']['hand_flag_mm']:.2f} mm, object {res['calibration']['object_flag_mm']:.2f} mm, "
        f"hard flags {'on' if res['calibration']['hard_flags'] else 'off'}",
        "",
        "| capture | run | frames | Spearman hand | Spearman object | flagged > 10 mm | flagged < 6 mm |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["runs"] + res["swapped"]["runs"]:
        lines.append(f"| {r['capture']} | {r['run']} | {r['frames']} | {r['spearman_hand']} | {r['spearman_object']} | "
                     f"{r['flagged_over_10mm']} / {r['frames_over_10mm']} | {r['flagged_under_6mm']} / {r['frames_under_6mm']} |")
    lines += ["", "Per kind of frame (scored captures):", "", "| kind | frames | true hand mm (median) | estimate mm (median) | flagged |",
              "|---|---|---|---|---|"]  # fmt: skip
    for k, v in s["per_kind"].items():
        lines.append(f"| {k} | {v['frames']} | {v['hand_mpjpe_mm_median']} | {v['hand_error_est_mm_median']} | {v['flagged']} |")
    lines += ["", "Per frame (scored captures): true / estimated hand mm, true / estimated object mm, flag", ""]
    for r in s["runs"]:
        cells = [f"{p['frame']}:{p['kind'][:5]} {p['hand_mpjpe_mm']}/{p['hand_error_est_mm']}, {p['object_add_mm']}/"
                 f"{p['object_error_est_mm']}{' F' if p['flag'] else ''}" for p in r["per_frame"]]
        lines.append(f"- {r['capture']} r{r['run']}: " + "; ".join(cells))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/hoannot_qa")
    ap.add_argument("--calibrate", action="store_true", help="write hoannot/fitting/qa_calibration.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cached-only", action="store_true", help="score only the runs already fitted")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from hoannot.fitting.config import load_fit_config
    from hoannot.fitting.quality import CALIBRATION_PATH, fit_calibration, load_calibration

    work = Path(a.work)
    fit_digest = load_fit_config(None).digest()
    runs = {}
    for name in CALIBRATION + SCORED:
        for seed in RUNS:
            r = run_one(work, name, seed, fit_digest, fit=not a.cached_only)
            if r is not None:
                runs[(name, seed)] = r
                print(name, seed, "fit", r["fit_seconds"], "s", flush=True)
    st = stamp(__file__, config_digest=fit_digest, data=data_files())
    command = st["command"]

    def calibrate(names: list[str]):
        sel = [r for (n, _), r in runs.items() if n in names]
        prov = {"captures": sorted({r["name"] for r in sel}), "runs": list(RUNS), "git_commit": st["git_commit"], "date": st["date"],
                "command": command, "fit_config_digest": fit_digest, "frames": sum(len(r["hand_mpjpe_mm"]) for r in sel)}
        return fit_calibration([_q(r) for r in sel], [np.asarray(r["hand_mpjpe_mm"]) for r in sel],
                               [np.asarray(r["object_add_mm"]) for r in sel], prov)  # fmt: skip

    if a.calibrate:
        cal = calibrate(CALIBRATION)
        cal.save(CALIBRATION_PATH)
    cal = load_calibration()
    if cal is None:
        sys.exit(f"{CALIBRATION_PATH}: no calibration; run with --calibrate")
    scored = score([r for (n, _), r in runs.items() if n in SCORED], cal)
    swapped = score([r for (n, _), r in runs.items() if n in CALIBRATION], calibrate(SCORED))
    from dataclasses import asdict

    res = {
        **st, "fit_config_digest": fit_digest, "threads": a.threads,
        "captures": sorted({n for n, _ in runs}),
        "runs_scored": sorted(f"{n}_r{s}" for n, s in runs if n in SCORED),
        "frames": scored["frames"],
        "spearman_hand": scored["spearman_hand"], "spearman_object": scored["spearman_object"],
        "flag_recall_over_10mm": scored["flag_recall_over_10mm"], "flag_rate_under_6mm": scored["flag_rate_under_6mm"],
        "calibration_split": {"calibration_captures": [c for c in CALIBRATION if any(n == c for n, _ in runs)],
                              "scored_captures": [c for c in SCORED if any(n == c for n, _ in runs)],
                              "runs_per_capture": list(RUNS),
                              "note": "the scored numbers use the shipped calibration, fitted on the calibration captures only"},
        "calibration": asdict(cal),
        "corruptions": {f"{n}_r{s}": r["corruption"] for (n, s), r in runs.items()},
        "fit_seconds": {f"{n}_r{s}": r["fit_seconds"] for (n, s), r in runs.items()},
        "fit_seconds_note": "wall time of the run's last run_fit call, 1 thread on 2 cores shared with other jobs; a fit "
                            "resumed from its checkpoint counts only the resumed part",
        "quality_pass_seconds": {f"{n}_r{s}": r["quality_pass_seconds"] for (n, s), r in runs.items()},
        "scored": scored,
        "swapped": swapped,
    }  # fmt: skip
    md = markdown(res)
    print(md)
    write_result("qa", res, md)


if __name__ == "__main__":
    main()
