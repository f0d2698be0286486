"""Perception benchmark: train DeepLabV3+ and the CPM briefly on CPU, test on held-out data.

Training data: composites of hoannot's open hand with the YCB training objects
(``TRAIN_YCB``: 003_cracker_box, 004_sugar_box, 010_potted_meat_can) and primitives.
Held-out test set: the WebXR glTF hand (never used in training) with the held-out YCB
objects (``TEST_YCB``: 006_mustard_bottle, 011_banana), rendered at 320x240.

Metrics: ``seg_iou_hand`` / ``seg_iou_object`` (intersection over union accumulated
over all test pixels), ``kp_pck_10px`` (fraction of visible joints within 10 px at
320x240, crops from the *predicted* hand mask; ``kp_pck_10px_gt_mask`` with the
ground-truth mask), ``train_minutes`` (rendering + both trainings), per-frame inference
times. The real photo (../shared/data/real_frames, a hand on a mustard bottle) is
segmented and its joints detected (overlays in ``benchmarks/results/``); its segmentation
is scored against an eye-checked reference mask (:data:`REFERENCE`): the gap from
synthetic training to a real image.
``hand_mpjpe_mm`` / ``object_add_mm`` (fit from this initialisation) are left null here;
``benchmarks/init_fit.py`` fills them in with the weights this script trains.

When the optional MediaPipe Hands detector is installed (``pip install "hoannot[mediapipe]"``),
it is scored on the same test views and masks (``kp_pck_10px_mediapipe``, ``..._gt_mask``,
``kp_mediapipe_ms_per_frame``) and run on the real photo too. ``--jobs 2`` trains the
networks two at a time in one-thread processes (their minutes then share the 2 cores). ``--eval-only`` scores the
weights already in ``--work`` (their training record comes from the weights' sidecars).

With ``--minutes-rgbd`` > 0 the RGB-D variant of the segmentation network (depth as a 4th
channel) is trained too, on the same pool, and scored on the same test views
(``seg_iou_*_rgbd``; ``kp_pck_10px_rgbd_mask``: the CPM on crops from its masks).

Usage::

    python benchmarks/perception.py [--work /tmp/hoannot_perception] [--minutes-seg 5] [--minutes-kp 5]
        [--minutes-rgbd 0] [--train-samples 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from harness import REPO as ROOT
from harness import RESULTS, SHARED, stamp, write_result

from hoannot.annotate.keypoints import detect_keypoints, load_keypoints
from hoannot.annotate.perception import draw_overlay
from hoannot.annotate.segmentation import load_segmentation, segment
from hoannot.annotate.training import train_keypoints, train_segmentation
from hoannot.synthesis.training_assets import TEST_YCB, default_objects
from hoannot.synthesis.training_renders import load_pool, render_pool, save_pool
from hoannot.io import InputError, read_image, write_image

#: Eye-checked labels of the real photo (0 background, 1 hand and forearm, 2 bottle): skin and
#: yellow colour thresholds in HSV, largest skin component, holes filled, then checked by eye
#: on its overlay (written as ``benchmarks/results/perception_real_reference.png``; boundaries
#: good to a few px). The photo itself is HOnnotate's (GPL-3.0, see ../shared).
REFERENCE = ROOT / "benchmarks" / "data" / "honnotate_00002_reference_label.png"


def _add_iou(inter: np.ndarray, union: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> None:
    """Accumulate per-class (1 hand, 2 object) intersection and union pixel counts in place."""
    for c in (1, 2):
        inter[c] += ((pred == c) & (gt == c)).sum()
        union[c] += ((pred == c) | (gt == c)).sum()


def _hits(uv: np.ndarray, uv_gt: np.ndarray, visible: np.ndarray, px: float = 10.0) -> int:
    """Visible joints detected within ``px`` pixels; (21, 2) px each (NaN = no detection)."""
    err = np.linalg.norm(uv - uv_gt, axis=1)
    return int((np.nan_to_num(err, nan=np.inf)[visible] < px).sum())


def _train(name: str, work: str, pool_path: str, kw: dict, pool: dict | None = None) -> dict:
    """Train one network (``seg``, ``kp`` or ``seg_rgbd``) into ``work`` on the cached pool."""
    torch.set_num_threads(1)
    pool = pool if pool is not None else load_pool(pool_path)
    if name == "kp":
        r = train_keypoints(Path(work) / "keypoints.pt", pool=pool, batch_size=16, progress=False, **kw)
    else:
        r = train_segmentation(Path(work) / f"segmentation{'_rgbd' if name == 'seg_rgbd' else ''}.pt", pool=pool,
                               batch_size=8, rgbd=name == "seg_rgbd", progress=False, **kw)  # fmt: skip
    return {k: v for k, v in r.items() if k != "losses"}


def _record(path: Path) -> dict:
    """Training record of saved weights (``--eval-only``), from their ``.pt.json`` sidecar."""
    side = json.loads(path.with_name(path.name + ".json").read_text())
    meta = side.get("meta", {})
    return {"steps": meta.get("steps"), "first_loss": meta.get("first_loss"), "final_loss": meta.get("final_loss"),
            "minutes": (meta.get("train_seconds") or 0.0) / 60, "sha256": side["sha256"]}  # fmt: skip


def _train_data(pool: dict | None, work: Path) -> dict:
    """What the networks were trained on (from the pool, or with ``--eval-only`` the weights' sidecar)."""
    if pool is not None:
        return {"samples": int(len(pool["rgb"])), "hand": "open (hoannot)",
                "objects": sorted(set(map(str, pool["object"])))}  # fmt: skip
    meta = json.loads((work / "segmentation.pt.json").read_text()).get("meta", {})
    return {"samples": meta.get("samples"), "hand": "open (hoannot)", "objects": meta.get("objects")}


def _mediapipe():
    """The MediaPipe detector, or None when the optional extra is not installed."""
    try:
        from hoannot.annotate.mediapipe_hands import MediaPipeHands

        return MediaPipeHands()
    except InputError as e:
        print(f"mediapipe: skipped ({e})", flush=True)
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/hoannot_perception")
    ap.add_argument("--train-samples", type=int, default=500)
    ap.add_argument("--test-samples", type=int, default=80)
    ap.add_argument("--minutes-seg", type=float, default=5.0)
    ap.add_argument("--minutes-kp", type=float, default=5.0)
    ap.add_argument("--seg-steps", type=int, default=600)
    ap.add_argument("--kp-steps", type=int, default=600)
    ap.add_argument("--minutes-rgbd", type=float, default=0.0, help="RGB-D segmentation variant (0: skip)")
    ap.add_argument("--rgbd-steps", type=int, default=600)
    ap.add_argument("--eval-only", action="store_true", help="score the weights in --work, no training")
    ap.add_argument("--jobs", type=int, default=1, help="networks trained at once, one thread each")
    ap.add_argument("--device", default="cpu", help="torch device for training and inference (cpu, cuda)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the 2 cores are shared: one thread is several times faster here
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ycb = SHARED / "ycb"
    t_start = time.time()

    train_cache = work / f"train_pool_{args.train_samples}.npz"
    pool = None  # --eval-only needs no training views
    if not args.eval_only and train_cache.is_file():
        pool = load_pool(train_cache)
    elif not args.eval_only:
        pool = render_pool(args.train_samples, default_objects(ycb, "train"), hand="open", seed=0, progress=True)
        save_pool(train_cache, pool)
    render_min = (time.time() - t_start) / 60
    if args.eval_only:
        seg, kp = _record(work / "segmentation.pt"), _record(work / "keypoints.pt")
        seg_d = _record(work / "segmentation_rgbd.pt") if (work / "segmentation_rgbd.pt").is_file() else None
        render_min = None
    else:
        dev = args.device
        jobs = [("seg", dict(steps=args.seg_steps, max_minutes=args.minutes_seg, device=dev)),
                ("kp", dict(steps=args.kp_steps, max_minutes=args.minutes_kp, device=dev))]  # fmt: skip
        if args.minutes_rgbd > 0:
            jobs.append(("seg_rgbd", dict(steps=args.rgbd_steps, max_minutes=args.minutes_rgbd, device=dev)))
        if args.jobs <= 1:
            out = {name: _train(name, str(work), str(train_cache), kw, pool) for name, kw in jobs}
        else:  # spawned one-thread processes, each reading the cached pool
            import concurrent.futures as cf
            import multiprocessing as mp

            with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as ex:
                futs = {name: ex.submit(_train, name, str(work), str(train_cache), kw) for name, kw in jobs}
                out = {name: f.result() for name, f in futs.items()}
        seg, kp, seg_d = out["seg"], out["kp"], out.get("seg_rgbd")
        for name, r in out.items():
            print(f"{name}: {r['steps']} steps, loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}, "
                  f"{r['minutes']:.1f} min", flush=True)  # fmt: skip
    if render_min is None:  # --eval-only: keep the recorded rendering time
        old = json.loads((RESULTS / "perception.json").read_text()) if (RESULTS / "perception.json").is_file() else {}
        render_min = old.get("render_minutes") or 0.0
    train_minutes = render_min + (seg["minutes"] + kp["minutes"])

    test_cache = work / f"test_pool_{args.test_samples}.npz"
    if test_cache.is_file():
        test = load_pool(test_cache)
    else:
        test = render_pool(args.test_samples, [str(ycb / n) for n in TEST_YCB],
                           hand=str(SHARED / "hands" / "webxr_generic_hand" / "right.glb"), seed=12345)  # fmt: skip
        save_pool(test_cache, test)

    seg_model = load_segmentation(work / "segmentation.pt", args.device)
    kp_model = load_keypoints(work / "keypoints.pt", args.device)
    seg_model_d = load_segmentation(work / "segmentation_rgbd.pt", args.device) if seg_d is not None else None
    mp_model = _mediapipe()
    hits_mp = hits_mp_gt = 0
    t_mp = 0.0
    inter_d, union_d, hits_d = np.zeros(3), np.zeros(3), 0
    warm = test["rgb"][0]
    detect_keypoints(kp_model, warm, segment(seg_model, warm) >= 0)  # first calls pay one-off set-up costs
    inter, union = np.zeros(3), np.zeros(3)
    hits = hits_gt = n_vis = 0
    t_seg = t_kp = 0.0
    for i in range(len(test["rgb"])):
        rgb, gt = test["rgb"][i], test["label"][i]
        t = time.perf_counter()
        pred = segment(seg_model, rgb)
        t_seg += time.perf_counter() - t
        _add_iou(inter, union, pred, gt)
        t = time.perf_counter()
        uv, conf = detect_keypoints(kp_model, rgb, pred == 1)
        t_kp += time.perf_counter() - t
        uv_g, _ = detect_keypoints(kp_model, rgb, gt == 1)
        vis = test["visible"][i]
        if seg_model_d is not None:
            pred_d = segment(seg_model_d, rgb, test["depth"][i])
            _add_iou(inter_d, union_d, pred_d, gt)
            hits_d += _hits(detect_keypoints(kp_model, rgb, pred_d == 1)[0], test["uv"][i], vis)
        if mp_model is not None:
            t = time.perf_counter()
            uv_mp, conf_mp = mp_model.detect(rgb, pred == 1)
            t_mp += time.perf_counter() - t
            hits_mp += _hits(uv_mp, test["uv"][i], vis)
            hits_mp_gt += _hits(mp_model.detect(rgb, gt == 1)[0], test["uv"][i], vis)
            if i < 4:
                write_image(RESULTS / f"perception_test_{i}_mediapipe.png", draw_overlay(rgb, pred, uv_mp, conf_mp))
        hits += _hits(uv, test["uv"][i], vis)
        hits_gt += _hits(uv_g, test["uv"][i], vis)
        n_vis += int(vis.sum())
        if i < 4:
            write_image(RESULTS / f"perception_test_{i}.png", draw_overlay(rgb, pred, uv, conf))
    n = len(test["rgb"])
    iou = inter / np.maximum(union, 1)

    # the real photo: a hand on a mustard bottle (no reference mask)
    real = SHARED / "real_frames" / "honnotate_teaser" / "honnotate_00002_image.png"
    real_note = None
    if real.is_file():
        img = read_image(real)[..., :3]
        lab = segment(seg_model, img)
        uv, conf = detect_keypoints(kp_model, img, lab == 1)
        write_image(RESULTS / "perception_real_overlay.png", draw_overlay(img, lab, uv, conf))
        if mp_model is not None:
            uv_mp, conf_mp = mp_model.detect(img, lab == 1)
            write_image(RESULTS / "perception_real_overlay_mediapipe.png", draw_overlay(img, lab, uv_mp, conf_mp))
        ref = read_image(REFERENCE)
        write_image(RESULTS / "perception_real_reference.png", draw_overlay(img, ref, None))
        inter_r, union_r = np.zeros(3), np.zeros(3)
        _add_iou(inter_r, union_r, lab, ref)
        real_note = {"image": str(real.relative_to(ROOT.parent)), "hand_px": int((lab == 1).sum()),
                     "object_px": int((lab == 2).sum()), "mean_confidence": float(np.mean(conf)),
                     "overlay": "benchmarks/results/perception_real_overlay.png",
                     "reference_mask": str(REFERENCE.relative_to(ROOT)),
                     "seg_iou_hand": round(float(inter_r[1] / union_r[1]), 4),
                     "seg_iou_object": round(float(inter_r[2] / union_r[2]), 4)}  # fmt: skip

    result = {
        **stamp(__file__),
        "device": "cpu (2 shared cores)" if args.device == "cpu" else args.device,
        "jobs": args.jobs,
        "train_data": _train_data(pool, work),
        "test_data": {"samples": int(n), "hand": "webxr_generic_hand (held out)", "objects": list(TEST_YCB),
                      "size": [320, 240]},
        "seg_iou_hand": round(float(iou[1]), 4),
        "seg_iou_object": round(float(iou[2]), 4),
        "seg_miou_hand_object": round(float(iou[1:].mean()), 4),
        "kp_pck_10px": round(hits / max(n_vis, 1), 4),
        "kp_pck_10px_gt_mask": round(hits_gt / max(n_vis, 1), 4),
        "train_minutes": round(train_minutes, 2),
        **({} if mp_model is None else {
            "kp_pck_10px_mediapipe": round(hits_mp / max(n_vis, 1), 4),
            "kp_pck_10px_mediapipe_gt_mask": round(hits_mp_gt / max(n_vis, 1), 4),
            "kp_mediapipe_ms_per_frame": round(1000 * t_mp / n, 1),
            "kp_mediapipe_sha256": mp_model.sha256,
        }),
        **({} if seg_d is None else {
            "seg_iou_hand_rgbd": round(float(inter_d[1] / max(union_d[1], 1)), 4),
            "seg_iou_object_rgbd": round(float(inter_d[2] / max(union_d[2], 1)), 4),
            "kp_pck_10px_rgbd_mask": round(hits_d / max(n_vis, 1), 4),
            "seg_rgbd_train": {"steps": seg_d["steps"], "first_loss": seg_d["first_loss"],
                               "final_loss": seg_d["final_loss"], "minutes": round(seg_d["minutes"], 2),
                               "sha256": seg_d["sha256"]},
        }),
        "render_minutes": round(render_min, 2),
        "seg_train": {"steps": seg["steps"], "first_loss": seg["first_loss"], "final_loss": seg["final_loss"],
                      "minutes": round(seg["minutes"], 2), "sha256": seg["sha256"]},
        "kp_train": {"steps": kp["steps"], "first_loss": kp["first_loss"], "final_loss": kp["final_loss"],
                     "minutes": round(kp["minutes"], 2), "sha256": kp["sha256"]},
        "seg_ms_per_frame": round(1000 * t_seg / n, 1),
        "kp_ms_per_frame": round(1000 * t_kp / n, 1),
        "hand_mpjpe_mm": None,
        "object_add_mm": None,
        "targets": {"seg_iou": 0.85, "kp_pck_10px": 0.9},
        "real_photo": real_note,
        "total_minutes": round((time.time() - t_start) / 60, 2),
    }  # fmt: skip
    write_result("perception", result)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
