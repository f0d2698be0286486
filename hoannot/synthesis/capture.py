"""Synthetic RGB-D captures with ground truth: a hand holding an object, seen by C cameras.

The images are ray-cast with open3d (``RaycastingScene``), *not* with hoannot's own
PyTorch3D renderer, so a fit is never scored on pixels made by the code that fits.
The hand is a :class:`HandSubject`: any mesh with 21 keypoints in the object frame,
e.g. the WebXR rig (an independent subject) or our own hand model (for the built-in
demo, which must run without ../shared).

Sensor model of the depth images (structured-light / active-stereo RGB-D camera):

* axial noise ``sigma_z(z) = 0.0012 + 0.0019 (z - 0.4)^2`` metres (Nguyen, Izadi and
  Lovell, "Modeling Kinect Sensor Noise", 3DIMPVT 2012, Eq. 5), Gaussian, per pixel;
* holes: pixels on a depth discontinuity (a 4-neighbour more than ``edge_jump`` metres
  away) are dropped with probability ``edge_dropout``, plus a random ``dropout``;
* quantisation to the camera's ``depth_scale`` (uint16 on disk).

A capture is a sequence folder (see :mod:`hoannot.datasets.sequence`) plus ground truth:
``gt/poses.npz`` (:class:`~hoannot.datasets.poses.GroundTruth`, world frame),
``gt/segmentation/<cam>/<frame>.png`` (0 background, 1 hand, 2 object) and
``gt/keypoints2d/<cam>.npz`` (``uv`` (F, 21, 2) px, ``visible`` (F, 21), HO-3D order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hoannot.camera import Camera, look_at
from hoannot.io import InputError, write_image
from hoannot.synthesis.config import SynthConfig
from hoannot.datasets.keypoints2d import write_keypoints2d
from hoannot.datasets.segmentation import write_labels
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.sequence import (
    HandConfig,
    ObjectConfig,
    Sequence,
    SequenceConfig,
    open_sequence,
    write_sequence_header,
)
from hoannot.geometry import project, transform
from hoannot.models.objects import ObjectModel
from hoannot.renderers.raycast import raycast

SKIN_TONES = np.array([[224, 172, 138], [198, 134, 96], [141, 85, 54], [241, 194, 170], [170, 110, 80]], np.float32)


@dataclass
class HandSubject:
    """A hand holding the object rigidly, in the **object frame** (metres).

    Attributes:
        name: what rendered it (``"webxr"``, ``"open"``, ``"mano"``).
        vertices: (V, 3) float32.
        faces: (Nf, 3) int64.
        keypoints: (21, 3) float32, HO-3D order.
        mano: MANO parameters of this hand in the object frame when the subject is a
            MANO-format model: ``global_orient`` (3,), ``hand_pose`` (45,), ``betas``
            (B,), ``transl`` (3,), ``root`` (3,) wrist joint at zero pose. None otherwise.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    keypoints: np.ndarray
    mano: dict | None = None


def ring_cameras(cfg: SynthConfig, rng: np.random.Generator) -> list[Camera]:
    """C cameras evenly spread in azimuth around the origin, 15-40 degrees above it.

    World frame: z up. Returns cameras with OpenCV axes looking at the origin.
    """
    K = np.array([[cfg.focal, 0, (cfg.width - 1) / 2], [0, cfg.focal, (cfg.height - 1) / 2], [0, 0, 1]])
    cams = []
    offset = rng.uniform(0, 2 * np.pi)
    for c in range(cfg.cameras):
        az = offset + 2 * np.pi * c / cfg.cameras + rng.uniform(-0.15, 0.15)
        el = np.deg2rad(rng.uniform(15, 40))
        eye = cfg.distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        target = rng.normal(0, 0.01, 3)
        T = look_at(eye, target, np.array([0.0, 0.0, 1.0]))
        cams.append(Camera(f"cam{c}", K, cfg.width, cfg.height, T, depth_scale=cfg.depth_scale))
    return cams


def object_trajectory(cfg: SynthConfig, rng: np.random.Generator, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth rigid motion of the hand-held object.

    Args:
        centre: (3,) object-frame point (the hand-object centre) that moves around the
            world origin.
    Returns:
        obj_rot (F, 3) axis-angle object->world, obj_transl (F, 3) metres.
    """
    F = cfg.frames
    s = np.linspace(0.0, 1.0, F)
    R0 = Rotation.random(random_state=rng.integers(1 << 31))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(cfg.rotation_deg) * (0.5 - 0.5 * np.cos(np.pi * s))  # ease in/out
    rots = Rotation.from_rotvec(angle[:, None] * axis) * R0
    phase = rng.uniform(0, 2 * np.pi, 3)
    offset = cfg.translation_m * np.sin(np.pi * s[:, None] + phase) - cfg.translation_m * np.sin(phase)
    transl = offset - rots.apply(centre)  # centre -> origin + offset
    return rots.as_rotvec().astype(np.float32), transl.astype(np.float32)


def sensor_depth(depth: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Apply the sensor model to a clean depth map.

    Args:
        depth: (H, W) float metres, 0 where empty.
    Returns:
        (H, W) uint16 in units of ``cfg.depth_scale``.
    """
    z = depth.astype(np.float64).copy()
    valid = z > 0
    if cfg.noise:
        sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
        z = z + rng.normal(size=z.shape) * sigma
        jump = np.zeros_like(valid)
        for axis in (0, 1):
            d = np.abs(np.diff(depth, axis=axis)) > cfg.edge_jump
            pad = [(0, 0), (0, 0)]
            pad[axis] = (1, 0)
            jump |= np.pad(d, pad)
            pad[axis] = (0, 1)
            jump |= np.pad(d, pad)
        drop = (jump & (rng.random(z.shape) < cfg.edge_dropout)) | (rng.random(z.shape) < cfg.dropout)
        valid &= ~drop
    q = np.round(np.where(valid, z, 0.0) / cfg.depth_scale)
    return np.clip(q, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """A smooth random colour field (bilinear upsampling of a 4x4 grid), (H, W, 3) float."""
    grid = rng.uniform(40, 220, (4, 4, 3))
    ys, xs = np.linspace(0, 3, H), np.linspace(0, 3, W)
    y0, x0 = np.minimum(ys.astype(int), 2), np.minimum(xs.astype(int), 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g = lambda a, b: grid[y0[:, None] + a, x0[None, :] + b]  # noqa: E731
    return (1 - fy) * ((1 - fx) * g(0, 0) + fx * g(0, 1)) + fy * ((1 - fx) * g(1, 0) + fx * g(1, 1))


def _box(centre: np.ndarray, size: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """A box mesh (8 vertices, 12 triangles) of ``size`` (3,) at ``centre`` (3,), rotated by ``yaw`` about z."""
    import trimesh

    m = trimesh.creation.box(extents=size)
    R = Rotation.from_euler("z", yaw).as_matrix()
    return np.asarray(m.vertices) @ R.T + centre, np.asarray(m.faces, np.int64)


def _quad(centre: np.ndarray, normal: np.ndarray, half: float) -> tuple[np.ndarray, np.ndarray]:
    """A square of side ``2 half`` metres at ``centre`` facing ``normal`` (two triangles)."""
    n = normal / np.linalg.norm(normal)
    a = np.cross(n, [0.0, 0.0, 1.0] if abs(n[2]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    v = centre + half * np.array([-a - b, a - b, a + b, -a + b])
    return v, np.array([[0, 1, 2], [0, 2, 3]], np.int64)


class _Texture:
    """A procedural colour texture of world position: checks or stripes of two colours, plus grain."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.c0, self.c1 = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
        self.scale = rng.uniform(0.015, 0.06)
        self.kind = rng.integers(3)  # 0 checks, 1 stripes, 2 smooth waves
        self.axis = rng.normal(size=(2, 3))
        self.axis /= np.linalg.norm(self.axis, axis=1, keepdims=True)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a, b = x @ self.axis[0] / self.scale, x @ self.axis[1] / self.scale
        if self.kind == 0:
            w = (np.floor(a) + np.floor(b)) % 2
        elif self.kind == 1:
            w = np.floor(a) % 2
        else:
            w = 0.5 + 0.5 * np.sin(a) * np.cos(0.7 * b)
        col = (1 - w)[:, None] * self.c0 + w[:, None] * self.c1
        return col + rng.normal(0, 6.0, col.shape)


def scene_geometry(cfg: SynthConfig, cams: list[Camera], rng: np.random.Generator, low_z: float):
    """The backdrop meshes of ``cfg.scene`` (world frame) and one texture each.

    Args:
        low_z: lowest world z the hand and object reach over the sequence (the table goes
            below it).
    Returns:
        a list of ``(vertices (V, 3), faces (Nf, 3), texture)``; empty for ``"wall"``.
    """
    out = []
    if cfg.scene == "slanted":
        for cam in cams:
            eye = cam.T_world_cam[:3, 3]
            axis = -eye / np.linalg.norm(eye)  # camera -> origin
            tilt = np.deg2rad(rng.uniform(25, 50))
            side = np.cross(axis, rng.normal(size=3))
            side /= np.linalg.norm(side)
            normal = np.cos(tilt) * -axis + np.sin(tilt) * side
            centre = axis * rng.uniform(0.22, 0.4)
            out.append((*_quad(centre, normal, 1.5), _Texture(rng)))
    elif cfg.scene == "table":
        top = low_z - rng.uniform(0.12, 0.2)
        out.append((*_quad(np.array([0.0, 0.0, top]), np.array([0.0, 0.0, 1.0]), 1.5), _Texture(rng)))
        az = rng.uniform(0, 2 * np.pi)
        out.append((*_quad(np.array([np.cos(az), np.sin(az), 0.0]) * 0.6, -np.array([np.cos(az), np.sin(az), 0.0]), 1.5),
                    _Texture(rng)))  # fmt: skip
        for _ in range(rng.integers(3, 6)):  # clutter, away from the hand and object
            r, phi = rng.uniform(0.16, 0.3), rng.uniform(0, 2 * np.pi)
            size = rng.uniform([0.03, 0.03, 0.02], [0.1, 0.1, 0.12])
            c = np.array([r * np.cos(phi), r * np.sin(phi), top + size[2] / 2])
            out.append((*_box(c, size, rng.uniform(0, np.pi)), _Texture(rng)))
    return out


def _shading(normal: np.ndarray, d: np.ndarray, light: tuple[np.ndarray, float, float] | None) -> np.ndarray:
    """Head-light shading ``0.35 + 0.65 |n . d|``, times a directional light ``ambient +
    strength max(n . l, 0)`` (either side of the surface) when ``light`` is given."""
    shade = 0.35 + 0.65 * np.abs((normal * d).sum(-1))
    if light is not None:
        l, ambient, strength = light
        ndl = np.abs(normal @ l)
        shade = shade * (ambient + strength * ndl)
    return shade


def make_capture(out: str | Path, obj: ObjectModel, subject: HandSubject, cfg: SynthConfig, object_spec: str) -> Sequence:
    """Render a synthetic capture into the sequence folder ``out``.

    Args:
        out: folder to create (must not hold a sequence already).
        obj: the object (its full mesh and texture colours are rendered).
        subject: the hand holding it (object frame).
        cfg: what to render.
        object_spec: what ``sequence.yaml`` should name as the object mesh (a path or a
            primitive spec), so that ``init``/``fit`` load the same object.
    Returns:
        The opened sequence.
    Raises:
        InputError: ``out`` already holds a sequence.
    """
    out = Path(out)
    if (out / "sequence.yaml").exists():
        raise InputError(f"{out}: already holds a sequence; choose an empty folder")
    rng = np.random.default_rng(cfg.seed)
    cams = ring_cameras(cfg, rng)
    centre = 0.5 * (subject.keypoints.mean(0) + np.asarray(obj.mesh.vertices).mean(0))
    obj_rot, obj_transl = object_trajectory(cfg, rng, centre)
    frames = list(range(cfg.frames))
    ov, of = np.asarray(obj.mesh.vertices, np.float64), np.asarray(obj.mesh.faces, np.int64)
    ocol = obj.vertex_colors().astype(np.float32)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    hv, hf = subject.vertices.astype(np.float64), subject.faces.astype(np.int64)
    hcol = np.clip(skin * rng.uniform(0.92, 1.08, (len(hv), 1)), 0, 255).astype(np.float32)
    bgs = [_background(rng, cfg.height, cfg.width) for _ in cams]
    # the backdrop (real geometry for "slanted" / "table"), from its own generator so that
    # the default scene renders exactly as before
    srng = np.random.default_rng([cfg.seed, 1])
    low_z = min(float((ov @ Rotation.from_rotvec(r).as_matrix().T + t)[:, 2].min()) for r, t in zip(obj_rot, obj_transl))
    low_z = min(low_z, min(float((hv @ Rotation.from_rotvec(r).as_matrix().T + t)[:, 2].min())
                           for r, t in zip(obj_rot, obj_transl)))  # fmt: skip
    scene = scene_geometry(cfg, cams, srng, low_z)
    light = None
    if cfg.lighting:
        ldir = srng.normal(size=3)
        light = (ldir / np.linalg.norm(ldir), srng.uniform(0.45, 0.8), srng.uniform(0.3, 0.8))

    gt_joints, gt_verts = [], []
    uv_all = {c.name: [] for c in cams}
    vis_all = {c.name: [] for c in cams}
    for fi, frame in enumerate(frames):
        R = Rotation.from_rotvec(obj_rot[fi]).as_matrix()
        t = obj_transl[fi]
        hv_w, ov_w = hv @ R.T + t, ov @ R.T + t
        kp_w = subject.keypoints @ R.T + t
        gt_joints.append(kp_w)
        gt_verts.append(hv_w)
        for ci, cam in enumerate(cams):
            backdrop = [scene[ci]] if cfg.scene == "slanted" else scene
            meshes = [(hv_w, hf), (ov_w, of)] + [(v, f) for v, f, _ in backdrop]
            depth, geom, prim, bary, normal, dirs = raycast(meshes, cam)
            label = np.where(geom == 0, 1, np.where(geom == 1, 2, 0)).astype(np.uint8)
            rgb = bgs[ci].copy()
            origin = cam.T_world_cam[:3, 3]
            for gid, (_, _, tex) in enumerate(backdrop, start=2):
                m = geom == gid
                x = origin + dirs[m] * depth[m][:, None]
                d = dirs[m] / np.linalg.norm(dirs[m], axis=-1, keepdims=True)
                rgb[m] = tex(x, rng) * _shading(normal[m], d, light)[:, None]
            for gid, (faces, col) in enumerate(((hf, hcol), (of, ocol))):
                m = geom == gid
                tri = faces[prim[m]]
                w = np.stack([1 - bary[m].sum(-1), bary[m][:, 0], bary[m][:, 1]], -1)
                albedo = (col[tri] * w[..., None]).sum(1)
                d = dirs[m] / np.linalg.norm(dirs[m], axis=-1, keepdims=True)
                rgb[m] = albedo * _shading(normal[m], d, light)[:, None]
            if cfg.noise:
                rgb = rgb + rng.normal(0, 3.0, rgb.shape)
            if cfg.background_m > 0 and cfg.scene == "wall":
                T_cw = cam.T_cam_world
                z_obj = (T_cw[:3, :3] @ np.zeros(3) + T_cw[:3, 3])[2]
                depth = np.where(label > 0, depth, z_obj + cfg.background_m)
            write_image(out / "rgb" / cam.name / f"{frame:06d}.png", np.clip(rgb, 0, 255).astype(np.uint8))
            write_image(out / "depth" / cam.name / f"{frame:06d}.png", sensor_depth(depth, cfg, rng))
            write_labels(out / "gt" / "segmentation" / cam.name / f"{frame:06d}.png", label)
            # 2D keypoints; a keypoint is visible when nothing is in front of it
            pc = transform(kp_w, cam.T_cam_world)
            uv = project(pc, cam.K)
            ui = np.clip(np.round(uv).astype(int), 0, [cam.width - 1, cam.height - 1])
            seen = depth[ui[:, 1], ui[:, 0]]
            vis = (label[ui[:, 1], ui[:, 0]] == 1) & (np.abs(seen - pc[:, 2]) < 0.015)
            uv_all[cam.name].append(uv.astype(np.float32))
            vis_all[cam.name].append(vis)
    for cam in cams:
        write_keypoints2d(out / "gt" / "keypoints2d" / f"{cam.name}.npz", frames, np.stack(uv_all[cam.name]),
                          visible=np.stack(vis_all[cam.name]))
    params = None
    if subject.mano is not None:
        params = _mano_world(subject.mano, obj_rot, obj_transl, np.array(frames))
    GroundTruth(
        frames=np.array(frames, np.int64),
        hand_joints=np.stack(gt_joints).astype(np.float32),
        hand_vertices=np.stack(gt_verts).astype(np.float32),
        hand_faces=hf,
        obj_rot=obj_rot,
        obj_transl=obj_transl,
        hand_model=subject.name,
        hand_params=params,
    ).save(out / "gt" / "poses.npz")
    config = SequenceConfig(
        name=cfg.name,
        cameras=[c.name for c in cams],
        frames=frames,
        object=ObjectConfig(id=obj.name, mesh=object_spec, symmetric=cfg.object_symmetric),
        hand=HandConfig(),
    )
    write_sequence_header(out, config, cams)  # last: a folder with sequence.yaml is complete
    return open_sequence(out)


def _mano_world(mano: dict, obj_rot: np.ndarray, obj_transl: np.ndarray, frames: np.ndarray) -> HandObjectPoses:
    """MANO parameters of a hand rigidly attached to the object, per frame, world frame.

    A rigid motion (R, t) applied to a MANO hand with root joint J0 gives
    ``global_orient' = R * global_orient`` and ``transl' = R (J0 + transl) + t - J0``.
    """
    R = Rotation.from_rotvec(obj_rot)
    go = (R * Rotation.from_rotvec(mano["global_orient"])).as_rotvec()
    J0 = np.asarray(mano["root"], np.float64)
    transl = R.apply(J0 + mano["transl"]) + obj_transl - J0
    F = len(frames)
    return HandObjectPoses(
        frames=frames,
        global_orient=go,
        hand_pose=np.tile(mano["hand_pose"], (F, 1)),
        betas=mano["betas"],
        transl=transl,
        obj_rot=obj_rot,
        obj_transl=obj_transl,
        source="ground truth",
    )
