"""Does ranking the grasp search's top-K hypotheses by the fit's own energy pick a better start?

For each capture (the WebXR hand holding YCB meshes, 4-5 cameras, 8 frames; the inputs of
``init --auto`` -- geometric labels, 2D joints, registered object poses -- copied from
``benchmarks/grasp_search.py``'s work folder, ``WORK/search/<capture>``, never modified):

1. the grasp search (:func:`hoannot.annotate.hand_search.search_grasp`, seed 0, as ``init --auto``)
   and its best K hypotheses by the search energy;
2. a short fit of each (:func:`hoannot.annotate.hypotheses.rank_hypotheses`, ``--iterations``):
   its fit energy (HOnnotate Eq. 3) and hand MPJPE (mm, HO-3D order, against ``gt/``);
3. the full default ``fit`` from the chosen hypothesis (lowest short-fit energy), from its raw
   start and (``--fitted-start``) from its short-fitted poses: hand MPJPE, object ADD, seconds;

against the full fit from the search winner (``WORK/fits/<capture>/search/result.json``, made by
``grasp_search.py --fit``) and from a ground-truth start (``auto_annotation.json``,
``gt_start.fit_hand_mpjpe_mm``). Every search, short fit and full fit is cached under
``OUT/<capture>/``, so a killed run resumes. Writes ``benchmarks/results/hypothesis_ranking.{json,md}``.

    python benchmarks/hypothesis_ranking.py [--work /tmp/hoannot_auto] [--out /tmp/hyp_bench] [-k 4]
        [--only NAME ...] [--fitted-start] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from auto_annotation import CAPTURES, data_files
from harness import RESULTS, stamp, write_result

NAMES = ("mustard_a", "mustard_b", "cracker_b", "meat_b")


def _copy(src: Path, dst: Path) -> None:
    if not (dst / "sequence.yaml").is_file():
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("fit", "labels*", "report", "ckpt", "export"))
        tmp.rename(dst)


def _json_cache(path: Path, make) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    out = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.rename(path)
    return out


def full_fit(seq_dir: Path, run: Path, init, cached: bool = False) -> dict | None:
    """The default ``fit`` from ``init`` in a copy of ``seq_dir``: hand MPJPE, object ADD (mm);
    ``cached``: only a cached result (None without one)."""
    from hoannot.evaluation.report import run_eval
    from hoannot.fitting.config import load_fit_config
    from hoannot.pipeline import run_export, run_fit

    def make():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(seq_dir, run, ignore=shutil.ignore_patterns("init"))
        init.save(run / "init" / "poses.npz")
        t0 = time.perf_counter()
        run_fit(run, load_fit_config(None), progress=False)
        seconds = time.perf_counter() - t0
        run_export(run, "fit")
        m = run_eval(run, run)
        return {"fit_mpjpe_mm": round(float(m["mpjpe_mm"]), 2), "fit_add_mm": round(float(m["add_mm"]), 2),
                "seconds": round(seconds, 1)}  # fmt: skip

    if cached and not (run / "result.json").is_file():
        return None
    return _json_cache(run / "result.json", make)


def run_capture(work: Path, out: Path, name: str, K: int, iterations: int, fitted_start: bool, cached: bool) -> dict:
    from hoannot.annotate.hand_search import search_grasp
    from hoannot.annotate.hypotheses import hypothesis_poses, rank_hypotheses
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.poses import GroundTruth, HandObjectPoses
    from hoannot.datasets.sequence import open_sequence

    root = out / name
    seq_dir = root / "seq"
    root.mkdir(parents=True, exist_ok=True)
    _copy(work / "search" / name, seq_dir)
    seq = open_sequence(seq_dir)
    hm, obj = load_hand_model(seq), load_sequence_object(seq)
    init = HandObjectPoses.load(seq_dir / "init" / "poses.npz")
    gt = GroundTruth.load(seq_dir / "gt" / "poses.npz")
    frames = np.asarray(seq.frames)

    def mpjpe(p: HandObjectPoses) -> float:
        with torch.no_grad():
            J = hm(*(torch.as_tensor(x) for x in (p.global_orient, p.hand_pose)), torch.as_tensor(p.betas)[None].expand(len(frames), -1),
                   torch.as_tensor(p.transl)).joints.numpy()  # fmt: skip
        return round(float(np.linalg.norm(J - gt.hand_joints, axis=-1).mean() * 1000), 2)

    sfile = root / "search.npz"
    if not sfile.is_file():
        D = np.stack([[seq.read_depth(c.name, f) for c in seq.cameras] for f in frames])
        L = np.stack([[seq.read_segmentation(c.name, f) for c in seq.cameras] for f in frames])
        t0 = time.perf_counter()
        s = search_grasp(hm, seq.cameras, D, L, init.obj_rot, init.obj_transl, obj.verts, obj.faces, seed=0)
        h = s.hypotheses
        np.savez(root / "search.tmp.npz", global_orient=h[0], hand_pose=h[1], transl=h[2], betas=h[3], energy=s.energy,
                 seconds=np.float64(time.perf_counter() - t0))  # fmt: skip
        (root / "search.tmp.npz").rename(sfile)
    with np.load(sfile) as z:
        hyp = tuple(z[k][:K] for k in ("global_orient", "hand_pose", "transl", "betas"))
        search_energy, search_seconds = z["energy"][:K], float(z["seconds"])
    rows = []
    for k in range(len(hyp[0])):
        one = tuple(x[k : k + 1] for x in hyp)
        pfile = root / f"short_{k}.npz"

        def make(one=one, pfile=pfile, k=k):
            r = rank_hypotheses(seq, hm, obj, one, frames, init.obj_rot, init.obj_transl, iterations=iterations)
            r.fitted[0].save(pfile)
            return {"start_mpjpe_mm": mpjpe(r.starts[0]), "short_fit_mpjpe_mm": mpjpe(r.fitted[0]),
                    "short_fit_energy": round(float(r.energies[0]), 5), "seconds": r.seconds,
                    "search_energy": round(float(search_energy[k]), 4)}  # fmt: skip

        rows.append(_json_cache(root / f"short_{k}.json", make))
        print(name, k, rows[-1], flush=True)
    chosen = int(np.argmin([r["short_fit_energy"] for r in rows]))
    start = hypothesis_poses(hm, hyp, chosen, frames, init.obj_rot, init.obj_transl, f"hypothesis {chosen}")
    res = {"name": name, "object": CAPTURES[name][0], "cameras": CAPTURES[name][2], "init_mpjpe_mm": mpjpe(init),
           "search_seconds": round(search_seconds, 1), "hypotheses": rows, "chosen": chosen,
           "raw_start": full_fit(seq_dir, root / f"fit_raw_{chosen}", start, cached)}  # fmt: skip
    print(name, "raw", res["raw_start"], flush=True)
    if fitted_start:
        res["fitted_start"] = full_fit(seq_dir, root / f"fit_short_{chosen}", HandObjectPoses.load(root / f"short_{chosen}.npz"),
                                       cached)  # fmt: skip
        print(name, "fitted", res["fitted_start"], flush=True)
    winner = work / "fits" / name / "search" / "result.json"
    res["search_winner"] = json.loads(winner.read_text()) if winner.is_file() else None
    auto = {c["name"]: c for c in json.loads((RESULTS / "auto_annotation.json").read_text())["captures"]}
    res["gt_start_fit_mpjpe_mm"] = auto[name]["gt_start"]["fit_hand_mpjpe_mm"]
    for key in ("raw_start", "fitted_start"):
        if res.get(key):
            res[key]["over_gt_start"] = round(res[key]["fit_mpjpe_mm"] / res["gt_start_fit_mpjpe_mm"], 2)
    if res["search_winner"]:
        res["search_winner"]["over_gt_start"] = round(res["search_winner"]["fit_mpjpe_mm"] / res["gt_start_fit_mpjpe_mm"], 2)
    return res


def markdown(res: dict) -> str:
    lines = [
        "# Ranking the grasp search's hypotheses by the fit's energy",
        "",
        f"`{res['command']}` at `{res['git_commit']}` ({res['date']}, package digest `{res['package_digest']}`, "
        f"config digest `{res['config_digest']}`).",
        f"The search's best {res['k']} hypotheses (by the search energy), each fitted for {res['iterations']} iterations "
        "and scored by the fit's energy (HOnnotate Eq. 3); the lowest is chosen and fitted with the default settings.",
        "`search winner`: the full fit from `grasp_search.py --fit`'s winner (that search also held the floor grasp as an",
        "extra start, so its winner is not always this search's h0: h0 is chosen on mustard_a/b and cracker_b here).",
        "",
        "## Short fits (start mm -> short-fit mm, fit energy; * chosen)",
        "",
        "| capture | " + " | ".join(f"h{k}" for k in range(res["k"])) + " | s (all K) |",
        "|---|" + "---|" * res["k"] + "---|",
    ]
    for c in res["captures"]:
        cells = [f"{'*' if k == c['chosen'] else ''}{r['start_mpjpe_mm']} -> {r['short_fit_mpjpe_mm']}, {r['short_fit_energy']:.3f}"
                 for k, r in enumerate(c["hypotheses"])]  # fmt: skip
        cells += [""] * (res["k"] - len(cells))
        lines.append(f"| {c['name']} | " + " | ".join(cells) + f" | {sum(r['seconds'] for r in c['hypotheses']):.0f} |")
    lines += ["", "## Full fit (hand MPJPE mm, ratio to the gt-start fit; object ADD mm; s)", "",
              "| capture | gt start | search winner | chosen, raw start | chosen, short-fitted start |", "|---|---|---|---|---|"]  # fmt: skip

    def cell(r):
        if not r:
            return "-"
        extra = f", ADD {r['fit_add_mm']}, {r['seconds']:.0f} s" if "fit_add_mm" in r else ""
        return f"{r['fit_mpjpe_mm']} ({r['over_gt_start']}x){extra}"

    for c in res["captures"]:
        lines.append(f"| {c['name']} | {c['gt_start_fit_mpjpe_mm']} | {cell(c['search_winner'])} | {cell(c['raw_start'])} | "
                     f"{cell(c.get('fitted_start'))} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/hoannot_auto", help="grasp_search.py's work folder (read only)")
    ap.add_argument("--out", default="/tmp/hyp_bench", help="this benchmark's caches")
    ap.add_argument("-k", type=int, default=4, help="hypotheses fitted")
    ap.add_argument("--iterations", type=int, default=None, help="short-fit iterations (default: the module's)")
    ap.add_argument("--only", nargs="*", help=f"captures (default: {', '.join(NAMES)})")
    ap.add_argument("--fitted-start", action="store_true", help="also fit from the chosen hypothesis' short-fitted poses")
    ap.add_argument("--no-write", action="store_true", help="fill the caches only")
    ap.add_argument("--cached", action="store_true", help="full fits: only the cached ones (the others are reported missing)")
    a = ap.parse_args()
    from hoannot.annotate.hypotheses import SHORT_ITERATIONS
    from hoannot.fitting.config import load_fit_config

    torch.set_num_threads(1)
    it = a.iterations or SHORT_ITERATIONS
    caps = [run_capture(Path(a.work), Path(a.out), n, a.k, it, a.fitted_start, a.cached) for n in (a.only or NAMES)]
    res = {**stamp(__file__, config_digest=load_fit_config(None).digest(), data=data_files()), "k": a.k, "iterations": it,
           "captures": caps}  # fmt: skip
    md = markdown(res)
    print(md)
    if not a.no_write:
        write_result("hypothesis_ranking", res, md)


if __name__ == "__main__":
    main()
