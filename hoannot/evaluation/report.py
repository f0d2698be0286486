"""Evaluate predicted labels against ground truth: one metrics dict, metrics.json and plots.

Input schema (the same for prediction and ground truth; world or camera frame, as long as both
use the same one), a ``.npz`` with:

- ``frames`` (F,) int64 frame ids;
- ``hand_joints`` (F, 21, 3) float32 metres, HO-3D order;
- optional ``hand_vertices`` (F, V, 3) metres and ``hand_faces`` (Nf, 3) int;
- optional ``obj_rot`` (F, 3) axis-angle object->frame and ``obj_transl`` (F, 3) metres;
- optional ``obj_points`` (N, 3) object model points (model frame, metres), ``obj_faces``
  (No, 3) and ``obj_symmetric`` (bool scalar); taken from whichever file has them (prediction
  first).

A prediction folder resolves to ``<dir>/labels/labels.npz``, else ``<dir>/gt/poses.npz``, else
``<dir>/labels.npz``; a ground-truth folder to ``<dir>/gt/poses.npz`` first, so that one
sequence folder can be both. Frames are matched by id (intersection).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from hoannot.datasets.conventions import HO3D_JOINT_NAMES
from hoannot.io import InputError, json_bytes, write_files
from hoannot.evaluation import metrics as M
from hoannot.evaluation import physics as P

METRIC_KEYS: tuple[str, ...] = (
    "mpjpe_mm", "rr_mpjpe_mm", "st_mpjpe_mm", "pa_mpjpe_mm", "auc_0_50mm",
    "f5", "f15", "mesh_error_mm",
    "add_mm", "adds_mm", "add_pass_rate", "mssd_mm",
    "penetration_mm", "intersection_volume_cm3", "contact_rate",
    "frames", "per_joint_mpjpe_mm",
)  # fmt: skip

_CANDIDATES = ("labels/labels.npz", "labels.npz")  # a prediction is never read from gt/
_GT_CANDIDATES = ("gt/poses.npz", "labels/labels.npz", "labels.npz")


def resolve_labels(path: str | os.PathLike, ground_truth: bool = False) -> Path:
    """The label file of ``path`` (a ``.npz`` file or a folder, see module docstring).

    Args:
        ground_truth: look for ``gt/poses.npz`` first.

    Raises:
        InputError: nothing found.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        candidates = _GT_CANDIDATES if ground_truth else _CANDIDATES
        for c in candidates:
            if (path / c).is_file():
                return path / c
        raise InputError(f"{path}: no {', '.join(candidates)} in this folder")
    raise InputError(f"{path}: no such file or folder")


def load_labels(path: str | os.PathLike, ground_truth: bool = False) -> dict[str, np.ndarray]:
    """Read and check a label file (schema in the module docstring; ``ground_truth`` as in
    :func:`resolve_labels`).

    Returns:
        dict of arrays (float64 for coordinates), always with ``frames`` and ``hand_joints``.

    Raises:
        InputError: unreadable file, missing array or inconsistent shapes.
    """
    f = resolve_labels(path, ground_truth)
    try:
        with np.load(f, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any reader failure is bad input
        raise InputError(f"{f}: unreadable npz ({type(e).__name__}: {e})".splitlines()[0]) from None
    for k in ("frames", "hand_joints"):
        if k not in d:
            raise InputError(f"{f}: missing array '{k}'")
    out: dict[str, Any] = {"path": f, "frames": np.asarray(d["frames"]).astype(np.int64).reshape(-1)}
    F = len(out["frames"])
    if len(np.unique(out["frames"])) != F:
        raise InputError(f"{f}: duplicate frame ids")

    def per_frame(name: str, tail: tuple[int | None, ...]) -> None:
        if name not in d:
            return
        a = np.asarray(d[name], dtype=np.float64)
        if a.ndim != 1 + len(tail) or a.shape[0] != F or any(t is not None and s != t for s, t in zip(a.shape[1:], tail)):
            want = "(" + ", ".join(["F=%d" % F] + ["V" if t is None else str(t) for t in tail]) + ")"
            raise InputError(f"{f}: '{name}' has shape {a.shape}, expected {want}")
        out[name] = a

    per_frame("hand_joints", (21, 3))
    per_frame("hand_vertices", (None, 3))
    if "hand_vertices" in out and out["hand_vertices"].shape[1] == 0:  # (F, 0, 3): no mesh (HO-3D, DexYCB joints only)
        del out["hand_vertices"]
    per_frame("obj_rot", (3,))
    per_frame("obj_transl", (3,))
    for name, cols, dtype in (("hand_faces", 3, np.int64), ("obj_points", 3, np.float64), ("obj_faces", 3, np.int64)):
        if name in d:
            a = np.asarray(d[name]).astype(dtype)
            if a.ndim != 2 or a.shape[1] != cols:
                raise InputError(f"{f}: '{name}' has shape {a.shape}, expected (N, {cols})")
            out[name] = a
    if "obj_symmetric" in d:
        out["obj_symmetric"] = bool(np.asarray(d["obj_symmetric"]).reshape(-1)[0])
    if ("obj_rot" in out) != ("obj_transl" in out):
        raise InputError(f"{f}: 'obj_rot' and 'obj_transl' must come together")
    return out


def _select(labels: dict, frames: np.ndarray) -> dict:
    index = {int(fr): i for i, fr in enumerate(labels["frames"])}
    idx = np.array([index[int(fr)] for fr in frames], dtype=np.int64)
    out = dict(labels)
    for k in ("frames", "hand_joints", "hand_vertices", "obj_rot", "obj_transl"):
        if k in labels:
            out[k] = labels[k][idx]
    return out


def _first(key: str, *dicts: dict) -> Any:
    for d in dicts:
        if key in d:
            return d[key]
    return None


def run_eval(pred: str | os.PathLike, gt: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Compare predicted labels with ground truth on their common frames.

    Hand metrics (HO-3D protocol, :mod:`hoannot.evaluation.metrics`) on ``hand_joints``; mesh
    metrics on ``hand_vertices`` when both files have them (F-scores after Procrustes alignment of
    the vertices if both meshes have the same vertex count, else after the similarity transform
    that aligns the joints); object metrics when both files have an object pose and one has
    ``obj_points``; physics metrics on the *prediction's* hand mesh and object pose when faces of
    both meshes are available. Values that cannot be computed are None.

    Args:
        pred, gt: ``.npz`` files or folders (see module docstring).
        out_dir: when given, ``metrics.json``, ``pck.png`` and ``per_joint.png`` are written there.

    Returns:
        dict with exactly the keys of :data:`METRIC_KEYS`: ``*_mm`` in millimetres, ``auc_0_50mm``
        (PCK AUC over 0-50 mm of the Procrustes-aligned joint errors),
        ``f5``, ``f15``, ``add_pass_rate``, ``contact_rate`` as fractions in [0, 1],
        ``intersection_volume_cm3`` in cm^3 (means over frames; penetration = mean of the per-frame
        maximum), ``frames`` (int, number of evaluated frames), ``per_joint_mpjpe_mm`` (list of 21).

    Raises:
        InputError: unreadable inputs, no frame in common (with ground-truth hand joints: frames
            whose ground-truth joints are NaN are not scored), or a prediction that is the
            ground-truth file itself (a folder without ``labels/`` has no prediction).
        OSError: ``out_dir``'s files could not be written (names the file); then none of the
            three changed.
    """
    p_all, g_all = load_labels(pred), load_labels(gt, ground_truth=True)
    if Path(p_all["path"]).resolve() == Path(g_all["path"]).resolve():
        raise InputError(f"{p_all['path']}: the prediction is the ground-truth file itself; give fitted labels "
                         "(labels/labels.npz, from `hoannot export`)")  # fmt: skip
    common = np.intersect1d(p_all["frames"], g_all["frames"])
    if not len(common):
        raise InputError(f"{p_all['path']}: no frame id in common with {g_all['path']}")
    # frames without ground-truth hand joints (NaN: HO-3D evaluation frames, DexYCB frames whose
    # labels have no hand) are not scored
    labelled = g_all["frames"][np.isfinite(g_all["hand_joints"]).all(axis=(1, 2))]
    common = common[np.isin(common, labelled)]
    if not len(common):
        raise InputError(f"{g_all['path']}: none of the common frames has ground-truth hand joints")
    p, g = _select(p_all, common), _select(g_all, common)
    res: dict[str, Any] = {k: None for k in METRIC_KEYS}

    pj, gj = p["hand_joints"], g["hand_joints"]
    res["mpjpe_mm"] = M.mpjpe_mm(pj, gj)
    res["rr_mpjpe_mm"] = M.rr_mpjpe_mm(pj, gj)
    res["st_mpjpe_mm"] = M.st_mpjpe_mm(pj, gj)
    pa_joints = M.procrustes_align(pj, gj)
    res["pa_mpjpe_mm"] = M.mpjpe_mm(pa_joints, gj)
    pa_errors = M.joint_errors(pa_joints, gj)  # HO-3D leaderboard pairs the AUC with PA errors
    res["auc_0_50mm"] = M.pck_auc(pa_errors)
    res["per_joint_mpjpe_mm"] = [float(x) for x in M.per_joint_mpjpe_mm(pj, gj)]
    res["frames"] = int(len(common))

    if "hand_vertices" in p and "hand_vertices" in g:
        pv, gv = p["hand_vertices"], g["hand_vertices"]
        same = pv.shape[1] == gv.shape[1]
        f5, f15 = [], []
        for i in range(len(common)):
            if same:
                aligned = M.procrustes(pv[i], gv[i])[0]
            else:
                _, s, R, t = M.procrustes(pj[i], gj[i])
                aligned = s * pv[i] @ R.T + t
            f5.append(M.f_score(aligned, gv[i], 0.005)[0])
            f15.append(M.f_score(aligned, gv[i], 0.015)[0])
        res["f5"], res["f15"] = float(np.mean(f5)), float(np.mean(f15))
        if same:
            res["mesh_error_mm"] = M.mesh_error_mm(pv, gv)

    points = _first("obj_points", p, g)
    if "obj_rot" in g:  # object metrics on the frames with a ground-truth object pose
        has_obj = np.isfinite(g["obj_rot"]).all(1) & np.isfinite(g["obj_transl"]).all(1)
        if not has_obj.all():
            p, g, common = _select(p, common[has_obj]), _select(g, common[has_obj]), common[has_obj]
    if points is not None and "obj_rot" in p and "obj_rot" in g and len(common):
        Rp = Rotation.from_rotvec(p["obj_rot"]).as_matrix()
        Rg = Rotation.from_rotvec(g["obj_rot"]).as_matrix()
        tp, tg = p["obj_transl"], g["obj_transl"]
        e_add = M.add(Rp, tp, Rg, tg, points)
        e_adds = M.adds(Rp, tp, Rg, tg, points)
        symmetric = bool(_first("obj_symmetric", p, g) or False)
        res["add_mm"] = float(e_add.mean() * 1000)
        res["adds_mm"] = float(e_adds.mean() * 1000)
        res["add_pass_rate"] = M.pass_rate(e_adds if symmetric else e_add, M.object_diameter(points))
        res["mssd_mm"] = float(M.mssd(Rp, tp, Rg, tg, points).mean() * 1000)

        obj_faces = _first("obj_faces", p, g)
        hand_faces = p.get("hand_faces")
        if hand_faces is None and "hand_vertices" in p and "hand_vertices" in g and p["hand_vertices"].shape[1] == g["hand_vertices"].shape[1]:
            hand_faces = g.get("hand_faces")
        if obj_faces is not None and hand_faces is not None and "hand_vertices" in p:
            pen, vol, con = [], [], []
            for i in range(len(common)):
                h_obj = (p["hand_vertices"][i] - tp[i]) @ Rp[i]  # hand in the object's model frame
                pen.append(P.penetration_depth(h_obj, points, obj_faces))
                vol.append(P.intersection_volume(h_obj, hand_faces, points, obj_faces))
                con.append(P.contact(h_obj, points, obj_faces))
            res["penetration_mm"] = float(np.mean(pen) * 1000)
            res["intersection_volume_cm3"] = float(np.mean(vol) * 1e6)
            res["contact_rate"] = float(np.mean(con))

    if out_dir is not None:
        out = Path(out_dir)
        files = _plots(pa_errors, res["per_joint_mpjpe_mm"])
        files["metrics.json"] = json_bytes(res)
        write_files({out / name: data for name, data in files.items()})  # all three or none
    return res


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _plots(errors: np.ndarray, per_joint_mm: list[float]) -> dict[str, bytes]:
    """``pck.png`` and ``per_joint.png``, as bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    th, pck = M.pck_curve(errors)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(th * 1000, pck, lw=2, label=f"AUC {M.auc(th, pck):.3f}")
    ax.set(xlabel="threshold (mm)", ylabel="PCK", xlim=(0, 50), ylim=(0, 1.01), title="3D PCK (Procrustes aligned)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    files = {"pck.png": _png(fig)}
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(per_joint_mm)), per_joint_mm)
    ax.set_xticks(range(len(per_joint_mm)), HO3D_JOINT_NAMES[: len(per_joint_mm)], rotation=70, fontsize=7)
    ax.set(ylabel="mean error (mm)", title="Per-joint MPJPE (no alignment)")
    fig.tight_layout()
    files["per_joint.png"] = _png(fig)
    plt.close(fig)
    return files


_UNITS = {"_mm": "mm", "_cm3": "cm³"}


def format_table(metrics: dict[str, Any]):
    """A rich table of the scalar metrics (per-joint list omitted; None shown as "-").

    Args:
        metrics: the dict returned by :func:`run_eval`.

    Returns:
        rich.table.Table with columns metric, value.
    """
    from rich.table import Table

    table = Table(title="hoannot evaluation")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            continue
        if v is None:
            s = "-"
        elif isinstance(v, (bool, np.bool_)):
            s = str(bool(v))
        elif isinstance(v, (int, np.integer)):
            s = str(int(v))
        else:
            s = f"{float(v):.2f}" if k.endswith(("_mm", "_cm3")) else f"{float(v):.3f}"
        table.add_row(k, s)
    return table
