"""Training data for the discriminative baselines: hand-centred depth crops with 3D joint targets.

One sample = one (sequence, camera, frame). The crop follows DeepPrior / DeepPrior++
(Oberweger et al., ICCVW 2015 / ICCVW 2017), which all four bundled methods use:

1. **Centre.** The centre of mass ``C`` (camera frame, metres) of the 3D points of the
   hand pixels (segmentation label 1 with valid depth). Each method may refine it
   (the feedback loop's localizer does).
2. **Crop.** A cube of side ``cube_m`` around ``C`` is projected into the image: the crop
   window is ``p_c +- r`` pixels with ``r = (cube_m / 2) * f / C_z`` and ``p_c`` the
   projection of ``C``; it is resampled (nearest neighbour, so depth edges are not
   blurred) to ``crop_size x crop_size``.
3. **Normalised depth.** ``d_n = clip((d - C_z) / (cube_m / 2), -1, 1)``; missing depth
   (0) and pixels outside the image read as background, ``d_n = 1``.
4. **Targets.** The 21 joints (HO-3D order) in the camera frame relative to ``C``,
   divided by ``cube_m / 2`` ("normalised", about [-1, 1]); the object centre
   (``obj_transl``, the object-model origin) likewise; the object's 8 bounding-box corners
   likewise when the object model can be loaded.

Augmentations (DeepPrior++ Sec. 2.3; training only): in-plane rotation of the crop about
``p_c`` (the joints are rotated the same way in (u, v), keeping their depth, then
back-projected), translation of the centre (``C + N(0, sigma)`` per axis, i.e. a
centre-of-mass jitter) and scale of the cube (``cube_m * s``).

Labels: a sequence folder's ``labels/labels.npz`` (exported by ``hoannot export``) is used
when it exists, else its ground truth ``gt/poses.npz``; :func:`load_sequence_labels` says
which in its ``source`` field. Segmentation (for centring and the two-stage method's object
masks) comes from ``segmentation/`` when present, else ``gt/segmentation/``.

Coordinates: OpenCV camera frame, metres; world joints are brought into each camera with
``Camera.T_cam_world`` (inverse of ``T_world_cam``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation
from torch.utils.data import Dataset

from hoannot.io import InputError
from hoannot.datasets.sequence import Sequence, open_sequence
from hoannot.geometry import project, transform, unproject

HAND, OBJECT = 1, 2
MIN_HAND_PIXELS = 20


@dataclass
class SequenceLabels:
    """Per-frame labels of one sequence, world frame, metres.

    Attributes:
        frames: (F,) int64.
        hand_joints: (F, 21, 3) float32, HO-3D order.
        obj_rot: (F, 3) float32 axis-angle object->world.
        obj_transl: (F, 3) float32.
        obj_corners: (8, 3) float32 object-frame bounding-box corners, or None.
        obj_points: (N, 3) float32 object-frame model points (ADD), or None.
        source: ``"labels/labels.npz"`` or ``"gt/poses.npz"``.
    """

    frames: np.ndarray
    hand_joints: np.ndarray
    obj_rot: np.ndarray
    obj_transl: np.ndarray
    obj_corners: np.ndarray | None
    obj_points: np.ndarray | None
    source: str


def box_corners(points: np.ndarray) -> np.ndarray:
    """(8, 3) axis-aligned bounding-box corners of (N, 3) points (x slowest, z fastest)."""
    lo, hi = points.min(0), points.max(0)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], np.float32)


def load_sequence_labels(seq: Sequence, load_object_points: bool = True) -> SequenceLabels:
    """Labels of a sequence: ``labels/labels.npz`` if present, else ``gt/poses.npz``.

    Args:
        seq: an opened sequence.
        load_object_points: when the label file has no ``obj_points``, load the object model
            named in ``sequence.yaml`` to get them (a few seconds for a YCB mesh); on failure
            the object points/corners are None.

    Raises:
        InputError: neither file exists, or a required array is missing.
    """
    for rel in ("labels/labels.npz", "gt/poses.npz"):
        path = seq.root / rel
        if path.is_file():
            break
    else:
        raise InputError(f"{seq.root}: no labels/labels.npz or gt/poses.npz to train on")
    from hoannot.evaluation.report import load_labels

    d = load_labels(path)
    for k in ("obj_rot", "obj_transl"):
        if k not in d:
            raise InputError(f"{path}: missing array '{k}'")
    frames, joints = d["frames"], d["hand_joints"].astype(np.float32)
    obj_rot, obj_transl = d["obj_rot"].astype(np.float32), d["obj_transl"].astype(np.float32)
    points = d["obj_points"].astype(np.float32) if "obj_points" in d else None
    if points is None and load_object_points:
        try:
            from hoannot.models.objects import load_object

            oc = seq.config.object
            points = np.asarray(load_object(oc.mesh, root=seq.root, max_faces=200).points, np.float32)
        except Exception:  # noqa: BLE001 - the object is optional for hand-only methods
            points = None
    corners = box_corners(points) if points is not None else None
    return SequenceLabels(frames, joints, obj_rot, obj_transl, corners, points, rel)


def read_segmentation(seq: Sequence, cam: str, frame: int) -> np.ndarray | None:
    """(H, W) uint8 labels from ``segmentation/`` or else ``gt/segmentation/``; None if neither.

    Raises:
        InputError: a malformed segmentation image (:meth:`Sequence.read_segmentation`).
    """
    seg = seq.read_segmentation(cam, frame)
    return seq.read_segmentation(cam, frame, "gt") if seg is None else seg


def hand_centre(depth: np.ndarray, seg: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """Centre of mass of the hand's 3D points.

    Args:
        depth: (H, W) float metres, 0 = missing.
        seg: (H, W) labels, 1 = hand.
        K: (3, 3) intrinsics.

    Returns:
        (3,) float64 camera-frame metres, or None with fewer than ``MIN_HAND_PIXELS`` valid
        hand pixels.
    """
    v, u = np.nonzero((seg == HAND) & (depth > 0))
    if len(u) < MIN_HAND_PIXELS:
        return None
    pts = unproject(np.stack([u, v], -1).astype(np.float64), depth[v, u].astype(np.float64), np.asarray(K))
    return pts.mean(0)


def crop_geometry(centre: torch.Tensor, cube: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop window of a cube: its centre pixel and half-size.

    Args:
        centre: (B, 3) metres. cube: (B,) cube side, metres. K: (B, 3, 3).

    Returns:
        (p_c (B, 2) pixels, r (B, 2) half-size in pixels along u and v).
    """
    z = centre[:, 2]
    p_c = project(centre, K)
    r = torch.stack([0.5 * cube * K[:, 0, 0] / z, 0.5 * cube * K[:, 1, 1] / z], -1)
    return p_c, r


def crop_depth(depth: torch.Tensor, centre: torch.Tensor, cube: torch.Tensor, K: torch.Tensor,
               theta: torch.Tensor, size: int, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample the cube's crop window (rotated by ``theta``) to a normalised depth crop.

    Crop pixel (a, b) in [-1, 1]^2 reads image pixel ``p_c + R(theta) (r_u a, r_v b)``.

    Args:
        depth: (B, 1, H, W) float metres, 0 = missing.
        centre: (B, 3) metres. cube: (B,) metres. K: (B, 3, 3). theta: (B,) radians.
        size: output side S in pixels.
        labels: optional (B, 1, H, W) float segmentation labels, cropped the same way.

    Returns:
        (depth_n (B, 1, S, S) float32 in [-1, 1], background/missing = 1; labels crop or None).
    """
    B, _, H, W = depth.shape
    p_c, r = crop_geometry(centre, cube, K)
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    b, a = torch.meshgrid(lin, lin, indexing="ij")
    ab = torch.stack([a, b], -1).reshape(1, -1, 2) * r[:, None, :]  # (B, S*S, 2)
    c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    u = p_c[:, None, 0] + c * ab[..., 0] - s * ab[..., 1]
    v = p_c[:, None, 1] + s * ab[..., 0] + c * ab[..., 1]
    # grid_sample with align_corners=False: pixel centre i sits at (2i + 1) / W - 1
    grid = torch.stack([(2 * u + 1) / W - 1, (2 * v + 1) / H - 1], -1).reshape(B, size, size, 2)
    d = F.grid_sample(depth, grid.float(), mode="nearest", padding_mode="zeros", align_corners=False)
    half = (0.5 * cube)[:, None, None, None]
    dn = ((d - centre[:, 2, None, None, None]) / half).clamp(-1, 1)
    dn = torch.where(d > 0, dn, torch.ones_like(dn))
    lab = None
    if labels is not None:
        lab = F.grid_sample(labels, grid.float(), mode="nearest", padding_mode="zeros", align_corners=False)
    return dn.float(), lab


def rotate_points_inplane(points: torch.Tensor, centre: torch.Tensor, K: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotate camera points about the pixel of ``centre`` in the image plane, keeping depth.

    This is the joint transform matching :func:`crop_depth`'s rotation: a crop read at
    ``R(theta)`` shows the scene whose pixels are rotated by ``-theta``.

    Args:
        points: (B, N, 3) metres. centre: (B, 3). K: (B, 3, 3). theta: (B,) radians.

    Returns:
        (B, N, 3) metres.
    """
    uv = project(points, K[:, None])
    uvc = project(centre, K)
    du, dv = uv[..., 0] - uvc[:, None, 0], uv[..., 1] - uvc[:, None, 1]
    c, s = torch.cos(-theta)[:, None], torch.sin(-theta)[:, None]
    u2 = uvc[:, None, 0] + c * du - s * dv
    v2 = uvc[:, None, 1] + s * du + c * dv
    return unproject(torch.stack([u2, v2], -1), points[..., 2], K[:, None])


def to_camera(points_n: torch.Tensor, centre: torch.Tensor, cube: torch.Tensor) -> torch.Tensor:
    """Normalised crop-relative points (B, N, 3) -> camera-frame metres (B, N, 3)."""
    return centre[:, None, :] + points_n * (0.5 * cube)[:, None, None]


def to_normalised(points: torch.Tensor, centre: torch.Tensor, cube: torch.Tensor) -> torch.Tensor:
    """Camera-frame metres (B, N, 3) -> normalised crop-relative (B, N, 3)."""
    return (points - centre[:, None, :]) / (0.5 * cube)[:, None, None]


def uvd_to_camera(uvd_n: torch.Tensor, centre: torch.Tensor, cube: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Crop-normalised (a, b, d_n) of an unrotated crop -> camera-frame points (B, N, 3) metres.

    ``(a, b)`` are crop coordinates in [-1, 1] (pixel ``p_c + r * (a, b)``), ``d_n`` the
    normalised depth ``(z - C_z) / (cube / 2)``.
    """
    p_c, r = crop_geometry(centre, cube, K)
    u = p_c[:, None, 0] + r[:, None, 0] * uvd_n[..., 0]
    v = p_c[:, None, 1] + r[:, None, 1] * uvd_n[..., 1]
    z = centre[:, None, 2] + 0.5 * cube[:, None] * uvd_n[..., 2]
    return unproject(torch.stack([u, v], -1), z, K[:, None])


def camera_to_uvd(points: torch.Tensor, centre: torch.Tensor, cube: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`uvd_to_camera`: (B, N, 3) metres -> (B, N, 3) crop-normalised uvd."""
    p_c, r = crop_geometry(centre, cube, K)
    z = points[..., 2]
    uv = project(points, K[:, None])
    return torch.stack([(uv[..., 0] - p_c[:, None, 0]) / r[:, None, 0], (uv[..., 1] - p_c[:, None, 1]) / r[:, None, 1],
                        (z - centre[:, None, 2]) / (0.5 * cube[:, None])], -1)


class HandCropDataset(Dataset):
    """Hand-centred depth crops of one or more sequence folders (split by sequence: pass the
    training sequences to one instance and the test sequences to another).

    Args:
        seq_dirs: sequence folders (each with labels or ground truth, see module docstring).
        crop_size: S, crop side in pixels.
        cube_m: cube side in metres (hand + grasped object fit in 0.3 m).
        augment: apply random rotation / translation / scale (training).
        rot_deg: rotation range +- degrees. trans_m: centre jitter sigma, metres.
        scale: cube scale range (1 - scale, 1 + scale).
        cameras: camera names to use (default all).
        seed: augmentation seed; sample ``i`` at epoch ``e`` is augmented with the generator
            seeded by ``(seed, e, i)``, so a resumed run sees the same data.
        load_object_points: see :func:`load_sequence_labels`.

    Each item is a dict of tensors:
        depth (1, S, S) float32 normalised depth; labels (1, S, S) float32 segmentation crop
        (0 bg, 1 hand, 2 object; all 0 when no segmentation exists); joints (21, 3) normalised;
        joints_uvd (21, 3) crop-normalised uvd; obj_centre (3,) normalised; obj_centre_uvd (3,);
        obj_corners (8, 3) normalised (zeros if unknown); has_object () bool;
        centre (3,) metres; cube () metres; K (3, 3); T_world_cam (4, 4);
        joints_cam (21, 3) metres (after augmentation); seq, cam, frame () int64.

    Raises:
        InputError: no sequence, or no frame with a visible hand.
    """

    def __init__(self, seq_dirs, crop_size: int = 64, cube_m: float = 0.3, augment: bool = False,
                 rot_deg: float = 30.0, trans_m: float = 0.01, scale: float = 0.1,
                 cameras: list[str] | None = None, seed: int = 0, load_object_points: bool = True):
        self.seq_dirs = [Path(s) for s in seq_dirs]
        if not self.seq_dirs:
            raise InputError("HandCropDataset: no sequence folder given")
        self.crop_size, self.cube_m, self.augment = int(crop_size), float(cube_m), bool(augment)
        self.rot, self.trans_m, self.scale = math.radians(rot_deg), float(trans_m), float(scale)
        self.seed, self.epoch = int(seed), 0
        self.labels: list[SequenceLabels] = []
        self.items: list[dict] = []
        self.depths: list[np.ndarray] = []  # (H, W) uint16 raw, per item
        self.segs: list[np.ndarray | None] = []
        for si, root in enumerate(self.seq_dirs):
            seq = open_sequence(root)
            lab = load_sequence_labels(seq, load_object_points)
            self.labels.append(lab)
            R_obj = Rotation.from_rotvec(lab.obj_rot).as_matrix()
            for ci, cam in enumerate(seq.cameras):
                if cameras is not None and cam.name not in cameras:
                    continue
                T = cam.T_cam_world
                for fi, frame in enumerate(lab.frames):
                    frame = int(frame)
                    if not seq.depth_path(cam.name, frame).is_file():
                        continue
                    depth = seq.read_depth(cam.name, frame)
                    seg = read_segmentation(seq, cam.name, frame)
                    if seg is None:
                        raise InputError(f"{root}: no segmentation for {cam.name} frame {frame} (needed to centre the crop)")
                    centre = hand_centre(depth, seg, cam.K)
                    if centre is None:
                        continue
                    joints_c = transform(lab.hand_joints[fi], T)
                    obj_c = transform(lab.obj_transl[fi][None], T)[0]
                    corners = None
                    if lab.obj_corners is not None:
                        corners = transform(lab.obj_corners @ R_obj[fi].T + lab.obj_transl[fi], T)
                    self.items.append(dict(seq=si, cam=ci, frame=frame, centre=centre, K=np.asarray(cam.K),
                                           T_world_cam=np.asarray(cam.T_world_cam), joints=joints_c,
                                           obj_centre=obj_c, corners=corners, depth_scale=cam.depth_scale))
                    self.depths.append(np.round(depth / cam.depth_scale).astype(np.uint16))
                    self.segs.append(seg.astype(np.uint8))
        if not self.items:
            raise InputError(f"{self.seq_dirs[0]}: no frame with a visible hand (segmentation label 1)")

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (see class docstring)."""
        self.epoch = int(epoch)

    def _aug(self, index: int) -> tuple[float, np.ndarray, float]:
        if not self.augment:
            return 0.0, np.zeros(3), 1.0
        rng = np.random.default_rng((self.seed, self.epoch, index))
        theta = rng.uniform(-self.rot, self.rot)
        shift = rng.normal(0.0, self.trans_m, 3)
        s = rng.uniform(1 - self.scale, 1 + self.scale)
        return float(theta), shift, float(s)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Items of several indices, cropped in one batched call (used by ``DataLoader``)."""
        idx = [int(i) for i in indices]
        its = [self.items[i] for i in idx]
        aug = [self._aug(i) for i in idx]
        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        centre = f32([it["centre"] + a[1] for it, a in zip(its, aug)])
        cube = f32([self.cube_m * a[2] for a in aug])
        th = f32([a[0] for a in aug])
        K = f32([it["K"] for it in its])
        shapes = {self.depths[i].shape for i in idx}
        if len(shapes) == 1:
            depth = f32([self.depths[i].astype(np.float32) * it["depth_scale"] for i, it in zip(idx, its)])[:, None]
            seg = f32([self.segs[i] for i in idx])[:, None]
            dn, lab = crop_depth(depth, centre, cube, K, th, self.crop_size, seg)
        else:  # cameras of different image sizes: crop one by one
            parts = [crop_depth(f32(self.depths[i].astype(np.float32) * it["depth_scale"])[None, None], centre[k:k + 1],
                                cube[k:k + 1], K[k:k + 1], th[k:k + 1], self.crop_size, f32(self.segs[i])[None, None])
                     for k, (i, it) in enumerate(zip(idx, its))]
            dn, lab = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        pts = f32([np.concatenate([it["joints"], it["obj_centre"][None],
                                   it["corners"] if it["corners"] is not None else np.tile(it["obj_centre"], (8, 1))])
                   for it in its])
        pts = rotate_points_inplane(pts, centre, K, th)
        norm = to_normalised(pts, centre, cube)
        uvd = camera_to_uvd(pts, centre, cube, K)
        out = []
        for k, it in enumerate(its):
            has_obj = it["corners"] is not None
            out.append(dict(
                depth=dn[k], labels=lab[k], joints=norm[k, :21], joints_uvd=uvd[k, :21], obj_centre=norm[k, 21],
                obj_centre_uvd=uvd[k, 21], obj_corners=norm[k, 22:] if has_obj else torch.zeros(8, 3),
                has_object=torch.tensor(has_obj), centre=centre[k], cube=cube[k], K=K[k],
                T_world_cam=f32(it["T_world_cam"]), joints_cam=pts[k, :21],
                seq=torch.tensor(it["seq"]), cam=torch.tensor(it["cam"]), frame=torch.tensor(it["frame"]),
            ))
        return out

    def all_joints(self) -> np.ndarray:
        """(N, 21, 3) unaugmented normalised joint targets (uses the unaugmented centre)."""
        out = [(it["joints"] - it["centre"]) / (0.5 * self.cube_m) for it in self.items]
        return np.asarray(out, np.float32)


def split_by_sequence(seq_dirs, val: int = 1, test: int = 1, seed: int = 0) -> tuple[list[Path], list[Path], list[Path]]:
    """Shuffle sequence folders (seeded) and split them into train / val / test lists.

    Raises:
        InputError: fewer than ``val + test + 1`` sequences.
    """
    dirs = [Path(s) for s in seq_dirs]
    if len(dirs) < val + test + 1:
        raise InputError(f"split_by_sequence: need at least {val + test + 1} sequences, got {len(dirs)}")
    order = np.random.default_rng(seed).permutation(len(dirs))
    dirs = [dirs[i] for i in order]
    return dirs[val + test:], dirs[:val], dirs[val:val + test]
