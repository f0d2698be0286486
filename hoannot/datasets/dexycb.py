"""DexYCB in and out: ingest a DexYCB sequence into the hoannot layout, export labels as DexYCB's.

Source: DexYCB (Chao et al., *DexYCB: A Benchmark for Capturing Hand Grasping of Objects*,
CVPR 2021) and its toolkit (NVlabs/dex-ycb-toolkit: ``dex_ycb_toolkit/dex_ycb.py``,
``sequence_loader.py``, ``layers/mano_layer.py``; manopth's ``ManoLayer``). Our own code,
written from the documented layout.

DexYCB layout (``ROOT`` is ``$DEX_YCB_DIR``)::

    ROOT/<subject>/<date_time>/meta.yml          serials, num_frames, extrinsics (name), ycb_ids,
                                                 ycb_grasp_ind, mano_sides, mano_calib (names)
    ROOT/<subject>/<date_time>/<serial>/color_%06d.jpg                 (480, 640, 3) colour
    ROOT/<subject>/<date_time>/<serial>/aligned_depth_to_color_%06d.png uint16 millimetres
    ROOT/<subject>/<date_time>/<serial>/labels_%06d.npz                labels, see below
    ROOT/calibration/intrinsics/<serial>_640x480.yml       color: {fx, fy, ppx, ppy}
    ROOT/calibration/extrinsics_<name>/extrinsics.yml      extrinsics: {serial: 12 floats}, master
    ROOT/calibration/mano_<name>/mano.yml                  betas: 10 floats
    ROOT/models/<ycb name>/textured_simple.obj

``labels_%06d.npz`` (one per camera and frame, **that camera's OpenCV frame**, metres):
``seg`` (H, W) uint8 (0 background, 1-21 YCB id, 255 hand); ``pose_y`` (num_obj, 3, 4)
object-to-camera ``[R | t]`` in ``ycb_ids`` order, all zero when absent; ``pose_m`` (1, 51):
3 global rotation (axis-angle) + 45 MANO **PCA** coefficients (45 components,
``flat_hand_mean=False``) + 3 translation, all zero when absent; ``joint_3d`` (1, 21, 3)
camera frame, **OpenPose/MANO-21 order**, all -1 when absent; ``joint_2d`` (1, 21, 2) pixels,
same order, all -1 when absent.

Extrinsics: the 12 floats of a serial are the row-major 3x4 ``[R | t]`` mapping that camera's
coordinates to DexYCB's world (the master camera's frame, identity for the master). hoannot's
world is the master camera's frame: ``T_world_cam(s) = E_master^-1 E_s``.

MANO: DexYCB poses manopth's MANO with ``use_pca=True, ncomps=45, flat_hand_mean=False``:
``full_pose = hands_mean + coeffs @ hands_components`` (rows of ``hands_components`` are
components), global rotation about the wrist joint of the shaped template, then ``+ transl``;
the same model as hoannot's smplx layer with ``flat_hand_mean=True`` and absolute axis-angle
``hand_pose`` (:mod:`hoannot.datasets.poses`). ``hands_components`` and ``hands_mean`` exist
only in the real MANO pickle, so parameters are converted only with ``--mano-model-path``;
without it the ground truth carries DexYCB's ``joint_3d`` and no MANO parameters.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera
from hoannot.datasets.conventions import HO3D_TO_OPENPOSE, OPENPOSE_TO_HO3D
from hoannot.io import InputError, atomic_write, read_image, write_image, write_json, write_npz
from hoannot.datasets.validate import check_ingest_destination
from hoannot.datasets.keypoints2d import write_keypoints2d
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.segmentation import write_labels
from hoannot.datasets.sequence import ObjectConfig, Sequence, SequenceConfig, open_sequence, write_sequence_header
from hoannot.geometry import transform

#: DexYCB object ids (``ycb_ids``, ``seg`` values) -> YCB model names (toolkit ``dex_ycb.py``).
DEXYCB_YCB_CLASSES: dict[int, str] = {
    1: "002_master_chef_can", 2: "003_cracker_box", 3: "004_sugar_box", 4: "005_tomato_soup_can",
    5: "006_mustard_bottle", 6: "007_tuna_fish_can", 7: "008_pudding_box", 8: "009_gelatin_box",
    9: "010_potted_meat_can", 10: "011_banana", 11: "019_pitcher_base", 12: "021_bleach_cleanser",
    13: "024_bowl", 14: "025_mug", 15: "035_power_drill", 16: "036_wood_block", 17: "037_scissors",
    18: "040_large_marker", 19: "051_large_clamp", 20: "052_extra_large_clamp", 21: "061_foam_brick",
}  # fmt: skip
#: ``seg`` value of the hand.
DEXYCB_HAND_LABEL = 255
#: Id written for an exported object that is not one of DexYCB's 21 (first free id).
EXTRA_OBJECT_ID = 22
#: Metres per unit of ``aligned_depth_to_color_*.png``.
DEXYCB_DEPTH_SCALE = 0.001
#: Components of DexYCB's MANO PCA pose.
DEXYCB_NCOMPS = 45

_COLOR = "color_{:06d}.jpg"
_DEPTH = "aligned_depth_to_color_{:06d}.png"
_LABEL = "labels_{:06d}.npz"
_SUBJECT_RE = re.compile(r"^\d{8}-subject-\d{2}$")


# ---------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------
class _YamlLoader(yaml.SafeLoader):
    """Safe YAML plus ``!!python/tuple`` (DexYCB's extrinsics.yml stores its 3x4 rows as tuples)."""


_YamlLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node)))


def read_yaml(path: str | Path) -> Any:
    """Parse a DexYCB YAML file (safe loader; ``!!python/tuple`` becomes a tuple).

    Raises:
        InputError: missing file or invalid YAML (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return yaml.load(path.read_text(), Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None


def _write_yaml(path: Path, data: Any) -> None:
    with atomic_write(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------------------------------
# meta.yml and calibration
# ---------------------------------------------------------------------------------------
@dataclass
class DexYCBMeta:
    """Contents of a sequence's ``meta.yml``.

    Attributes:
        serials: camera serials (folder names), in the file's order.
        num_frames: frames per camera (ids 0 .. num_frames - 1).
        extrinsics: name of ``calibration/extrinsics_<name>/``.
        ycb_ids: DexYCB object ids of the objects in the scene (``pose_y`` order).
        ycb_grasp_ind: index into ``ycb_ids`` of the grasped object.
        mano_sides: ``"right"`` / ``"left"`` per hand (DexYCB: one hand).
        mano_calib: name of ``calibration/mano_<name>/`` per hand.
        extra: the remaining keys (hoannot's exports add a ``hoannot`` entry).
    """

    serials: list[str]
    num_frames: int
    extrinsics: str
    ycb_ids: list[int]
    ycb_grasp_ind: int
    mano_sides: list[str]
    mano_calib: list[str]
    extra: dict


def read_meta(path: str | Path) -> DexYCBMeta:
    """Read a DexYCB ``meta.yml``.

    Raises:
        InputError: missing file, bad YAML, missing key or ill-typed value (names the file).
    """
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of meta keys")
    keys = ("serials", "num_frames", "extrinsics", "ycb_ids", "ycb_grasp_ind", "mano_sides", "mano_calib")
    missing = [k for k in keys if k not in data]
    if missing:
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}")
    try:
        meta = DexYCBMeta(
            serials=[str(s) for s in data["serials"]],
            num_frames=int(data["num_frames"]),
            extrinsics=str(data["extrinsics"]),
            ycb_ids=[int(i) for i in data["ycb_ids"]],
            ycb_grasp_ind=int(data["ycb_grasp_ind"]),
            mano_sides=[str(s) for s in data["mano_sides"]],
            mano_calib=[str(s) for s in data["mano_calib"]],
            extra={k: v for k, v in data.items() if k not in keys},
        )
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: ill-typed meta value ({e})".splitlines()[0]) from None
    if not meta.serials or meta.num_frames < 1:
        raise InputError(f"{path}: no serials or no frames")
    if not 0 <= meta.ycb_grasp_ind < len(meta.ycb_ids):
        raise InputError(f"{path}: ycb_grasp_ind {meta.ycb_grasp_ind} outside ycb_ids {meta.ycb_ids}")
    if len(meta.mano_sides) != 1 or len(meta.mano_calib) != 1:
        raise InputError(f"{path}: expected one hand (mano_sides, mano_calib), got {meta.mano_sides}")
    return meta


def find_calibration(seq_dir: str | Path) -> Path:
    """The ``calibration/`` folder of a sequence: ``ROOT/calibration`` for ``ROOT/<subject>/<seq>``
    (also accepted: ``<seq>/calibration`` and ``<subject>/calibration``).

    Raises:
        InputError: none of these exists (names the expected one).
    """
    seq_dir = Path(seq_dir).resolve()
    for cand in (seq_dir.parent.parent / "calibration", seq_dir / "calibration", seq_dir.parent / "calibration"):
        if (cand / "intrinsics").is_dir():
            return cand
    raise InputError(f"{seq_dir.parent.parent / 'calibration'}: DexYCB calibration folder not found (needs intrinsics/)")


def read_intrinsics(calibration: str | Path, serial: str, width: int = 640, height: int = 480) -> np.ndarray:
    """K (3, 3) float64 of a camera's colour stream, pixels, from
    ``calibration/intrinsics/<serial>_<width>x<height>.yml`` (``color: {fx, fy, ppx, ppy}``).

    Raises:
        InputError: missing file or key (names the file).
    """
    path = Path(calibration) / "intrinsics" / f"{serial}_{width}x{height}.yml"
    data = read_yaml(path)
    try:
        c = data["color"]
        return np.array([[float(c["fx"]), 0.0, float(c["ppx"])], [0.0, float(c["fy"]), float(c["ppy"])], [0, 0, 1.0]])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: expected color: {{fx, fy, ppx, ppy}} ({type(e).__name__}: {e})") from None


def read_extrinsics(calibration: str | Path, name: str) -> tuple[dict[str, np.ndarray], str]:
    """Camera-to-DexYCB-world transforms from ``calibration/extrinsics_<name>/extrinsics.yml``.

    Returns:
        ({key: (4, 4) float64 camera -> world, metres}, master serial); keys are the serials
        (and ``apriltag``, the tag's pose, when present).
    Raises:
        InputError: missing file, no ``extrinsics``/``master``, or an entry that is not 12
            numbers forming a rigid transform (names the file).
    """
    path = Path(calibration) / f"extrinsics_{name}" / "extrinsics.yml"
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("extrinsics"), dict) or "master" not in data:
        raise InputError(f"{path}: expected keys extrinsics (serial -> 12 floats) and master")
    out = {}
    for k, v in data["extrinsics"].items():
        try:
            a = np.asarray(v, np.float64).reshape(3, 4)
        except (TypeError, ValueError):
            raise InputError(f"{path}: extrinsics of {k}: expected 12 numbers (3x4), got {v!r}"[:200]) from None
        R = a[:, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0:
            raise InputError(f"{path}: extrinsics of {k}: rotation part is not a rotation")
        T = np.eye(4)
        T[:3] = a
        out[str(k)] = T
    master = str(data["master"])
    if master not in out:
        raise InputError(f"{path}: master {master} has no extrinsics")
    return out, master


def read_betas(calibration: str | Path, name: str) -> np.ndarray:
    """MANO shape (10,) float32 from ``calibration/mano_<name>/mano.yml`` (``betas``).

    Raises:
        InputError: missing file or ``betas`` not 10 numbers (names the file).
    """
    path = Path(calibration) / f"mano_{name}" / "mano.yml"
    data = read_yaml(path)
    try:
        b = np.asarray(data["betas"], np.float32).reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: expected betas: 10 numbers") from None
    if b.shape != (10,):
        raise InputError(f"{path}: expected 10 betas, got {b.shape[0]}")
    return b


# ---------------------------------------------------------------------------------------
# labels_%06d.npz
# ---------------------------------------------------------------------------------------
@dataclass
class DexYCBLabel:
    """One ``labels_%06d.npz`` (that camera's OpenCV frame, metres, OpenPose joint order).

    Attributes:
        seg: (H, W) uint8: 0 background, 1-21 DexYCB object id, 255 hand.
        pose_y: (num_obj, 3, 4) float32 object-to-camera ``[R | t]``; zeros: no pose.
        pose_m: (1, 51) float32: axis-angle global rotation (3), PCA-45 coefficients (45),
            translation (3); zeros: no hand.
        joint_3d: (1, 21, 3) float32 camera frame, OpenPose order; -1: no hand.
        joint_2d: (1, 21, 2) float32 pixels, OpenPose order; -1: no hand.
    """

    seg: np.ndarray
    pose_y: np.ndarray
    pose_m: np.ndarray
    joint_3d: np.ndarray
    joint_2d: np.ndarray

    @property
    def has_hand(self) -> bool:
        """``joint_3d`` is not DexYCB's "no annotation" value (all -1)."""
        return not np.all(self.joint_3d == -1)

    @property
    def has_mano(self) -> bool:
        """``pose_m`` is not DexYCB's "no annotation" value (all 0)."""
        return not np.all(self.pose_m == 0)

    def has_object(self, index: int) -> bool:
        """``pose_y[index]`` is not all zero."""
        return not np.all(self.pose_y[index] == 0)


def read_label(path: str | Path, num_obj: int | None = None, size: tuple[int, int] | None = None) -> DexYCBLabel:
    """Read and check one ``labels_%06d.npz``.

    Args:
        num_obj: expected ``len(ycb_ids)`` (``pose_y`` rows), or None.
        size: expected ``(H, W)`` of ``seg``, or None.
    Raises:
        InputError: unreadable file, missing key or wrong shape (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in ("seg", "pose_y", "pose_m", "joint_3d", "joint_2d")}
    except KeyError as e:
        raise InputError(f"{path}: missing array {e}") from None
    except Exception as e:  # noqa: BLE001 - any reader failure is bad input
        raise InputError(f"{path}: unreadable npz ({type(e).__name__}: {e})".splitlines()[0]) from None
    want = {"pose_m": (1, 51), "joint_3d": (1, 21, 3), "joint_2d": (1, 21, 2)}
    for k, shape in want.items():
        if d[k].shape != shape:
            raise InputError(f"{path}: '{k}' has shape {d[k].shape}, expected {shape}")
    n = d["pose_y"].shape[0] if d["pose_y"].ndim == 3 else -1
    if d["pose_y"].shape[1:] != (3, 4) or (num_obj is not None and n != num_obj):
        raise InputError(f"{path}: 'pose_y' has shape {d['pose_y'].shape}, expected ({num_obj if num_obj is not None else 'num_obj'}, 3, 4)")
    if d["seg"].ndim != 2 or (size is not None and d["seg"].shape != tuple(size)):
        raise InputError(f"{path}: 'seg' has shape {d['seg'].shape}, expected {tuple(size) if size else '(H, W)'}")
    return DexYCBLabel(
        seg=d["seg"].astype(np.uint8), pose_y=d["pose_y"].astype(np.float32), pose_m=d["pose_m"].astype(np.float32),
        joint_3d=d["joint_3d"].astype(np.float32), joint_2d=d["joint_2d"].astype(np.float32),
    )  # fmt: skip


def write_label(path: str | Path, label: DexYCBLabel) -> None:
    """Atomically write ``labels_%06d.npz`` with DexYCB's keys and dtypes (``np.savez``,
    uncompressed like the dataset's files)."""
    with atomic_write(path, "wb") as f:
        np.savez(f, seg=label.seg.astype(np.uint8), pose_y=label.pose_y.astype(np.float32),
                 pose_m=label.pose_m.astype(np.float32), joint_3d=label.joint_3d.astype(np.float32),
                 joint_2d=label.joint_2d.astype(np.float32))  # fmt: skip


# ---------------------------------------------------------------------------------------
# MANO PCA pose <-> axis-angle
# ---------------------------------------------------------------------------------------
def _check_pca(components: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, m = np.asarray(components, np.float64), np.asarray(mean, np.float64).reshape(-1)
    if c.ndim != 2 or c.shape[1] != 45 or c.shape[0] < DEXYCB_NCOMPS or m.shape != (45,):
        raise InputError(f"MANO PCA: expected hands_components (>=45, 45) and hands_mean (45,), got {c.shape} and {m.shape}")
    return c[:DEXYCB_NCOMPS], m


def pca_to_axis_angle(coeffs: np.ndarray, components: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """DexYCB's finger pose (PCA, ``flat_hand_mean=False``) -> hoannot's absolute axis-angle.

    ``hand_pose = mean + coeffs @ components[:45]`` (manopth ``ManoLayer``, ``use_pca=True``),
    i.e. the axis-angle of the 15 finger joints in MANO's joint order 1..15, flat hand = 0
    (smplx ``flat_hand_mean=True``, :class:`~hoannot.datasets.poses.HandObjectPoses`).

    Args:
        coeffs: (..., 45) PCA coefficients (``pose_m[..., 3:48]``).
        components: (>=45, 45) MANO ``hands_components`` (rows are components).
        mean: (45,) MANO ``hands_mean``, radians.
    Returns:
        (..., 45) float64 axis-angle, radians.
    Raises:
        InputError: wrong shapes.
    """
    c, m = _check_pca(components, mean)
    coeffs = np.asarray(coeffs, np.float64)
    if coeffs.shape[-1:] != (DEXYCB_NCOMPS,):
        raise InputError(f"pca_to_axis_angle: expected coefficients (..., 45), got {coeffs.shape}")
    return m + coeffs @ c


def axis_angle_to_pca(hand_pose: np.ndarray, components: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pca_to_axis_angle`: ``coeffs = (hand_pose - mean) @ components[:45]^-1``.

    Args:
        hand_pose: (..., 45) absolute axis-angle (flat hand = 0), radians.
        components, mean: as for :func:`pca_to_axis_angle` (45 components: exact inverse).
    Returns:
        (..., 45) float64 PCA coefficients.
    Raises:
        InputError: wrong shapes, or singular components.
    """
    c, m = _check_pca(components, mean)
    hand_pose = np.asarray(hand_pose, np.float64)
    if hand_pose.shape[-1:] != (45,):
        raise InputError(f"axis_angle_to_pca: expected hand_pose (..., 45), got {hand_pose.shape}")
    if np.linalg.cond(c) > 1e8:
        raise InputError("axis_angle_to_pca: MANO hands_components are singular")
    return np.linalg.solve(c.T, (hand_pose - m).reshape(-1, 45).T).T.reshape(hand_pose.shape)


def mano_pca_basis(hand_model) -> tuple[np.ndarray, np.ndarray] | None:
    """``(hands_components (45, 45), hands_mean (45,))`` of a real MANO :class:`~hoannot.models.hand.HandModel`,
    read from its pickle; None for the open hand (it has no MANO PCA basis)."""
    if hand_model is None or hand_model.name != "mano":
        return None
    from hoannot.models.hand import _load_pickle

    data = _load_pickle(Path(hand_model.path))
    return _check_pca(data["hands_components"], data["hands_mean"])


# ---------------------------------------------------------------------------------------
# layout detection
# ---------------------------------------------------------------------------------------
def is_dexycb_sequence(path: str | Path) -> bool:
    """True when ``path`` holds ``meta.yml`` and a sub-folder with ``color_*.jpg`` (a DexYCB
    sequence ``<subject>/<date_time>/``)."""
    path = Path(path)
    if not (path / "meta.yml").is_file():
        return False
    return any(p.is_dir() and any(p.glob("color_*.jpg")) for p in path.iterdir())


def dexycb_hint(path: str | Path) -> str | None:
    """A one-line hint when ``path`` is a DexYCB dataset root or subject folder rather than a
    sequence (else None)."""
    path = Path(path)
    subdirs = [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    if (path / "calibration").is_dir() and any(_SUBJECT_RE.match(p.name) for p in subdirs):
        return f"{path}: looks like a DexYCB dataset root; give one sequence folder (e.g. 20200709-subject-01/20200709_141754)"
    if any((p / "meta.yml").is_file() for p in subdirs):
        return f"{path}: looks like a DexYCB subject folder; give one sequence folder (a sub-folder with meta.yml)"
    return None


# ---------------------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------------------
def ingest_dexycb(
    src: str | Path,
    dst: str | Path,
    object_mesh: str | None = None,
    mano_model_path: str | Path | None = None,
    calibration: str | Path | None = None,
    frames: slice | None = None,
    overwrite: bool = False,
) -> tuple[Sequence, str]:
    """Convert one DexYCB sequence folder into a hoannot sequence folder.

    Args:
        src: ``ROOT/<subject>/<date_time>`` (module docstring).
        dst: output folder; must not exist or be empty, unless ``overwrite`` (an old hoannot
            sequence only).
        object_mesh: ``object.mesh`` for ``sequence.yaml``; default the grasped object's
            ``ROOT/models/<name>/textured_simple.obj`` when it exists, else empty (then ``--ycb-dir``).
        mano_model_path: MANO_RIGHT.pkl (or its folder): converts ``pose_m`` to hoannot's MANO
            parameters (``gt/poses.npz`` ``hand_params``, and hand vertices); without it the
            ground truth holds joints only.
        calibration: the ``calibration/`` folder (default :func:`find_calibration`).
        frames: slice over the sequence's frames in file order (ids are kept: the file number,
            or for a hoannot export the id listed in ``meta.yml``'s ``hoannot.frames``).
        overwrite: replace an existing hoannot sequence at ``dst``.

    Writes (cameras named by serial, world = master camera frame, OpenCV, metres):
        ``rgb/<serial>/<frame:06d>.jpg`` and ``depth/<serial>/<frame:06d>.png`` (source bytes,
        ``depth_scale`` 0.001); ``gt/poses.npz`` (:class:`GroundTruth`: ``hand_joints`` (F, 21, 3)
        HO-3D order from ``joint_3d``, NaN where no camera labels the hand; the grasped
        object's pose; with MANO: ``hand_params`` (world) and ``hand_vertices`` (F, 778, 3));
        ``gt/segmentation/<serial>/<frame:06d>.png`` (0 background and other objects, 1 hand,
        2 grasped object); ``gt/keypoints2d/<serial>.npz`` (``frames``, ``uv`` (F, 21, 2) px
        HO-3D order, ``visible`` (F, 21)); ``gt/dexycb_mano.npz`` (raw ``pose_m`` (F, 51) and
        the serial it is expressed in, ``betas``, ``valid``, ``converted``); ``gt/dexycb.json``.
        A frame's labels are taken from the first camera (master first) that labels the hand
        (the object: that labels the object).

    Returns:
        (the written sequence, opened; a one-line summary that says whether the MANO
        parameters were converted).
    Raises:
        InputError: not a DexYCB sequence; missing meta.yml, serial folder, calibration file,
            image or label file; wrong shapes; a left hand (hoannot fits right hands);
            ``dst`` not empty.
    """
    from hoannot.datasets.ho3d import _move_into_place

    src, dst = Path(src), Path(dst)
    meta_path = src / "meta.yml"
    if not meta_path.is_file():
        raise InputError(f"{meta_path}: file not found (a DexYCB sequence folder holds meta.yml)")
    meta = read_meta(meta_path)
    if meta.mano_sides[0] != "right":
        raise InputError(f"{meta_path}: mano_sides {meta.mano_sides}: hoannot fits a right hand only")
    check_ingest_destination(src, dst, overwrite)
    calib = Path(calibration) if calibration is not None else find_calibration(src)
    extr, master = read_extrinsics(calib, meta.extrinsics)
    betas = read_betas(calib, meta.mano_calib[0])
    hx = meta.extra.get("hoannot") if isinstance(meta.extra.get("hoannot"), dict) else {}
    frame_ids = [int(x) for x in hx.get("frames", range(meta.num_frames))]  # hoannot exports renumber files
    if len(frame_ids) != meta.num_frames or len(set(frame_ids)) != len(frame_ids):
        raise InputError(f"{meta_path}: hoannot.frames must list num_frames distinct ids")
    pairs = list(zip(frame_ids, range(meta.num_frames)))  # (frame id, file index)
    if frames is not None:
        pairs = pairs[frames]
        if not pairs:
            raise InputError(f"{meta_path}: frame selection {frames} is empty")
    ids = [f for f, _ in pairs]
    for s in meta.serials:
        if not (src / s).is_dir():
            raise InputError(f"{src / s}: serial folder listed in meta.yml not found")
        if s not in extr:
            raise InputError(f"{calib / f'extrinsics_{meta.extrinsics}' / 'extrinsics.yml'}: no extrinsics for serial {s}")
        for _, f in pairs:
            for name in (_COLOR, _DEPTH):
                if not (src / s / name.format(f)).is_file():
                    raise InputError(f"{src / s / name.format(f)}: file not found")
    T_master_inv = np.linalg.inv(extr[master])
    T_world = {s: T_master_inv @ extr[s] for s in meta.serials}
    grasp_id = meta.ycb_ids[meta.ycb_grasp_ind]
    obj_name = str(hx.get("object") or DEXYCB_YCB_CLASSES.get(grasp_id, f"dexycb_{grasp_id:02d}"))
    if object_mesh is None:
        models = calib.parent / "models" / obj_name / "textured_simple.obj"
        object_mesh = str(models.resolve()) if models.is_file() else ""

    hand_model = None
    if mano_model_path is not None:
        from hoannot.models.hand import HandModel

        hand_model = HandModel(mano_model_path)
    basis = mano_pca_basis(hand_model)

    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.ingest-", dir=dst.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)
    try:
        cams, labels = _copy_images(src, stage, meta, pairs, calib, T_world)
        order = ([master] if master in meta.serials else []) + [s for s in meta.serials if s != master]
        gt, raw, summary = _ground_truth(ids, labels, order, T_world, meta, betas, hand_model, basis)
        gt.save(stage / "gt" / "poses.npz")
        write_npz(stage / "gt" / "dexycb_mano.npz", **raw)
        _write_gt_images(stage, meta, ids, labels, grasp_id)
        write_json(stage / "gt" / "dexycb.json", {
            "source": str(src.resolve()), "calibration": str(calib.resolve()), "master": master,
            "world": f"camera {master} (DexYCB master), OpenCV axes, metres", "ycb_ids": meta.ycb_ids,
            "ycb_grasp_ind": meta.ycb_grasp_ind, "mano_calib": meta.mano_calib[0], "summary": summary,
        })  # fmt: skip
        config = SequenceConfig(
            name=src.resolve().name, cameras=meta.serials, frames=ids,
            object=ObjectConfig(id=obj_name, mesh=object_mesh or ""), rgb_ext="jpg",
        )
        write_sequence_header(stage, config, cams)
        _move_into_place(stage, dst)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return open_sequence(dst), f"ingested DexYCB sequence {src} into {dst}: {len(cams)} cameras x {len(ids)} frames; {summary}"


def _copy_images(src, stage, meta, pairs, calib, T_world):
    """Copy colour/depth bytes (checked by decoding), read every label; returns cameras and
    labels keyed by (serial, frame id)."""
    cams, labels = [], {}
    num_obj = len(meta.ycb_ids)
    for s in meta.serials:
        size = None
        for f, k in pairs:
            cpath, dpath = src / s / _COLOR.format(k), src / s / _DEPTH.format(k)
            rgb, depth = read_image(cpath), read_image(dpath)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise InputError(f"{cpath}: expected (H, W, 3) uint8 colour, got {rgb.shape} {rgb.dtype}")
            if depth.ndim != 2 or depth.dtype != np.uint16:
                raise InputError(f"{dpath}: expected (H, W) uint16 depth in mm, got {depth.shape} {depth.dtype}")
            size = size or rgb.shape[:2]
            if rgb.shape[:2] != size:
                raise InputError(f"{cpath}: image size {rgb.shape[1::-1]} differs from earlier frames {size[::-1]}")
            if depth.shape != size:
                raise InputError(f"{dpath}: depth size {depth.shape[::-1]} != colour size {size[::-1]}")
            with atomic_write(stage / "rgb" / s / f"{f:06d}.jpg", "wb") as fh:
                fh.write(cpath.read_bytes())
            with atomic_write(stage / "depth" / s / f"{f:06d}.png", "wb") as fh:
                fh.write(dpath.read_bytes())
            lpath = src / s / _LABEL.format(k)
            if lpath.is_file():
                labels[s, f] = read_label(lpath, num_obj, size)
        K = read_intrinsics(calib, s, size[1], size[0])
        cams.append(Camera(name=s, K=K, width=int(size[1]), height=int(size[0]), T_world_cam=T_world[s],
                           depth_scale=DEXYCB_DEPTH_SCALE))  # fmt: skip
    return cams, labels


def _ground_truth(ids, labels, order, T_world, meta, betas, hand_model, basis):
    F = len(ids)
    joints = np.full((F, 21, 3), np.nan, np.float32)
    obj_rot = np.full((F, 3), np.nan, np.float32)
    obj_transl = np.full((F, 3), np.nan, np.float32)
    pose_m = np.zeros((F, 51), np.float32)
    pose_cam = np.full(F, "", dtype=object)
    valid = np.zeros(F, bool)
    mano_valid = np.zeros(F, bool)
    g = meta.ycb_grasp_ind
    for i, f in enumerate(ids):
        hand = next((s for s in order if (s, f) in labels and labels[s, f].has_hand), None)
        if hand is not None:
            lab = labels[hand, f]
            joints[i] = transform(lab.joint_3d[0][list(OPENPOSE_TO_HO3D)], T_world[hand])
            valid[i] = True
        mano = next((s for s in order if (s, f) in labels and labels[s, f].has_mano), None)
        if mano is not None:
            pose_m[i], pose_cam[i], mano_valid[i] = labels[mano, f].pose_m[0], mano, True
        obj = next((s for s in order if (s, f) in labels and labels[s, f].has_object(g)), None)
        if obj is not None:
            P = np.eye(4)
            P[:3] = labels[obj, f].pose_y[g]
            W = T_world[obj] @ P
            obj_rot[i] = Rotation.from_matrix(W[:3, :3]).as_rotvec()
            obj_transl[i] = W[:3, 3]
    params, verts, faces = None, np.zeros((F, 0, 3), np.float32), np.zeros((0, 3), np.int64)
    if basis is None:
        why = "no --mano-model-path" if hand_model is None else f"{hand_model.path} is not MANO (no PCA basis)"
        summary = (f"hand labels in {int(valid.sum())}/{F} frames; MANO parameters NOT converted ({why}: DexYCB's "
                   "PCA-45 pose needs MANO's hands_components and hands_mean), gt/ holds DexYCB's joint_3d only")
    else:
        params, verts, faces, err = _convert_mano(ids, pose_m, pose_cam, mano_valid, T_world, betas, hand_model, basis, joints)
        summary = f"hand labels in {int(valid.sum())}/{F} frames; MANO parameters converted (PCA-45 -> axis-angle)"
        if np.isfinite(err).any():
            summary += f", their joints match joint_3d to {np.nanmax(err) * 1000:.2f} mm"
    gt = GroundTruth(
        frames=np.asarray(ids, np.int64), hand_joints=joints, hand_vertices=verts, hand_faces=faces,
        obj_rot=obj_rot, obj_transl=obj_transl, hand_model="mano", hand_params=params,
    )  # fmt: skip
    raw = {"frames": np.asarray(ids, np.int64), "pose_m": pose_m, "pose_m_serial": pose_cam.astype(str),
           "betas": betas, "valid": mano_valid, "converted": np.asarray(basis is not None),
           "joint_order": np.asarray("pose_m: MANO global rotation, 45 PCA coefficients, translation")}  # fmt: skip
    return gt, raw, summary


def _convert_mano(ids, pose_m, pose_cam, mano_valid, T_world, betas, hand_model, basis, joints):
    """World-frame MANO parameters, vertices and faces from DexYCB's per-camera ``pose_m``;
    also the max joint distance to ``joint_3d`` per frame (NaN where either is missing)."""
    import torch

    from hoannot.models.hand import change_frame

    F = len(ids)
    go = np.full((F, 3), np.nan, np.float32)
    tr = np.full((F, 3), np.nan, np.float32)
    hp = np.full((F, 45), np.nan, np.float32)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    b = t(betas)[None]
    for i in np.nonzero(mano_valid)[0]:
        T = T_world[pose_cam[i]]
        with torch.no_grad():
            g_w, t_w = change_frame(hand_model, t(T[:3, :3]), t(T[:3, 3]), t(pose_m[i, None, :3]), t(pose_m[i, None, 48:]), b)
        go[i], tr[i] = g_w[0].numpy(), t_w[0].numpy()
        hp[i] = pca_to_axis_angle(pose_m[i, 3:48], *basis)
    params = HandObjectPoses(frames=np.asarray(ids, np.int64), global_orient=go, hand_pose=hp, betas=betas, transl=tr,
                             obj_rot=np.full((F, 3), np.nan), obj_transl=np.full((F, 3), np.nan), source="dexycb")  # fmt: skip
    with torch.no_grad():
        out = hand_model(t(np.nan_to_num(go)), t(np.nan_to_num(hp)), b.expand(F, -1), t(np.nan_to_num(tr)))
    verts = out.vertices.numpy().astype(np.float32)
    verts[~mano_valid] = np.nan
    mj = out.joints.numpy()
    err = np.where(mano_valid & np.isfinite(joints).all((1, 2)), np.linalg.norm(mj - joints, axis=-1).max(-1), np.nan)
    return params, verts, out.faces.numpy().astype(np.int64), err


def _write_gt_images(stage, meta, ids, labels, grasp_id):
    """gt/segmentation (hoannot labels) and gt/keypoints2d (HO-3D order) from the labels."""
    for s in meta.serials:
        uv = np.full((len(ids), 21, 2), np.nan, np.float32)
        vis = np.zeros((len(ids), 21), bool)
        for i, f in enumerate(ids):
            lab = labels.get((s, f))
            if lab is None:
                continue
            seg = np.zeros(lab.seg.shape, np.uint8)
            seg[lab.seg == DEXYCB_HAND_LABEL] = 1
            seg[lab.seg == grasp_id] = 2
            write_labels(stage / "gt" / "segmentation" / s / f"{f:06d}.png", seg)
            if lab.has_hand:
                j2 = lab.joint_2d[0][list(OPENPOSE_TO_HO3D)]
                ok = ~np.all(j2 == -1, axis=-1)
                uv[i][ok], vis[i] = j2[ok], ok
        write_keypoints2d(stage / "gt" / "keypoints2d" / f"{s}.npz", ids, uv, visible=vis)


# ---------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------
def object_dexycb_id(name: str) -> int:
    """DexYCB id of a YCB object name (``"006_mustard_bottle"`` -> 5); :data:`EXTRA_OBJECT_ID`
    for any other object."""
    return next((k for k, v in DEXYCB_YCB_CLASSES.items() if v == name), EXTRA_OBJECT_ID)


def export_dexycb(
    seq: Sequence,
    poses: HandObjectPoses,
    hand_model,
    obj,
    out_dir: str | Path,
    subject: str = "hoannot-subject",
) -> Path:
    """Write ``poses`` as a DexYCB dataset folder that DexYCB readers (and :func:`ingest_dexycb`)
    read unchanged.

    Layout (``out_dir`` plays ``$DEX_YCB_DIR``; one sequence, cameras named as in ``seq``)::

        out_dir/<subject>/<seq name>/meta.yml
        out_dir/<subject>/<seq name>/<cam>/color_%06d.jpg, aligned_depth_to_color_%06d.png, labels_%06d.npz
        out_dir/calibration/intrinsics/<cam>_<W>x<H>.yml, extrinsics_<seq name>/extrinsics.yml,
        out_dir/calibration/mano_<subject>/mano.yml

    Labels per camera and frame (that camera's OpenCV frame, metres): ``joint_3d`` (1, 21, 3)
    and ``joint_2d`` (1, 21, 2) in **OpenPose** order from ``hand_model``'s joints; ``pose_y``
    (1, 3, 4) of the fitted object; ``pose_m`` (1, 51) = camera-frame global rotation, the
    PCA-45 coefficients of ``hand_pose`` (MANO ``hands_components``/``hands_mean``), camera-frame
    translation; all zero for the open hand (no PCA basis: DexYCB's "no MANO annotation"),
    which ``meta.yml``'s ``hoannot`` entry says; ``seg`` (H, W) uint8, the fitted hand (255) and
    object (its DexYCB id, :func:`object_dexycb_id`) ray-cast into the camera. The extrinsics
    are ``T_world_cam`` relative to the master: the camera whose ``T_world_cam`` is the identity
    (an ingested DexYCB sequence's master), else the first. Frame files are numbered
    0 .. F-1 (``meta.yml`` ``hoannot.frames`` lists the frame ids). Colour is copied when the
    sequence's is JPEG (else encoded), depth copied when its scale is 1 mm (else converted).

    Args:
        seq: the sequence (cameras, images, object name).
        poses: world-frame poses (``fit/poses.npz``).
        hand_model: the :class:`~hoannot.models.hand.HandModel` the parameters belong to.
        obj: the :class:`~hoannot.models.objects.ObjectModel` (full mesh, for ``seg``).
        out_dir: the dataset folder to write (``labels/dexycb``).
        subject: name of the subject folder.
    Returns:
        the sequence folder ``out_dir/<subject>/<seq name>``.
    """
    import torch

    from hoannot.models.hand import change_frame
    from hoannot.renderers.raycast import raycast

    out = Path(out_dir)
    seq_out = out / subject / seq.config.name
    calib = out / "calibration"
    basis = mano_pca_basis(hand_model)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    F = len(poses)
    b = t(poses.betas)[None]
    with torch.no_grad():
        hand = hand_model(t(poses.global_orient), t(poses.hand_pose), b.expand(F, -1), t(poses.transl))
    joints_w, verts_w = hand.joints.numpy().astype(np.float64), hand.vertices.numpy()
    hand_faces = hand.faces.numpy()
    R_obj = Rotation.from_rotvec(poses.obj_rot).as_matrix()
    obj_v, obj_f = np.asarray(obj.mesh.vertices, np.float64), np.asarray(obj.mesh.faces)
    obj_id = object_dexycb_id(obj.name)
    coeffs = axis_angle_to_pca(poses.hand_pose, *basis) if basis is not None else None
    master = next((c for c in seq.cameras if np.allclose(c.T_world_cam, np.eye(4), atol=1e-9)), seq.cameras[0])
    T_master_inv = master.T_cam_world

    extrinsics = {}
    for cam in seq.cameras:
        T = cam.T_cam_world
        extrinsics[cam.name] = (T_master_inv @ cam.T_world_cam)[:3].reshape(-1).tolist()
        K = np.asarray(cam.K)
        _write_yaml(calib / "intrinsics" / f"{cam.name}_{cam.width}x{cam.height}.yml", {
            "color": {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "ppx": float(K[0, 2]), "ppy": float(K[1, 2])}})
        if basis is not None:
            with torch.no_grad():
                go_c, tr_c = change_frame(hand_model, t(T[:3, :3]), t(T[:3, 3]), t(poses.global_orient),
                                          t(poses.transl), b)  # fmt: skip
        for i, frame in enumerate(int(f) for f in poses.frames):  # files numbered 0..F-1 (meta: hoannot.frames)
            j_c = transform(joints_w[i], T)
            uvw = j_c @ K.T
            pose_m = np.zeros((1, 51), np.float32)
            if coeffs is not None:
                pose_m[0] = np.concatenate([go_c[i].numpy(), coeffs[i], tr_c[i].numpy()])
            Ro = T[:3, :3] @ R_obj[i]
            to = T[:3, :3] @ poses.obj_transl[i] + T[:3, 3]
            hits = raycast([(verts_w[i], hand_faces), (obj_v @ R_obj[i].T + poses.obj_transl[i], obj_f)], cam)
            seg = np.zeros((cam.height, cam.width), np.uint8)
            seg[hits.geometry == 0] = DEXYCB_HAND_LABEL
            seg[hits.geometry == 1] = obj_id
            write_label(seq_out / cam.name / _LABEL.format(i), DexYCBLabel(
                seg=seg, pose_y=np.concatenate([Ro, to[:, None]], 1)[None], pose_m=pose_m,
                joint_3d=j_c[list(HO3D_TO_OPENPOSE)][None], joint_2d=(uvw[:, :2] / uvw[:, 2:])[list(HO3D_TO_OPENPOSE)][None],
            ))  # fmt: skip
            _export_images(seq, cam, frame, i, seq_out / cam.name)
    extrinsics["apriltag"] = np.eye(4)[:3].reshape(-1).tolist()  # the toolkit's SequenceLoader reads it; no tag here
    _write_yaml(calib / f"extrinsics_{seq.config.name}" / "extrinsics.yml",
                {"extrinsics": extrinsics, "master": master.name})  # fmt: skip
    _write_yaml(calib / f"mano_{subject}" / "mano.yml", {"betas": [float(x) for x in poses.betas]})
    _write_yaml(seq_out / "meta.yml", {
        "serials": [c.name for c in seq.cameras], "num_frames": F,
        "extrinsics": seq.config.name, "ycb_ids": [obj_id], "ycb_grasp_ind": 0, "mano_sides": ["right"],
        "mano_calib": [subject],
        "hoannot": {"object": obj.name, "hand_model": hand_model.name, "source": poses.source,
                    "frames": [int(f) for f in poses.frames],
                    "pose_m": "MANO PCA-45, flat_hand_mean=False" if basis is not None
                    else "all zero: the open hand has no MANO PCA basis (joint_3d/joint_2d are valid)"},
    })  # fmt: skip
    return seq_out


def _export_images(seq: Sequence, cam: Camera, frame: int, index: int, folder: Path) -> None:
    src = seq.rgb_path(cam.name, frame)
    if seq.config.rgb_ext == "jpg":
        with atomic_write(folder / _COLOR.format(index), "wb") as fh:
            fh.write(src.read_bytes())
    else:
        write_image(folder / _COLOR.format(index), seq.read_rgb(cam.name, frame))
    dsrc = seq.depth_path(cam.name, frame)
    if abs(cam.depth_scale - DEXYCB_DEPTH_SCALE) < 1e-12:
        with atomic_write(folder / _DEPTH.format(index), "wb") as fh:
            fh.write(dsrc.read_bytes())
    else:
        mm = np.clip(np.rint(seq.read_depth(cam.name, frame).astype(np.float64) / DEXYCB_DEPTH_SCALE), 0, 65535)
        write_image(folder / _DEPTH.format(index), mm.astype(np.uint16))
