"""Calibrated RGB-D camera: intrinsics ``K``, extrinsics ``T_world_cam``, depth scale."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Camera:
    """One calibrated RGB-D camera (colour and depth registered to the same image).

    Attributes:
        name: folder name of the camera under ``rgb/`` and ``depth/``.
        K: (3, 3) float64 pinhole intrinsics in pixels (OpenCV convention).
        width, height: image size in pixels.
        T_world_cam: (4, 4) float64 rigid transform mapping camera coordinates
            (OpenCV: x right, y down, z forward, metres) to world coordinates.
        depth_scale: metres per unit of the uint16 depth images (e.g. 0.001).
        dist: (5,) OpenCV distortion (k1, k2, p1, p2, k3); images are assumed
            undistorted when all zero.
    """

    name: str
    K: np.ndarray
    width: int
    height: int
    T_world_cam: np.ndarray
    depth_scale: float = 0.001
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))

    @property
    def T_cam_world(self) -> np.ndarray:
        """(4, 4) inverse of ``T_world_cam``: world -> camera."""
        R, t = self.T_world_cam[:3, :3], self.T_world_cam[:3, 3]
        T = np.eye(4)
        T[:3, :3] = R.T
        T[:3, 3] = -R.T @ t
        return T

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "K": np.asarray(self.K).tolist(),
            "width": int(self.width),
            "height": int(self.height),
            "T_world_cam": np.asarray(self.T_world_cam).tolist(),
            "depth_scale": float(self.depth_scale),
            "dist": np.asarray(self.dist).tolist(),
        }

    @staticmethod
    def from_dict(d: dict) -> "Camera":
        return Camera(
            name=str(d["name"]),
            K=np.asarray(d["K"], dtype=np.float64),
            width=int(d["width"]),
            height=int(d["height"]),
            T_world_cam=np.asarray(d["T_world_cam"], dtype=np.float64),
            depth_scale=float(d["depth_scale"]),
            dist=np.asarray(d.get("dist", np.zeros(5)), dtype=np.float64),
        )

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """Project world points to pixels.

        Args:
            points_world: (..., 3) metres.
        Returns:
            (..., 2) pixel coordinates (u, v); distortion is ignored.
        """
        T = self.T_cam_world
        p = points_world @ T[:3, :3].T + T[:3, 3]
        uvw = p @ np.asarray(self.K).T
        return uvw[..., :2] / uvw[..., 2:3]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """``T_world_cam`` (4, 4) of an OpenCV camera at ``eye`` looking at ``target``.

    The camera's y axis (image down) is aligned with ``-up`` as far as possible.
    """
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, -np.asarray(up, float))
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
