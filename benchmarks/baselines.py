"""Benchmark the bundled baselines on synthetic captures (train on some sequences, test on others).

    python benchmarks/baselines.py [--work /tmp/hoannot_baselines] [--epochs-scale 0.5] [--only data]
        [--seeds 0,1,2] [--train-seqs 480] [--test-seqs 32] [--frames 4] [--methods feedback_loop,...] [--jobs 2]

The defaults are the committed run (about 70 min with ``--jobs 2`` on 2 CPU cores, plus
about 17 min to render the 512 sequences once).

Writes ``benchmarks/results/baselines.json`` and ``baselines.md``: for each of feedback_loop,
two_stage, cnn3d, sdnet the test MPJPE / PA-MPJPE / AUC, training minutes, inference ms per
frame, and the MPJPE of its paper's ablation partner; plus the mean-pose baseline. With
several ``--seeds`` every method and partner is trained once per seed and the numbers are
means over seeds (std and per-seed values beside them), so that an ablation gain can be
told from seed noise. ``--jobs N`` trains N (method, seed) runs at once, each in its own
spawned one-thread process; their ``train_minutes`` and ``ms_per_frame`` are then on one
shared core each (the JSON records ``jobs``).

Data: ``--train-seqs`` training and ``--test-seqs`` test sequences rendered by
``synth_sequence`` with different seeds (so different grasps) and objects (the five YCB
objects in ../shared when present, and primitives), held by the independent WebXR hand when
../shared exists (else our open hand). Each sequence is one grasp: many short sequences
give more hand poses for the same number of crops than few long ones.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from harness import REPO as ROOT
from harness import stamp

SHARED = ROOT.parent / "shared"
N_TRAIN, N_TEST = 480, 32
SYNTH = dict(cameras=4, frames=4, width=160, height=120, focal=150.0)


def objects() -> list[str]:
    ycb = sorted(p for p in (SHARED / "data" / "ycb").glob("0*") if p.is_dir()) if SHARED.is_dir() else []
    prims = ["primitive:box:0.05,0.07,0.1", "primitive:cylinder:0.035,0.12", "primitive:box:0.04,0.06,0.15"]
    return [str(p) for p in ycb] + prims


def hand() -> str:
    glb = SHARED / "data" / "hands" / "webxr_generic_hand" / "right.glb"
    return str(glb) if glb.is_file() else "open"


def make_data(work: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, synth: dict = SYNTH) -> tuple[list[Path], list[Path]]:
    """Render (or reuse) the train/test sequences; returns their folders (the last ``n_test``
    are the test sequences: other seeds, hence other grasps, than every training one)."""
    from hoannot.pipeline import synth_sequence

    objs, h = objects(), hand()
    dirs = []
    for i in range(n_train + n_test):
        out = work / "data" / f"seq{i:02d}"
        dirs.append(out)
        if (out / "gt" / "poses.npz").is_file():
            continue
        t = time.time()
        synth_sequence(out, objs[(i * 3) % len(objs)], h, seed=100 + i, noise=True, **synth)
        print(f"rendered {out.name} ({objs[(i * 3) % len(objs)].split('/')[-1]}) in {time.time() - t:.1f} s", flush=True)
    return dirs[:n_train], dirs[n_train:]


def run_method(m: str, seed: int, train_dirs, test_dirs, work: Path, epochs_scale: float) -> dict:
    """Train one method (and its ablation partner when that needs its own run) with one seed."""
    import torch

    from hoannot.baselines.bench import bench
    from hoannot.baselines.train import get_method, make_cfg, train

    torch.set_num_threads(1)  # 2 threads on the shared 2-core machine were 10-20x slower (oversubscription)
    mod = get_method(m)
    epoch_keys = [k for k in mod.DEFAULTS if k.endswith("epochs")]
    ov = {k: max(1, round(mod.DEFAULTS[k] * epochs_scale)) for k in epoch_keys}
    ov["seed"] = seed
    run = work / "runs" / f"{m}_s{seed}"
    tr = train(m, train_dirs, run, overrides=ov, progress=False)
    b = bench(run, test_dirs, out_dir=run / "bench")
    entry = {k: b[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "auc", "ms_per_frame") if k in b}
    entry.update({k: b[k] for k in b if k.startswith("obj")})
    entry["train_minutes"] = tr["train_minutes"]
    entry["max_error_success_at_40mm"] = b["success_at_40mm"]
    entry["test_crops"] = b["frames"]
    ab = mod.ABLATION
    if ab["retrain"]:
        run_ab = work / "runs" / f"{m}_ablation_s{seed}"
        tr_ab = train(m, train_dirs, run_ab, overrides={**ov, **ab["overrides"]}, progress=False)
        b_ab = bench(run_ab, test_dirs, out_dir=run_ab / "bench")
    else:
        tr_ab, b_ab = None, bench(run, test_dirs, overrides=ab["overrides"])
    entry["ablation"] = {"what": ab["what"], "overrides": ab["overrides"], "mpjpe_mm": b_ab["mpjpe_mm"],
                         "pa_mpjpe_mm": b_ab["pa_mpjpe_mm"], "auc": b_ab["auc"],
                         "max_error_success_at_40mm": b_ab["success_at_40mm"],
                         **({"train_minutes": tr_ab["train_minutes"]} if tr_ab else {})}  # fmt: skip
    if m == "feedback_loop":  # does the updater help where it was trained? (first 6 training sequences)
        entry["on_training_sequences"] = {
            f"updates_{u}_mpjpe_mm": bench(run, train_dirs[:6], overrides={"updates": u})["mpjpe_mm"] for u in (0, 2)}
    if m == "sdnet":  # inference-time hierarchical refinement on top of the trained regressor
        b_ref = bench(run, test_dirs, overrides={"refine": True})
        entry["with_hierarchical_refinement"] = {k: b_ref[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "auc", "ms_per_frame")}
    entry["settings"] = {k: v for k, v in make_cfg(m, ov).items() if k != "method"}
    return entry


def aggregate(per_seed: list[dict], seeds: list[int]) -> dict:
    """Mean over seeds of the headline numbers, with the per-seed values and the ablation verdict.

    ``ablation_reproduced``: the method's mean test MPJPE over seeds is lower than its partner's;
    ``ablation_wins`` says for how many seeds that held."""
    mean = lambda key, src=lambda e: e: float(np.mean([src(e)[key] for e in per_seed]))  # noqa: E731
    entry = {k: mean(k) for k in ("mpjpe_mm", "pa_mpjpe_mm", "auc", "ms_per_frame", "train_minutes",
                                  "max_error_success_at_40mm") if k in per_seed[0]}  # fmt: skip
    entry.update({k: mean(k) for k in per_seed[0] if k.startswith("obj")})
    entry["mpjpe_mm_std"] = float(np.std([e["mpjpe_mm"] for e in per_seed]))
    ab0 = per_seed[0]["ablation"]
    entry["ablation"] = {"what": ab0["what"], "overrides": ab0["overrides"],
                         **{k: mean(k, lambda e: e["ablation"]) for k in ("mpjpe_mm", "pa_mpjpe_mm", "auc",
                                                                          "max_error_success_at_40mm")}}  # fmt: skip
    entry["ablation"]["mpjpe_mm_std"] = float(np.std([e["ablation"]["mpjpe_mm"] for e in per_seed]))
    for extra in ("on_training_sequences", "with_hierarchical_refinement"):
        if extra in per_seed[0]:
            entry[extra] = {k: mean(k, lambda e, x=extra: e[x]) for k in per_seed[0][extra]}
    diffs = [e["ablation"]["mpjpe_mm"] - e["mpjpe_mm"] for e in per_seed]
    entry["ablation_gain_mm_per_seed"] = [round(d, 2) for d in diffs]
    entry["ablation_wins"] = f"{sum(d > 0 for d in diffs)}/{len(diffs)}"
    entry["ablation_reproduced"] = bool(entry["mpjpe_mm"] < entry["ablation"]["mpjpe_mm"])
    entry["seeds"] = seeds
    entry["per_seed"] = [{k: v for k, v in e.items() if k != "settings"} for e in per_seed]
    entry["settings"] = {k: v for k, v in per_seed[0]["settings"].items() if k != "seed"}
    return entry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/hoannot_baselines")
    ap.add_argument("--only", choices=["data", "all"], default="all")
    ap.add_argument("--methods", default="feedback_loop,two_stage,cnn3d,sdnet")
    ap.add_argument("--epochs-scale", type=float, default=0.5,
                    help="multiply every method's default epochs (0.5: the defaults were set on 4x fewer crops)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated; numbers are means over them")
    ap.add_argument("--train-seqs", type=int, default=N_TRAIN)
    ap.add_argument("--test-seqs", type=int, default=N_TEST)
    ap.add_argument("--frames", type=int, default=SYNTH["frames"], help="frames per sequence")
    ap.add_argument("--jobs", type=int, default=1, help="(method, seed) runs trained at once, one thread each")
    args = ap.parse_args()
    work = Path(args.work)
    synth = {**SYNTH, "frames": args.frames}
    train_dirs, test_dirs = make_data(work, args.train_seqs, args.test_seqs, synth)
    if args.only == "data":
        return

    from hoannot.baselines.bench import mean_pose_mpjpe_mm

    cmd = "python " + " ".join(shlex.quote(a) for a in [Path(__file__).relative_to(ROOT).as_posix(), *sys.argv[1:]])
    old = ROOT / "benchmarks" / "results" / "baselines.json"
    keep = {}
    if args.methods != ap.get_default("methods") and old.is_file():
        # a partial re-run: keep the other methods' entries (each entry records its own command)
        prev = json.loads(old.read_text())
        keep = {k: {**v, "command": v.get("command", prev["command"])} for k, v in prev.items()
                if k in ("feedback_loop", "two_stage", "cnn3d", "sdnet")}
    seeds = [int(x) for x in args.seeds.split(",")]
    methods = args.methods.split(",")
    res: dict = {
        **keep,
        **stamp(__file__),
        "command": cmd,
        "train_sequences": len(train_dirs), "test_sequences": len(test_dirs), "synth": synth, "hand": Path(hand()).name,
        "objects": [Path(o).name for o in objects()], "seeds": seeds, "jobs": args.jobs,
    }
    res["mean_pose_mpjpe_mm"] = mean_pose_mpjpe_mm(train_dirs, test_dirs)
    print("mean pose", res["mean_pose_mpjpe_mm"], flush=True)
    tasks = [(m, seed) for m in methods for seed in seeds]
    done: dict[tuple[str, int], dict] = {}

    def finished(m: str, seed: int, e: dict) -> None:
        done[(m, seed)] = e
        print(f"{m} seed {seed}: {e['mpjpe_mm']:.2f} mm, ablation {e['ablation']['mpjpe_mm']:.2f} mm, "
              f"{e['train_minutes']:.1f} min", flush=True)
        if all((m, s) in done for s in seeds):  # every seed of this method is in: aggregate and save
            entry = aggregate([done[(m, s)] for s in seeds], seeds)
            res["test_crops"] = done[(m, seeds[0])]["test_crops"]
            entry["command"] = cmd
            res[m] = entry
            print(m, json.dumps({k: v for k, v in entry.items() if k not in ("settings", "per_seed")}), flush=True)
            write_results(res)

    if args.jobs <= 1:
        for m, seed in tasks:
            finished(m, seed, run_method(m, seed, train_dirs, test_dirs, work, args.epochs_scale))
    else:
        with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(run_method, m, seed, train_dirs, test_dirs, work, args.epochs_scale): (m, seed)
                    for m, seed in tasks}
            for f in cf.as_completed(futs):
                finished(*futs[f], f.result())
    write_results(res)


def write_results(res: dict) -> None:
    from harness import write_result

    rows = ["| method | MPJPE (mm) | PA-MPJPE (mm) | AUC 0-50 mm | train (min) | ms/frame | ablation | ablation MPJPE (mm) "
            "| gain per seed (mm) | reproduced |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in ("feedback_loop", "two_stage", "cnn3d", "sdnet"):
        if m not in res:
            continue
        e = res[m]
        pm = lambda d, e=e: f" +- {d['mpjpe_mm_std']:.1f}" if "mpjpe_mm_std" in d and len(e.get("seeds", [])) > 1 else ""  # noqa: E731
        gains = ", ".join(f"{g:+.1f}" for g in e.get("ablation_gain_mm_per_seed", []))
        rows.append(f"| {m} | {e['mpjpe_mm']:.1f}{pm(e)} | {e['pa_mpjpe_mm']:.1f} | {e['auc']:.3f} | {e['train_minutes']:.1f} | "
                    f"{e['ms_per_frame']:.1f} | {e['ablation']['what']} | {e['ablation']['mpjpe_mm']:.1f}{pm(e['ablation'])} | "
                    f"{gains} | {'yes' if e['ablation_reproduced'] else 'no'} |")
    rows.append(f"| mean pose | {res['mean_pose_mpjpe_mm']:.1f} | | | | | | | | |")
    per_method = {m: res[m].get("seeds", res.get("seeds", [0])) for m in ("feedback_loop", "two_stage", "cnn3d", "sdnet") if m in res}
    seeds = ", ".join(f"{m} {v}" for m, v in per_method.items())  # kept entries may have other seeds than this run
    if len({str(v) for v in per_method.values()}) <= 1:
        seeds = str(next(iter(per_method.values()), res.get("seeds", [0])))
    cmds = sorted({res[m].get("command", res["command"]) for m in ("feedback_loop", "two_stage", "cnn3d", "sdnet") if m in res})
    cmds = cmds or [res["command"]]
    text = ("# Baselines on synthetic captures\n\n" + "".join(f"`{c}`\n\n" for c in cmds) + f"{res['train_sequences']} training / "
            f"{res['test_sequences']} test sequences ({res['synth']['cameras']} cameras x {res['synth']['frames']} frames, "
            f"{res['synth']['width']}x{res['synth']['height']} px, hand: {res['hand']}; "
            f"{res.get('test_crops', '?')} test crops). Training seeds: {seeds}; MPJPE is the mean over "
            "seeds (+- std across seeds); \"gain per seed\" = partner MPJPE - method MPJPE for each seed (positive: the "
            "paper's direction); \"reproduced\" = lower mean test MPJPE than the ablation partner."
            + (f" Runs were trained {res['jobs']} at a time, one thread each: train minutes and ms/frame are on one "
               "core shared with the other runs." if res.get("jobs", 1) > 1 else "") + "\n\n" + "\n".join(rows) + "\n")
    write_result("baselines", res, text)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
