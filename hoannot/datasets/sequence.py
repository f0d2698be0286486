"""The hoannot sequence folder: one capture of C cameras x F frames.

Layout (everything below ``SEQ/``)::

    sequence.yaml                 SequenceConfig (object, hand model, frames, cameras)
    calibration/cameras.json      {"cameras": [Camera.to_dict(), ...]}
    rgb/<cam>/<frame:06d>.png|jpg colour, (H, W, 3) uint8
    depth/<cam>/<frame:06d>.png   depth, (H, W) uint16; metres = value * depth_scale
    segmentation/<cam>/<frame:06d>.png  optional labels (0 background, 1 hand, 2 object),
                                  see :mod:`hoannot.datasets.segmentation`
    keypoints2d/<cam>.npz         optional 2D joints, HO-3D order, see :mod:`hoannot.datasets.keypoints2d`
    gt/segmentation/, gt/keypoints2d/  the same, ground truth (synthetic captures, ingests)
    gt/poses.npz                  optional ground truth (synthetic captures), see poses.py
    init/poses.npz                written by ``hoannot init`` (HandObjectPoses + "source")
    fit/poses.npz, fit/ckpt/      written by ``hoannot fit``
    labels/                       written by ``hoannot export``

Frame ids are integers; files are named with six digits. The world frame is the
one ``T_world_cam`` maps into; hand and object poses are stored in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hoannot.camera import Camera
from hoannot.io import InputError, atomic_write, read_image, write_json
from hoannot.datasets.segmentation import read_labels, segmentation_path


def zero_missing_joints(uv: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2D joints without a detection get ``uv`` 0 and confidence 0.

    A detector that finds no hand writes NaN joints to ``keypoints2d/``; weighted by a
    zero confidence they would still give NaN (0 * NaN), so readers call this.

    Args:
        uv: (..., 21, 2) px; conf: (..., 21) confidences.
    Returns:
        (uv, conf) of the same shapes and dtypes, finite everywhere.
    """
    missing = ~np.isfinite(uv).all(-1) | ~np.isfinite(conf)
    return np.where(missing[..., None], 0, uv).astype(uv.dtype), np.where(missing, 0, conf).astype(conf.dtype)


class ObjectConfig(BaseModel):
    """Which object is manipulated.

    ``mesh`` is a mesh file (absolute, or relative to the sequence folder), or
    ``primitive:box:SX,SY,SZ`` / ``primitive:cylinder:RADIUS,HEIGHT`` (metres).
    When ``mesh`` is empty, ``id`` is looked up in the YCB folder given to ``init``.
    """

    model_config = ConfigDict(extra="forbid")
    id: str
    mesh: str = ""
    symmetric: bool = False


class HandConfig(BaseModel):
    """Which hand model to fit: ``"open"`` (bundled) or a path to MANO_RIGHT.pkl."""

    model_config = ConfigDict(extra="forbid")
    side: Literal["right"] = "right"
    model: str = "open"


class SequenceConfig(BaseModel):
    """Contents of ``sequence.yaml``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    cameras: list[str] = Field(min_length=1)
    frames: list[int] = Field(min_length=1)
    object: ObjectConfig
    hand: HandConfig = HandConfig()
    rgb_ext: Literal["png", "jpg"] = "png"


@dataclass
class Sequence:
    """A sequence folder opened for reading.

    Attributes:
        root: the folder.
        config: parsed ``sequence.yaml``.
        cameras: calibrated cameras in ``config.cameras`` order.
    """

    root: Path
    config: SequenceConfig
    cameras: list[Camera]

    @property
    def frames(self) -> list[int]:
        return list(self.config.frames)

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    # ---- paths -------------------------------------------------------------
    def rgb_path(self, cam: str, frame: int) -> Path:
        return self.root / "rgb" / cam / f"{frame:06d}.{self.config.rgb_ext}"

    def depth_path(self, cam: str, frame: int) -> Path:
        return self.root / "depth" / cam / f"{frame:06d}.png"

    def segmentation_path(self, cam: str, frame: int, source: str = "segmentation") -> Path:
        """Labels of one image: ``segmentation/`` (``source="segmentation"``) or ``gt/segmentation/`` (``"gt"``)."""
        return segmentation_path(self.root, cam, frame, source)

    # ---- reading -----------------------------------------------------------
    def read_rgb(self, cam: str, frame: int) -> np.ndarray:
        """(H, W, 3) uint8."""
        img = read_image(self.rgb_path(cam, frame))
        return img[..., :3]

    def read_depth(self, cam: str, frame: int) -> np.ndarray:
        """(H, W) float32 depth in metres (0 where the sensor gave no value)."""
        camera = self.camera(cam)
        raw = read_image(self.depth_path(cam, frame))
        return raw.astype(np.float32) * np.float32(camera.depth_scale)

    def read_segmentation(self, cam: str, frame: int, source: str = "segmentation",
                          required: bool = False) -> np.ndarray | None:
        """(H, W) uint8 labels of one image (0 background, 1 hand, 2 object), checked.

        Args:
            cam, frame: the image. source: ``"segmentation"`` or ``"gt"`` (``gt/segmentation/``).
            required: a missing file is an error (else None).
        Raises:
            InputError: a malformed image (:func:`hoannot.datasets.segmentation.read_labels`),
                a missing one with ``required``, an unknown ``source``.
        """
        p = self.segmentation_path(cam, frame, source)
        if not required and not p.is_file():
            return None
        c = self.camera(cam)
        hint = "run `hoannot init` first" if source == "segmentation" else "ground truth of a synthetic capture"
        return read_labels(p, (int(c.width), int(c.height)), f"segmentation of camera {cam}, frame {frame}; {hint}")

    def camera(self, name: str) -> Camera:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"{self.root}: no camera named {name!r}")


def load_config(path: Path) -> SequenceConfig:
    """Parse ``sequence.yaml``.

    Raises:
        InputError: missing file, bad YAML or invalid fields (one line, with the file).
    """
    if not path.is_file():
        raise InputError(f"{path}: file not found (a sequence folder needs sequence.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
        return SequenceConfig.model_validate(data)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise InputError(f"{path}: field {loc!r}: {err['msg']}") from None


def load_cameras(path: Path) -> list[Camera]:
    """Parse ``calibration/cameras.json``.

    Raises:
        InputError: missing/invalid file or camera entry.
    """
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
        return [Camera.from_dict(d) for d in data["cameras"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: invalid calibration ({type(e).__name__}: {e})".splitlines()[0]) from None


def open_sequence(root: str | Path) -> Sequence:
    """Open a sequence folder (no image is read; see ``validate`` for checks).

    Raises:
        InputError: ``sequence.yaml`` or ``calibration/cameras.json`` is missing
            or invalid, or a camera listed in the config has no calibration.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    config = load_config(root / "sequence.yaml")
    cal_path = root / "calibration" / "cameras.json"
    by_name = {c.name: c for c in load_cameras(cal_path)}
    missing = [n for n in config.cameras if n not in by_name]
    if missing:
        raise InputError(f"{cal_path}: no calibration for camera(s) {', '.join(missing)}")
    return Sequence(root=root, config=config, cameras=[by_name[n] for n in config.cameras])


def write_sequence_header(root: str | Path, config: SequenceConfig, cameras: list[Camera]) -> None:
    """Atomically write ``sequence.yaml`` and ``calibration/cameras.json``."""
    root = Path(root)
    with atomic_write(root / "sequence.yaml", "w") as f:
        yaml.safe_dump(config.model_dump(), f, sort_keys=False)
    write_json(root / "calibration" / "cameras.json", {"cameras": [c.to_dict() for c in cameras]})
