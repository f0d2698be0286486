"""Ray casting of triangle meshes with open3d (Embree): exact depth, ids and normals per pixel.

Independent of hoannot's PyTorch3D renderer: the synthetic captures are made with it (so a
fit is never scored on pixels made by the code that fits), and the geometric segmentation
(:mod:`hoannot.annotate.foreground`) uses it to see where a posed object lies in each view.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from hoannot.camera import Camera
from hoannot.geometry import pixel_rays
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


class ViewHits(NamedTuple):
    """What each pixel of one view of :func:`raycast_views` sees first ((H, W) arrays).

    Attributes:
        depth: (H, W) float32 camera depth (along the camera z axis), metres, 0 where nothing is hit.
        geometry: (H, W) int8 index of the mesh hit (order of the input list), -1 none.
        cos: (H, W) float32 |cosine| between the hit triangle's normal and the pixel's ray
            (head-light shading of flat triangles), 0 where nothing is hit.
        box: (y0, y1, x0, x1) the pixels whose rays were cast (everything outside is a miss);
            ``y0 == y1`` when no mesh can be seen.
    """

    depth: np.ndarray
    geometry: np.ndarray
    cos: np.ndarray
    box: tuple[int, int, int, int]


def mesh_box(points: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixels (centres at integer coordinates) whose rays can hit a mesh with these vertices.

    A triangle's image lies in the convex hull of its projected vertices when all of them are in
    front of the camera, so the rays outside the vertices' bounding box (grown by one pixel for
    float rounding) miss. With a vertex at or behind the camera plane the whole image is cast.

    Args:
        points: (N, 3) world-frame vertices, metres.
        K: (3, 3) intrinsics of the image of ``size``. T_world_cam: (4, 4) camera pose.
        size: (H, W) of the image.
    Returns:
        (y0, y1, x0, x1), half-open pixel ranges inside the image; ``y0 == y1`` when empty.
    """
    H, W = size
    R, t = np.asarray(T_world_cam, np.float64)[:3, :3], np.asarray(T_world_cam, np.float64)[:3, 3]
    pc = (np.asarray(points, np.float64) - t) @ R  # R^T (p - t), each row
    if len(pc) == 0:
        return 0, 0, 0, 0
    if not (pc[:, 2] > 1e-6).all():
        return 0, H, 0, W
    uvw = pc @ np.asarray(K, np.float64).T
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    x0, x1 = max(0, math.floor(u.min()) - 1), min(W, math.ceil(u.max()) + 2)
    y0, y1 = max(0, math.floor(v.min()) - 1), min(H, math.ceil(v.max()) + 2)
    if x0 >= x1 or y0 >= y1:
        return 0, 0, 0, 0
    return y0, y1, x0, x1


class PixelRays:
    """The rays of every pixel centre of C views of one size, made once and cast many times.

    Args:
        Ks: (C, 3, 3) intrinsics of images of ``size`` (pixel u covers [u - 0.5, u + 0.5)).
        T_world_cams: (C, 4, 4) camera poses (OpenCV axes).
        size: (H, W) of every view.

    Attributes:
        Ks, T_world_cams: float64 as given. size: (H, W).
        dirs: (C, H, W, 3) float32 world-frame directions with camera z = 1 (a hit's distance
            is its camera depth), :func:`hoannot.geometry.pixel_rays` without distortion.
        inv_norm: (C, H, W) float32 ``1 / |dirs|``.
    """

    def __init__(self, Ks: np.ndarray, T_world_cams: np.ndarray, size: tuple[int, int]):
        self.Ks, self.T_world_cams = np.asarray(Ks, np.float64), np.asarray(T_world_cams, np.float64)
        self.size = (int(size[0]), int(size[1]))
        H, W = self.size
        dirs = [pixel_rays(K, W, H, T) for K, T in zip(self.Ks, self.T_world_cams)]
        self.dirs = np.stack(dirs).astype(np.float32) if dirs else np.zeros((0, H, W, 3), np.float32)
        self.inv_norm = (1.0 / np.linalg.norm(self.dirs, axis=-1)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.Ks)


def raycast_views(meshes: list[tuple[np.ndarray, np.ndarray]], rays: PixelRays) -> list[ViewHits]:
    """Cast one ray per pixel centre of C views into world-frame meshes.

    One scene (one BVH) and one ``cast_rays`` call serve every view; only the rays inside
    each view's :func:`mesh_box` are cast, so a view costs in proportion to the image area the
    meshes cover, not to the image size. Depths are camera depths, as :func:`raycast`'s.

    Args:
        meshes: ``(vertices (V, 3) metres, faces (Nf, 3) int)`` per mesh, world frame.
        rays: the views (:class:`PixelRays`).
    Returns:
        one :class:`ViewHits` per view.
    Raises:
        ImportError: open3d is not installed.
    """
    o3d = load_open3d()
    H, W = rays.size
    scene = o3d.t.geometry.RaycastingScene()
    ids = [scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(v, np.float32)),
                               o3d.core.Tensor(np.ascontiguousarray(f, np.uint32))) for v, f in meshes]  # fmt: skip
    lookup = np.full(max(ids, default=0) + 2, -1, np.int8)  # geometry id -> mesh index; the last: a miss
    lookup[ids] = np.arange(len(ids))
    points = np.concatenate([np.asarray(v, np.float64) for v, _ in meshes]) if meshes else np.zeros((0, 3))
    boxes = [mesh_box(points, K, T, rays.size) for K, T in zip(rays.Ks, rays.T_world_cams)]
    counts = [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes]
    batch = np.empty((sum(counts), 6), np.float32)
    at = 0
    for c, ((y0, y1, x0, x1), n) in enumerate(zip(boxes, counts)):
        batch[at : at + n, :3] = rays.T_world_cams[c, :3, 3]
        batch[at : at + n, 3:] = rays.dirs[c, y0:y1, x0:x1].reshape(-1, 3)
        at += n
    if len(batch):
        ans = scene.cast_rays(o3d.core.Tensor(batch))
        t_all, g_all, n_all = ans["t_hit"].numpy(), ans["geometry_ids"].numpy(), ans["primitive_normals"].numpy()
    out, at = [], 0
    for c, ((y0, y1, x0, x1), n) in enumerate(zip(boxes, counts)):
        depth, geometry, cos = np.zeros((H, W), np.float32), np.full((H, W), -1, np.int8), np.zeros((H, W), np.float32)
        if n:
            shape = (y1 - y0, x1 - x0)
            t, g, nrm = t_all[at : at + n].reshape(shape), g_all[at : at + n].reshape(shape), n_all[at : at + n]
            hit = np.isfinite(t)
            depth[y0:y1, x0:x1] = np.where(hit, t, 0)
            geometry[y0:y1, x0:x1] = lookup[np.where(hit, np.minimum(g, len(lookup) - 1), len(lookup) - 1)]
            d = batch[at : at + n, 3:]
            c_abs = np.abs(np.einsum("ij,ij->i", nrm, d)).reshape(shape) * rays.inv_norm[c, y0:y1, x0:x1]
            cos[y0:y1, x0:x1] = np.where(hit, c_abs, 0)
            at += n
        out.append(ViewHits(depth, geometry, cos, (y0, y1, x0, x1)))
    return out
