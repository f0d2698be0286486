"""Benchmark a trained baseline (or a user's estimator) on test sequences.

Metrics (from :mod:`hoannot.evaluation.metrics`, camera frame, 21 HO-3D keypoints):
MPJPE, PA-MPJPE (mm), PCK AUC over 0-50 mm (HO-3D), the max-error success-rate curve
(NYU/ICVL protocol; PNG), the fraction of frames with max error <= 40 mm, inference
milliseconds per frame; object error when the method predicts it (object-centre error in
mm, and object ADD in mm from Procrustes on predicted bounding-box corners).

A user estimator ``"module:function"`` is called as ``function(batch) -> (B, 21, 3)`` with
``batch`` the dict of tensors of :class:`hoannot.baselines.dataset.HandCropDataset` (crop
``depth`` (B, 1, S, S) normalised, ``centre`` (B, 3) m, ``cube`` (B,) m, ``K`` (B, 3, 3),
``T_world_cam`` (B, 4, 4), ...; ground-truth keys are removed) and must return the joints
in the camera frame, metres, HO-3D order. It sees the same crops as the bundled methods.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import DataLoader

from hoannot.baselines.dataset import HandCropDataset, to_camera
from hoannot.baselines.train import load_run, make_dataset
from hoannot.io import InputError, atomic_write, write_json
from hoannot.evaluation import metrics as M

GT_KEYS = ("joints", "joints_uvd", "obj_centre", "obj_centre_uvd", "obj_corners", "joints_cam", "labels")


def load_estimator(spec: str) -> Callable:
    """Import ``"package.module:function"``.

    Raises:
        InputError: malformed spec, module or function not found.
    """
    if ":" not in spec:
        raise InputError(f"--estimator {spec!r}: expected module:function")
    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--estimator {spec!r}: {e}") from None
    return fn


def _object_pose(corners_cam: np.ndarray, corners_rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid (R, t) with ``R c_rest + t ~ c_cam`` (Kabsch via metrics.procrustes, scale dropped)."""
    _, _, R, _ = M.procrustes(corners_rest, corners_cam)
    t = corners_cam.mean(0) - R @ corners_rest.mean(0)
    return R, t


def bench(run_dir: str | Path | None, seq_dirs, out_dir: str | Path | None = None, estimator: str | Callable | None = None,
          overrides: dict[str, Any] | None = None, batch_size: int = 32, crop_size: int = 64, cube_m: float = 0.3) -> dict[str, Any]:
    """Evaluate a run (or an estimator) on test sequences.

    Args:
        run_dir: a folder written by :func:`hoannot.baselines.train.train`; may be None when
            ``estimator`` is given.
        seq_dirs: test sequence folders (labels/labels.npz or gt/poses.npz, see ``dataset``).
        out_dir: where to write ``bench.json`` and ``success_curve.png`` (None: no files).
        estimator: ``"module:function"`` or a callable (module docstring) benchmarked instead
            of the run's model, on crops of the run's settings (or ``crop_size``/``cube_m``).
        overrides: inference settings (e.g. ``{"updates": 0}`` for the feedback loop's
            initial predictor).

    Returns:
        dict: method, frames, mpjpe_mm, pa_mpjpe_mm, auc, success_at_40mm, ms_per_frame,
        success_curve {thresholds_mm, rate}; obj_centre_mm / obj_add_mm when predicted.

    Raises:
        InputError: bad run folder, sequences or estimator spec.
    """
    if run_dir is None and estimator is None:
        raise InputError("bench: give a run folder or an estimator")
    if run_dir is not None:
        mod, model, cfg = load_run(run_dir, overrides)
    else:
        mod, model, cfg = None, None, {"crop_size": crop_size, "cube_m": cube_m, "method": "estimator"}
    fn = load_estimator(estimator) if isinstance(estimator, str) else estimator
    data: HandCropDataset = make_dataset(cfg, seq_dirs, augment=False)
    preds, gts, ocen_err, add_err = [], [], [], []
    t_total = 0.0
    torch.manual_seed(0)
    for batch in DataLoader(data, batch_size=batch_size):
        inputs = {k: v for k, v in batch.items() if k not in GT_KEYS}
        t0 = time.perf_counter()
        if fn is not None:
            joints = torch.as_tensor(fn(inputs), dtype=torch.float32)
            out = {}
        else:
            out = mod.predict(model, inputs, cfg)
            joints = to_camera(out["joints"], batch["centre"], batch["cube"])
        t_total += time.perf_counter() - t0
        if tuple(joints.shape) != (len(batch["depth"]), 21, 3):
            raise InputError(f"bench: estimator returned shape {tuple(joints.shape)}, expected ({len(batch['depth'])}, 21, 3)")
        preds.append(joints.numpy())
        gts.append(batch["joints_cam"].numpy())
        if "obj_centre" in out:
            oc = to_camera(out["obj_centre"][:, None], batch["centre"], batch["cube"])[:, 0]
            gt_oc = to_camera(batch["obj_centre"][:, None], batch["centre"], batch["cube"])[:, 0]
            ocen_err.append((oc - gt_oc).norm(dim=-1).numpy())
        if "obj_corners" in out:
            pc = to_camera(out["obj_corners"], batch["centre"], batch["cube"]).numpy()
            for i in range(len(pc)):
                it = data.items[int(batch_index(batch, i, data))]
                lab = data.labels[it["seq"]]
                if lab.obj_corners is None or not bool(batch["has_object"][i]):
                    continue
                R, t = _object_pose(pc[i].astype(np.float64), lab.obj_corners.astype(np.float64))
                fi = int(np.nonzero(lab.frames == it["frame"])[0][0])
                T = np.linalg.inv(it["T_world_cam"])
                R_gt = T[:3, :3] @ Rotation.from_rotvec(lab.obj_rot[fi]).as_matrix()
                t_gt = T[:3, :3] @ lab.obj_transl[fi] + T[:3, 3]
                pts = lab.obj_points[:: max(1, len(lab.obj_points) // 2000)]
                add_err.append(float(M.add(R, t, R_gt, t_gt, pts)))
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    errors = M.joint_errors(pred, gt)
    th, rate = M.success_rate_curve(pred, gt)
    res: dict[str, Any] = {
        "method": cfg.get("method"),
        "frames": int(len(pred)),
        "mpjpe_mm": M.mpjpe_mm(pred, gt),
        "pa_mpjpe_mm": M.pa_mpjpe_mm(pred, gt),
        "auc": M.pck_auc(errors),
        "success_at_40mm": float(np.mean(errors.max(1) <= 0.04)),
        "ms_per_frame": 1000.0 * t_total / len(pred),
        "success_curve": {"thresholds_mm": (th * 1000).tolist(), "rate": rate.tolist()},
    }
    if ocen_err:
        res["obj_centre_mm"] = float(np.concatenate(ocen_err).mean() * 1000)
    if add_err:
        res["obj_add_mm"] = float(np.mean(add_err) * 1000)
    if overrides:
        res["overrides"] = dict(overrides)
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "bench.json", res)
        _plot_success(out / "success_curve.png", th, rate, str(res["method"]))
    return res


def batch_index(batch: dict, i: int, data: HandCropDataset) -> int:
    """Dataset index of batch element ``i`` (looked up by (seq, cam, frame))."""
    key = (int(batch["seq"][i]), int(batch["cam"][i]), int(batch["frame"][i]))
    if not hasattr(data, "_index"):
        data._index = {(it["seq"], it["cam"], it["frame"]): j for j, it in enumerate(data.items)}
    return data._index[key]


def _plot_success(path: Path, th: np.ndarray, rate: np.ndarray, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(th * 1000, rate, lw=2, label=label)
    ax.set(xlabel="max joint error threshold (mm)", ylabel="fraction of frames", ylim=(0, 1.01), title="Success rate (max error)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def mean_pose_mpjpe_mm(train_dirs, test_dirs, crop_size: int = 64, cube_m: float = 0.3) -> float:
    """MPJPE (mm) of predicting the mean training pose (normalised, crop-relative) on every test crop."""
    cfg = {"crop_size": crop_size, "cube_m": cube_m}
    tr = make_dataset(cfg, train_dirs, augment=False)
    te = make_dataset(cfg, test_dirs, augment=False)
    mean = tr.all_joints().mean(0)
    gt = te.all_joints()
    return M.mpjpe_mm(np.broadcast_to(mean, gt.shape) * 0.5 * cube_m, gt * 0.5 * cube_m)
