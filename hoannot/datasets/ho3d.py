"""Ingest an HO-3D-style single-camera sequence into the hoannot layout.

HO-3D layout (v2/v3; see ``../shared/docs/formats.md``)::

    SRC/rgb/NNNN.png|jpg     colour, 640x480
    SRC/depth/NNNN.png       3-channel PNG: metres = (R + 256 G) * HO3D_DEPTH_UNIT
    SRC/meta/NNNN.pkl        dict: camMat (3x3), objName, handJoints3D (21x3), handPose (48),
                             handTrans (3), handBeta (10), objRot (3), objTrans (3), ...
    SRC/calibration/cam_0_intrinsics.txt   optional, used only when no meta has camMat

HO-3D 3D labels are in **OpenGL** camera coordinates (x right, y up, z backwards);
they are converted to OpenCV (x right, y down, z forward) with ``D = diag(1, -1, -1)``:
``x_cv = D x_gl``; an object pose ``(R, t)`` becomes ``(D R, D t)``.

Output (one camera named ``cam0``, ``T_world_cam`` = identity, so world = OpenCV camera):

- ``rgb/cam0/<frame:06d>.<png|jpg>``: the source file bytes, unchanged (no re-encoding);
- ``depth/cam0/<frame:06d>.png``: uint16 ``R + 256 G``, i.e. the HO-3D depth unit is kept as
  ``depth_scale = HO3D_DEPTH_UNIT`` (~0.125 mm, range up to 8.19 m): lossless;
- ``gt/poses.npz`` (:class:`~hoannot.datasets.poses.GroundTruth`, when the meta files carry
  hand joints): ``hand_joints`` (F, 21, 3) OpenCV metres, HO-3D order; ``hand_vertices``
  (F, 0, 3) (HO-3D meta has no vertices); object pose converted to OpenCV;
  ``hand_model = "mano"``; ``hand_params = None`` (moving MANO's root to another frame needs
  the model's root joint, see ``gt/ho3d_mano.npz``);
- ``gt/ho3d_mano.npz`` (same condition): the raw HO-3D MANO parameters in **OpenGL** camera
  coordinates: ``frames`` (F,), ``hand_pose48`` (F, 48), ``transl_gl`` (F, 3), ``betas`` (10,),
  ``valid`` (F,) bool.

Frames whose meta lacks hand joints (e.g. HO-3D evaluation frames) get NaN joints and
``valid = False``.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera
from hoannot.io import InputError, atomic_write, read_image, write_image, write_npz
from hoannot.datasets.validate import check_ingest_destination
from hoannot.datasets.poses import GroundTruth
from hoannot.datasets.sequence import ObjectConfig, Sequence, SequenceConfig, open_sequence, write_sequence_header

#: Metres per unit of HO-3D's RGB-encoded depth (formats.md): depth = (R + 256 G) * unit.
HO3D_DEPTH_UNIT = 0.00012498664727900177
#: OpenGL <-> OpenCV camera axes flip.
GL_TO_CV = np.diag([1.0, -1.0, -1.0])
#: Name of the single camera of an ingested HO-3D sequence.
HO3D_CAMERA = "cam0"

_RGB_EXT = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------------------------------
# reading HO-3D files
# ---------------------------------------------------------------------------------------
class _MetaUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays/scalars and builtins (meta files are data)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_meta(path: str | Path) -> dict:
    """Read one HO-3D ``meta/NNNN.pkl`` (Python 2 or 3 pickle of a dict of arrays).

    Only numpy arrays/scalars and builtin containers are allowed in the pickle.

    Raises:
        InputError: missing, unreadable or not a dict (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            meta = _MetaUnpickler(f, encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
        raise InputError(f"{path}: unreadable meta pickle ({type(e).__name__}: {e})".splitlines()[0]) from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: meta pickle must hold a dict, got {type(meta).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in meta.items()}


def decode_ho3d_depth(path: str | Path) -> np.ndarray:
    """Read an HO-3D RGB-encoded depth PNG as raw units.

    Returns:
        (H, W) uint16 ``R + 256 G``; metres = value * :data:`HO3D_DEPTH_UNIT`.
    Raises:
        InputError: unreadable, or not an 8-bit 3/4-channel image (names the file).
    """
    img = read_image(path)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise InputError(f"{path}: HO-3D depth must be an 8-bit RGB PNG, got {img.shape} {img.dtype}")
    return (img[..., 0].astype(np.uint16) + (img[..., 1].astype(np.uint16) << 8)).astype(np.uint16)


def encode_ho3d_depth(depth_m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_ho3d_depth` (for tests and exports).

    Args:
        depth_m: (H, W) float metres, 0 = no value.
    Returns:
        (H, W, 3) uint8 with R = low byte, G = high byte, B = 0.
    """
    units = np.clip(np.rint(np.asarray(depth_m, np.float64) / HO3D_DEPTH_UNIT), 0, 65535).astype(np.uint16)
    out = np.zeros(units.shape + (3,), np.uint8)
    out[..., 0] = units & 0xFF
    out[..., 1] = units >> 8
    return out


def read_intrinsics_txt(path: str | Path) -> np.ndarray:
    """Read a calibration ``cam_<i>_intrinsics.txt`` into K (3, 3).

    Accepted contents: ``key: value`` / ``key value`` pairs with fx, fy and ppx|cx, ppy|cy;
    or 9 numbers (row-major K); or 4 numbers ``fx fy cx cy``.

    Raises:
        InputError: none of these forms (names the file).
    """
    path = Path(path)
    text = path.read_text()
    pairs = {k.lower(): float(v) for k, v in re.findall(r"([A-Za-z_]+)\s*[:=]?\s*([-+0-9.eE]+)", text)}
    cx = pairs.get("ppx", pairs.get("cx"))
    cy = pairs.get("ppy", pairs.get("cy"))
    if "fx" in pairs and "fy" in pairs and cx is not None and cy is not None:
        return np.array([[pairs["fx"], 0, cx], [0, pairs["fy"], cy], [0, 0, 1.0]])
    nums = [float(x) for x in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text)]
    if len(nums) == 9:
        return np.array(nums, np.float64).reshape(3, 3)
    if len(nums) == 4:
        fx, fy, cx_, cy_ = nums
        return np.array([[fx, 0, cx_], [0, fy, cy_], [0, 0, 1.0]])
    raise InputError(f"{path}: cannot parse intrinsics (expected fx, fy, ppx, ppy or a 3x3 matrix)")


# ---------------------------------------------------------------------------------------
def detect_layout(path: str | Path) -> Literal["hoannot", "ho3d", "dexycb"]:
    """Which layout a sequence folder uses.

    Returns:
        ``"hoannot"`` if ``path/sequence.yaml`` exists; ``"ho3d"`` if ``path/rgb`` holds
        image files directly (HO-3D ``rgb/NNNN.png|jpg``) and ``path/depth`` or
        ``path/meta`` exists; ``"dexycb"`` for a DexYCB sequence (``meta.yml`` and serial
        folders of ``color_*.jpg``, :func:`hoannot.datasets.dexycb.is_dexycb_sequence`).
    Raises:
        InputError: not a folder, a dataset root or subject folder, or none of these
            layouts (names the folder).
    """
    from hoannot.datasets.dexycb import dexycb_hint, is_dexycb_sequence

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a directory")
    if (path / "sequence.yaml").is_file():
        return "hoannot"
    rgb = path / "rgb"
    if rgb.is_dir() and ((path / "depth").is_dir() or (path / "meta").is_dir()):
        if any(p.suffix.lower() in _RGB_EXT and p.is_file() for p in rgb.iterdir()):
            return "ho3d"
    if is_dexycb_sequence(path):
        return "dexycb"
    if (path / "train").is_dir() or (path / "evaluation").is_dir():
        raise InputError(f"{path}: looks like an HO-3D dataset root; give one sequence folder (e.g. train/ABF10)")
    hint = dexycb_hint(path)
    if hint:
        raise InputError(hint)
    raise InputError(f"{path}: neither a hoannot sequence (no sequence.yaml) nor an HO-3D sequence (rgb/ + depth/ or meta/) "
                     "nor a DexYCB sequence (meta.yml + <serial>/color_*.jpg)")  # fmt: skip


def _frame_files(folder: Path, exts: tuple[str, ...]) -> dict[int, Path]:
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        if p.suffix.lower() in exts and p.stem.isdigit():
            fid = int(p.stem)
            if fid in out:
                raise InputError(f"{p}: frame {fid} appears twice ({out[fid].name} and {p.name})")
            out[fid] = p
    return out


def _camera_matrix(metas: dict[int, dict], meta_paths: dict[int, Path], src: Path) -> np.ndarray:
    Ks = {f: np.asarray(m["camMat"], np.float64) for f, m in metas.items() if m.get("camMat") is not None}
    if Ks:
        f0 = min(Ks)
        K = Ks[f0]
        if K.shape != (3, 3):
            raise InputError(f"{meta_paths[f0]}: camMat must be 3x3, got shape {K.shape}")
        for f, Kf in Ks.items():
            if Kf.shape != (3, 3) or not np.allclose(Kf, K, rtol=1e-6, atol=1e-6):
                raise InputError(f"{meta_paths[f]}: camMat differs from {meta_paths[f0].name}'s (one camera expected)")
        return K
    for cand in (src / "calibration" / "cam_0_intrinsics.txt", *sorted((src / "calibration").rglob("cam_0_intrinsics.txt"))):
        if cand.is_file():
            return read_intrinsics_txt(cand)
    raise InputError(f"{src / 'meta'}: no camMat in any meta file and no calibration/cam_0_intrinsics.txt")


def _as_array(v: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64)
    return a.reshape(shape) if a.size == int(np.prod(shape)) and np.all(np.isfinite(a)) else None


def _ground_truth(frames: list[int], metas: dict[int, dict]) -> tuple[GroundTruth, dict[str, np.ndarray]] | None:
    F = len(frames)
    joints = np.full((F, 21, 3), np.nan, np.float32)
    obj_rot = np.full((F, 3), np.nan, np.float32)
    obj_transl = np.full((F, 3), np.nan, np.float32)
    pose48 = np.full((F, 48), np.nan, np.float32)
    transl_gl = np.full((F, 3), np.nan, np.float32)
    valid = np.zeros(F, bool)
    betas = np.full(10, np.nan, np.float32)
    for i, f in enumerate(frames):
        m = metas.get(f, {})
        j = _as_array(m.get("handJoints3D"), (21, 3))
        if j is not None:
            joints[i] = j @ GL_TO_CV.T
            valid[i] = True
        r, t = _as_array(m.get("objRot"), (3,)), _as_array(m.get("objTrans"), (3,))
        if r is not None and t is not None:
            R_cv = GL_TO_CV @ Rotation.from_rotvec(r).as_matrix()
            obj_rot[i] = Rotation.from_matrix(R_cv).as_rotvec()
            obj_transl[i] = GL_TO_CV @ t
        p, tr, b = _as_array(m.get("handPose"), (48,)), _as_array(m.get("handTrans"), (3,)), _as_array(m.get("handBeta"), (10,))
        if p is not None and tr is not None:
            pose48[i], transl_gl[i] = p, tr
        if b is not None and np.isnan(betas).all():
            betas[:] = b
    if not valid.any():
        return None
    gt = GroundTruth(
        frames=np.asarray(frames, np.int64),
        hand_joints=joints,
        hand_vertices=np.zeros((F, 0, 3), np.float32),
        hand_faces=np.zeros((0, 3), np.int64),
        obj_rot=obj_rot,
        obj_transl=obj_transl,
        hand_model="mano",
        hand_params=None,
    )
    mano = {"frames": np.asarray(frames, np.int64), "hand_pose48": pose48, "transl_gl": transl_gl, "betas": betas, "valid": valid}
    return gt, mano


def ingest_ho3d(
    src: str | Path,
    dst: str | Path,
    object_mesh: str | None = None,
    frames: slice | None = None,
    overwrite: bool = False,
) -> Sequence:
    """Convert an HO-3D-style sequence folder into a hoannot sequence folder.

    Args:
        src: HO-3D sequence folder (``rgb/``, ``depth/``, ``meta/``; see module docstring).
        dst: output folder; must not exist or be empty, unless ``overwrite``.
        object_mesh: ``object.mesh`` for ``sequence.yaml`` (mesh path or primitive spec);
            when None the object is given by the meta ``objName`` as a YCB id.
        frames: slice over the sorted source frame ids (e.g. ``slice(0, 100, 5)``);
            frame ids are kept (HO-3D ``0042`` becomes frame 42).
        overwrite: replace an existing hoannot sequence at ``dst`` (a non-empty ``dst``
            without ``sequence.yaml`` is never replaced).

    Returns:
        The written sequence, opened.

    The sequence is written into a temporary sibling folder (every file through the
    atomic helpers of :mod:`hoannot.io`) and moved to ``dst`` only when
    complete, so an interrupted ingest leaves ``dst`` as it was.

    Raises:
        InputError: ``dst`` not empty (without ``overwrite``); missing rgb/depth folder or
            frame files; unreadable images or meta; rgb/depth sizes differing between
            frames; no intrinsics; no object name and no ``object_mesh``.
    """
    src, dst = Path(src), Path(dst)
    layout = detect_layout(src)
    if layout == "hoannot":
        raise InputError(f"{src}: already a hoannot sequence, nothing to ingest")
    if layout != "ho3d":
        raise InputError(f"{src}: a DexYCB sequence, not HO-3D (see hoannot.datasets.dexycb.ingest_dexycb)")
    check_ingest_destination(src, dst, overwrite)

    rgb_files = _frame_files(src / "rgb", _RGB_EXT)
    if not rgb_files:
        raise InputError(f"{src / 'rgb'}: no frame images (NNNN.png|jpg)")
    depth_files = _frame_files(src / "depth", (".png",))
    meta_files = _frame_files(src / "meta", (".pkl",))
    ids = sorted(rgb_files)
    if frames is not None:
        ids = ids[frames]
        if not ids:
            raise InputError(f"{src / 'rgb'}: frame selection {frames} is empty")
    for f in ids:
        if f not in depth_files:
            raise InputError(f"{src / 'depth' / rgb_files[f].with_suffix('.png').name}: depth frame file not found")
    exts = {rgb_files[f].suffix.lower() for f in ids}
    if len(exts) > 1:
        raise InputError(f"{src / 'rgb'}: mixed image types {sorted(exts)}")
    rgb_ext = "jpg" if exts.pop() in (".jpg", ".jpeg") else "png"

    metas = {f: read_meta(meta_files[f]) for f in ids if f in meta_files}
    K = _camera_matrix(metas, meta_files, src)
    names = {str(m["objName"]) for m in metas.values() if m.get("objName") is not None}
    if len(names) > 1:
        raise InputError(f"{src / 'meta'}: several objects in one sequence: {sorted(names)}")
    if object_mesh is None and not names:
        raise InputError(f"{src / 'meta'}: no objName in the meta files; give object_mesh")
    obj_id = names.pop() if names else (Path(object_mesh).stem if not object_mesh.startswith("primitive:") else "object")

    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.ingest-", dir=dst.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; dst gets ordinary permissions
    try:
        size: tuple[int, int] | None = None
        for f in ids:
            rgb = read_image(rgb_files[f])
            depth = decode_ho3d_depth(depth_files[f])
            if rgb.ndim != 3 or rgb.dtype != np.uint8 or rgb.shape[2] not in (3, 4):
                raise InputError(f"{rgb_files[f]}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
            hw = rgb.shape[:2]
            if size is None:
                size = hw
            if hw != size:
                raise InputError(f"{rgb_files[f]}: image size {hw[::-1]} differs from earlier frames {size[::-1]}")
            if depth.shape != hw:
                raise InputError(f"{depth_files[f]}: depth size {depth.shape[::-1]} != rgb size {hw[::-1]}")
            with atomic_write(stage / "rgb" / HO3D_CAMERA / f"{f:06d}.{rgb_ext}", "wb") as fh:
                fh.write(rgb_files[f].read_bytes())
            write_image(stage / "depth" / HO3D_CAMERA / f"{f:06d}.png", depth)
        assert size is not None
        gt = _ground_truth(ids, metas)
        if gt is not None:
            gt[0].save(stage / "gt" / "poses.npz")
            write_npz(stage / "gt" / "ho3d_mano.npz", **gt[1])
        camera = Camera(
            name=HO3D_CAMERA, K=K, width=int(size[1]), height=int(size[0]),
            T_world_cam=np.eye(4), depth_scale=HO3D_DEPTH_UNIT,
        )
        config = SequenceConfig(
            name=src.resolve().name, cameras=[HO3D_CAMERA], frames=ids,
            object=ObjectConfig(id=obj_id, mesh=object_mesh or ""), rgb_ext=rgb_ext,
        )
        write_sequence_header(stage, config, [camera])
        _move_into_place(stage, dst)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return open_sequence(dst)


def _move_into_place(stage: Path, dst: Path) -> None:
    """Rename ``stage`` onto ``dst`` (absent, empty, or an old sequence that is then removed)."""
    if dst.exists() and any(dst.iterdir()):
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        try:
            os.replace(stage, dst)
        except BaseException:
            os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        if dst.exists():
            dst.rmdir()
        os.replace(stage, dst)
