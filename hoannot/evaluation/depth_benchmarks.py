"""Readers for the NYU and ICVL depth-hand benchmark label files (u, v, depth mm per joint).

Layout (as published in github.com/xinghaochen/awesome-hand-pose-estimation, ``evaluation/``):
``groundtruth/<dataset>/<dataset>_test_groundtruth_label.txt`` and ``predictions/<dataset>/<method>.txt``,
one line per test frame with J * 3 numbers ``u v d`` (pixels, pixels, millimetres).
NYU: 8252 frames x 14 joints; ICVL: 1596 frames x 16 joints.

Back-projection (the upstream evaluation's ``util.py``): ``x = (u - cx) d / fx``,
``y = (v - cy) d / fy``, ``z = d``. NYU's ``fy`` is negative (a y-up frame); the sign is kept,
as the published numbers are computed that way (it does not change distances).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoannot.io import InputError
from hoannot.geometry import unproject


@dataclass(frozen=True)
class DepthBenchmark:
    """Camera and joint count of one benchmark.

    Attributes:
        name: "nyu" or "icvl". num_joints: joints per frame. fx, fy, cx, cy: pixels.
        num_frames: test frames.
    """

    name: str
    num_joints: int
    num_frames: int
    fx: float
    fy: float
    cx: float
    cy: float


BENCHMARKS: dict[str, DepthBenchmark] = {
    "nyu": DepthBenchmark("nyu", 14, 8252, 588.03, -587.07, 320.0, 240.0),
    "icvl": DepthBenchmark("icvl", 16, 1596, 240.99, 240.96, 160.0, 120.0),
}


def _benchmark(dataset: str) -> DepthBenchmark:
    try:
        return BENCHMARKS[dataset.lower()]
    except KeyError:
        raise InputError(f"unknown depth benchmark {dataset!r} (known: {', '.join(BENCHMARKS)})") from None


def read_uvd(path: str | Path, num_joints: int) -> np.ndarray:
    """Read a label/prediction text file.

    Args:
        path: text file, one frame per line, ``num_joints * 3`` numbers.
        num_joints: joints per frame.

    Returns:
        (F, J, 3) float64 ``(u px, v px, d mm)``.

    Raises:
        InputError: missing file or wrong number of values per line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        a = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise InputError(f"{path}: not a table of numbers ({e})".splitlines()[0]) from None
    if a.shape[1] != num_joints * 3:
        raise InputError(f"{path}: expected {num_joints * 3} values per line ({num_joints} joints x u,v,d), got {a.shape[1]}")
    return a.reshape(len(a), num_joints, 3)


def uvd_to_xyz(uvd: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Back-project (u, v, depth) to camera coordinates.

    Args:
        uvd: (..., 3) pixels, pixels, depth (any unit). fx, fy, cx, cy: pixels (signs kept).

    Returns:
        (..., 3) ``((u-cx) d/fx, (v-cy) d/fy, d)`` in the depth's unit
        (:func:`hoannot.geometry.unproject`).
    """
    uvd = np.asarray(uvd, dtype=np.float64)
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return unproject(uvd[..., :2], uvd[..., 2], K)


def load_joints(root: str | Path, dataset: str, method: str | None = None) -> np.ndarray:
    """Ground-truth (``method=None``) or a method's predicted 3D joints of a benchmark.

    Args:
        root: the benchmark folder (holding ``groundtruth/`` and ``predictions/``).
        dataset: "nyu" or "icvl".
        method: prediction file stem, e.g. "CVPR18_NYU_V2V_PoseNet"; None for ground truth.

    Returns:
        (F, J, 3) float64 **metres**, camera frame of the benchmark (NYU: y up).

    Raises:
        InputError: unknown dataset, missing file or wrong layout.
    """
    b = _benchmark(dataset)
    root = Path(root)
    if method is None:
        path = root / "groundtruth" / b.name / f"{b.name}_test_groundtruth_label.txt"
    else:
        path = root / "predictions" / b.name / f"{method}.txt"
    uvd = read_uvd(path, b.num_joints)
    return uvd_to_xyz(uvd, b.fx, b.fy, b.cx, b.cy) / 1000.0


def list_methods(root: str | Path, dataset: str) -> list[str]:
    """Stems of the prediction files available for ``dataset`` under ``root/predictions``."""
    b = _benchmark(dataset)
    return sorted(p.stem for p in (Path(root) / "predictions" / b.name).glob("*.txt"))
