"""Ray casting of triangle meshes with open3d (Embree): exact depth, ids and normals per pixel.

Independent of hoannot's PyTorch3D renderer: the synthetic captures are made with it (so a
fit is never scored on pixels made by the code that fits), and the geometric segmentation
(:mod:`hoannot.annotate.foreground`) uses it to see where a posed object lies in each view.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hoannot.camera import Camera
from hoannot.models._open3d import load as load_open3d


class RayHits(NamedTuple):
    """What each pixel's ray hits first (arrays of the image size (H, W)).

    Attributes:
        depth: (H, W) float64 camera depth, metres, 0 where nothing is hit.
        geometry: (H, W) int64 index of the mesh hit (order of the input list), -1 none.
        primitive: (H, W) int64 triangle index in that mesh.
        bary: (H, W, 2) float32 barycentric (u, v) of the hit in its triangle.
        normal: (H, W, 3) float32 unit triangle normal, world frame.
        rays: (H, W, 3) float64 ray directions, world frame, camera z = 1
            (:meth:`~hoannot.camera.Camera.pixel_rays`).
    """

    depth: np.ndarray
    geometry: np.ndarray
    primitive: np.ndarray
    bary: np.ndarray
    normal: np.ndarray
    rays: np.ndarray


def raycast(meshes: list[tuple[np.ndarray, np.ndarray]], camera: Camera) -> RayHits:
    """Cast one ray per pixel centre of ``camera`` into world-frame triangle meshes.

    Args:
        meshes: ``(vertices (V, 3) metres, faces (Nf, 3) int)`` per mesh, world frame.
        camera: the pinhole camera (distortion ignored).
    Returns:
        :class:`RayHits`.
    Raises:
        ImportError: open3d is not installed.
    """
    o3d = load_open3d()
    scene = o3d.t.geometry.RaycastingScene()
    for v, f in meshes:
        scene.add_triangles(o3d.core.Tensor(np.asarray(v, np.float32)), o3d.core.Tensor(np.asarray(f, np.uint32)))
    dirs = camera.pixel_rays()  # camera z = 1, so the hit distance is the camera depth
    rays = np.concatenate([np.broadcast_to(camera.T_world_cam[:3, 3], dirs.shape), dirs], -1).astype(np.float32)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    t = ans["t_hit"].numpy()
    hit = np.isfinite(t)
    return RayHits(
        np.where(hit, t, 0.0).astype(np.float64),
        np.where(hit, ans["geometry_ids"].numpy().astype(np.int64), -1),
        ans["primitive_ids"].numpy().astype(np.int64),
        ans["primitive_uvs"].numpy(),
        ans["primitive_normals"].numpy(),
        dirs,
    )
