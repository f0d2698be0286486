"""Segmentation images: ``<folder>/<cam>/<frame:06d>.png`` (the one reader and writer).

Two folders of a sequence hold them: ``SEQ/segmentation/`` (perception, ``hoannot init
--auto``, or copied in by the user) and ``SEQ/gt/segmentation/`` (ground truth of synthetic
captures and of the DexYCB ingest). Each image is an (H, W) uint8 PNG of the camera's
calibrated size with labels :data:`SEGMENTATION_LABELS`: 0 background, 1 hand, 2 object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hoannot.io import InputError, read_image, write_image

SEGMENTATION_LABELS = {"background": 0, "hand": 1, "object": 2}
#: the folder of each source of labels, relative to the sequence folder
SOURCES = {"segmentation": ("segmentation",), "gt": ("gt", "segmentation")}


def mask_interior(mask: np.ndarray, erode: int = 1, keep_fraction: float = 0.3) -> np.ndarray:
    """``mask`` without its outer ``erode`` pixels (scipy's binary erosion, 4-connected), where
    the depth of a pixel mixes the labelled surface with what lies behind or in front of it.

    Args:
        mask: (H, W) bool pixels of one label.
        erode: pixels removed from the border (0: ``mask`` unchanged).
        keep_fraction: a mask that would keep less than this fraction of its pixels is
            returned whole (a tiny or thin region keeps its border rather than vanish).
    Returns:
        (H, W) bool.
    """
    if erode <= 0:
        return mask
    from scipy.ndimage import binary_erosion

    eroded = binary_erosion(mask, iterations=erode)
    return eroded if eroded.sum() >= keep_fraction * mask.sum() else mask


def segmentation_dir(root: str | Path, source: str = "segmentation") -> Path:
    """``SEQ/segmentation`` or ``SEQ/gt/segmentation``.

    Raises:
        InputError: an unknown ``source`` (neither ``"segmentation"`` nor ``"gt"``).
    """
    if source not in SOURCES:
        raise InputError(f"segmentation {source!r}: expected segmentation or gt")
    return Path(root).joinpath(*SOURCES[source])


def labels_path(directory: str | Path, cam: str, frame: int) -> Path:
    """``<directory>/<cam>/<frame:06d>.png``."""
    return Path(directory) / cam / f"{int(frame):06d}.png"


def segmentation_path(root: str | Path, cam: str, frame: int, source: str = "segmentation") -> Path:
    """The labels of one image of ``source`` (see :func:`segmentation_dir`)."""
    return labels_path(segmentation_dir(root, source), cam, frame)


def read_labels(path: str | Path, wh: tuple[int, int] | None = None, what: str = "") -> np.ndarray:
    """Read and check one segmentation image.

    Args:
        path: the PNG. wh: (width, height) it must have (the camera's), or None (no size check).
        what: appended to the message of a missing file, e.g. ``"segmentation of camera cam0"``.
    Returns:
        (H, W) uint8 labels in {0, 1, 2}.
    Raises:
        InputError: a missing file, or not an (H, W) uint8 image of size ``wh`` with labels
            0, 1, 2 (:func:`hoannot.datasets.validate.check_labels`).
    """
    from hoannot.datasets.validate import check_labels

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found{f' ({what})' if what else ''}")
    lab = read_image(path)
    if wh is None:
        wh = (lab.shape[1], lab.shape[0]) if lab.ndim >= 2 else (0, 0)
    return check_labels(lab, path, (int(wh[0]), int(wh[1])))


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """Atomically write one segmentation image.

    Args:
        path: the PNG. labels: (H, W) uint8 in {0, 1, 2}.
    Raises:
        ValueError: another shape, dtype or label (a programming error, not bad input).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8 or (labels.size and labels.max() > 2):
        raise ValueError(f"write_labels {path}: expected (H, W) uint8 labels in 0..2, got {labels.shape} {labels.dtype}")
    write_image(path, labels)
