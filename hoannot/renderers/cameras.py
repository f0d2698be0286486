"""Batched OpenCV pinhole cameras for rendering, with crops.

PyTorch3D's rasterizer works in its own NDC space (+X left, +Y up, the shorter image
side spanning [-1, 1]). :func:`project_to_ndc` maps world points straight into that
space from OpenCV intrinsics and extrinsics, so no PyTorch3D camera object (and no
convention flip) is involved: the pixel with OpenCV centre (u, v) = (i, j) is exactly
the rasterizer's pixel (row j, column i). The pinhole maths (world -> camera, projection,
crop intrinsics) is :mod:`hoannot.geometry`'s; only the NDC mapping is the renderer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hoannot.camera import Camera
from hoannot.geometry import crop_intrinsics, normalized_to_pixels, project, transform_points


@dataclass
class ViewCameras:
    """C views to render, all at one render size.

    Attributes:
        K: (C, 3, 3) float32 intrinsics of the *rendered* image (crop-adjusted), pixels.
        R_cw: (C, 3, 3) float32 world -> camera rotation.
        t_cw: (C, 3) float32 world -> camera translation, metres.
        image_size: (H, W) of the rendered image in pixels.
    """

    K: torch.Tensor
    R_cw: torch.Tensor
    t_cw: torch.Tensor
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return self.K.shape[0]

    def to(self, device: torch.device | str) -> "ViewCameras":
        return ViewCameras(self.K.to(device), self.R_cw.to(device), self.t_cw.to(device), self.image_size)

    @staticmethod
    def from_cameras(
        cameras: list[Camera],
        boxes: np.ndarray | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> "ViewCameras":
        """Build render cameras, optionally cropped.

        Args:
            cameras: C calibrated cameras.
            boxes: (C, 4) crop boxes (x0, y0, w, h) in original pixels (continuous
                coordinates: the crop covers [x0, x0+w) x [y0, y0+h) where original
                pixel u spans [u - 0.5, u + 0.5)). None renders the full image.
            image_size: (H, W) render size; required with ``boxes``; the boxes
                should share its aspect ratio (non-uniform scaling is allowed).
        Raises:
            ValueError: cameras of different sizes without boxes, or boxes without size.
        """
        Ks, Rs, ts = [], [], []
        if boxes is None:
            sizes = {(c.height, c.width) for c in cameras}
            if len(sizes) != 1 and image_size is None:
                raise ValueError("cameras differ in image size: give crop boxes and a render size")
            H, W = image_size or sizes.pop()
        else:
            if image_size is None:
                raise ValueError("crop boxes need a render image_size")
            H, W = image_size
        for i, c in enumerate(cameras):
            if boxes is None:
                K = crop_intrinsics(c.K, (-0.5, -0.5, c.width, c.height), (H, W)) if (c.height, c.width) != (H, W) else c.K
            else:
                K = crop_intrinsics(c.K, boxes[i], (H, W))
            T = c.T_cam_world
            Ks.append(K)
            Rs.append(T[:3, :3])
            ts.append(T[:3, 3])
        f32 = lambda a: torch.tensor(np.stack(a), dtype=torch.float32)  # noqa: E731
        return ViewCameras(f32(Ks), f32(Rs), f32(ts), (int(H), int(W)))


def world_to_camera(points: torch.Tensor, cams: ViewCameras) -> torch.Tensor:
    """Transform world points into each camera.

    Args:
        points: (B, P, 3) world points, metres (B frames).
        cams: C views.
    Returns:
        (B, C, P, 3) camera-frame points (OpenCV), metres.
    """
    return transform_points(points[:, None], cams.R_cw, cams.t_cw)


def project_to_ndc(points_cam: torch.Tensor, cams: ViewCameras) -> torch.Tensor:
    """OpenCV camera points -> PyTorch3D NDC with view-space depth as z.

    Args:
        points_cam: (B, C, P, 3) camera-frame points, metres, z > 0 in front.
        cams: C views of render size (H, W).
    Returns:
        (B, C, P, 3): x, y in PyTorch3D NDC (+X left, +Y up, shorter side in
        [-1, 1]); z = camera depth in metres (what PyTorch3D's zbuf reports).
    """
    H, W = cams.image_size
    S = float(min(H, W))
    z = points_cam[..., 2:3]
    zs = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    uv = normalized_to_pixels(points_cam / zs, cams.K[:, None])
    x = -(uv[..., 0:1] + 0.5 - W / 2.0) * (2.0 / S)
    y = -(uv[..., 1:2] + 0.5 - H / 2.0) * (2.0 / S)
    return torch.cat([x, y, z], dim=-1)


def project_points(points_world: torch.Tensor, cams: ViewCameras) -> torch.Tensor:
    """Project world points to pixel coordinates of each (cropped) view.

    Args:
        points_world: (B, P, 3) metres.
    Returns:
        (B, C, P, 2) pixel (u, v), OpenCV convention (pixel centres at integers).
    """
    return project(world_to_camera(points_world, cams), cams.K[:, None], min_depth=1e-6)
