"""Synthetic training data for the perception networks (segmentation and 2D joints).

Each sample is one ray-cast view (open3d ``RaycastingScene``, the same ray caster as
:mod:`hoannot.datasets.synthetic`) of a hand next to, in front of or behind an object,
composited over a random background, following the recipe of HOnnotate (Hampali et al.,
CVPR 2020, Sec. 3.2: synthetic hand and object images with random backgrounds and
random over/under-laying of hand and object):

* hand: hoannot's open hand (:class:`~hoannot.models.hand.HandModel`) with a random
  ``hand_pose`` drawn inside its joint limits and a random global rotation, or -- for
  held-out tests only -- the WebXR glTF hand (:class:`~hoannot.models.rig.HandRig`) with
  random flexion/spread inside its limits; optionally a skin-coloured forearm (labelled
  hand, as the arm is skin in a real image);
* object: YCB meshes with their texture (sampled at the ray hit's UV), or primitives
  (box, cylinder) with a random procedural solid texture, so the package trains
  without ../shared; random rotation and distance;
* layering: the hand is placed around the object, in front of it or behind it with
  equal probability, so either occludes the other (the ray caster resolves visibility);
* appearance: skin tone from :data:`~hoannot.datasets.synthetic.SKIN_TONES` with
  jitter, Lambertian + ambient + Phong shading from a random light, random
  backgrounds (smooth colour fields, noise, random shapes and lines), image noise;
* depth: ray-cast depth with a background plane and the sensor model of
  :func:`hoannot.datasets.synthetic.sensor_depth`.

Outputs per sample (pixel centres at integer ``(u, v)``, OpenCV camera):
``rgb`` (H, W, 3) uint8, ``label`` (H, W) uint8 (0 background, 1 hand, 2 object),
``depth`` (H, W) float32 metres (0 = no reading), ``uv`` (21, 2) float32 px (HO-3D
order), ``visible`` (21,) bool (inside the image and not hidden behind the object).

Augmentations (:func:`augment`): scale, rotation, translation (one affine warp; crops
follow from it), colour jitter (brightness, contrast, saturation, hue), Gaussian blur.
:class:`SegmentationDataset` and :class:`KeypointDataset` wrap a rendered pool
(:func:`render_pool`, cacheable with :func:`save_pool`/:func:`load_pool`) as torch
Datasets that augment on the fly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from hoannot.datasets.io import InputError, write_npz
from hoannot.datasets.synthetic import SKIN_TONES, SynthConfig, sensor_depth
from hoannot.geometry import pixel_rays, project, unproject

#: YCB objects used for training; the other two of ../shared/data/ycb are held out.
TRAIN_YCB = ("003_cracker_box", "004_sugar_box", "010_potted_meat_can")
#: YCB objects held out for testing (never seen in training).
TEST_YCB = ("006_mustard_bottle", "011_banana")
#: Primitive objects (always available; random procedural textures).
PRIMITIVES = (
    "primitive:box:0.06,0.09,0.16",
    "primitive:box:0.05,0.05,0.05",
    "primitive:box:0.03,0.12,0.2",
    "primitive:cylinder:0.035,0.12",
    "primitive:cylinder:0.05,0.18",
    "primitive:cylinder:0.025,0.09",
)


# --------------------------------------------------------------------------- assets
@dataclass
class TexturedMesh:
    """A mesh prepared for ray casting and shading (object frame, metres).

    Attributes:
        name: id.
        vertices: (V, 3) float64; faces: (F, 3) int64; normals: (V, 3) float64 vertex normals.
        uv: (V, 2) float32 texture coordinates or None; texture: (Ht, Wt, 3) uint8 or None.
        colors: (V, 3) float32 per-vertex albedo 0..255 (used where there is no texture).
        procedural: use a random solid texture (primitives) instead of ``colors``.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    colors: np.ndarray | None = None
    procedural: bool = False

    @property
    def radius(self) -> float:
        c = self.vertices.mean(0)
        return float(np.linalg.norm(self.vertices - c, axis=1).max())


def load_textured(spec: str, max_texture: int = 1024) -> TexturedMesh:
    """Load an object for rendering: a mesh file/YCB folder or a primitive spec.

    Args:
        spec: as :func:`hoannot.models.objects.load_object` accepts.
        max_texture: textures are downsampled to at most this many pixels a side.
    Raises:
        InputError: missing/unreadable mesh or bad primitive spec.
    """
    from hoannot.models.objects import _primitive, resolve_mesh_path

    if spec.startswith("primitive:"):
        mesh = _primitive(spec)
        name = spec
    else:
        path = resolve_mesh_path(spec)
        try:
            mesh = trimesh.load(path, force="mesh")
        except Exception as e:  # noqa: BLE001 - trimesh raises many types
            raise InputError(f"{path}: cannot read mesh ({e})".splitlines()[0]) from None
        name = path.parent.name
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    tm = TexturedMesh(name, v - v.mean(0), f, np.asarray(mesh.vertex_normals, np.float64))
    vis = mesh.visual
    img = getattr(getattr(vis, "material", None), "image", None) if vis.kind == "texture" else None
    if img is not None and getattr(vis, "uv", None) is not None and len(vis.uv) == len(v):
        tex = np.asarray(img.convert("RGB"))
        s = max_texture / max(tex.shape[:2])
        if s < 1:
            tex = cv2.resize(tex, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        tm.uv, tm.texture = np.asarray(vis.uv, np.float32), tex
    elif spec.startswith("primitive:"):
        tm.procedural = True
    else:
        try:
            tm.colors = np.asarray(vis.to_color().vertex_colors, np.float32)[:, :3]
        except Exception:  # noqa: BLE001
            tm.colors = None
        if tm.colors is None or len(tm.colors) != len(v):
            tm.procedural = True
    return tm


def default_objects(ycb_dir: str | Path | None = None, split: str = "train") -> list[str]:
    """Object specs for a split: the split's YCB objects found in ``ycb_dir`` plus primitives.

    Args:
        ycb_dir: a YCB folder (``<dir>/<id>/...``); None uses ``$HOANNOT_YCB`` if set,
            else primitives only.
        split: ``"train"`` (:data:`TRAIN_YCB` + primitives) or ``"test"`` (:data:`TEST_YCB`
            only, plus primitives when none is found).
    """
    ycb_dir = ycb_dir or os.environ.get("HOANNOT_YCB")
    names = TRAIN_YCB if split == "train" else TEST_YCB
    found = [str(Path(ycb_dir) / n) for n in names if ycb_dir and (Path(ycb_dir) / n).is_dir()]
    if split == "train":
        return found + list(PRIMITIVES)
    return found or list(PRIMITIVES)


class HandSampler:
    """Random hand meshes with 21 keypoints (HO-3D order), in a hand-centred frame.

    Args:
        hand: ``"open"`` (hoannot's open hand; poses uniform inside its joint limits,
            biased towards flexion) or a path to a skinned glTF hand (WebXR rig; flexion
            and spread uniform inside :data:`hoannot.models.rig.FLEX_LIMITS` /
            ``SPREAD_LIMITS``).
    """

    def __init__(self, hand: str = "open") -> None:
        self.kind = hand
        if hand == "open":
            from hoannot.models.hand import HandModel

            self.model = HandModel(None)
            self.faces = self.model.faces.numpy().astype(np.int64)
            self.lower, self.upper = self.model.limits.lower, self.model.limits.upper
        else:
            from hoannot.models.rig import HandRig

            if not Path(hand).is_file():
                raise InputError(f"{hand}: hand model file not found")
            self.rig = HandRig.from_file(hand)
            self.faces = np.asarray(self.rig.faces, np.int64)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random hand: vertices (V, 3) and keypoints (21, 3), float64, metres,
        centred on the keypoints' mean, in a random orientation."""
        if self.kind == "open":
            a = rng.beta(1.2, 1.6, 45)  # more open than closed, full range covered
            pose = self.lower + a * (self.upper - self.lower)
            with torch.no_grad():
                out = self.model(torch.zeros(1, 3), torch.as_tensor(pose, dtype=torch.float32)[None])
            v, kp = out.vertices[0].numpy().astype(np.float64), out.joints[0].numpy().astype(np.float64)
        else:
            from hoannot.models.rig import FLEX_LIMITS, SPREAD_LIMITS

            flex = FLEX_LIMITS[..., 0] + rng.beta(1.2, 1.6, (5, 3)) * (FLEX_LIMITS[..., 1] - FLEX_LIMITS[..., 0])
            spread = rng.uniform(SPREAD_LIMITS[:, 0], SPREAD_LIMITS[:, 1])
            out = self.rig.articulate(flex, spread)
            v, kp = np.asarray(out.vertices, np.float64), np.asarray(out.keypoints, np.float64)
        c = kp.mean(0)
        R = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
        return (v - c) @ R.T, (kp - c) @ R.T


def _forearm(kp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A tapered skin cylinder from the wrist away from the fingers (hand-centred frame)."""
    wrist, mid = kp[0], kp[4]
    d = wrist - mid
    d /= np.linalg.norm(d)
    length = rng.uniform(0.12, 0.3)
    cyl = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=16)
    v = np.asarray(cyl.vertices, np.float64).copy()
    z = v[:, 2] + 0.5  # 0 at the wrist end, 1 far end
    r = rng.uniform(0.022, 0.03) * (1 + 0.35 * z)
    v[:, :2] *= r[:, None]
    v[:, 2] = z * length - 0.01
    # rotate +z onto d
    Rz = Rotation.align_vectors([d], [[0.0, 0.0, 1.0]])[0].as_matrix()
    return v @ Rz.T + wrist, np.asarray(cyl.faces, np.int64)


# --------------------------------------------------------------------------- appearance
def random_background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """A random cluttered background, (H, W, 3) float32 0..255.

    A smooth colour field, multi-scale noise, and random rectangles, ellipses and lines.
    """
    g = rng.integers(2, 6)
    grid = rng.uniform(20, 235, (g, g, 3)).astype(np.float32)
    bg = cv2.resize(grid, (W, H), interpolation=cv2.INTER_CUBIC)
    for s in (4, 16):
        n = rng.normal(0, rng.uniform(1, 10), (max(H // s, 2), max(W // s, 2), 1)).astype(np.float32)
        bg += cv2.resize(n, (W, H), interpolation=cv2.INTER_LINEAR)[..., None]
    for _ in range(rng.integers(0, 8)):
        col = tuple(float(x) for x in rng.uniform(0, 255, 3))
        p = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        q = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        k = rng.integers(3)
        if k == 0:
            cv2.rectangle(bg, p, q, col, -1)
        elif k == 1:
            axes = (int(rng.integers(2, W // 3 + 3)), int(rng.integers(2, H // 3 + 3)))
            cv2.ellipse(bg, p, axes, float(rng.uniform(0, 180)), 0, 360, col, -1)
        else:
            cv2.line(bg, p, q, col, int(rng.integers(1, max(2, W // 40) + 1)))
    grey = bg.mean(-1, keepdims=True)
    bg = grey + rng.uniform(0.15, 1.0) * (bg - grey)  # real rooms are mostly unsaturated
    return np.clip(bg, 0, 255)


def _procedural(points: np.ndarray, rng_params: np.ndarray) -> np.ndarray:
    """Solid texture: sum of random sinusoids of the 3D point, (N, 3) 0..255."""
    base, amp, freq, phase = rng_params[:3], rng_params[3:6], rng_params[6:15].reshape(3, 3), rng_params[15:18]
    s = np.sin(points @ freq.T + phase)  # (N, 3)
    return np.clip(base + amp * s, 0, 255)


def _shade(normals: np.ndarray, view: np.ndarray, light: np.ndarray, ambient: float, spec: float) -> np.ndarray:
    n = normals / (np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-9)
    n = np.where(((n * view).sum(-1) > 0)[:, None], -n, n)  # face the camera
    diff = np.clip(-(n * light).sum(-1), 0, None)
    r = light - 2 * (n * light).sum(-1, keepdims=True) * n
    ph = np.clip(-(r * view).sum(-1), 0, None) ** 20
    return ambient + (1 - ambient) * diff, spec * ph


# --------------------------------------------------------------------------- rendering
@dataclass
class RenderConfig:
    """Geometry and sampling ranges of one composite view.

    Attributes:
        width, height: image size, px.
        focal: focal length at this size, px (jittered by ``focal_jitter``).
        distance: (min, max) object distance from the camera, metres.
        forearm: probability of adding a forearm.
        hand_front: probability that the hand is placed in front of the object.
        min_hand_px, min_object_px: reject views with fewer visible pixels (scaled to
            the image area relative to 320x240).
    """

    width: int = 320
    height: int = 240
    focal: float = 300.0
    focal_jitter: float = 0.15
    distance: tuple[float, float] = (0.32, 0.75)
    forearm: float = 0.7
    hand_front: float = 0.5
    min_hand_px: int = 400
    min_object_px: int = 200
    extra: dict = field(default_factory=dict)


def render_sample(
    obj: TexturedMesh,
    hand: HandSampler,
    rng: np.random.Generator,
    cfg: RenderConfig | None = None,
) -> dict[str, np.ndarray]:
    """Render one composite view of a random hand with ``obj``.

    Args:
        obj: the object to render.
        hand: hand sampler.
        rng: random generator.
        cfg: geometry; default :class:`RenderConfig`.
    Returns:
        dict with ``rgb`` (H, W, 3) uint8, ``label`` (H, W) uint8, ``depth`` (H, W)
        float32 metres, ``uv`` (21, 2) float32 px, ``visible`` (21,) bool, ``K`` (3, 3).
    """
    from hoannot.models._open3d import load as load_open3d

    o3d = load_open3d()
    cfg = cfg or RenderConfig()
    H, W = cfg.height, cfg.width
    area = H * W / (320 * 240)
    for _attempt in range(20):
        f = cfg.focal * (1 + rng.uniform(-cfg.focal_jitter, cfg.focal_jitter))
        K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
        z = rng.uniform(*cfg.distance)
        # object centre somewhere in the central part of the view
        u0, v0 = rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H
        c_obj = unproject(np.array([u0, v0]), np.float64(z), K)
        R_obj = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
        ov = obj.vertices @ R_obj.T + c_obj
        hv, kp = hand.sample(rng)
        front = rng.random() < cfg.hand_front
        d = rng.normal(size=3)
        d[2] = 0
        d /= np.linalg.norm(d) + 1e-9
        lateral = rng.uniform(0.0, obj.radius + 0.05)
        dz = rng.uniform(0.3, 1.0) * obj.radius + rng.uniform(0.0, 0.06)
        c_hand = c_obj + lateral * d + np.array([0, 0, -dz if front else dz])
        hv, kp = hv + c_hand, kp + c_hand
        meshes = [(hv, hand.faces)]
        arm = rng.random() < cfg.forearm
        if arm:
            av, af = _forearm(kp - c_hand, rng)
            meshes.append((av + c_hand, af))
        meshes.append((ov, obj.faces))
        if (kp[:, 2] < 0.1).any() or (hv[:, 2] < 0.08).any():
            continue
        scene = o3d.t.geometry.RaycastingScene()
        for v, fc in meshes:
            scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(fc.astype(np.uint32)))
        dirs = pixel_rays(K, W, H)
        rays = np.concatenate([np.zeros_like(dirs), dirs], -1).reshape(-1, 6).astype(np.float32)
        ans = scene.cast_rays(o3d.core.Tensor(rays))
        t_hit = ans["t_hit"].numpy().reshape(H, W)
        gid = ans["geometry_ids"].numpy().astype(np.int64).reshape(H, W)
        hit = np.isfinite(t_hit)
        gid = np.where(hit, gid, -1)
        obj_gid = len(meshes) - 1
        label = np.zeros((H, W), np.uint8)
        label[(gid >= 0) & (gid < obj_gid)] = 1
        label[gid == obj_gid] = 2
        if (label == 1).sum() < cfg.min_hand_px * area or (label == 2).sum() < cfg.min_object_px * area:
            continue
        break
    else:
        raise RuntimeError("render_sample: no view with both hand and object visible in 20 attempts")

    prim = ans["primitive_ids"].numpy().astype(np.int64).reshape(H, W)
    bary = ans["primitive_uvs"].numpy().reshape(H, W, 2)
    view = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    light = rng.normal(size=3) + np.array([0, 0, 1.5])
    light /= np.linalg.norm(light)
    ambient, spec = rng.uniform(0.25, 0.6), rng.uniform(0.0, 0.3)
    rgb = random_background(rng, H, W)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.85, 1.15, 3)
    skin_var = rng.uniform(0.9, 1.1, (max(len(hv), 1), 1))
    hand_normals = trimesh.Trimesh(hv, hand.faces, process=False).vertex_normals
    proc_params = np.concatenate([rng.uniform(30, 225, 3), rng.uniform(0, 80, 3), rng.normal(0, 120, 9), rng.uniform(0, 6.3, 3)])
    for g, (v, fc) in enumerate(meshes):
        m = gid == g
        if not m.any():
            continue
        tri = fc[prim[m]]
        w = np.stack([1 - bary[m].sum(-1), bary[m][:, 0], bary[m][:, 1]], -1)
        if g == obj_gid:
            normals = (obj.normals[tri] * w[..., None]).sum(1) @ R_obj.T
            if obj.texture is not None:
                uvh = (obj.uv[tri] * w[..., None]).sum(1)
                th, tw = obj.texture.shape[:2]
                tx = np.clip((uvh[:, 0] % 1.0) * (tw - 1), 0, tw - 1).astype(int)
                ty = np.clip((1 - uvh[:, 1] % 1.0) * (th - 1), 0, th - 1).astype(int)
                albedo = obj.texture[ty, tx].astype(np.float32)
            elif obj.procedural:
                p_obj = ((v[tri] * w[..., None]).sum(1) - c_obj) @ R_obj
                albedo = _procedural(p_obj, proc_params)
            else:
                albedo = (obj.colors[tri] * w[..., None]).sum(1)
        elif g == 0:
            normals = (hand_normals[tri] * w[..., None]).sum(1)
            albedo = skin[None] * (skin_var[tri, 0] * w).sum(1, keepdims=True)
        else:  # forearm
            normals = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
            albedo = np.tile(skin[None] * 0.97, (len(tri), 1))
        diff, ph = _shade(normals, view[m], light, ambient, spec)
        rgb[m] = albedo * diff[:, None] + 255 * ph[:, None]
    rgb = rgb * rng.uniform(0.7, 1.2) + rng.normal(0, rng.uniform(1, 6), rgb.shape)
    # depth: background plane behind everything, then the sensor model
    depth = np.where(hit, t_hit, 0.0)
    bg_z = float(c_obj[2] + rng.uniform(0.15, 1.0))
    depth = np.where(label > 0, depth, np.where(hit & (depth < bg_z), depth, bg_z))
    scfg = SynthConfig(depth_scale=0.0005, noise=True)
    depth_m = sensor_depth(depth, scfg, rng).astype(np.float32) * scfg.depth_scale
    # 2D joints and their visibility (not hidden behind the object; self-occlusion by
    # the hand still counts as visible, the pixel shows the hand)
    uv = project(kp, K)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    oscene = o3d.t.geometry.RaycastingScene()
    oscene.add_triangles(o3d.core.Tensor(ov.astype(np.float32)), o3d.core.Tensor(obj.faces.astype(np.uint32)))
    kdir = kp / kp[:, 2:3]
    kr = np.concatenate([np.zeros_like(kdir), kdir], -1).astype(np.float32)
    t_obj = oscene.cast_rays(o3d.core.Tensor(kr))["t_hit"].numpy()
    visible = inside & ~(t_obj < kp[:, 2] - 0.002)
    return {
        "rgb": np.clip(rgb, 0, 255).astype(np.uint8),
        "label": label,
        "depth": depth_m,
        "uv": uv.astype(np.float32),
        "visible": visible,
        "K": K.astype(np.float32),
    }


def render_pool(
    n: int,
    objects: list[str] | None = None,
    hand: str = "open",
    cfg: RenderConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Render ``n`` composites (objects drawn uniformly from ``objects``).

    Args:
        n: number of samples.
        objects: object specs (default :func:`default_objects`).
        hand: ``"open"`` or a glTF hand path (see :class:`HandSampler`).
        cfg: render geometry.
        seed: random seed.
        progress: show a rich progress bar.
    Returns:
        dict of stacked arrays: ``rgb`` (N, H, W, 3) uint8, ``label`` (N, H, W) uint8,
        ``depth`` (N, H, W) float16 metres, ``uv`` (N, 21, 2) float32,
        ``visible`` (N, 21) bool, ``object`` (N,) str.
    """
    objects = objects or default_objects()
    meshes = [load_textured(s) for s in objects]
    sampler = HandSampler(hand)
    rng = np.random.default_rng(seed)
    keys = ("rgb", "label", "depth", "uv", "visible")
    out: dict[str, list] = {k: [] for k in keys}
    names = []
    it = range(n)
    if progress:
        from rich.progress import track

        it = track(it, description=f"rendering {n} composites")
    for i in it:
        oi = int(rng.integers(len(meshes)))
        s = render_sample(meshes[oi], sampler, rng, cfg)
        for k in keys:
            out[k].append(s[k])
        names.append(meshes[oi].name)
    pool = {k: np.stack(v) for k, v in out.items()}
    pool["depth"] = pool["depth"].astype(np.float16)
    pool["object"] = np.asarray(names)
    return pool


def save_pool(path: str | Path, pool: dict[str, np.ndarray]) -> None:
    """Cache a rendered pool as ``.npz`` (atomic)."""
    write_npz(path, **pool)


def load_pool(path: str | Path) -> dict[str, np.ndarray]:
    """Read a pool written by :func:`save_pool`.

    Raises:
        InputError: missing file or missing arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: training-data cache not found")
    with np.load(path) as z:
        pool = {k: z[k] for k in z.files}
    missing = [k for k in ("rgb", "label", "depth", "uv", "visible") if k not in pool]
    if missing:
        raise InputError(f"{path}: training-data cache lacks {missing}")
    return pool


# --------------------------------------------------------------------------- augmentation
def normalise_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, roughly zero-mean unit-variance."""
    return ((rgb.astype(np.float32) / 255.0 - 0.45) / 0.25).transpose(2, 0, 1)


def normalise_depth(depth: np.ndarray) -> np.ndarray:
    """Depth channel for RGB-D networks: (H, W) metres -> (H, W) float32.

    Depth relative to the nearest valid depth (5th percentile), in units of 0.25 m,
    clipped to [-1, 4]; pixels without a reading get -1. Invariant to the capture's
    distance, so the network sees the hand/object relief, not the absolute range.
    """
    d = depth.astype(np.float32)
    valid = d > 0
    if not valid.any():
        return np.full(d.shape, -1.0, np.float32)
    near = np.percentile(d[valid], 5)
    out = np.clip((d - near) / 0.25, -1.0, 4.0)
    return np.where(valid, out, -1.0).astype(np.float32)


def affine(scale: float, angle_deg: float, centre: tuple[float, float], out_centre: tuple[float, float]) -> np.ndarray:
    """(2, 3) affine mapping ``centre`` to ``out_centre``, scaling by ``scale`` and
    rotating by ``angle_deg`` (counter-clockwise on screen) about it."""
    M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle_deg, scale)
    M[:, 2] += np.asarray(out_centre) - np.asarray(centre)
    return M


def augment(
    sample: dict[str, np.ndarray],
    rng: np.random.Generator,
    out_size: tuple[int, int],
    M: np.ndarray,
    photometric: bool = True,
) -> dict[str, np.ndarray]:
    """Warp a sample by the affine ``M`` into an ``out_size`` (W, H) image, then jitter colours.

    Args:
        sample: ``rgb``, ``label``, ``depth``, ``uv``, ``visible`` as in :func:`render_sample`.
        rng: random generator (photometric jitter).
        out_size: (W, H) of the output.
        M: (2, 3) affine from input to output pixels (scale/rotation/translation/crop).
        photometric: apply colour jitter (brightness, contrast, saturation, hue) and
            a random Gaussian blur.
    Returns:
        the warped sample (same keys); joints leaving the image become not visible.
    """
    W, H = out_size
    rgb = cv2.warpAffine(sample["rgb"], M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    label = cv2.warpAffine(sample["label"], M, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    depth = cv2.warpAffine(sample["depth"].astype(np.float32), M, (W, H), flags=cv2.INTER_NEAREST, borderValue=0)
    uv = sample["uv"] @ M[:, :2].T + M[:, 2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    if photometric:
        x = rgb.astype(np.float32)
        if rng.random() < 0.8:
            hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 255)
            x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
        if rng.random() < 0.4:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.5))
        rgb = np.clip(x, 0, 255).astype(np.uint8)
    return {"rgb": rgb, "label": label, "depth": depth, "uv": uv.astype(np.float32),
            "visible": sample["visible"] & inside}  # fmt: skip


def _pool_item(pool: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {k: pool[k][i] for k in ("rgb", "label", "depth", "uv", "visible")}


class SegmentationDataset(torch.utils.data.Dataset):
    """Augmented full views for segmentation.

    Each item is a random scale (``scale`` range, relative to ``size / image size``),
    rotation (+-``rot_deg``) and translation of a pool view into a ``size`` (W, H) image.

    Items: ``image`` (C, H, W) float32 (C = 3 RGB or 4 RGB-D, see :func:`normalise_depth`),
    ``label`` (H, W) int64.
    """

    def __init__(self, pool, size=(128, 96), rgbd=False, augment=True, scale=(0.7, 1.5), rot_deg=30.0, seed=0):
        self.pool, self.size, self.rgbd, self.aug = pool, size, rgbd, augment
        self.scale, self.rot, self.seed = scale, rot_deg, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pool["rgb"])

    def item(self, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        s = _pool_item(self.pool, i)
        h, w = s["label"].shape
        W, H = self.size
        base = min(W / w, H / h)
        if self.aug:
            sc = base * rng.uniform(*self.scale)
            ang = rng.uniform(-self.rot, self.rot)
            centre = (w / 2 + rng.uniform(-0.2, 0.2) * w, h / 2 + rng.uniform(-0.2, 0.2) * h)
        else:
            sc, ang, centre = base, 0.0, ((w - 1) / 2, (h - 1) / 2)
        M = affine(sc, ang, centre, ((W - 1) / 2, (H - 1) / 2))
        return augment(s, rng, (W, H), M, photometric=self.aug)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, self.epoch, i))
        s = self.item(i, rng)
        x = normalise_rgb(s["rgb"])
        if self.rgbd:
            x = np.concatenate([x, normalise_depth(s["depth"])[None]], 0)
        return {"image": torch.from_numpy(x), "label": torch.from_numpy(s["label"].astype(np.int64))}


def hand_box(mask: np.ndarray, margin: float = 1.25) -> tuple[float, float, float] | None:
    """Square box around the hand pixels of a mask: ``(cx, cy, side)`` px, or None if empty.

    Args:
        mask: (H, W) bool hand mask.
        margin: side = ``margin`` x the larger extent of the mask.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0 + 1, y1 - y0 + 1, 8) * margin


def joint_box(uv: np.ndarray, margin: float = 1.5) -> tuple[float, float, float]:
    """Square box around 2D joints: ``(cx, cy, side)`` px.

    Args:
        uv: (J, 2) float joint positions, px (NaN rows are ignored; at least one finite).
        margin: side = ``margin`` x the joints' larger extent (at least 8 px).
    """
    uv = uv[np.isfinite(uv).all(1)]
    lo, hi = uv.min(0), uv.max(0)
    return float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, max(float((hi - lo).max()), 8.0) * margin


def crop_affine(box: tuple[float, float, float], size: int, angle_deg: float = 0.0) -> np.ndarray:
    """(2, 3) affine mapping the square ``box`` (cx, cy, side) onto a ``size`` x ``size`` crop."""
    cx, cy, side = box
    return affine(size / side, angle_deg, (cx, cy), ((size - 1) / 2, (size - 1) / 2))


def gaussian_heatmaps(uv: np.ndarray, visible: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Target belief maps (Wei et al., CVPR 2016, Sec. 3.3): a Gaussian of peak 1 at each joint.

    Args:
        uv: (J, 2) joint positions in heatmap pixels.
        visible: (J,) bool; invisible joints get an all-zero map.
        size: heatmap side; sigma: Gaussian std, heatmap pixels.
    Returns:
        (J + 1, size, size) float32; the last channel is the background belief
        ``1 - max_j b_j``.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    d2 = (xs[None] - uv[:, 0, None, None]) ** 2 + (ys[None] - uv[:, 1, None, None]) ** 2
    maps = np.exp(-d2 / (2 * sigma**2)) * visible[:, None, None]
    bg = 1.0 - maps.max(0, keepdims=True)
    return np.concatenate([maps, bg], 0).astype(np.float32)


class KeypointDataset(torch.utils.data.Dataset):
    """Augmented hand crops for the 2D joint network.

    The crop box comes from the ground-truth hand mask (as at test time the first crop
    comes from the predicted mask) or, with probability ``joint_box_prob``, from the
    ground-truth joints with margin ``joint_margin`` (as the second, refined crop comes
    from the first pass's joints, :func:`hoannot.annotate.keypoints.detect_keypoints`);
    it is jittered in centre (+-``shift`` of the side) and size (``scale`` range) and
    rotated (+-``rot_deg``), to ``crop`` x ``crop`` px.

    Items: ``image`` (3, crop, crop) float32, ``heatmaps`` (22, crop/stride, crop/stride)
    float32 (:func:`gaussian_heatmaps`), ``uv`` (21, 2) crop px, ``visible`` (21,) bool.
    """

    def __init__(self, pool, crop=64, stride=4, sigma=1.2, augment=True, shift=0.1, scale=(0.85, 1.25),
                 rot_deg=40.0, joint_box_prob=0.0, joint_margin=1.5, seed=0):  # fmt: skip
        self.pool, self.crop, self.stride, self.sigma, self.aug = pool, crop, stride, sigma, augment
        self.joint_box_prob, self.joint_margin = joint_box_prob, joint_margin
        self.shift, self.scale, self.rot, self.seed = shift, scale, rot_deg, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pool["rgb"])

    def item(self, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        s = _pool_item(self.pool, i)
        if self.joint_box_prob > 0 and rng.random() < self.joint_box_prob:
            cx, cy, side = joint_box(s["uv"], self.joint_margin)
        else:
            cx, cy, side = hand_box(s["label"] == 1)
        ang = 0.0
        if self.aug:
            cx, cy = cx + rng.uniform(-self.shift, self.shift) * side, cy + rng.uniform(-self.shift, self.shift) * side
            side *= rng.uniform(*self.scale)
            ang = rng.uniform(-self.rot, self.rot)
        M = crop_affine((cx, cy, side), self.crop, ang)
        return augment(s, rng, (self.crop, self.crop), M, photometric=self.aug)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, self.epoch, i, 1))
        s = self.item(i, rng)
        hm_size = self.crop // self.stride
        uv_hm = (s["uv"] + 0.5) / self.stride - 0.5
        hm = gaussian_heatmaps(uv_hm, s["visible"], hm_size, self.sigma)
        return {"image": torch.from_numpy(normalise_rgb(s["rgb"])), "heatmaps": torch.from_numpy(hm),
                "uv": torch.from_numpy(s["uv"]), "visible": torch.from_numpy(s["visible"])}  # fmt: skip


# --------------------------------------------------------------------------- training loop
def train_loop(
    model: torch.nn.Module,
    loss_fn,
    dataset: torch.utils.data.Dataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    ckpt_path: str | Path,
    resume: bool = True,
    progress: bool = True,
    max_minutes: float | None = None,
    ckpt_every: int = 50,
    seed: int = 0,
    device: str = "cpu",
    description: str = "training",
) -> dict:
    """Adam with cosine learning-rate decay, checkpointed so that a run can be resumed.

    The decay follows the run's progress: ``step / steps``, or the fraction of
    ``max_minutes`` used when that is larger, so a time-capped run still anneals.

    Args:
        model: the network (moved to ``device``).
        loss_fn: ``loss_fn(model, batch) -> (loss tensor, {name: float})``.
        dataset: yields dict batches; its ``epoch`` attribute (if any) is advanced each
            pass so augmentations differ between epochs.
        steps: total optimisation steps (a resumed run continues up to this number).
        batch_size, lr: as usual.
        ckpt_path: training checkpoint (model, optimiser, step, history), written
            atomically every ``ckpt_every`` steps and at the end.
        resume: continue from ``ckpt_path`` if it exists.
        progress: show a rich progress bar with the running loss.
        max_minutes: stop (and checkpoint) after this much wall time in this call.
        seed: shuffling seed.
        device: torch device.
        description: progress bar label.
    Returns:
        ``{"step", "losses" (per-step list of floats), "seconds" (total, all runs),
        "resumed_from" (step or 0)}``.
    """
    import time

    from hoannot.datasets.io import atomic_write

    ckpt_path = Path(ckpt_path)
    if len(dataset) == 0:
        raise InputError("training: the dataset is empty")
    batch_size = min(batch_size, len(dataset))
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    state = {"step": 0, "losses": [], "seconds": 0.0}
    resumed = 0
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        resumed = state["step"]

    def save_ckpt() -> None:
        import io as _io

        buf = _io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "state": state}, buf)  # fmt: skip
        with atomic_write(ckpt_path, "wb") as f:
            f.write(buf.getvalue())

    t0 = time.time()
    t_prev = state["seconds"]
    g = torch.Generator().manual_seed(seed)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   disable=not progress)  # fmt: skip
    with bar:
        task = bar.add_task(description, total=steps, completed=state["step"], loss=float("nan"))
        while state["step"] < steps:
            if hasattr(dataset, "epoch"):
                dataset.epoch = state["step"] // max(1, len(dataset) // batch_size) + 1000 * resumed
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                                 generator=g, num_workers=0)  # fmt: skip
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                # cosine decay over the run's progress: steps, or wall time when capped
                prog = state["step"] / max(steps, 1)
                if max_minutes is not None:
                    prog = max(prog, (time.time() - t0) / (60 * max_minutes))
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(prog, 1.0)))
                loss, logs = loss_fn(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                state["step"] += 1
                state["losses"].append(float(loss.detach()))
                state["seconds"] = t_prev + time.time() - t0
                recent = state["losses"][-20:]
                bar.update(task, completed=state["step"], loss=sum(recent) / len(recent))
                if state["step"] % ckpt_every == 0:
                    save_ckpt()
                out_of_time = max_minutes is not None and time.time() - t0 > 60 * max_minutes
                if state["step"] >= steps or out_of_time:
                    break
            if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
                break
    save_ckpt()
    model.eval()
    return {"step": state["step"], "losses": state["losses"], "seconds": state["seconds"], "resumed_from": resumed}
