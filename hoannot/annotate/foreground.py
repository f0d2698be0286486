"""Geometric hand/object segmentation of RGB-D views: the network proposes, the geometry decides.

A segmentation network trained on synthetic renders labels a slanted textured wall or a
cluttered table as hand or object as soon as they look unlike its training backdrops. Depth
does not have that problem. Per frame:

1. **Background out.** Each camera's dominant planes (walls, table tops) are found once with
   RANSAC (``open3d`` ``segment_plane``) on that camera's points; a plane counts as
   background only when its inliers are many (``min_fraction`` of the view) and spread
   wide (second principal spread ``>= min_spread_m``), so that the large face of a box held
   in the hand is never taken for a wall. Points within ``plane_tol_m`` of a background
   plane, and points beyond ``max_depth_m``, are background.
2. **The hand-object cluster.** The remaining points of all cameras are fused in the world
   frame and split into Euclidean clusters (``open3d`` DBSCAN). The cluster with the most
   pixels the network calls hand or object is the hand with its object; clutter and
   leftovers are background.
3. **Object.** The network's object pixels inside that cluster are registered to the mesh
   (:func:`hoannot.annotate.object_pose.track_object`). The posed mesh is ray-cast into
   every view (:func:`hoannot.renderers.raycast.raycast`): a cluster pixel whose depth lies
   within ``object_tol_m`` of the rendered object surface is *object*, every other cluster
   pixel is *hand*. Pixels without depth inside the rendered object's silhouette are object
   unless the network says hand; other pixels without depth take the network's hand label
   when they touch the hand.

The network's own labels are kept under ``perception/network_segmentation/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import binary_closing, binary_dilation
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera
from hoannot.datasets.segmentation import SEGMENTATION_LABELS
from hoannot.models._open3d import load as load_open3d

if TYPE_CHECKING:
    from hoannot.datasets.sequence import Sequence
    from hoannot.models.objects import ObjectModel

HAND, OBJECT = SEGMENTATION_LABELS["hand"], SEGMENTATION_LABELS["object"]


@dataclass(frozen=True)
class ForegroundConfig:
    """Thresholds of the geometric segmentation (metres unless said).

    Attributes:
        plane_tol_m: a point this close to a background plane is background.
        min_fraction: a background plane holds at least this fraction of a view's points.
        min_spread_m: ... and its inliers' second principal standard deviation is at least
            this (a 60 cm wall: ~17 cm; the 21 x 16 cm face of a cracker box: ~5 cm).
        max_planes: background planes searched per camera.
        max_depth_m: points farther from the camera are background.
        voxel_m: voxel size of the fused cloud that is clustered.
        cluster_eps_m: DBSCAN neighbourhood radius.
        object_tol_m: a pixel within this of the rendered object depth is object.
    """

    plane_tol_m: float = 0.012
    min_fraction: float = 0.08
    min_spread_m: float = 0.09
    max_planes: int = 4
    max_depth_m: float = 2.0
    voxel_m: float = 0.005
    cluster_eps_m: float = 0.02
    object_tol_m: float = 0.012


def background_planes(points: np.ndarray, cfg: ForegroundConfig = ForegroundConfig(), seed: int = 0) -> list[np.ndarray]:
    """Dominant wide planes of a point cloud (RANSAC, then the spread test of the module docstring).

    Args:
        points: (N, 3) metres.
    Returns:
        planes as (4,) float64 ``(a, b, c, d)``, unit normal, ``a x + b y + c z + d = 0``.
    """
    o3d = load_open3d()
    if len(points) < 100:
        return []
    o3d.utility.random.seed(seed)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points)).voxel_down_sample(cfg.voxel_m)
    rest = np.asarray(pcd.points)
    n_total = len(rest)
    planes = []
    for _ in range(2 * cfg.max_planes):  # a rejected plane (an object face) is set aside, not a stop
        if len(rest) < max(50, cfg.min_fraction * n_total) or len(planes) == cfg.max_planes:
            break
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(rest))
        model, idx = cloud.segment_plane(distance_threshold=cfg.plane_tol_m * 0.7, ransac_n=3, num_iterations=300)
        idx = np.asarray(idx)
        if len(idx) < cfg.min_fraction * n_total:
            break
        inl = rest[idx]
        spread = np.linalg.svd(inl - inl.mean(0), compute_uv=False) / np.sqrt(len(inl))
        if spread[1] >= cfg.min_spread_m:
            planes.append(np.asarray(model, np.float64) / np.linalg.norm(model[:3]))
        rest = np.delete(rest, idx, axis=0)
    return planes


def foreground(depth: np.ndarray, camera: Camera, planes: list[np.ndarray],
               cfg: ForegroundConfig = ForegroundConfig()) -> np.ndarray:  # fmt: skip
    """(H, W) bool: pixels with depth that are neither on a background plane nor too far."""
    pts, vu = camera.backproject(depth, (depth > 0) & (depth < cfg.max_depth_m))
    keep = np.ones(len(pts), bool)
    for p in planes:
        keep &= np.abs(pts @ p[:3] + p[3]) > cfg.plane_tol_m
    out = np.zeros(depth.shape, bool)
    out[vu[keep, 0], vu[keep, 1]] = True
    return out


def hand_object_cluster(fg_points: list[np.ndarray], votes: list[np.ndarray],
                        cfg: ForegroundConfig = ForegroundConfig()) -> list[np.ndarray]:  # fmt: skip
    """Which foreground points belong to the hand-object cluster.

    Args:
        fg_points: per view, (N_c, 3) world foreground points.
        votes: per view, (N_c,) bool: the network labels the point's pixel hand or object.
    Returns:
        per view, (N_c,) bool.
    """
    o3d = load_open3d()
    allp = np.concatenate(fg_points) if fg_points else np.zeros((0, 3))
    if len(allp) < 10:
        return [np.zeros(len(p), bool) for p in fg_points]
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(allp)).voxel_down_sample(cfg.voxel_m)
    vox = np.asarray(pcd.points)
    lab = np.asarray(pcd.cluster_dbscan(eps=cfg.cluster_eps_m, min_points=4))
    tree = cKDTree(vox)
    dist, nn = tree.query(allp, distance_upper_bound=2 * cfg.voxel_m)
    point_lab = np.where(np.isfinite(dist), lab[np.minimum(nn, len(lab) - 1)], -1)
    v = np.concatenate(votes)
    best, best_votes = -1, 0
    for k in np.unique(point_lab[point_lab >= 0]):
        n = int((v & (point_lab == k)).sum())
        if n > best_votes:
            best, best_votes = k, n
    inside = point_lab == best if best >= 0 else np.zeros(len(allp), bool)
    return np.split(inside, np.cumsum([len(p) for p in fg_points])[:-1])


def label_view(depth: np.ndarray, cluster: np.ndarray, network: np.ndarray, object_depth: np.ndarray,
               cfg: ForegroundConfig = ForegroundConfig()) -> np.ndarray:  # fmt: skip
    """Labels of one view from the hand-object cluster and the posed object's rendered depth.

    Args:
        depth: (H, W) metres (0 = none). cluster: (H, W) bool hand-object pixels.
        network: (H, W) uint8 the network's labels. object_depth: (H, W) rendered object
            depth, metres (0 = not covered).
    Returns:
        (H, W) uint8: 0 background, 1 hand, 2 object.
    """
    has_obj = object_depth > 0
    on_obj = cluster & has_obj & (np.abs(depth - object_depth) < cfg.object_tol_m)
    hand = cluster & ~on_obj
    hole = depth == 0
    obj_hole = hole & has_obj & (network != HAND)
    near_hand = binary_dilation(hand, iterations=2)
    hand_hole = hole & ~obj_hole & (network == HAND) & near_hand
    hand = binary_closing(hand | hand_hole, iterations=1) & ~on_obj
    out = np.zeros(depth.shape, np.uint8)
    out[hand] = HAND
    out[on_obj | obj_hole] = OBJECT
    return out


def object_depth(camera: Camera, vertices: np.ndarray, faces: np.ndarray, rotvec: np.ndarray, transl: np.ndarray) -> np.ndarray:
    """(H, W) depth of the object mesh (object frame, ``vertices`` (V, 3)) posed by ``x_w = R x + t``."""
    from hoannot.renderers.raycast import raycast

    R = Rotation.from_rotvec(np.asarray(rotvec, np.float64)).as_matrix()
    return raycast([(np.asarray(vertices) @ R.T + transl, faces)], camera).depth


def segment_sequence(seq: "Sequence", obj: "ObjectModel", network: dict, cfg: ForegroundConfig = ForegroundConfig(),
                     seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray, str]:  # fmt: skip
    """Geometric labels of every view of a sequence (the steps of the module docstring).

    Args:
        seq: :class:`~hoannot.datasets.sequence.Sequence` (reads its depth and RGB).
        obj: :class:`~hoannot.models.objects.ObjectModel`.
        network: ``{(cam, frame): (H, W) uint8}`` the network's labels of every view.
    Returns:
        (labels ``{(cam, frame): (H, W) uint8}``, obj_rot (F, 3), obj_transl (F, 3) world,
        a one-line summary).
    Raises:
        InputError: a frame where the object cannot be registered (names the frame).
    """
    from hoannot.annotate.object_pose import DepthView, track_object
    from hoannot.io import InputError

    cams, frames = seq.cameras, list(seq.frames)
    depths = {(c.name, f): seq.read_depth(c.name, f) for f in frames for c in cams}
    planes = {c.name: background_planes(c.backproject(depths[c.name, frames[0]])[0], cfg, seed) for c in cams}
    clusters, views = {}, []
    for f in frames:
        pts, vus, votes = [], [], []
        for c in cams:
            d = depths[c.name, f]
            p, vu = c.backproject(d, foreground(d, c, planes[c.name], cfg))
            pts.append(p)
            vus.append(vu)
            votes.append(network[c.name, f][vu[:, 0], vu[:, 1]] > 0)
        inside = hand_object_cluster(pts, votes, cfg)
        row = []
        for c, vu, ins in zip(cams, vus, inside):
            m = np.zeros((c.height, c.width), bool)
            m[vu[ins, 0], vu[ins, 1]] = True
            clusters[c.name, f] = m
            obj_px = np.where(m & (network[c.name, f] == OBJECT), OBJECT, 0).astype(np.uint8)
            rgb = seq.read_rgb(c.name, f) if seq.rgb_path(c.name, f).is_file() else None
            row.append(DepthView(c, depths[c.name, f], obj_px, rgb if rgb is not None and rgb.shape[:2] == obj_px.shape else None))
        views.append(row)
    try:
        obj_rot, obj_transl, _ = track_object(views, obj, seed=seed)
    except InputError as e:
        msg = str(e)
        if msg.startswith("frame index "):
            head, _, rest = msg.partition(": ")
            msg = f"frame {frames[int(head.split()[-1])]}: {rest}"
        raise InputError(f"{seq.root}: geometric segmentation: {msg}") from None
    V, Fc = np.asarray(obj.mesh.vertices), np.asarray(obj.mesh.faces)
    labels, n_hand, n_obj = {}, [], []
    for fi, f in enumerate(frames):
        for c in cams:
            od = object_depth(c, V, Fc, obj_rot[fi], obj_transl[fi])
            lab = label_view(depths[c.name, f], clusters[c.name, f], network[c.name, f], od, cfg)
            labels[c.name, f] = lab
            n_hand.append(int((lab == HAND).sum()))
            n_obj.append(int((lab == OBJECT).sum()))
    n_planes = sum(len(p) for p in planes.values())
    return labels, obj_rot, obj_transl, (
        f"geometric segmentation: {n_planes} background planes over {len(cams)} cameras; "
        f"mean hand {np.mean(n_hand):.0f} px, object {np.mean(n_obj):.0f} px"
    )
