"""Where does the automatic start lose the fit: the hand's shape, its global pose, or its fingers?

For each capture of ``grasp_search.py``'s work folder (``<work>/search/<name>``: the WebXR hand
holding a YCB mesh, ``init --auto`` done), the automatic start (``init/poses.npz``) is fitted at
default settings as it is and with one part swapped for the *floor* grasp's (our hand model
fitted straight to the ground-truth keypoints, :func:`hoannot.fitting.ik.fit_keypoints`):

* ``auto``: the start ``init --auto`` writes;
* ``floor_betas``: the floor's hand shape ``betas``, the rest automatic;
* ``floor_fingers``: the floor's ``hand_pose`` (finger articulation), the automatic wrist;
* ``floor_thumb``: the floor's thumb (its three joints), the rest automatic;
* ``floor_global``: the floor's ``global_orient`` and ``transl``, the automatic fingers;
* ``floor``: the floor grasp itself (what a perfect initialiser would give).

Fitted hand MPJPE (mm, HO-3D order, against the ground truth) per start says which part of the
start the fit cannot repair. Cached per capture and start under ``--out``.

    python benchmarks/auto_diagnosis.py [--work /tmp/hoannot_auto] [--only cracker_b meat_b]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from auto_annotation import CAPTURES, data_files
from harness import stamp, write_result

STARTS = ("auto", "floor_betas", "floor_fingers", "floor_thumb", "floor_global", "floor")
THUMB = slice(36, 45)  # hand_pose components of MANO joints 13-15


def start_poses(auto, floor: dict, kind: str):
    """The start ``kind`` (module docstring) from the automatic poses and the floor fit."""
    from hoannot.datasets.poses import HandObjectPoses

    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    go, pose, betas, tr = auto.global_orient, auto.hand_pose, auto.betas, auto.transl
    if kind in ("floor_betas", "floor"):
        betas = floor["betas"]
    if kind in ("floor_fingers", "floor"):
        pose = floor["hand_pose"]
    if kind == "floor_thumb":
        pose = np.array(pose, np.float32)
        pose[:, THUMB] = floor["hand_pose"][:, THUMB]
    if kind in ("floor_global", "floor"):
        go, tr = floor["global_orient"], floor["transl"]
    return HandObjectPoses(auto.frames, f32(go), f32(pose), f32(betas), f32(tr), auto.obj_rot, auto.obj_transl,
                           source=f"diagnosis:{kind}")  # fmt: skip


def run_capture(work: Path, out: Path, name: str) -> dict:
    from hoannot.datasets.poses import GroundTruth, HandObjectPoses
    from hoannot.evaluation.report import run_eval
    from hoannot.fitting.config import load_fit_config
    from hoannot.fitting.ik import fit_keypoints
    from hoannot.models.hand import HandModel
    from hoannot.pipeline import run_export, run_fit

    src = work / "search" / name
    gt = GroundTruth.load(src / "gt" / "poses.npz")
    auto = HandObjectPoses.load(src / "init" / "poses.npz")
    floor = fit_keypoints(HandModel(None), gt.hand_joints)
    res = {"name": name, "object": CAPTURES[name][0], "floor_mm": round(float(floor["mpjpe_mm"].mean()), 2), "starts": {}}
    for kind in STARTS:
        dst = out / name / kind
        cache = dst / "result.json"
        if cache.is_file():
            res["starts"][kind] = json.loads(cache.read_text())
            continue
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("fit", "labels*", "report", "init"))
        (dst / "init").mkdir()
        start_poses(auto, floor, kind).save(dst / "init" / "poses.npz")
        run_export(dst, "init")
        t0 = time.perf_counter()
        run_fit(dst, load_fit_config(None), progress=False)
        secs = time.perf_counter() - t0
        run_export(dst, "fit")
        r = {"init_hand_mpjpe_mm": round(run_eval(dst / "labels_init" / "labels.npz", dst)["mpjpe_mm"], 2),
             "fit_hand_mpjpe_mm": round(run_eval(dst / "labels" / "labels.npz", dst)["mpjpe_mm"], 2),
             "fit_seconds": round(secs, 1)}  # fmt: skip
        cache.write_text(json.dumps(r))
        res["starts"][kind] = r
        print(name, kind, r, flush=True)
    return res


def markdown(res: dict) -> str:
    lines = ["# Which part of the automatic start does the fit fail to repair?", "",
             f"`{res['command']}` at `{res['git_commit']}` ({res['date']}, package digest `{res['package_digest']}`).",
             "Each start fitted at default settings; hand MPJPE (mm) start -> fit. `floor_*`: that part taken from",
             "the floor grasp (our model fitted to the true keypoints), the rest from `init --auto`.", "",
             "| capture | floor mm | " + " | ".join(STARTS) + " |", "|---|---|" + "---|" * len(STARTS)]  # fmt: skip
    for c in res["captures"]:
        cells = [f"{c['starts'][k]['init_hand_mpjpe_mm']} -> **{c['starts'][k]['fit_hand_mpjpe_mm']}**" for k in STARTS]
        lines.append(f"| {c['name']} | {c['floor_mm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/hoannot_auto", help="grasp_search.py's work folder (read only)")
    ap.add_argument("--out", default="/tmp/hoannot_diag")
    ap.add_argument("--only", nargs="*", default=["mustard_b", "cracker_b", "meat_b"])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    caps = [run_capture(Path(a.work), Path(a.out), n) for n in a.only]
    from hoannot.fitting.config import load_fit_config

    res = {**stamp(__file__, config_digest=load_fit_config(None).digest(), data=data_files()), "captures": caps}
    md = markdown(res)
    print(md)
    write_result("auto_diagnosis", res, md)


if __name__ == "__main__":
    main()
