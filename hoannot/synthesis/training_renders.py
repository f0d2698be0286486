"""Training renders for the perception networks (segmentation and 2D joints).

Each sample is one ray-cast view (open3d ``RaycastingScene``, the same ray caster as
:mod:`hoannot.synthesis.capture`) of a hand next to, in front of or behind an object,
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
* appearance: skin tone from :data:`~hoannot.synthesis.capture.SKIN_TONES` with
  jitter, Lambertian + ambient + Phong shading from a random light, random
  backgrounds (smooth colour fields, noise, random shapes and lines), image noise;
* depth: ray-cast depth with a background plane and the sensor model of
  :func:`hoannot.synthesis.capture.sensor_depth`.

Outputs per sample (pixel centres at integer ``(u, v)``, OpenCV camera):
``rgb`` (H, W, 3) uint8, ``label`` (H, W) uint8 (0 background, 1 hand, 2 object),
``depth`` (H, W) float32 metres (0 = no reading), ``uv`` (21, 2) float32 px (HO-3D
order), ``visible`` (21,) bool (inside the image and not hidden behind the object).

:func:`render_pool` renders many samples (cacheable with :func:`save_pool` /
:func:`load_pool`); :mod:`hoannot.annotate.training` augments and trains on them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial.transform import Rotation

from hoannot.io import InputError, write_npz
from hoannot.geometry import pixel_rays, project, unproject
from hoannot.synthesis.capture import SKIN_TONES, SynthConfig, sensor_depth
from hoannot.synthesis.training_assets import HandSampler, TexturedMesh, _forearm, default_objects, load_textured


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


class RenderConfig(BaseModel):
    """Geometry and sampling ranges of one composite view."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    width: int = Field(320, ge=8, description="image width, pixels")
    height: int = Field(240, ge=8, description="image height, pixels")
    focal: float = Field(300.0, gt=0, description="focal length at this size, pixels (jittered by focal_jitter)")
    focal_jitter: float = Field(0.15, ge=0, lt=1, description="relative jitter of the focal length")
    distance: tuple[float, float] = Field((0.32, 0.75), description="(min, max) object distance from the camera, metres")
    forearm: float = Field(0.7, ge=0, le=1, description="probability of adding a forearm (labelled hand)")
    hand_front: float = Field(0.5, ge=0, le=1, description="probability that the hand is placed in front of the object")
    min_hand_px: int = Field(400, ge=0, description="reject views with fewer visible hand pixels (scaled to the image area relative to 320x240)")
    min_object_px: int = Field(200, ge=0, description="reject views with fewer visible object pixels (scaled as min_hand_px)")


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
    for _ in it:
        oi = int(rng.integers(len(meshes)))
        s = render_sample(meshes[oi], sampler, rng, cfg)
        for k in keys:
            out[k].append(s[k])
        names.append(meshes[oi].name)
    pool = {k: np.stack(v) for k, v in out.items()}
    pool["depth"] = pool["depth"].astype(np.float16)
    pool["object"] = np.asarray(names)
    return pool


def save_pool(path: str | Path, pool: dict[str, np.ndarray], jpeg_quality: int | None = None) -> None:
    """Cache a rendered pool as ``.npz`` (atomic).

    Args:
        jpeg_quality: store ``rgb`` as JPEG at this quality (1-100; ~10x smaller for the
            noisy composites, e.g. to carry a pool to another machine), as ``rgb_jpeg``
            (all files' bytes, uint8) and ``rgb_jpeg_ends`` (each file's end offset);
            :func:`load_pool` decodes it. None: raw pixels.
    """
    if jpeg_quality is None:
        write_npz(path, **pool)
        return
    files = [cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])[1] for im in pool["rgb"]]
    rest = {k: v for k, v in pool.items() if k != "rgb"}
    write_npz(path, rgb_jpeg=np.concatenate(files), rgb_jpeg_ends=np.cumsum([len(f) for f in files]), **rest)


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
    if "rgb_jpeg" in pool:
        buf, ends = pool.pop("rgb_jpeg"), pool.pop("rgb_jpeg_ends")
        starts = np.concatenate([[0], ends[:-1]])
        images = [cv2.imdecode(buf[a:b], cv2.IMREAD_COLOR) for a, b in zip(starts, ends)]
        if any(im is None for im in images):
            raise InputError(f"{path}: training-data cache has an undecodable JPEG image")
        pool["rgb"] = np.stack([im[..., ::-1] for im in images])
    missing = [k for k in ("rgb", "label", "depth", "uv", "visible") if k not in pool]
    if missing:
        raise InputError(f"{path}: training-data cache lacks {missing}")
    return pool
