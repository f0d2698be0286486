"""Object pose from the object mask and depth: point-cloud registration, then tracking.

HOnnotate (Hampali et al., CVPR 2020), Sec. 4.1 initialises the object pose from the
segmentation and depth before the joint hand-object fit. Here:

1. **Observation.** The pixels labelled *object* (label 2) of every camera are
   back-projected with their depth into world points (:func:`object_points`). Only
   object-labelled pixels are used, so the hand occluding part of the object removes
   points but adds none; a one-pixel erosion of the mask drops mixed depth at the
   silhouette and a statistical outlier filter drops flying pixels.
2. **Global registration** (:func:`register_object`): the observed points (source) are
   aligned to points sampled on the object mesh (target, with the mesh's normals) by
   open3d ICP started from many rotations (the 60 rotations of the icosahedral group;
   for each, the centroid of the model points facing the cameras is put on the observed
   centroid). Observed -> model is the right direction for a
   partial view: every observed point has a counterpart on the model, not vice versa.
   The best few hypotheses are refined with point-to-plane ICP under a Tukey robust
   kernel, and scored by the fraction of observed points without a model point nearby,
   plus a free-space term: model surface that faces a camera and would lie more than
   ``free_space_m`` in front of the depth that camera measured (the camera saw *through*
   the proposed object) counts against the pose. A symmetric object has several poses of
   the same score; any of them is accepted. Poses whose geometric scores are within
   ``tie`` of the best are told apart by colour when the views carry RGB images: the
   normalised cross-correlation of the model's texture colours with the observed colours
   at the object pixels where the model is visible (a textured object's front and back
   look different even when its shape does not).
3. **Tracking** (:func:`track_object`): each next frame starts ICP from the previous
   frame's pose and falls back to the global search when the result scores badly.

Poses are object -> world: ``x_w = R x_o + t`` (as :class:`~hoannot.datasets.poses.HandObjectPoses`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera
from hoannot.io import InputError
from hoannot.datasets.segmentation import SEGMENTATION_LABELS, mask_interior
from hoannot.geometry import project, transform
from hoannot.models._open3d import load as load_open3d
from hoannot.models.objects import ObjectModel

OBJECT = SEGMENTATION_LABELS["object"]
HAND = SEGMENTATION_LABELS["hand"]


@dataclass
class DepthView:
    """One camera's observation of one frame.

    Attributes:
        camera: the calibrated camera.
        depth: (H, W) float32 metres, 0 where the sensor gave nothing.
        labels: (H, W) uint8 segmentation (0 background, 1 hand, 2 object).
        rgb: (H, W, 3) uint8 colour image, optional (breaks ties between poses that the
            geometry cannot tell apart, e.g. the front and back of a nearly symmetric bottle).
    """

    camera: Camera
    depth: np.ndarray
    labels: np.ndarray
    rgb: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = (self.camera.height, self.camera.width)
        if self.depth.shape != shape or self.labels.shape != shape:
            raise InputError(
                f"camera {self.camera.name}: depth {self.depth.shape} / segmentation {self.labels.shape} "
                f"do not match the calibrated size {shape}"
            )


@dataclass
class ObjectPoseResult:
    """A registered object pose.

    Attributes:
        R: (3, 3) float64 rotation object -> world.
        t: (3,) float64 translation, metres.
        fitness: fraction of observed points with a model point within the final
            correspondence distance.
        rmse: RMS distance of those inliers, metres.
        free_space: fraction of camera-facing model points lying in front of the measured
            depth by more than the margin (0 = consistent with every camera).
        colour: normalised cross-correlation of the model's colours with the observed
            object pixels (-1..1; NaN without colour images).
        points: number of observed points used.
        global_search: True when the pose came from the multi-start search.
        centroid: (3,) mean of the observed (downsampled) points, world.
    """

    R: np.ndarray
    t: np.ndarray
    fitness: float
    rmse: float
    free_space: float
    points: int
    global_search: bool
    colour: float = float("nan")
    centroid: np.ndarray | None = None

    @property
    def score(self) -> float:
        """Lower is better: outlier fraction plus free-space violation fraction."""
        return (1.0 - self.fitness) + self.free_space


def object_points(views: list[DepthView], erode: int = 1, max_points: int = 4000, seed: int = 0) -> np.ndarray:
    """Back-project the object-labelled pixels of all views into one world point cloud.

    Args:
        views: the cameras' observations of one frame.
        erode: pixels removed from the object mask border (mixed depth at silhouettes).
        max_points: random subsample to at most this many points.
    Returns:
        (N, 3) float64 world points (N may be 0).
    """
    pts = []
    for view in views:
        mask = mask_interior(view.labels == OBJECT, erode)
        pts.append(view.camera.backproject(view.depth, mask)[0])
    P = np.concatenate(pts) if pts else np.zeros((0, 3))
    if len(P) > max_points:
        P = P[np.random.default_rng(seed).choice(len(P), max_points, replace=False)]
    return P


class ObjectRegistration:
    """Registers one object against observed point clouds (global search or tracking).

    Args:
        obj: the object model (its full mesh is sampled).
        model_points: surface samples used as the ICP target.
        voxel: voxel size of the downsampled observation, metres (default: 1/40 of the
            object diameter, clamped to [2, 6] mm).
        free_space_m: margin of the free-space test, metres.
        seed: sampling seed.
    """

    def __init__(
        self, obj: ObjectModel, model_points: int = 3000, voxel: float | None = None,
        free_space_m: float = 0.015, seed: int = 0,
    ) -> None:  # fmt: skip
        o3d = load_open3d()
        self.o3d = o3d
        self.obj = obj
        mesh = obj.mesh
        pts, face = mesh.sample(model_points, return_index=True, seed=seed)
        normals = np.asarray(mesh.face_normals)[face]
        self.model_xyz = np.asarray(pts, np.float64)
        self.model_normals = normals.astype(np.float64)
        vc = obj.vertex_colors().astype(np.float64)
        self.model_rgb = vc[np.asarray(mesh.faces)[face]].mean(1)  # (P, 3) face-average colour
        self.target = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.model_xyz))
        self.target.normals = o3d.utility.Vector3dVector(self.model_normals)
        self.centre = 0.5 * (self.model_xyz.min(0) + self.model_xyz.max(0))
        self.voxel = float(np.clip(obj.diameter / 40, 0.002, 0.006)) if voxel is None else float(voxel)
        self.free_space_m = free_space_m

    # -- helpers ---------------------------------------------------------------
    def _cloud(self, points: np.ndarray):
        o3d = self.o3d
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        pc = pc.voxel_down_sample(self.voxel)
        if len(pc.points) > 30:
            pc, _ = pc.remove_statistical_outlier(nb_neighbors=12, std_ratio=2.5)
        return pc

    def _icp(self, source, T0: np.ndarray, dist: float, iters: int, plane: bool = True, tukey: float | None = None):
        reg = self.o3d.pipelines.registration
        if plane:
            kernel = [reg.TukeyLoss(k=tukey)] if tukey else []
            est = reg.TransformationEstimationPointToPlane(*kernel)
        else:
            est = reg.TransformationEstimationPointToPoint()
        crit = reg.ICPConvergenceCriteria(relative_fitness=1e-6, relative_rmse=1e-6, max_iteration=iters)
        return reg.registration_icp(source, self.target, dist, T0, est, crit)

    def free_space(self, R: np.ndarray, t: np.ndarray, views: list[DepthView]) -> float:
        """Fraction of camera-facing model points lying in front of the measured depth.

        Args:
            R, t: object -> world pose. views: the observations.
        Returns:
            mean over views of the violating fraction, in [0, 1].
        """
        if not views:
            return 0.0
        Xw = self.model_xyz @ R.T + t
        Nw = self.model_normals @ R.T
        fracs = []
        for view in views:
            cam = view.camera
            T = cam.T_cam_world
            pc = transform(Xw, T)
            nc = Nw @ T[:3, :3].T
            cosang = (nc * pc).sum(-1) / np.maximum(np.linalg.norm(pc, axis=-1), 1e-9)
            front = (cosang < -0.3) & (pc[:, 2] > 1e-3)  # clearly facing: no grazing silhouette points
            if not front.any():
                continue
            p = pc[front]
            uv = project(p, np.asarray(cam.K))
            ui = np.round(uv).astype(np.int64)
            inside = (ui[:, 0] >= 0) & (ui[:, 0] < cam.width) & (ui[:, 1] >= 0) & (ui[:, 1] < cam.height)
            if not inside.any():
                continue
            d = view.depth[ui[inside, 1], ui[inside, 0]]
            z = p[inside, 2]
            valid = d > 0
            bad = valid & (d > z + self.free_space_m)
            fracs.append(bad.sum() / max(valid.sum(), 1))
        return float(np.mean(fracs)) if fracs else 0.0

    def colour_agreement(self, R: np.ndarray, t: np.ndarray, views: list[DepthView]) -> float:
        """Normalised cross-correlation (all channels, -1..1) of model colours with the
        observed colours at visible object pixels; NaN without colour images or overlap."""
        Xw = self.model_xyz @ R.T + t
        Nw = self.model_normals @ R.T
        m_all, o_all = [], []
        for view in views:
            if view.rgb is None:
                continue
            cam = view.camera
            T = cam.T_cam_world
            pc = transform(Xw, T)
            cosang = ((Nw @ T[:3, :3].T) * pc).sum(-1) / np.maximum(np.linalg.norm(pc, axis=-1), 1e-9)
            front = (cosang < -0.3) & (pc[:, 2] > 1e-3)
            uv = project(pc, np.asarray(cam.K), min_depth=1e-3)
            ui = np.round(uv).astype(np.int64)
            ok = front & (ui[:, 0] >= 0) & (ui[:, 0] < cam.width) & (ui[:, 1] >= 0) & (ui[:, 1] < cam.height)
            idx = np.nonzero(ok)[0]
            d = view.depth[ui[idx, 1], ui[idx, 0]]
            lab = view.labels[ui[idx, 1], ui[idx, 0]]
            seen = (lab == OBJECT) & (d > 0) & (np.abs(d - pc[idx, 2]) < self.free_space_m)
            idx = idx[seen]
            m_all.append(self.model_rgb[idx])
            o_all.append(view.rgb[ui[idx, 1], ui[idx, 0]].astype(np.float64))
        if not m_all:
            return float("nan")
        m, o = np.concatenate(m_all), np.concatenate(o_all)
        if len(m) < 20:
            return float("nan")
        m, o = m - m.mean(0), o - o.mean(0)
        den = np.sqrt((m * m).sum() * (o * o).sum())
        return float((m * o).sum() / den) if den > 0 else float("nan")

    def _result(self, T_model_world: np.ndarray, source, views, dist: float, global_search: bool) -> ObjectPoseResult:
        reg = self.o3d.pipelines.registration
        ev = reg.evaluate_registration(source, self.target, dist, T_model_world)
        T = np.linalg.inv(T_model_world)
        R, t = T[:3, :3], T[:3, 3]
        return ObjectPoseResult(
            R=R, t=t, fitness=float(ev.fitness), rmse=float(ev.inlier_rmse),
            free_space=self.free_space(R, t, views), points=len(source.points), global_search=global_search,
            centroid=np.asarray(source.points).mean(0),
        )  # fmt: skip

    @staticmethod
    def _T_model_world(R: np.ndarray, t: np.ndarray) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R.T, -R.T @ t
        return T

    # -- public ----------------------------------------------------------------
    def register(
        self, points: np.ndarray, views: list[DepthView] | None = None, n_keep: int = 6, refine_iters: int = 40,
        tie: float = 0.03,
    ) -> ObjectPoseResult:  # fmt: skip
        """Global registration of observed world points (multi-start ICP, see module doc).

        Args:
            points: (N, 3) observed object points, world, metres.
            views: the observations (for the free-space score); None skips that term.
            n_keep: distinct coarse poses (15 degrees / 3 voxels apart) refined at the fine level.
            tie: refined poses within this score of the best are compared by colour.
        Returns:
            the best :class:`ObjectPoseResult`.
        Raises:
            InputError: fewer than 20 observed points (no object in the masks/depth).
        """
        views = views or []
        if len(points) < 20:
            raise InputError(f"object registration: only {len(points)} object points with depth (need >= 20)")
        source = self._cloud(points)
        c = np.asarray(source.points).mean(0)
        coarse = 4 * self.voxel
        hyps = []
        eyes = [np.asarray(v.camera.T_world_cam)[:3, 3] for v in views]
        dirs = [(c - e) / max(np.linalg.norm(c - e), 1e-9) for e in eyes]
        for Rg in Rotation.create_group("I").as_matrix():
            # centre the model points that would face a camera on the observed centroid
            # (a partial view sees the front: the model centre lies behind it)
            n = self.model_normals @ Rg.T
            facing = np.zeros(len(n), bool)
            for d in dirs:
                facing |= n @ d < -0.2
            anchor = self.model_xyz[facing].mean(0) if facing.sum() > 10 else self.centre
            t0 = c - Rg @ anchor
            res = self._icp(source, self._T_model_world(Rg, t0), coarse * 2, 12, plane=True)
            ev = self._result(res.transformation, source, views, coarse, True)
            hyps.append((ev.score, res.transformation))
        hyps.sort(key=lambda h: h[0])
        distinct: list[np.ndarray] = []  # many starts converge to one pose: refine each pose once
        for _, T in hyps:
            if all(not _same_pose(T, U, self.voxel * 3) for U in distinct):
                distinct.append(T)
            if len(distinct) == n_keep:
                break
        refined = sorted((self._refine(source, T0, views, refine_iters, True) for T0 in distinct),
                         key=lambda r: (r.score, r.rmse))  # fmt: skip
        best = refined[0]
        close = [r for r in refined if r.score <= best.score + tie]
        if len(close) > 1 and any(v.rgb is not None for v in views):
            for r in close:
                r.colour = self.colour_agreement(r.R, r.t, views)
            scored = [r for r in close if np.isfinite(r.colour)]
            if scored:
                best = max(scored, key=lambda r: r.colour)
        return best

    def _refine(self, source, T0, views, iters: int, global_search: bool) -> ObjectPoseResult:
        T = T0
        for dist in (3 * self.voxel, 1.5 * self.voxel):
            T = self._icp(source, T, dist, iters, plane=True, tukey=dist / 2).transformation
        return self._result(T, source, views, 1.5 * self.voxel, global_search)

    def track(
        self, points: np.ndarray, previous: ObjectPoseResult, views: list[DepthView] | None = None,
        max_score: float = 0.35, refine_iters: int = 40,
    ) -> ObjectPoseResult:  # fmt: skip
        """Register starting from ``previous`` (translated by the motion of the observed
        points' centroid); fall back to :meth:`register` if the
        result's score exceeds ``max_score`` or is worse than the previous frame's by 0.15.

        Raises:
            InputError: as :meth:`register`.
        """
        views = views or []
        if len(points) < 20:
            raise InputError(f"object tracking: only {len(points)} object points with depth (need >= 20)")
        source = self._cloud(points)
        shift = np.asarray(source.points).mean(0) - previous.centroid if previous.centroid is not None else 0.0
        T = self._T_model_world(previous.R, previous.t + shift)  # previous pose, moved with the observed centroid
        for dist in (8 * self.voxel, 5 * self.voxel):
            T = self._icp(source, T, dist, 15, plane=True, tukey=dist / 2).transformation
        r = self._refine(source, T, views, refine_iters, False)
        if r.score > max_score or r.score > previous.score + 0.15:
            g = self.register(points, views)
            if g.score < r.score:
                return g
        return r


def _same_pose(A: np.ndarray, B: np.ndarray, dist: float, angle_deg: float = 15.0) -> bool:
    """Two 4x4 rigid transforms within ``angle_deg`` and ``dist`` metres of each other."""
    dR = A[:3, :3] @ B[:3, :3].T
    ang = np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))
    return bool(ang < angle_deg and np.linalg.norm(A[:3, 3] - B[:3, 3]) < dist)


def track_object(
    views_per_frame: list[list[DepthView]],
    obj: ObjectModel,
    seed: int = 0,
    registration: ObjectRegistration | None = None,
) -> tuple[np.ndarray, np.ndarray, list[ObjectPoseResult]]:
    """Object pose of every frame: global registration of the first, then tracking.

    Args:
        views_per_frame: F lists of the cameras' :class:`DepthView` of each frame.
        obj: the object model.
    Returns:
        obj_rot (F, 3) float32 axis-angle object -> world, obj_transl (F, 3) float32
        metres, and the per-frame :class:`ObjectPoseResult`.
    Raises:
        InputError: a frame without enough object points (names the frame index).
    """
    reg = registration or ObjectRegistration(obj, seed=seed)
    results: list[ObjectPoseResult] = []
    for fi, views in enumerate(views_per_frame):
        pts = object_points(views, seed=seed + fi)
        try:
            r = reg.register(pts, views) if not results else reg.track(pts, results[-1], views)
        except InputError as e:
            raise InputError(f"frame index {fi}: {e}") from None
        results.append(r)
    rot = np.stack([Rotation.from_matrix(r.R).as_rotvec() for r in results]).astype(np.float32)
    transl = np.stack([r.t for r in results]).astype(np.float32)
    return rot, transl, results
