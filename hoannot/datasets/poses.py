"""Per-frame hand and object poses as they pass between ``init``, ``fit``, ``export`` and ``eval``.

All poses are in the sequence's **world frame** (the frame ``T_world_cam`` maps into),
metres and radians. Hand parameters follow MANO (smplx naming): ``global_orient``
(3, axis-angle of the root), ``hand_pose`` (45, axis-angle of 15 joints, full pose,
not PCA, not including the model's mean pose), ``betas`` (shape), ``transl`` (3).
Object pose maps object-model coordinates to world: ``x_w = R(obj_rot) x_o + obj_transl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from hoannot.io import InputError, write_npz


@dataclass
class HandObjectPoses:
    """Hand (MANO parameters) and object (6-DoF) poses for F frames.

    Attributes:
        frames: (F,) int64 frame ids.
        global_orient: (F, 3) float32, axis-angle, radians.
        hand_pose: (F, 45) float32, axis-angle per joint (MANO joint order 1..15).
        betas: (B,) float32 shape coefficients shared by the sequence (B = 10).
        transl: (F, 3) float32, metres.
        obj_rot: (F, 3) float32, axis-angle object->world.
        obj_transl: (F, 3) float32, metres.
        source: where these poses come from ("gt+noise", "file", "fit", ...).
    """

    frames: np.ndarray
    global_orient: np.ndarray
    hand_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    obj_rot: np.ndarray
    obj_transl: np.ndarray
    source: str = field(default="unknown")

    def __post_init__(self) -> None:
        F = len(self.frames)
        shapes = {
            "global_orient": (F, 3),
            "hand_pose": (F, 45),
            "transl": (F, 3),
            "obj_rot": (F, 3),
            "obj_transl": (F, 3),
        }
        for name, shape in shapes.items():
            arr = np.asarray(getattr(self, name), dtype=np.float32)
            if arr.shape != shape:
                raise InputError(f"HandObjectPoses.{name}: expected shape {shape}, got {arr.shape}")
            setattr(self, name, arr)
        self.frames = np.asarray(self.frames, dtype=np.int64)
        self.betas = np.asarray(self.betas, dtype=np.float32).reshape(-1)

    def __len__(self) -> int:
        return len(self.frames)

    def select(self, frames: list[int] | np.ndarray) -> "HandObjectPoses":
        """The subset of frames with the given ids, in that order.

        Raises:
            KeyError: a frame id is not present.
        """
        index = {int(f): i for i, f in enumerate(self.frames)}
        idx = np.array([index[int(f)] for f in frames], dtype=np.int64)
        return HandObjectPoses(
            frames=self.frames[idx],
            global_orient=self.global_orient[idx],
            hand_pose=self.hand_pose[idx],
            betas=self.betas,
            transl=self.transl[idx],
            obj_rot=self.obj_rot[idx],
            obj_transl=self.obj_transl[idx],
            source=self.source,
        )

    def save(self, path: str | Path) -> None:
        """Atomically write an ``.npz`` with one array per attribute."""
        write_npz(path, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})

    @staticmethod
    def load(path: str | Path, frames: list[int] | None = None) -> "HandObjectPoses":
        """Read a file written by :meth:`save` and check it
        (:func:`hoannot.datasets.validate.check_poses`).

        Args:
            frames: the sequence's frame ids; when given, every frame of the file must be one.
        Raises:
            InputError: missing, truncated or unreadable file, missing/ill-shaped array,
                non-finite values, duplicate frames, translations beyond
                :data:`~hoannot.datasets.validate.MAX_TRANSLATION_M`, or frames not in
                ``frames`` (names the file).
        """
        from hoannot.datasets.validate import check_poses

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                kw = {f.name: z[f.name] for f in fields(HandObjectPoses)}
        except KeyError as e:
            raise InputError(f"{path}: missing array {e}") from None
        except Exception as e:  # noqa: BLE001 - truncated zip, random bytes, pickles: bad input
            raise InputError(f"{path}: not a readable poses .npz ({type(e).__name__}: {e})".splitlines()[0]) from None
        kw["source"] = str(kw["source"])
        try:
            poses = HandObjectPoses(**kw)
        except (InputError, TypeError, ValueError) as e:
            raise InputError(f"{path}: {e}".splitlines()[0]) from None
        check_poses(poses, path, frames)
        return poses


@dataclass
class GroundTruth:
    """Ground truth of a synthetic capture (``gt/poses.npz``), world frame.

    Attributes:
        frames: (F,) int64.
        hand_joints: (F, 21, 3) float32 metres, **HO-3D order**.
        hand_vertices: (F, V, 3) float32 metres, vertices of the hand that was rendered.
        hand_faces: (Nf, 3) int64 faces of that hand mesh.
        obj_rot: (F, 3) axis-angle object->world.
        obj_transl: (F, 3) metres.
        hand_model: name of the hand that was rendered ("webxr", "open", "mano").
        hand_params: MANO parameters when ``hand_model`` is our fitting model, else None.
    """

    frames: np.ndarray
    hand_joints: np.ndarray
    hand_vertices: np.ndarray
    hand_faces: np.ndarray
    obj_rot: np.ndarray
    obj_transl: np.ndarray
    hand_model: str
    hand_params: HandObjectPoses | None = None

    def save(self, path: str | Path) -> None:
        arrays = {
            "frames": self.frames,
            "hand_joints": self.hand_joints,
            "hand_vertices": self.hand_vertices,
            "hand_faces": self.hand_faces,
            "obj_rot": self.obj_rot,
            "obj_transl": self.obj_transl,
            "hand_model": np.asarray(self.hand_model),
        }
        if self.hand_params is not None:
            for f in fields(HandObjectPoses):
                arrays["mano_" + f.name] = np.asarray(getattr(self.hand_params, f.name))
        write_npz(path, **arrays)

    @staticmethod
    def load(path: str | Path) -> "GroundTruth":
        """Raises InputError for a missing file or array."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                params = None
                if "mano_frames" in z:
                    kw = {f.name: z["mano_" + f.name] for f in fields(HandObjectPoses)}
                    kw["source"] = str(kw["source"])
                    params = HandObjectPoses(**kw)
                return GroundTruth(
                    frames=z["frames"].astype(np.int64),
                    hand_joints=z["hand_joints"].astype(np.float32),
                    hand_vertices=z["hand_vertices"].astype(np.float32),
                    hand_faces=z["hand_faces"].astype(np.int64),
                    obj_rot=z["obj_rot"].astype(np.float32),
                    obj_transl=z["obj_transl"].astype(np.float32),
                    hand_model=str(z["hand_model"]),
                    hand_params=params,
                )
        except KeyError as e:
            raise InputError(f"{path}: missing array {e}") from None
