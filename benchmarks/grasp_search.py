"""Does the grasp search miss the true grasp, or does its energy prefer a wrong one?

For each capture of ``auto_annotation.CAPTURES`` (the WebXR hand holding YCB meshes):
``init --auto`` (geometric labels, object registration, grasp search), then the search is
run again on the same labels and object poses with one extra hypothesis: the *floor grasp*
(our hand model fitted straight to the ground-truth keypoints, ``fit_keypoints``, frame 0,
mapped into the object frame), which joins the search's second stage and is descended
like the others. Per capture the JSON holds the hand MPJPE and search energy of

* ``search``: the search's own winner (what ``init --auto`` starts the fit from);
* ``floor_start``: the hypothesis grown from the floor grasp, and its rank;

and the same with ``--variant`` settings of :func:`~hoannot.annotate.hand_search.search_grasp`.
If the floor start ends with a lower energy than the winner, the energy knows the truth and
the search fails to reach it (more or better starts help); if higher, the energy itself
prefers the wrong grasp (a better energy or a prior is needed).

Writes ``benchmarks/results/grasp_search.{json,md}``.

    python benchmarks/grasp_search.py [--work /tmp/hoannot_auto] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from auto_annotation import CAPTURES, _copy_inputs, data_files, make_capture
from harness import stamp, write_result

#: settings of search_grasp compared with the default (name -> keyword arguments)
VARIANTS = {
    "default": {},
    "curled_starts": {"start_curls": (0.0, 0.8), "keep_best": 8},
    "free_space_all": {"free_space": "all"},
    "brute_nn": {"nearest": "brute"},  # the exhaustive nearest-vertex search the k-d tree replaced (speed)
    "no_contact": {"lambda_contact": 0.0},
}


def fit_from(dst: Path, work: Path, tag: str, hm, hyp, k: int, init, R, t) -> dict:
    """``fit`` (default settings) from hypothesis ``k`` of a search, carried through the init's
    object poses: the fitted hand MPJPE (mm, against gt/) and the fit's final energy (the
    weighted sum of the per-term means over frames, HOnnotate Eq. 3), cached in ``work``."""
    from hoannot.datasets.poses import HandObjectPoses
    from hoannot.evaluation.report import run_eval
    from hoannot.fitting.config import load_fit_config
    from hoannot.models.hand import change_frame
    from hoannot.pipeline import run_export, run_fit

    run = work / "fits" / dst.name / tag
    cache = run / "result.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(dst, run, ignore=shutil.ignore_patterns("fit", "labels*", "report"))
    F = len(init.frames)
    go_o, pose, tr_o, betas = (torch.as_tensor(np.asarray(x[k])) for x in hyp)
    gw, tw = change_frame(hm, R, t, go_o[None].expand(F, 3), tr_o[None].expand(F, 3), betas)
    poses = HandObjectPoses(init.frames, gw.numpy().astype(np.float32), pose[None].expand(F, 45).numpy().astype(np.float32),
                            betas.numpy().astype(np.float32), tw.numpy().astype(np.float32), init.obj_rot, init.obj_transl,
                            source=f"grasp_search:{tag}")  # fmt: skip
    poses.save(run / "init" / "poses.npz")
    cfg = load_fit_config(None)
    t0 = time.perf_counter()
    result = run_fit(run, cfg, progress=False)
    seconds = time.perf_counter() - t0
    q = result.quality
    energy = sum(getattr(cfg.weights, k[2:]) * float(np.nanmean(v)) for k, v in q.items() if k.startswith("E_"))
    run_export(run, "fit")
    m = run_eval(run, run)
    out = {"fit_mpjpe_mm": round(float(m["mpjpe_mm"]), 2), "fit_energy": round(energy, 5), "seconds": round(seconds, 1)}
    cache.write_text(json.dumps(out))
    return out


def run_capture(work: Path, name: str, variants: dict, fit: bool = False) -> dict:
    from scipy.spatial.transform import Rotation

    from hoannot.annotate.hand_search import search_grasp
    from hoannot.datasets.poses import GroundTruth, HandObjectPoses
    from hoannot.datasets.sequence import open_sequence
    from hoannot.fitting.ik import fit_keypoints
    from hoannot.models.hand import change_frame
    from hoannot.pipeline import run_init
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    cap = make_capture(work, name)
    dst = work / "search" / name
    t_init = None
    if not (dst / "init" / "poses.npz").is_file():
        shutil.rmtree(dst, ignore_errors=True)
        _copy_inputs(cap, dst)
        t0 = time.perf_counter()
        run_init(dst, seed=0, auto=True, perception="model")
        t_init = round(time.perf_counter() - t0, 1)
    seq = open_sequence(dst)
    hm, obj = load_hand_model(seq), load_sequence_object(seq)
    init = HandObjectPoses.load(dst / "init" / "poses.npz")
    gt = GroundTruth.load(dst / "gt" / "poses.npz")
    frames = list(seq.frames)
    F = len(frames)
    D = np.stack([[seq.read_depth(c.name, f) for c in seq.cameras] for f in frames])
    L = np.stack([[seq.read_segmentation(c.name, f) for c in seq.cameras] for f in frames])
    R = torch.as_tensor(Rotation.from_rotvec(init.obj_rot).as_matrix(), dtype=torch.float32)
    t = torch.as_tensor(init.obj_transl, dtype=torch.float32)

    def mpjpe(go_o, pose, tr_o, betas) -> float:
        """Hand MPJPE (mm, HO-3D order) of one object-frame grasp carried through the object poses."""
        b = torch.as_tensor(betas)
        gw, tw = change_frame(hm, R, t, torch.as_tensor(go_o)[None].expand(F, 3), torch.as_tensor(tr_o)[None].expand(F, 3), b)
        with torch.no_grad():
            J = hm(gw, torch.as_tensor(pose)[None].expand(F, 45), b[None].expand(F, -1), tw).joints.numpy()
        return round(float(np.linalg.norm(J - gt.hand_joints, axis=-1).mean() * 1000), 2)

    floor = fit_keypoints(hm, gt.hand_joints)
    Rinv = R.transpose(1, 2)
    tinv = -torch.einsum("fij,fj->fi", Rinv, t)
    go_o, tr_o = change_frame(hm, Rinv, tinv, torch.as_tensor(floor["global_orient"]), torch.as_tensor(floor["transl"]),
                              torch.as_tensor(floor["betas"]))  # fmt: skip
    extra = (go_o[:1].numpy(), floor["hand_pose"][:1], tr_o[:1].numpy(), floor["betas"][None])
    out = {"name": name, "object": CAPTURES[name][0], "cameras": CAPTURES[name][2], "scene": CAPTURES[name][4],
           "floor_mm": round(float(floor["mpjpe_mm"].mean()), 2), "init_seconds": t_init,
           "floor_grasp_unsearched_mm": mpjpe(*[x[0] for x in extra]), "variants": {}}  # fmt: skip
    for vname, kw in variants.items():
        t0 = time.perf_counter()
        s = search_grasp(hm, seq.cameras, D, L, init.obj_rot, init.obj_transl, obj.verts, obj.faces, seed=0,
                         extra_starts=extra, **kw)  # fmt: skip
        hyp = [x for x in s.hypotheses]
        r = int(s.extra_rank[0])
        # the search's own winner: the best hypothesis not grown from the extra start
        w = 1 if r == 0 else 0
        out["variants"][vname] = {
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
            "search_mpjpe_mm": mpjpe(*[x[w] for x in hyp]), "search_energy": round(float(s.energy[w]), 4),
            "floor_start_mpjpe_mm": mpjpe(*[x[r] for x in hyp]), "floor_start_energy": round(float(s.energy[r]), 4),
            "floor_start_rank": r, "hypotheses": len(s.energy), "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
        if fit and vname == "default":  # does the fit's own energy tell the two starts apart?
            out["variants"][vname]["fit"] = {tag: fit_from(dst, work, tag, hm, hyp, k, init, R, t)
                                             for tag, k in (("search", w), ("floor_start", r))}  # fmt: skip
        print(name, vname, json.dumps(out["variants"][vname]), flush=True)
    return out


def markdown(res: dict) -> str:
    lines = [
        "# Grasp search: missed, or mis-scored?",
        "",
        f"`{res['command']}` at `{res['git_commit']}` ({res['date']}, package digest `{res['package_digest']}`).",
        "`search`: the search's winner (the start `init --auto` gives the fit); `floor start`: the hypothesis grown",
        "from the ground-truth grasp (our model fitted to the true keypoints) added to the search's second stage.",
        "Lower energy wins. floor start energy < search energy: the energy prefers the truth and the search misses it.",
        "",
        "| capture | cams | scene | floor mm | variant | search mm / energy | floor start mm / energy (rank) | energy knows truth | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["captures"]:
        for v, r in c["variants"].items():
            knows = "yes" if r["floor_start_energy"] < r["search_energy"] else "no"
            lines.append(f"| {c['name']} | {c['cameras']} | {c['scene']} | {c['floor_mm']} | {v} | {r['search_mpjpe_mm']} / "
                         f"{r['search_energy']} | {r['floor_start_mpjpe_mm']} / {r['floor_start_energy']} ({r['floor_start_rank']}) "
                         f"| {knows} | {r['seconds']} |")  # fmt: skip
    fits = [(c, c["variants"]["default"]["fit"]) for c in res["captures"] if "fit" in c["variants"].get("default", {})]
    if fits:
        lines += ["", "## After `fit` (default settings) from each start", "",
                  "Does the fit's own energy (Eq. 3, weighted per-term means over frames) prefer the start nearer the truth?", "",
                  "| capture | fit from search: mm / energy | fit from floor start: mm / energy | fit energy knows truth |",
                  "|---|---|---|---|"]  # fmt: skip
        for c, f in fits:
            s, fl = f["search"], f["floor_start"]
            knows = "yes" if (fl["fit_energy"] < s["fit_energy"]) == (fl["fit_mpjpe_mm"] < s["fit_mpjpe_mm"]) else "no"
            lines.append(f"| {c['name']} | {s['fit_mpjpe_mm']} / {s['fit_energy']} | {fl['fit_mpjpe_mm']} / "
                         f"{fl['fit_energy']} | {knows} |")  # fmt: skip
    lines += ["", "Variants:", ""] + [f"- `{n}`: `search_grasp({', '.join(f'{k}={v!r}' for k, v in kw.items())})`"
                                      for n, kw in res["variants"].items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/hoannot_auto")
    ap.add_argument("--only", nargs="*", help="captures (default: the multi-camera ones)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fit", action="store_true", help="also fit from the search's winner and from the floor start, "
                    "and compare the fits' final energies (writes results/grasp_search_fit.*)")  # fmt: skip
    ap.add_argument("--variants", nargs="*", help=f"search settings to run (default all: {', '.join(VARIANTS)})")
    a = ap.parse_args()
    variants = {k: v for k, v in VARIANTS.items() if not a.variants or k in a.variants}
    torch.set_num_threads(a.threads)
    names = a.only or [n for n, c in CAPTURES.items() if c[2] > 1]
    captures = [run_capture(Path(a.work), n, variants, a.fit) for n in names]
    from hoannot.fitting.config import load_fit_config

    res = {
        **stamp(__file__, config_digest=load_fit_config(None).digest(), data=data_files()), "threads": a.threads,
        "variants": {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()} for k, v in variants.items()},
        "captures": captures,
    }  # fmt: skip
    md = markdown(res)
    print(md)
    write_result("grasp_search_fit" if a.fit else "grasp_search", res, md)


if __name__ == "__main__":
    main()
