"""Fit speed before and after, side by side in one run, with a time breakdown per iteration.

"Before" is the code at a base commit (default: the commit at the start of issue 18), checked
out with ``git worktree`` into the work folder; "after" is this checkout. Every fit runs in its
own subprocess whose ``PYTHONPATH`` selects the code, one at a time, with the same thread count,
on the same captures; the parent scores the resulting poses against ground truth.

Captures: those of ``annotation_accuracy.py`` (the WebXR hand, an independent skinned mesh,
holding a scanned YCB object; 5 cameras on a ring, 160x120 px at focal 150, depth noise and
holes on, ground-truth segmentation, ground truth + 10 deg / 15 mm initialisation), one per
object. Each capture is fitted at **default** :class:`~hoannot.fitting.config.FitConfig`
settings with all 5 cameras (multi-camera schedule) and with camera 0 alone (single-camera
schedule).

Breakdown: on the first capture's multi-camera batch step, each part of an iteration is timed
on its own: the hand and object model forward, the render (rasterisation and compositing) with
E_mask and E_dpt forward and backward, each other energy term forward and backward, the Adam
step; plus, per iteration of that step, the observation loading and the quality pass.

Writes ``benchmarks/results/speed.json`` and ``.md``. Resumable: each fit's result is kept in
``--work`` and reused when its code commit and settings match.

    python benchmarks/speed.py [--work DIR] [--frames 4] [--objects A,B,C] [--base COMMIT] [--quick]
    python benchmarks/speed.py --device cuda    # the new code on a GPU (adds "gpu" to speed.json)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness import REPO, RESULTS, SHARED, machine_line, sha256, stamp, write_result

HERE = Path(__file__).resolve().parent
BASE_COMMIT = "33cbbe1"  # main when issue 18 was taken up
OBJECTS = ("010_potted_meat_can", "004_sugar_box", "006_mustard_bottle")
THREADS = 2
CAPTURE = dict(cameras=5, width=160, height=120, focal=150.0)


# ---- child: one fit, or one breakdown, in the code that PYTHONPATH selects -----------------------
def _child(job: dict) -> dict:
    """Runs in a subprocess. Only APIs that exist in both the base and the new code are used."""
    import torch

    torch.set_num_threads(job["threads"])
    from hoannot.datasets.poses import HandObjectPoses
    from hoannot.datasets.sequence import open_sequence
    from hoannot.fitting.config import load_fit_config
    from hoannot.fitting.optimize import fit_sequence
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    seq = open_sequence(job["seq"])
    cfg = load_fit_config(None, **job["overrides"])
    hand_model = load_hand_model(seq)
    obj = load_sequence_object(seq, max_faces=cfg.object_max_faces)
    init = HandObjectPoses.load(seq.root / "init" / "poses.npz")
    if job["kind"] == "breakdown":
        return _breakdown(seq, init, hand_model, obj, cfg, job["repeats"])
    if cfg.device.startswith("cuda"):  # warm-up (CUDA context, kernels), not timed
        fit_sequence(seq, init, hand_model, obj, cfg.model_copy(update={"iterations": 2, "grasp_iterations": 2,
                     "object_iterations": 2}), None, progress=False)  # fmt: skip
        torch.cuda.synchronize()
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    res = fit_sequence(seq, init, hand_model, obj, cfg, None, progress=False)
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res.poses.save(job["out"])
    return {"seconds": wall, "cpu_seconds": (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime),
            "peak_rss_mb": ru.ru_maxrss / 1024, "config_digest": cfg.digest()}  # fmt: skip


def _breakdown(seq, init, hand_model, obj, cfg, repeats: int) -> dict:
    """Seconds per iteration of each part of the first batch step (see the module docstring)."""
    import torch

    from hoannot.fitting.objective import Objective
    from hoannot.fitting.quality import frame_quality
    from hoannot.fitting.schedule import make_plan
    from hoannot.fitting.steps import free_variables

    dev = torch.device(cfg.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step = next(s for s in make_plan(cfg, len(seq.frames), len(seq.cameras)) if s.kind == "batch")
    frames = [seq.frames[i] for i in step.indices]

    def timed(fn, n=repeats):
        fn()  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t0) / n

    out = {}
    objective = Objective.make(seq, hand_model, obj, cfg)
    io = timed(lambda: objective.observations(seq, frames, 0), 2)
    obs = objective.observations(seq, frames, 0)
    hm, objd = objective.hand_model, objective.obj
    params, groups = free_variables(step, init.select(frames), objective)
    out["model_forward"] = timed(lambda: (params.hand(hm), params.object_vertices(objd.verts)))
    w0 = objective.cfg.weights.model_dump()
    parts = {"render_E_mask_E_dpt": ("mask", "depth"), "E_3D": ("points3d",), "E_phy": ("penetration",),
             "E_joint": ("joint",), "E_tc": ("temporal",), "E_j2d": ("j2d",)}  # fmt: skip
    for name, terms in parts.items():
        if not any(w0[t] > 0 for t in terms) or (name == "E_j2d" and obs.kp_uv is None):
            continue
        part = objective.with_weights(**{k: (w0[k] if k in terms else 0.0) for k in w0})
        fwd = bwd = 0.0
        for i in range(repeats + 1):  # the first is a warm-up
            params.zero_grad(set_to_none=True)
            sync()
            t0 = time.perf_counter()
            loss = part.total(part.energies(params, obs), params)
            sync()
            t1 = time.perf_counter()
            loss.backward()
            sync()
            if i > 0:
                fwd, bwd = fwd + t1 - t0, bwd + time.perf_counter() - t1
        # the model forward (hand, object vertices) runs inside every term's forward: counted once, above
        out[f"{name}_forward"] = max(fwd / repeats - out["model_forward"], 0.0)
        out[f"{name}_backward"] = bwd / repeats
    opt = torch.optim.Adam(groups)
    params.zero_grad(set_to_none=True)
    objective.total(objective.energies(params, obs), params).backward()
    out["adam_step"] = timed(opt.step)
    quality = timed(lambda: frame_quality(objective, params, obs), 2)
    out["quality_pass_per_iteration"] = quality / step.iterations
    out["io_per_iteration"] = io / step.iterations
    full = timed(lambda: (params.zero_grad(set_to_none=True),
                          objective.total(objective.energies(params, obs), params).backward(),
                          opt.step()))  # fmt: skip
    out = {k: round(v, 5) for k, v in out.items()}
    out["iteration_total"] = round(full, 5)
    out["frames"], out["cameras"], out["crop_size"] = len(frames), len(seq.cameras), cfg.crop_size
    return out


# ---- parent ---------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def code_tree(work: Path, commit: str) -> Path:
    """A checkout of ``commit`` (a git worktree in ``work``)."""
    full = git("rev-parse", commit)
    tree = work / f"code_{full[:12]}"
    if not (tree / "hoannot").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), full], cwd=REPO, check=True, capture_output=True)
    return tree


def run_child(code: Path, job: dict, cache: Path) -> dict:
    """One child job with ``code`` first on the path; cached in ``cache`` by job content."""
    key = hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
    hit = cache / f"{key}.json"
    def stamped(res: dict) -> dict:  # when the job ran: the cache file's time (a resumed run reuses it)
        t = dt.datetime.fromtimestamp(hit.stat().st_mtime, dt.timezone.utc)
        return {**res, "measured_at": t.isoformat(timespec="seconds")}

    if hit.is_file() and (job.get("out") is None or Path(job["out"]).is_file()):
        return stamped(json.loads(hit.read_text()))
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(job["threads"]),
           "MKL_NUM_THREADS": str(job["threads"])}  # fmt: skip
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"child failed ({code.name}): {p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    cache.mkdir(parents=True, exist_ok=True)
    hit.write_text(json.dumps(res))
    return stamped(res)


def make_captures(work: Path, objects: list[str], frames: int) -> list[dict]:
    from annotation_accuracy import derive_sequence

    from hoannot.pipeline import run_init, synth_sequence

    hand = SHARED / "hands" / "webxr_generic_hand" / "right.glb"
    caps = []
    for i, name in enumerate(objects):
        multi = work / f"cap_{name}"
        if not (multi / "init" / "poses.npz").is_file():
            log(f"synthesising {name}")
            synth_sequence(multi, str(SHARED / "ycb" / name), str(hand), CAPTURE["cameras"], frames, seed=i, noise=True,
                           width=CAPTURE["width"], height=CAPTURE["height"], focal=CAPTURE["focal"])  # fmt: skip
            run_init(multi, from_gt=True, seed=i)
        single = derive_sequence(multi, work / f"cap_{name}_cam0", ["cam0"])
        caps.append({"object": name, "seed": i, "multi": multi, "single": single,
                     "data_sha256": sha256(multi / "rgb") + sha256(multi / "depth")})  # fmt: skip
    return caps


def score(seq_dir: Path, poses_path: Path) -> dict:
    from annotation_accuracy import Scorer

    from hoannot.datasets.poses import HandObjectPoses

    return Scorer(seq_dir).to_gt(HandObjectPoses.load(poses_path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", default="/tmp/hoannot_speed", help="folder for captures, checkouts and cached fits")
    ap.add_argument("--frames", type=int, default=4, help="frames per capture")
    ap.add_argument("--objects", default=",".join(OBJECTS), help="YCB objects in ../shared, one capture each")
    ap.add_argument("--base", default=BASE_COMMIT, help="the 'before' commit")
    ap.add_argument("--device", default="cpu", help="cpu (before vs after) or cuda (after only, adds 'gpu')")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 frames, 3 iterations, crop 32, one object")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(json.loads(a.child))))
        return
    sys.path.insert(0, str(HERE))
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("speed.py: --device cuda needs a CUDA GPU and a CUDA build of torch; this machine has none "
                 f"(torch {torch.__version__}, torch.cuda.is_available() is False). Run without --device for the CPU run.")
    if not (SHARED / "ycb").is_dir():
        sys.exit(f"speed.py: {SHARED} not found (the captures need the YCB meshes and the WebXR hand)")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    objects = a.objects.split(",")[:1] if a.quick else a.objects.split(",")
    frames = 2 if a.quick else a.frames
    overrides = {"iterations": 3, "grasp_iterations": 3, "object_iterations": 2, "crop_size": 32} if a.quick else {}
    caps = make_captures(work / ("quick" if a.quick else "full"), objects, frames)
    # after: the code under test is the package, so its fits are cached by the hoannot/ tree and
    # commits that change only benchmarks or docs reuse them; before: the base commit
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "hoannot", "pyproject.toml"))
    codes = {"after": REPO} if a.device != "cpu" else {"before": code_tree(work, a.base), "after": REPO}
    tag = {"before": git("rev-parse", a.base), "after": git("rev-parse", "HEAD:hoannot") + ("-dirty" if dirty else "")}
    t_start = time.perf_counter()
    rows, digests = [], set()
    for cap in caps:
        for setting, cams in (("multi_camera", CAPTURE["cameras"]), ("single_camera", 1)):
            seq_dir = cap["multi"] if setting == "multi_camera" else cap["single"]
            row = {"object": cap["object"], "setting": setting, "cameras": cams, "frames": frames}
            for which, code in codes.items():
                out = work / "fits" / f"{cap['object']}_{setting}_{which}_{tag[which][:12]}_{a.device}.npz"
                out.parent.mkdir(parents=True, exist_ok=True)
                job = {"kind": "fit", "seq": str(seq_dir), "out": str(out), "threads": THREADS, "code": tag[which],
                       "overrides": {**overrides, "device": a.device}}  # fmt: skip
                log(f"{cap['object']} {setting} {which}")
                r = run_child(code, job, work / "cache")
                digests.add(r["config_digest"])
                m = score(seq_dir, out)
                row[which] = {"seconds_per_frame": round(r["seconds"] / frames, 3),
                              "cpu_seconds_per_frame": round(r["cpu_seconds"] / frames, 3),
                              "peak_rss_mb": round(r["peak_rss_mb"], 1), "measured_at": r["measured_at"], **m}  # fmt: skip
            if "before" in row:
                b, n = row["before"], row["after"]
                row["speedup"] = round(b["seconds_per_frame"] / n["seconds_per_frame"], 2)
                row["speedup_cpu_time"] = round(b["cpu_seconds_per_frame"] / n["cpu_seconds_per_frame"], 2)
                row["hand_mpjpe_delta_mm"] = round(n["hand_mpjpe_mm"] - b["hand_mpjpe_mm"], 2)
                row["object_add_delta_mm"] = round(n["object_add_mm"] - b["object_add_mm"], 2)
            rows.append(row)
    log("breakdown")
    bjob = {"kind": "breakdown", "seq": str(caps[0]["multi"]), "threads": THREADS, "repeats": 3,
            "overrides": {**overrides, "device": a.device}}  # fmt: skip
    breakdown = {which: run_child(code, {**bjob, "code": tag[which]}, work / "cache") for which, code in codes.items()}
    after_multi = [r for r in rows if r["setting"] == "multi_camera"]
    fcps = float(np.mean([CAPTURE["cameras"] / r["after"]["seconds_per_frame"] for r in after_multi]))
    from hoannot.fitting.config import FitConfig

    cfg = FitConfig(**{k: v for k, v in overrides.items()})
    meta = {**stamp(__file__, config_digest=",".join(sorted(digests)), data={"hand": SHARED / "hands" / "webxr_generic_hand"}),
            "base_commit": git("rev-parse", a.base), "code_tree": {k: v for k, v in tag.items()},
            "config_digests": sorted(digests), "settings": {"defaults": "FitConfig()", "overrides": overrides},
            "captures_data_sha256": {c["object"]: c["data_sha256"] for c in caps},
            "hand": "webxr_generic_hand/right.glb", "frames": frames, **CAPTURE, "threads": THREADS,
            "wall_minutes": round((time.perf_counter() - t_start) / 60, 1), "crop_size": cfg.crop_size,
            "iterations": cfg.iterations}  # fmt: skip
    path = work / "speed_quick.json" if a.quick else RESULTS / "speed.json"
    if a.device != "cpu":
        res = json.loads(path.read_text()) if path.is_file() else {}
        res["gpu"] = {**meta, "device": torch.cuda.get_device_name(0), "rows": rows, "breakdown": breakdown["after"],
                      "frame_camera_per_s": round(fcps, 3)}  # fmt: skip
    else:
        sm = [r["speedup"] for r in rows if r["setting"] == "multi_camera"]
        ss = [r["speedup"] for r in rows if r["setting"] == "single_camera"]
        prev = json.loads(path.read_text()).get("gpu") if path.is_file() else None
        res = {**meta, "captures": len(caps), "rows": rows,
               "speedup_multi_camera": min(sm), "speedup_single_camera": min(ss),
               "speedup_multi_camera_per_capture": sm, "speedup_single_camera_per_capture": ss,
               "hand_mpjpe_delta_mm": max(r["hand_mpjpe_delta_mm"] for r in rows),
               "object_add_delta_mm": max(r["object_add_delta_mm"] for r in rows),
               "breakdown_before": breakdown["before"], "breakdown_after": breakdown["after"],
               "frame_camera_per_s": round(fcps, 3), "gpu": prev}  # fmt: skip
    write_result(path, res, markdown(res))
    log(f"wrote {path}")
    print(path.with_suffix(".md").read_text())


def markdown(res: dict) -> str:
    """The report of speed.json."""
    when = {w: sorted(r[w]["measured_at"] for r in res["rows"]) for w in ("before", "after")}
    L = ["# Fit speed, before and after (`benchmarks/speed.py`)", "",
         f"Made by `{res['command']}` on {res['date']}, {machine_line(res)}, {res['threads']} torch "
         f"threads per fit; before = `{str(res['base_commit'])[:12]}`, after = "
         f"`{res['git_commit'][:12]}`; config digests {', '.join(res['config_digests'])}; {res['wall_minutes']} min. "
         "Raw numbers: `speed.json`. The run is resumable and reuses a fit measured earlier with the same code and "
         f"settings: the before fits ran {when['before'][0]} to {when['before'][-1]}, the after fits "
         f"{when['after'][0]} to {when['after'][-1]}, one at a time on the same machine.", "",
         f"Captures: the WebXR hand holding a scanned YCB object, {res['cameras']} cameras, {res['frames']} frames, "
         f"{res['width']}x{res['height']} px (focal {res['focal']:g}), depth noise on, ground-truth segmentation, "
         "ground truth + noise initialisation. Every fit at the **default** FitConfig "
         f"(crop {res['crop_size']} px, {res['iterations']} iterations, exact E_3D); one fit at a time, each in its own "
         "process. Speed-up = before / after seconds per frame (wall clock; CPU time in brackets). Deltas = after - "
         "before (mm).", "",
         "| object | setting | before s/frame | after s/frame | speed-up | hand MPJPE before / after (mm) | "
         "object ADD before / after (mm) | delta hand / object (mm) |",
         "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["rows"]:
        b, n = r["before"], r["after"]
        L.append(f"| {r['object']} | {r['setting'].replace('_', '-')} ({r['cameras']} cam) | {b['seconds_per_frame']:.1f} | "
                 f"{n['seconds_per_frame']:.2f} | **{r['speedup']:.1f}x** ({r['speedup_cpu_time']:.1f}x) | "
                 f"{b['hand_mpjpe_mm']:.2f} / {n['hand_mpjpe_mm']:.2f} | {b['object_add_mm']:.2f} / {n['object_add_mm']:.2f} | "
                 f"{r['hand_mpjpe_delta_mm']:+.2f} / {r['object_add_delta_mm']:+.2f} |")  # fmt: skip
    L += ["", f"Worst capture: multi-camera speed-up {res['speedup_multi_camera']:.1f}x (target 10x), single-camera "
          f"{res['speedup_single_camera']:.1f}x (target 5x); accuracy delta hand {res['hand_mpjpe_delta_mm']:+.2f} mm "
          f"(limit +0.3), object {res['object_add_delta_mm']:+.2f} mm (limit +0.2). After: "
          f"{res['frame_camera_per_s']:.2f} frame-cameras per second with {res['cameras']} cameras on the CPU.", "",
          "## Where an iteration's time goes (first capture, multi-camera batch step)", "",
          "Seconds per iteration of each part, each timed on its own (forward and backward of one term with the "
          "others switched off, model forward subtracted); the quality pass and the observation loading run once "
          "per step and are divided by its iterations.", "",
          "| part | before (s) | after (s) | ratio |", "|---|---|---|---|"]  # fmt: skip
    bb, ba = res["breakdown_before"], res["breakdown_after"]
    for k in bb:
        if k in ("frames", "cameras", "crop_size"):
            continue
        if isinstance(bb[k], (int, float)) and k in ba:
            ratio = f"{bb[k] / ba[k]:.1f}x" if ba[k] > 0 else "-"
            L.append(f"| {k.replace('_', ' ')} | {bb[k]:.4f} | {ba[k]:.4f} | {ratio} |")
    def top(b: dict) -> str:
        parts = {k: v for k, v in b.items()
                 if isinstance(v, (int, float)) and k not in ("frames", "cameras", "crop_size", "iteration_total")}
        tot = sum(parts.values())
        best = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{k.replace('_', ' ')} {100 * v / tot:.0f} %" for k, v in best)

    L += ["", f"What dominates, as shares of the sum of the parts: before: {top(bb)}; after: {top(ba)}.", "",
          "Why. Before, PyTorch3D's CPU rasterizer tested every face against every pixel (its coarse-to-fine "
          "binning exists only on CUDA), twice per iteration (the hard pass for depth and labels, the soft pass "
          "for silhouettes) for every frame x camera view, and E_3D computed the distance of every observed point "
          "to every triangle of its mesh (1500 points x 2000 hand faces per frame). After, the binned rasterizer "
          "tests each face only against the pixels of its own bounding box, for all views at once, finds both "
          "passes in one enumeration and keeps no fragment behind a pixel's nearest covering face; E_3D asks a "
          "BVH (Embree) for each point's closest triangle and differentiates the distance to that one. What "
          "remains is the rasterizer's vectorised candidate tests and sort, and the autograd backward of the "
          "recomputed fragments."]  # fmt: skip
    g = res.get("gpu")
    L += ["", "## GPU", ""]
    if g:
        L += [f"`{g['command']}` on {g['device']} ({g['date']}, commit `{g['git_commit'][:12]}`): "
              f"{g['frame_camera_per_s']:.2f} frame-cameras per second; iteration {g['breakdown']['iteration_total']:.4f} s."]
    else:
        L += ["Not measured yet: no GPU has been lent to a session since this benchmark exists. "
              "`python benchmarks/speed.py --device cuda` adds it."]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
