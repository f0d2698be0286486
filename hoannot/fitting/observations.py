"""What the fit compares with: cropped segmentation and depth, and segmented point clouds.

For a batch of frames, each camera gets one square crop box that holds the hand and the
object in all of the batch's frames (from the segmentation), resampled (nearest
neighbour: depths are never mixed) to ``crop_size`` x ``crop_size``. Rendering then happens
at the crop size, which is what makes CPU fitting affordable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hoannot.io import InputError
from hoannot.datasets.keypoints2d import keypoints2d_path, read_views
from hoannot.datasets.segmentation import mask_interior, segmentation_dir
from hoannot.datasets.sequence import Sequence
from hoannot.geometry import backproject_depth, crop_nearest
from hoannot.renderers.cameras import ViewCameras


@dataclass
class Observations:
    """Observed data of B frames x C cameras at the crop size S.

    Attributes:
        frames: (B,) frame ids.
        cams: the C cropped render cameras.
        labels: (B, C, S, S) int64 segmentation (0 background, 1 hand, 2 object).
        masks: (B, C, 2, S, S) float32 hand and object masks.
        depth: (B, C, S, S) float32 metres, 0 where the sensor has no value.
        hand_points, object_points: (B, N, 3) float32 world points, metres, from
            every camera's depth inside the class's segmentation, randomly subsampled.
        hand_points_valid, object_points_valid: (B, N) bool, False for padding.
        full_cams: the C uncropped cameras (for 2D joints in original pixels).
        kp_uv: (B, C, 21, 2) float32 detected 2D joints, original pixels, HO-3D order, or
            None when the fit uses no 2D joints.
        kp_conf: (B, C, 21) float32 detection confidences in [0, 1] (0 = missing), or None.
    """

    frames: np.ndarray
    cams: ViewCameras
    labels: torch.Tensor
    masks: torch.Tensor
    depth: torch.Tensor
    hand_points: torch.Tensor
    hand_points_valid: torch.Tensor
    object_points: torch.Tensor
    object_points_valid: torch.Tensor
    full_cams: ViewCameras | None = None
    kp_uv: torch.Tensor | None = None
    kp_conf: torch.Tensor | None = None

    def to(self, device) -> "Observations":
        """Move every tensor to ``device`` (in place); returns self."""
        self.cams = self.cams.to(device)
        if self.full_cams is not None:
            self.full_cams = self.full_cams.to(device)
        for name in ("labels", "masks", "depth", "hand_points", "hand_points_valid", "object_points",
                     "object_points_valid", "kp_uv", "kp_conf"):  # fmt: skip
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.to(device))
        return self


def read_keypoints(seq: Sequence, frames: list[int], source: str) -> tuple[np.ndarray, np.ndarray]:
    """2D joints of ``frames`` in every camera, from ``keypoints2d/`` or ``gt/keypoints2d/``
    (``source`` ``"keypoints2d"`` or ``"gt"``; :mod:`hoannot.datasets.keypoints2d`).

    A joint a file marks only as not ``visible`` has confidence 0.

    Returns:
        uv (B, C, 21, 2) float32 original pixels, HO-3D order; confidence (B, C, 21) float32
        (0 for frames a file lacks and for joints without a detection, whose ``uv`` is 0).
    Raises:
        InputError: a missing or malformed file (names it).
    """
    names = [c.name for c in seq.cameras]
    uv, conf = read_views([keypoints2d_path(seq.root, c, source) for c in names], names, frames, 0.0, missing="zero")
    return uv.astype(np.float32), conf.astype(np.float32)


def check_hand_seen(seq: Sequence, source: str) -> None:
    """Refuse a sequence whose segmentation shows no hand pixel (label 1) in any frame.

    Reads the labels frame by frame and stops at the first hand pixel, so a normal
    sequence costs one image. Single frames without a hand are fine (the hand left the view,
    or perception missed it): the fit carries them and its quality pass flags them.

    Raises:
        InputError: no hand pixel anywhere (names the segmentation folder), or as
            :func:`read_labels`.
    """
    for f in seq.frames:
        if any((read_labels(seq, c.name, f, source) == 1).any() for c in seq.cameras):
            return
    raise InputError(f"{segmentation_dir(seq.root, source)}: no hand pixel (label 1) in any frame's "
                     "segmentation; fix the segmentation (or rerun hoannot init)")  # fmt: skip


def read_labels(seq: Sequence, cam: str, frame: int, source: str) -> np.ndarray:
    """Segmentation of one image: ``segmentation/`` (perception) or ``gt/segmentation/`` (``"gt"``).

    Raises:
        InputError: no segmentation file exists for this image, or it is not an (H, W) uint8
            image of labels 0, 1, 2 (:meth:`~hoannot.datasets.sequence.Sequence.read_segmentation`).
    """
    return seq.read_segmentation(cam, frame, source, required=True)


def square_box(mask: np.ndarray, margin: float = 0.2, min_size: float = 32.0) -> np.ndarray:
    """(x0, y0, w, h) square box around the True pixels of (H, W) ``mask`` (continuous px)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        H, W = mask.shape
        side = float(max(H, W))
        return np.array([(W - side) / 2 - 0.5, (H - side) / 2 - 0.5, side, side])
    x0, x1, y0, y1 = xs.min() - 0.5, xs.max() + 0.5, ys.min() - 0.5, ys.max() + 0.5
    side = max(x1 - x0, y1 - y0, min_size) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([cx - side / 2, cy - side / 2, side, side])


def load_observations(
    seq: Sequence,
    frames: list[int],
    crop_size: int = 80,
    num_points: int = 1500,
    segmentation: str = "segmentation",
    seed: int = 0,
    keypoints: str = "none",
    object_erode: int = 0,
) -> Observations:
    """Read, crop and back-project the observations of ``frames``.

    Args:
        seq: the sequence.
        frames: B frame ids.
        crop_size: S, render size of the square crops.
        num_points: N points kept per class and frame (all cameras together).
        segmentation: ``"segmentation"`` (from ``init``) or ``"gt"`` (synthetic ground truth).
        seed: subsampling seed.
        keypoints: 2D joints to load: ``"keypoints2d"`` (perception), ``"gt"`` (synthetic
            ground truth) or ``"none"``.
        object_erode: pixels dropped from the border of each camera's object mask before its
            depth points are back-projected (:func:`hoannot.datasets.segmentation.mask_interior`;
            the masks and depth crops the renders are compared with keep every pixel).
    Raises:
        InputError: a missing or unreadable image, a segmentation or depth image of the wrong
            size, dtype or labels, a frame whose depth is zero in every camera or whose median
            depth is implausible (:func:`hoannot.datasets.validate.check_depth_frame`: a wrong
            ``depth_scale``). A frame without a hand pixel is read as it is: the fit's quality
            pass flags it (:func:`check_hand_seen` refuses a sequence with no hand at all).
    """
    from hoannot.io import read_image
    from hoannot.datasets.validate import check_depth_frame

    rng = np.random.default_rng(seed)
    labels_full = [[read_labels(seq, c.name, f, segmentation) for c in seq.cameras] for f in frames]
    depth_full = []
    for f in frames:
        paths = [seq.depth_path(c.name, f) for c in seq.cameras]
        raws = [read_image(p) for p in paths]
        check_depth_frame(raws, paths, seq.cameras)
        depth_full.append([r.astype(np.float32) * np.float32(c.depth_scale) for r, c in zip(raws, seq.cameras)])
    boxes = np.stack([
        square_box(np.any([labels_full[b][ci] > 0 for b in range(len(frames))], axis=0))
        for ci in range(len(seq.cameras))
    ])  # fmt: skip
    cams = ViewCameras.from_cameras(seq.cameras, boxes, (crop_size, crop_size))
    labels = np.stack([[crop_nearest(labels_full[b][ci], boxes[ci], crop_size) for ci in range(len(seq.cameras))]
                       for b in range(len(frames))]).astype(np.int64)  # fmt: skip
    depth = np.stack([[crop_nearest(depth_full[b][ci], boxes[ci], crop_size) for ci in range(len(seq.cameras))]
                      for b in range(len(frames))]).astype(np.float32)  # fmt: skip
    pts = {1: [], 2: []}
    for b in range(len(frames)):
        for cls in (1, 2):
            p = np.concatenate([
                backproject_depth(depth_full[b][ci], c.K, c.T_world_cam,
                                  mask_interior(labels_full[b][ci] == cls, object_erode if cls == 2 else 0))[0]
                for ci, c in enumerate(seq.cameras)
            ])  # fmt: skip
            if len(p) > num_points:
                p = p[rng.choice(len(p), num_points, replace=False)]
            pts[cls].append(p)

    def pad(lst):
        out = np.zeros((len(lst), num_points, 3), np.float32)
        valid = np.zeros((len(lst), num_points), bool)
        for i, p in enumerate(lst):
            out[i, : len(p)] = p
            valid[i, : len(p)] = True
        return torch.from_numpy(out), torch.from_numpy(valid)

    hp, hv = pad(pts[1])
    op, ov = pad(pts[2])
    lab = torch.from_numpy(labels)
    masks = torch.stack([(lab == 1), (lab == 2)], dim=2).float()
    obs = Observations(np.asarray(frames), cams, lab, masks, torch.from_numpy(depth), hp, hv, op, ov)
    c0 = seq.cameras[0]
    obs.full_cams = ViewCameras.from_cameras(seq.cameras, None, (c0.height, c0.width))
    if keypoints != "none":
        uv, conf = read_keypoints(seq, frames, keypoints)
        obs.kp_uv, obs.kp_conf = torch.from_numpy(uv), torch.from_numpy(conf)
    return obs
