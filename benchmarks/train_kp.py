"""Train variants of the 2D-joint network (CPM) at once on a pool of hand crops, e.g. on a lent GPU.

The pool is rendered beforehand on any machine (``--render N``: synthetic composites of the
open hand with the training objects, cut to hand crops by
:func:`hoannot.annotate.training.hand_crops`, RGB stored as JPEG so that ~10k crops fit in
~40 MB), then each variant trains in its own process on the same device, with its own
data-loading workers, for ``--minutes`` (the cosine decay follows the time used). Weights
go to ``OUT/kp_<variant>.pt`` (with their config and hash); the training checkpoint next to
them resumes a cut run. ``OUT/train_kp.json`` records what each variant did; choose among
them with ``python benchmarks/perception.py --eval-only``-style scoring on held-out views.

    python benchmarks/train_kp.py --render 9000 --pool kpdata/crops.npz          # CPU, ~10 min on 2 cores
    python benchmarks/train_kp.py --pool kpdata/crops.npz --out OUT --device cuda --minutes 7
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
    from hoannot.synthesis.training_renders import load_pool

    torch.backends.cudnn.benchmark = True
    pool = load_pool(pool_path)
    info = train_keypoints(out / f"kp_{name}.pt", pool=pool, progress=False, steps=10**7, max_minutes=minutes,
                           device=device, workers=workers, seed=seed, joint_box_prob=0.5, batchnorm=True,
                           refine_passes=1, **VARIANTS[name])  # fmt: skip
    info.pop("losses")
    return info


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
    args = ap.parse_args()
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
