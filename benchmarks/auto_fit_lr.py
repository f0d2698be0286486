"""Can a faster or longer finger articulation let the fit repair an automatic start's fingers?

``auto_diagnosis.md`` shows the fit repairs the automatic start's wrist and shape but not its
fingers, and ``FitConfig.lr_pose`` (0.005 rad) was chosen from starts near the truth. This
fits the same starts at the default settings, at ``lr_pose`` 0.02 and at 300 iterations, and
the ground-truth starts at the default and at ``lr_pose`` 0.02 (does a faster articulation
cost the good starts?). Hand MPJPE against the ground truth (HO-3D order), and the fit's own
mean estimate.

The starts are those of ``benchmarks/auto_annotation.py`` (its ``--work`` folder: ``runs/<capture>/auto``
and ``runs/<capture>/gt_start``, each with its ``init/poses.npz`` and masks); run it first.
Results are cached per capture, start and variant under ``WORK/fit_lr/``.
Writes ``benchmarks/results/auto_fit_lr.{json,md}``.

    python benchmarks/auto_fit_lr.py [--work /tmp/hoannot_auto] [--only mustard_b cracker_b ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from harness import package_digest, settings_digest, stamp, write_result

#: default captures: 4-5 cameras, the automatic fit far from the ground-truth start's
CAPTURES = ("mustard_b", "cracker_b", "meat_b", "cracker_c")
VARIANTS = {"default": {}, "lr_pose_0.02": {"lr_pose": 0.02}, "iterations_300": {"iterations": 300}}
GT_VARIANTS = ("default", "lr_pose_0.02")


def fit_one(run: Path, gt_path: Path, overrides: dict) -> dict:
    """Fit ``run``'s ``init/poses.npz`` with the default settings plus ``overrides``; score it."""
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.poses import GroundTruth, HandObjectPoses
    from hoannot.datasets.sequence import open_sequence
    from hoannot.fitting.config import load_fit_config
    from hoannot.fitting.optimize import fit_sequence

    seq = open_sequence(run)
    init = HandObjectPoses.load(run / "init" / "poses.npz", seq.frames)
    cfg = load_fit_config(None, **overrides)
    hm, obj = load_hand_model(seq), load_sequence_object(seq, None, cfg.object_max_faces)
    t0 = time.perf_counter()
    r = fit_sequence(seq, init, hm, obj, cfg, progress=False)
    seconds = time.perf_counter() - t0
    p, gt = r.poses, GroundTruth.load(gt_path)
    with torch.no_grad():
        J = hm(torch.as_tensor(p.global_orient), torch.as_tensor(p.hand_pose),
               torch.as_tensor(p.betas)[None].expand(len(p.frames), -1), torch.as_tensor(p.transl)).joints.numpy()  # fmt: skip
    row = {int(f): i for i, f in enumerate(gt.frames)}
    G = gt.hand_joints[[row[int(f)] for f in p.frames]]  # HO-3D order, as the model's joints
    return {"fit_hand_mpjpe_mm": round(float(np.linalg.norm(J - G, axis=-1).mean() * 1000), 2),
            "fit_hand_error_est_mm": round(float(np.nanmean(r.quality["hand_error_est_mm"])), 2),
            "seconds": round(seconds, 1), "config_digest": cfg.digest()}  # fmt: skip


def markdown(res: dict) -> str:
    L = ["# Fit settings for automatic starts: a faster or longer finger articulation", "",
         f"`{res['command']}` at `{res['git_commit']}` ({res['date']}, package digest `{res['package_digest']}`). "
         "Hand MPJPE (mm) after the fit / the fit's own mean estimate (mm); starts from `auto_annotation.py`.", "",
         "| capture | auto: default | auto: lr_pose 0.02 | auto: 300 iterations | gt_start: default | gt_start: lr_pose 0.02 |",
         "|---|---|---|---|---|---|"]  # fmt: skip
    for c in res["captures"]:
        cell = lambda r: f"{r['fit_hand_mpjpe_mm']} / {r['fit_hand_error_est_mm']}"  # noqa: E731
        a, g = c["auto"], c["gt_start"]
        L.append(f"| {c['name']} | {cell(a['default'])} | {cell(a['lr_pose_0.02'])} | {cell(a['iterations_300'])} | "
                 f"{cell(g['default'])} | {cell(g['lr_pose_0.02'])} |")  # fmt: skip
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/hoannot_auto")
    ap.add_argument("--only", nargs="*", help=f"captures (default {' '.join(CAPTURES)})")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work, digest = Path(a.work), package_digest()
    caps = []
    for name in a.only or CAPTURES:
        entry = {"name": name}
        for start, variants in (("auto", VARIANTS), ("gt_start", GT_VARIANTS)):
            run = work / "runs" / name / start
            if not (run / "init" / "poses.npz").is_file():
                sys.exit(f"{run / 'init' / 'poses.npz'}: not found (run benchmarks/auto_annotation.py --only {name} first)")
            entry[start] = {}
            for tag in variants:
                cache = work / "fit_lr" / name / f"{start}_{tag}.json"
                if cache.is_file() and json.loads(cache.read_text()).get("package_digest") == digest:
                    r = json.loads(cache.read_text())["result"]
                else:
                    r = fit_one(run, work / "captures" / name / "gt" / "poses.npz", VARIANTS[tag])
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    cache.write_text(json.dumps({"package_digest": digest, "result": r}))
                print(name, start, tag, r, flush=True)
                entry[start][tag] = r
        caps.append(entry)
    from auto_annotation import data_files  # the ../shared meshes and hand the captures are made from

    res = {**stamp(__file__, config_digest=settings_digest(VARIANTS), data=data_files()), "threads": a.threads,
           "captures": caps}  # fmt: skip
    md = markdown(res)
    print(md)
    write_result("auto_fit_lr", res, md)


if __name__ == "__main__":
    main()
