"""Joint orders and camera-axis conventions of the field, as explicit index maps and flips.

Joint orders (21 hand keypoints):

- **HO-3D order** (hoannot's order everywhere unless a name says otherwise):
  0 wrist; 1-3 index MCP/PIP/DIP; 4-6 middle; 7-9 pinky; 10-12 ring; 13-15 thumb CMC/MCP/IP;
  16 thumb tip, 17 index tip, 18 middle tip, 19 ring tip, 20 pinky tip. The first 16 are
  MANO's kinematic joints in MANO's order, the five tips are appended.
- **OpenPose order** ("MANO-21" of many estimators, FreiHAND, DexYCB): 0 wrist; 1-4 thumb CMC,
  MCP, IP, tip; 5-8 index MCP, PIP, DIP, tip; 9-12 middle; 13-16 ring; 17-20 pinky.

Index maps are "gather" maps: ``ho3d = openpose[..., OPENPOSE_TO_HO3D, :]`` and
``openpose = ho3d[..., HO3D_TO_OPENPOSE, :]``.
Source: HO-3D toolkit joint documentation (Hampali et al., CVPR 2020) and
``../shared/docs/formats.md``.

Camera axes: OpenCV cameras look along +z with y down; OpenGL cameras (HO-3D's stored
coordinates) look along -z with y up. The two differ by ``OPENCV_TO_OPENGL = diag(1, -1, -1)``,
which is its own inverse.

All functions accept numpy arrays and torch tensors and return the same kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hoannot.io import InputError

#: ho3d_joints = openpose_joints[..., OPENPOSE_TO_HO3D, :]
OPENPOSE_TO_HO3D: tuple[int, ...] = (0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3, 4, 8, 12, 16, 20)
#: openpose_joints = ho3d_joints[..., HO3D_TO_OPENPOSE, :]
HO3D_TO_OPENPOSE: tuple[int, ...] = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

#: Names of the 21 keypoints in HO-3D order.
HO3D_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index_mcp", "index_pip", "index_dip",
    "middle_mcp", "middle_pip", "middle_dip",
    "pinky_mcp", "pinky_pip", "pinky_dip",
    "ring_mcp", "ring_pip", "ring_dip",
    "thumb_cmc", "thumb_mcp", "thumb_ip",
    "thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip",
)  # fmt: skip

#: x_opengl = OPENCV_TO_OPENGL @ x_opencv (and vice versa: the matrix is its own inverse).
OPENCV_TO_OPENGL: np.ndarray = np.diag([1.0, -1.0, -1.0])
OPENCV_TO_OPENGL.setflags(write=False)

_FLIP = np.array([1.0, -1.0, -1.0])


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _check_joints(j: Any, name: str) -> None:
    shape = tuple(j.shape)
    if len(shape) < 2 or shape[-2] != 21:
        raise InputError(f"{name}: expected joints of shape (..., 21, D), got {shape}")


def _reorder(j: Any, index: tuple[int, ...], name: str) -> Any:
    if not _is_torch(j):
        j = np.asarray(j)
    _check_joints(j, name)
    if _is_torch(j):
        import torch

        return j[..., torch.as_tensor(index, device=j.device), :]
    return j[..., list(index), :]


def ho3d_to_openpose(j: Any) -> Any:
    """Reorder keypoints from HO-3D order to OpenPose order.

    Args:
        j: (..., 21, D) array or tensor in HO-3D order (any D, e.g. 2 or 3).

    Returns:
        (..., 21, D) in OpenPose order, same type/dtype/device as ``j``.

    Raises:
        InputError: the second-to-last axis is not 21.
    """
    return _reorder(j, HO3D_TO_OPENPOSE, "ho3d_to_openpose")


def openpose_to_ho3d(j: Any) -> Any:
    """Reorder keypoints from OpenPose order to HO-3D order.

    Args:
        j: (..., 21, D) array or tensor in OpenPose order.

    Returns:
        (..., 21, D) in HO-3D order, same type as ``j``.

    Raises:
        InputError: the second-to-last axis is not 21.
    """
    return _reorder(j, OPENPOSE_TO_HO3D, "openpose_to_ho3d")


def mano16_plus_tips_to_ho3d(joints16: Any, tips: Any) -> Any:
    """Build HO-3D-ordered keypoints from MANO's 16 joints and 5 fingertips.

    Args:
        joints16: (..., 16, D) MANO kinematic joints in MANO order (as smplx returns them).
        tips: (..., 5, D) fingertips in the order thumb, index, middle, ring, pinky
            (e.g. MANO vertices [744, 320, 443, 554, 671] as in smplx).

    Returns:
        (..., 21, D) in HO-3D order (MANO joints then the tips), same type as the inputs.

    Raises:
        InputError: wrong joint counts.
    """
    if tuple(joints16.shape)[-2:-1] != (16,) or tuple(tips.shape)[-2:-1] != (5,):
        raise InputError(
            f"mano16_plus_tips_to_ho3d: expected (...,16,D) and (...,5,D), got {tuple(joints16.shape)} and {tuple(tips.shape)}"
        )
    if _is_torch(joints16):
        import torch

        return torch.cat([joints16, tips], dim=-2)
    return np.concatenate([np.asarray(joints16), np.asarray(tips)], axis=-2)


def _flip(p: Any) -> Any:
    if _is_torch(p):
        return p * p.new_tensor(_FLIP)
    p = np.asarray(p)
    if p.shape[-1:] != (3,):
        raise InputError(f"expected points of shape (..., 3), got {p.shape}")
    return p * _FLIP.astype(p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64)


def opencv_to_opengl_points(p: Any) -> Any:
    """Points in an OpenCV camera frame -> the same points in the OpenGL camera frame.

    Args:
        p: (..., 3) points, any unit.

    Returns:
        (..., 3) ``p @ OPENCV_TO_OPENGL`` (y and z negated), same type as ``p``.
    """
    return _flip(p)


def opengl_to_opencv_points(p: Any) -> Any:
    """Points in an OpenGL camera frame (e.g. HO-3D ``handJoints3D``) -> OpenCV camera frame.

    Args:
        p: (..., 3) points.

    Returns:
        (..., 3) with y and z negated, same type as ``p``.
    """
    return _flip(p)


def opencv_to_opengl_pose(R: Any, t: Any) -> tuple[Any, Any]:
    """Change the camera convention of an object-to-camera pose ``x_cam = R x_obj + t``.

    With ``D = OPENCV_TO_OPENGL``: ``R' = D R`` and ``t' = D t``; the object's own frame is
    unchanged. ``D`` is an involution, so the same function converts OpenGL -> OpenCV
    (alias :func:`opengl_to_opencv_pose`). For axis-angle rotations (HO-3D ``objRot``) convert
    with ``scipy.spatial.transform.Rotation.from_rotvec(...).as_matrix()`` first.

    Args:
        R: (..., 3, 3) rotation matrices.
        t: (..., 3) translations (any unit).

    Returns:
        (R', t') with the same shapes and types.

    Raises:
        InputError: bad shapes.
    """
    if tuple(R.shape)[-2:] != (3, 3) or tuple(t.shape)[-1:] != (3,):
        raise InputError(f"opencv_to_opengl_pose: expected R (...,3,3) and t (...,3), got {tuple(R.shape)} and {tuple(t.shape)}")
    if _is_torch(R):
        return R * R.new_tensor(_FLIP)[:, None], _flip(t)
    R = np.asarray(R)
    flip = _FLIP.astype(R.dtype) if np.issubdtype(R.dtype, np.floating) else _FLIP
    return R * flip[:, None], _flip(t)


opengl_to_opencv_pose = opencv_to_opengl_pose
