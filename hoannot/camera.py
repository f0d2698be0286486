"""Calibrated RGB-D camera: intrinsics ``K``, extrinsics ``T_world_cam``, depth scale."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hoannot.geometry import backproject_depth, invert_rigid, pixel_rays, project_world


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
        """(4, 4) float64 inverse of ``T_world_cam``: world -> camera (:func:`~hoannot.geometry.invert_rigid`)."""
        return invert_rigid(np.asarray(self.T_world_cam, np.float64))

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
        """Project world points to pixels (:func:`hoannot.geometry.project_world`).

        Args:
            points_world: (..., 3) metres.
        Returns:
            (..., 2) float64 pixel coordinates (u, v); distortion is ignored.
        """
        p = np.asarray(points_world)
        return project_world(p.reshape(-1, 3), np.asarray(self.K), self.T_world_cam).reshape(p.shape[:-1] + (2,))

    def pixel_rays(self) -> np.ndarray:
        """Ray of every pixel centre, world frame, scaled so that its camera z is 1.

        Returns:
            (H, W, 3) float64: ``T_world_cam[:3, 3] + d * ray`` is the point at camera depth
            ``d`` metres of that pixel (:func:`hoannot.geometry.pixel_rays`).
        """
        return pixel_rays(self.K, self.width, self.height, self.T_world_cam)

    def backproject(self, depth: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """World points of the pixels with a depth value (inverse of :meth:`project`).

        Args:
            depth: (H, W) metres, 0 = no value. mask: (H, W) bool, optional (only these pixels).
        Returns:
            points (N, 3) float64 world metres, and their pixels (N, 2) int64 ``(v, u)``
            (:func:`hoannot.geometry.backproject_depth`).
        """
        return backproject_depth(depth, self.K, self.T_world_cam, mask)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """``T_world_cam`` (4, 4) of an OpenCV camera at ``eye`` looking at ``target``.

    The camera's y axis (image down) is aligned with ``-up`` as far as possible.
    """
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(-np.asarray(up, float), z)  # x = y × z with y = -up
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
