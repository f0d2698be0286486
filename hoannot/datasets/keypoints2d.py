"""``keypoints2d/<cam>.npz``: the 2D hand joints of one camera (the one reader and writer).

Two folders hold such files: ``SEQ/keypoints2d/`` (written by perception, ``hoannot init
--auto``) and ``SEQ/gt/keypoints2d/`` (ground truth of synthetic captures and of the
DexYCB ingest). One ``.npz`` per camera, keys:

=============== ============ ==============================================================
``frames``      (F,) int64   frame ids of the rows
``uv``          (F, 21, 2)   float32 pixels (OpenCV, pixel centres at integers), **HO-3D
                             joint order**; NaN where the joint was not detected
``conf``        (F, 21)      float32 detection confidence in [0, 1] (detectors)
``visible``     (F, 21)      bool: ground truth, nothing in front of the joint; detectors:
                             ``conf >= threshold``
``joint_order`` ()           the string ``"ho3d"``
=============== ============ ==============================================================

A file needs ``uv`` and ``conf`` or ``visible``; other keys (the perception weights' hashes)
are provenance and ignored. Read for files already on disk: ``confidence``, the copy of
``conf`` that perception wrote until December 2026 (used when ``conf`` is absent), and files
without ``frames`` (their rows are then the sequence's frames in order).

Joints without a detection come back as ``uv`` 0 with confidence 0
(:func:`hoannot.datasets.sequence.zero_missing_joints`), so they weigh nothing downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoannot.io import InputError, write_npz

#: the folder of each source of 2D joints, relative to the sequence folder
SOURCES = {"keypoints2d": ("keypoints2d",), "gt": ("gt", "keypoints2d")}
JOINT_ORDER = "ho3d"


def keypoints2d_path(root: str | Path, cam: str, source: str = "keypoints2d") -> Path:
    """``SEQ/keypoints2d/<cam>.npz`` (perception) or ``SEQ/gt/keypoints2d/<cam>.npz`` (ground truth).

    Raises:
        InputError: an unknown ``source``.
    """
    if source not in SOURCES:
        raise InputError(f"2D joints {source!r}: expected one of {', '.join(SOURCES)}")
    return Path(root).joinpath(*SOURCES[source]) / f"{cam}.npz"


@dataclass
class Keypoints2D:
    """The content of one ``keypoints2d/<cam>.npz`` (see the module docstring).

    Attributes:
        path: the file (for messages).
        frames: (F,) int64 frame ids, or None (rows are the sequence's frames in order).
        uv: (F, 21, 2) float64 pixels, HO-3D order, NaN = no detection.
        conf: (F, 21) float64 confidences, or None when the file has only ``visible``.
        visible: (F, 21) bool, or None.
    """

    path: Path
    frames: np.ndarray | None
    uv: np.ndarray
    conf: np.ndarray | None
    visible: np.ndarray | None

    def confidence(self, hidden_conf: float = 0.0) -> np.ndarray:
        """(F, 21) float64: ``conf``, else 1 for visible joints and ``hidden_conf`` for hidden ones."""
        if self.conf is not None:
            return self.conf
        return np.where(self.visible, 1.0, hidden_conf)

    def rows(self, frames: list[int], missing: str = "error") -> tuple[np.ndarray, np.ndarray]:
        """Row of each of ``frames`` (B,) and whether the file has it.

        Args:
            frames: frame ids.
            missing: ``"error"``: a frame the file lacks is an error; ``"zero"``: it is
                reported as absent (``has`` False, row 0).
        Returns:
            rows (B,) int64, has (B,) bool.
        Raises:
            InputError: with ``missing="error"``, a frame the file lacks, or (without
                ``frames``) a row count other than ``len(frames)``.
        """
        n = len(self.uv)
        if self.frames is None:
            if n != len(frames):
                raise InputError(f"{self.path}: {n} rows but the sequence has {len(frames)} frames and no 'frames' array")
            return np.arange(n), np.ones(n, bool)
        index = {int(f): i for i, f in enumerate(self.frames)}
        has = np.array([int(f) in index for f in frames], bool)
        if missing == "error" and not has.all():
            raise InputError(f"{self.path}: no 2D joints for frame(s) {[f for f, h in zip(frames, has) if not h][:5]}")
        return np.array([index.get(int(f), 0) for f in frames], np.int64), has


def read_keypoints2d(path: str | Path, cam: str | None = None) -> Keypoints2D:
    """Read one ``keypoints2d/<cam>.npz``.

    Args:
        path: the file. cam: camera name, for the message of a missing file.
    Returns:
        :class:`Keypoints2D` (float64 arrays).
    Raises:
        InputError: a missing or unreadable file, no ``uv``, neither ``conf`` (nor
            ``confidence``) nor ``visible``, or shapes other than uv (F, 21, 2) and (F, 21)
            (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (2D joints{f' of camera {cam}' if cam else ''})")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "uv" not in keys:
                raise InputError(f"{path}: missing array 'uv'")
            uv = np.asarray(z["uv"], np.float64)
            ck = "conf" if "conf" in keys else "confidence" if "confidence" in keys else None
            conf = np.asarray(z[ck], np.float64) if ck else None
            visible = np.asarray(z["visible"], bool) if "visible" in keys else None
            frames = np.asarray(z["frames"], np.int64) if "frames" in keys else None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated zip, random bytes...: bad input
        raise InputError(f"{path}: unreadable 2D joints ({type(e).__name__}: {e})".splitlines()[0]) from None
    if conf is None and visible is None:
        raise InputError(f"{path}: needs a 'conf' or 'visible' array")
    c = conf if conf is not None else visible
    N = uv.shape[0] if uv.ndim == 3 else -1
    if uv.ndim != 3 or uv.shape[1:] != (21, 2) or c.shape != (N, 21) or (frames is not None and frames.shape != (N,)):
        raise InputError(f"{path}: expected uv (F, 21, 2) and conf (F, 21), got {uv.shape} and {c.shape}")
    return Keypoints2D(path, frames, uv, conf, visible)


def read_views(paths: list[Path], cams: list[str], frames: list[int], hidden_conf: float = 0.0,
               missing: str = "error") -> tuple[np.ndarray, np.ndarray]:
    """The 2D joints of ``frames`` in C cameras, one file each.

    Args:
        paths: C files (:func:`keypoints2d_path`). cams: their C camera names (messages).
        frames: B frame ids.
        hidden_conf: confidence of a joint a file marks only as not ``visible``.
        missing: a frame a file lacks: ``"error"``, or ``"zero"`` (confidence 0 there).
    Returns:
        uv (B, C, 21, 2) float64 pixels, HO-3D order; conf (B, C, 21) float64 in [0, 1];
        0 for joints without a detection (and their ``uv``).
    Raises:
        InputError: as :func:`read_keypoints2d` and :meth:`Keypoints2D.rows`.
    """
    from hoannot.datasets.sequence import zero_missing_joints

    uvs, confs = [], []
    for path, cam in zip(paths, cams):
        kp = read_keypoints2d(path, cam)
        rows, has = kp.rows(frames, missing)
        uv, conf = zero_missing_joints(kp.uv[rows], kp.confidence(hidden_conf)[rows])
        uvs.append(np.where(has[:, None, None], uv, 0.0))
        confs.append(np.where(has[:, None], conf, 0.0))
    return np.stack(uvs, 1), np.stack(confs, 1)


def write_keypoints2d(path: str | Path, frames, uv: np.ndarray, conf: np.ndarray | None = None,
                      visible: np.ndarray | None = None, **provenance: str) -> None:
    """Atomically write one ``keypoints2d/<cam>.npz`` with the documented keys.

    Args:
        path: the file. frames: (F,) frame ids.
        uv: (F, 21, 2) pixels, HO-3D order, NaN = not detected.
        conf: (F, 21) confidences in [0, 1] (detectors), or None.
        visible: (F, 21) bool, or None; at least one of ``conf`` and ``visible``.
        provenance: further string entries (e.g. ``kp_sha256``).
    Raises:
        ValueError: neither ``conf`` nor ``visible``, or shapes that do not match
            (a programming error, not bad input).
    """
    frames = np.asarray(frames, np.int64)
    uv = np.asarray(uv, np.float32)
    F = len(frames)
    if conf is None and visible is None:
        raise ValueError("write_keypoints2d: give conf or visible")
    arrays = {"frames": frames, "uv": uv}
    if conf is not None:
        arrays["conf"] = np.asarray(conf, np.float32)
    if visible is not None:
        arrays["visible"] = np.asarray(visible, bool)
    if uv.shape != (F, 21, 2) or any(a.shape != (F, 21) for k, a in arrays.items() if k in ("conf", "visible")):
        raise ValueError(f"write_keypoints2d: expected uv ({F}, 21, 2) and conf/visible ({F}, 21), got {uv.shape}")
    write_npz(path, **arrays, joint_order=np.asarray(JOINT_ORDER), **{k: np.asarray(v) for k, v in provenance.items()})
