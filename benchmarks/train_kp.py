"""Train variants of the 2D-joint network (CPM) at once on a pool of hand crops, e.g. on a lent GPU.

The pool is rendered beforehand on any machine (``--render N``: synthetic composites of the
open hand with the training objects, cut to hand crops by
:func:`hoannot.annotate.training.hand_crops`, RGB stored as JPEG so that ~10k crops fit in
~40 MB), then each variant trains in its own process on the same device, with its own
data-loading workers, for ``--minutes`` (the cosine decay follows the time used). Weights
go to ``OUT/kp_<variant>.pt`` (with their config and hash); the training checkpoint next to
them resumes a cut run. ``OUT/train_kp.json`` records what each variant did; choose among
them with ``--score``.

``--score RUN`` (CPU, needs ../shared) scores the shipped weights and each ``RUN/kp_*.pt`` on
held-out views (the WebXR hand, never trained on, holding the held-out YCB objects, 320x240;
crops from the ground-truth masks): PCK@10px and @5px, median error, ms per view; with
``--fit-captures`` it also runs ``init --auto`` then ``fit`` (``auto_annotation.run_one``) on
those captures of ``benchmarks/auto_annotation.py`` once per weights file (``$HOANNOT_CACHE``
pointing at it), to see what the joints buy the fitted hand. Writes
``benchmarks/results/train_kp.{json,md}``.

    python benchmarks/train_kp.py --render 9000 --pool kpdata/crops.npz          # CPU, ~10 min on 2 cores
    python benchmarks/train_kp.py --pool kpdata/crops.npz --out OUT --device cuda --minutes 7
    python benchmarks/train_kp.py --pool kpdata/crops.npz --score OUT --fit-captures mustard_b cracker_b meat_b

On a lent GPU machine (no registry there; its python has torch, cv2, rich, scipy): carry the
wheels that hoannot's training path imports beyond those (pydantic, pydantic_core,
annotated_types, typing_inspection, typing_extensions, trimesh; ``pip download --no-deps
--python-version 3.12 --platform manylinux2014_x86_64 -d .whl ...``) and the pool, then run
``pip install --no-index --no-deps --target /tmp/site .whl/*.whl; PYTHONPATH=/tmp/site:$PWD
python3 benchmarks/train_kp.py --pool kpdata/crops.npz --out /tmp/kp --device cuda --minutes 7``
and copy ``/tmp/kp/*.pt*`` and ``train_kp.json`` to the returned folder (the ``.ckpt`` files,
31-38 MB with the optimiser state, may exceed what comes back). Render each session's pool with
a new ``--seed``, so that training continued over sessions (variant ``continue``) sees new views.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: network and optimiser settings per variant (fields of KpTrainConfig / KeypointConfig)
VARIANTS: dict[str, dict] = {
    "base": {"width": 48, "stages": 3, "batch_size": 128, "lr": 2e-3},
    "wide": {"width": 96, "stages": 3, "batch_size": 128, "lr": 2e-3},
    "deep": {"width": 64, "stages": 5, "batch_size": 128, "lr": 2e-3},
    # the shipped weights trained further (their stored network config; a lower rate)
    "continue": {"init_weights": "shipped", "batch_size": 128, "lr": 5e-4},
}


def render(n: int, pool_path: Path, seed: int, jobs: int) -> None:
    """Render ``n`` composites in ``jobs`` processes and keep their hand crops (JPEG)."""
    import numpy as np

    from hoannot.synthesis.training_renders import load_pool, save_pool

    parts = [pool_path.with_name(f"{pool_path.stem}.part{j}.npz") for j in range(jobs)]
    procs = [subprocess.Popen([sys.executable, __file__, "--render-part", str(n // jobs + (j < n % jobs)),
                               "--pool", str(p), "--seed", str(seed * 1000 + j)]) for j, p in enumerate(parts)]  # fmt: skip
    if any(p.wait() for p in procs):
        raise SystemExit("train_kp: a rendering process failed")
    pools = [load_pool(p) for p in parts]
    save_pool(pool_path, {k: np.concatenate([p[k] for p in pools]) for k in pools[0]}, jpeg_quality=90)
    for p in parts:
        p.unlink()


def render_part(n: int, out: Path, seed: int, chunk: int = 250) -> None:
    """One rendering process: ``n`` composites in chunks, saved after each (JPEG crops)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from hoannot.annotate.training import hand_crops
    from hoannot.synthesis.training_assets import default_objects
    from hoannot.synthesis.training_renders import render_pool, save_pool

    ycb = REPO.parent / "shared" / "data" / "ycb"
    objects = default_objects(ycb if ycb.is_dir() else None, "train")
    parts = []
    for k in range(0, n, chunk):
        parts.append(hand_crops(render_pool(min(chunk, n - k), objects, seed=seed * 100000 + k)))
    save_pool(out, {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}, jpeg_quality=90)


def train_one(name: str, pool_path: Path, out: Path, device: str, minutes: float, workers: int, seed: int) -> dict:
    """Train variant ``name`` (:data:`VARIANTS`) and return its summary."""
    import torch

    from hoannot.annotate.training import train_keypoints
    from hoannot.annotate.weights import BUNDLED
    from hoannot.synthesis.training_renders import load_pool

    torch.backends.cudnn.benchmark = True
    pool = load_pool(pool_path)
    settings = dict(VARIANTS[name])
    init = settings.pop("init_weights", None)
    net = {} if init else {"batchnorm": True, "refine_passes": 1}  # else the stored config
    info = train_keypoints(out / f"kp_{name}.pt", pool=pool, progress=False, steps=10**7, max_minutes=minutes,
                           device=device, workers=workers, seed=seed, joint_box_prob=0.5,
                           init_weights=BUNDLED / "keypoints.pt" if init == "shipped" else init, **net, **settings)  # fmt: skip
    info.pop("losses")
    return info


def _pck(weights: Path, test: dict) -> dict:
    """PCK of one weights file on the test views (crops from the ground-truth hand masks)."""
    import numpy as np

    from hoannot.annotate.keypoints import detect_keypoints, load_keypoints

    model = load_keypoints(weights)
    detect_keypoints(model, test["rgb"][0], test["label"][0] == 1)  # one-off set-up costs
    errs, t = [], time.perf_counter()
    for i in range(len(test["rgb"])):
        uv, _ = detect_keypoints(model, test["rgb"][i], test["label"][i] == 1)
        errs.append(np.linalg.norm(uv - test["uv"][i], axis=-1)[test["visible"][i]])
    ms = (time.perf_counter() - t) / len(test["rgb"]) * 1000
    e = np.concatenate(errs)
    return {"pck_10px": round(float((e <= 10).mean()), 4), "pck_5px": round(float((e <= 5).mean()), 4),
            "median_px": round(float(np.median(e)), 2), "ms_per_view": round(ms, 1), "joints": int(len(e))}  # fmt: skip


def _fit_one(weights: Path, capture: str, work: Path) -> dict:
    """``init --auto`` + ``fit`` of one capture with ``weights`` as the CPM (a subprocess, one thread)."""
    from harness import package_digest, sha256

    key = f"{package_digest()}-{sha256(weights)}"
    cache = work / "fits" / f"{capture}-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    home = work / "cache" / sha256(weights)
    home.mkdir(parents=True, exist_ok=True)
    for src, dst in ((weights, "keypoints.pt"), (weights.with_name(weights.name + ".json"), "keypoints.pt.json")):
        (home / dst).write_bytes(src.read_bytes())
    cmd = [sys.executable, str(REPO / "benchmarks" / "auto_annotation.py"), "--one", capture, "--variants", "auto",
           "--work", str(work / "auto"), "--run-dir", str(work / "runs" / key / capture), "--threads", "1"]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env={**os.environ, "HOANNOT_CACHE": str(home)}, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"train_kp: the fit of {capture} failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(r))
    return r


def score(run: Path, test_samples: int, captures: list[str], fit_weights: list[str], work: Path, pool: Path) -> None:
    """Score the shipped and ``run``'s weights; write ``benchmarks/results/train_kp``."""
    import concurrent.futures as cf

    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from harness import SHARED, WEBXR_HAND, stamp, write_result

    from hoannot.annotate.weights import BUNDLED
    from hoannot.synthesis.training_assets import TEST_YCB
    from hoannot.synthesis.training_renders import load_pool, render_pool, save_pool

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / f"test_pool_{test_samples}.npz"
    if not cache.is_file():
        save_pool(cache, render_pool(test_samples, [str(SHARED / "ycb" / n) for n in TEST_YCB], hand=str(WEBXR_HAND),
                                     seed=12345))  # fmt: skip
    test = load_pool(cache)
    weights = {"shipped": BUNDLED / "keypoints.pt", **{p.stem[3:]: p for p in sorted(run.glob("kp_*.pt"))}}
    rows = {n: {"weights": str(p), "sha256": json.loads(p.with_name(p.name + ".json").read_text())["sha256"][:16],
                "config": json.loads(p.with_name(p.name + ".json").read_text())["config"],
                "meta": json.loads(p.with_name(p.name + ".json").read_text())["meta"], **_pck(p, test)}
            for n, p in weights.items()}  # fmt: skip
    if captures:
        with cf.ThreadPoolExecutor(2) as ex:  # two one-thread fits at a time on the 2 cores
            futs = {(n, c): ex.submit(_fit_one, weights[n], c, work) for n in fit_weights for c in captures}
            for (n, c), f in futs.items():
                rows[n].setdefault("auto_fit", {})[c] = f.result()
    training = [json.loads(p.read_text()) for p in sorted(run.glob("train_kp*.json"))]
    res = {**stamp(__file__, data={"pool": pool, "webxr_hand": WEBXR_HAND},
                   weights={n: p for n, p in weights.items()}),
           "test_data": {"samples": test_samples, "hand": "webxr_generic_hand (held out)", "objects": list(TEST_YCB),
                         "size": [320, 240], "masks": "ground truth"},
           "training": training, "variants": rows}  # fmt: skip
    write_result("train_kp", res, _markdown(res, captures))


def _markdown(res: dict, captures: list[str]) -> str:
    lines = ["# 2D hand joints (CPM): variants trained on a lent GPU, scored on held-out views", "",
             f"`{res['command']}` at `{res['git_commit']}` ({res['date']}, package digest `{res['package_digest']}`).",
             *[f"Training: `{t.get('command', '?')}` on {t.get('gpu') or t.get('device', '?')} at `{t.get('git_commit', '?')}` "
               f"({t.get('date', '?')}): {', '.join(t.get('variants', {}))} at once, {t.get('workers_per_variant', '?')} "
               "data-loading processes each." for t in res["training"]],
             f"Test: {res['test_data']['samples']} views of the WebXR hand (never trained on) with "
             f"{', '.join(res['test_data']['objects'])}, 320x240, crops from the ground-truth hand masks.", "",
             "| weights | width / stages | steps | train min | MB | PCK@10px | PCK@5px | median px | ms / view (CPU, 1 thread) |"
             + "".join(f" auto fit {c} mm |" for c in captures),
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(captures)]  # fmt: skip
    for n, r in res["variants"].items():
        m, c = r["meta"], r["config"]
        mb = Path(r["weights"]).stat().st_size / 2**20 if Path(r["weights"]).is_file() else float("nan")
        fits = "".join(f" {r.get('auto_fit', {}).get(k, {}).get('fit_hand_mpjpe_mm', '-')} |" for k in captures)
        lines.append(f"| {n} | {c['width']} / {c['stages']} | {m.get('steps')} | {m.get('train_seconds', 0) / 60:.1f} | "
                     f"{mb:.1f} | {r['pck_10px']} | {r['pck_5px']} | {r['median_px']} | {r['ms_per_view']} |{fits}")  # fmt: skip
    lines += ["", "`auto fit`: `init --auto` (grasp search) then `fit` at default settings with these weights as the "
              "CPM (its joints enter the fit's E_j2d), hand MPJPE against the ground truth."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=Path, required=True, help="hand-crop pool (.npz); written by --render")
    ap.add_argument("--render", type=int, default=0, help="render this many composites into --pool, then stop")
    ap.add_argument("--render-part", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=2, help="rendering processes")
    ap.add_argument("--out", type=Path, default=Path("kp_runs"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=5.0, help="training time per variant (all run at once)")
    ap.add_argument("--workers", type=int, default=0, help="data-loading processes per variant (0: cpu count / variants - 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--score", type=Path, default=None, help="score the shipped weights and this run's (a --out folder)")
    ap.add_argument("--test-samples", type=int, default=300)
    ap.add_argument("--fit-captures", nargs="*", default=[], help="auto_annotation.py captures to fit with each weights file")
    ap.add_argument("--fit-weights", nargs="*", default=["shipped"], help="weights (shipped or a variant) fitted with")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hoannot_train_kp"), help="caches of --score")
    args = ap.parse_args()
    if args.score:
        return score(args.score, args.test_samples, args.fit_captures, args.fit_weights, args.work, args.pool)
    if args.render_part:
        return render_part(args.render_part, args.pool, args.seed)
    if args.render:
        return render(args.render, args.pool, args.seed, args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        info = train_one(args.one, args.pool, args.out, args.device, args.minutes, args.workers, args.seed)
        (args.out / f"kp_{args.one}.summary.json").write_text(json.dumps(info, indent=1))
        return
    names = args.variants.split(",")
    workers = args.workers or max(1, (os.cpu_count() or 2) // len(names) - 1)
    t0 = time.time()
    procs = {n: subprocess.Popen([sys.executable, __file__, "--pool", str(args.pool), "--out", str(args.out), "--one", n,
                                  "--device", args.device, "--minutes", str(args.minutes), "--workers", str(workers),
                                  "--seed", str(args.seed)]) for n in names}  # fmt: skip
    codes = {n: p.wait() for n, p in procs.items()}
    result = {"command": " ".join(["python", "benchmarks/train_kp.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": args.device,
              "git_commit": os.environ.get("HOANNOT_COMMIT", "unknown"), "workers_per_variant": workers,
              "wall_seconds": round(time.time() - t0, 1), "variants": {}}  # fmt: skip
    for n in names:
        s = args.out / f"kp_{n}.summary.json"
        result["variants"][n] = {"settings": VARIANTS[n], "exit_code": codes[n],
                                 **(json.loads(s.read_text()) if s.is_file() else {})}  # fmt: skip
    try:
        import torch

        result["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    (args.out / "train_kp.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
