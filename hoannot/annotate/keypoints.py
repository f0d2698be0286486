"""2D hand joints with a Convolutional Pose Machine on hand crops (21 joints, HO-3D order).

Convolutional Pose Machines (Wei, Ramakrishna, Kanade and Sheikh, CVPR 2016): a sequence
of T stages, each predicting belief maps ``b_t`` (one per joint plus background) from
image features and, for t >= 2, the previous stage's beliefs, so later stages refine
earlier ones with a growing receptive field (Sec. 3.1-3.2, Fig. 2). Every stage is
supervised (intermediate supervision against vanishing gradients, Sec. 3.3) with the L2
loss to Gaussian target maps, ``f_t = sum_j ||b_t^j - b_*^j||^2`` and ``F = sum_t f_t``
(Eq. 4-5). Here the image trunk (stride 4) is shared by all stages, as in the released
CPM hand models; stage 1 predicts from it alone, stages t >= 2 from it concatenated with
``b_{t-1}`` through 7x7 convolutions.

Crops come from the hand mask (:func:`hoannot.annotate.preprocess.hand_box`): a
square around the hand pixels, resized to ``crop`` x ``crop``. The mask often includes
the forearm, so with ``refine_passes`` >= 1 the joints are detected again on a crop
around the first pass's joints (``joint_margin`` x their extent), where the hand fills
the crop; training shows the network both kinds of crop (``joint_box_prob``). Joint
positions are the arg-max of the last stage's belief maps, refined to sub-pixel by a
quadratic fit, mapped back to the full image; the confidence is the peak belief value
(targets peak at 1).

Options beyond the paper, measured on the held-out test views of
``benchmarks/perception.py`` (PCK@10px with ground-truth masks, 3000 training views,
one CPU thread): after 6 minutes of training batch norm gave 0.22 against 0.20 without
(within noise); after 40 minutes (11k steps, batch norm, half the crops around the
joints) one pass gave 0.47 and the refine pass 0.49, against 0.25 for the 8-minute
model of the committed benchmark. The network is far from converged on a CPU budget.
The shipped weights (5 stages of width 64) were trained for 7 minutes on a lent GPU on 9000
hand crops (``benchmarks/train_kp.py``): on 300 held-out views of the WebXR hand, PCK@10px
0.54 against 0.46 for the 45-minute CPU model they replace, at 41 against 20 ms per view on
one CPU thread (``benchmarks/results/train_kp.md``).

``distal_crop`` (off by default) crops the hand end of the mask only
(:func:`~hoannot.annotate.preprocess.distal_hand_box`); with the shipped weights it
lowered PCK@10px on 300 held-out synthetic views and did not put the joints of the real
photo on its fingers (``benchmarks/real_photo.py``), as the CPM was trained on crops
around whole masks, forearm included.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from hoannot.annotate import weights as W
from hoannot.annotate.configs import NUM_JOINTS, KeypointConfig
from hoannot.annotate.preprocess import crop_affine, distal_hand_box, hand_box, joint_box, normalise_rgb
from hoannot.io import InputError

__all__ = ["NUM_JOINTS", "KeypointConfig", "CPM", "cpm_loss", "heatmap_peaks", "load_keypoints", "detect_keypoints",
           "detect_in_box"]  # fmt: skip


def _conv(cin: int, cout: int, k: int, relu: bool = True, bn: bool = False) -> list[nn.Module]:
    if not relu:
        return [nn.Conv2d(cin, cout, k, padding=k // 2)]
    if bn:
        return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True)]


class CPM(nn.Module):
    """Convolutional Pose Machine.

    Args:
        config: a :class:`~hoannot.annotate.configs.KeypointConfig` (``stages`` T, trunk
            ``width``, ``crop`` size, ``stride`` 4 fixed by the trunk, ``sigma`` of the targets
            in heatmap px...), or a dict of some of its fields (the others take the
            defaults); None: the defaults.

    Attributes:
        config: the full config as a plain dict (``KeypointConfig.model_dump()``, what is
            saved with the weights).

    ``forward(x)``: x (B, 3, crop, crop) float32 -> list of T belief tensors, each
    (B, J + 1, crop/4, crop/4) (last channel: background).

    Raises:
        InputError: an unknown field, or a value the config refuses (e.g. ``stages`` 0).
    """

    def __init__(self, config: KeypointConfig | dict | None = None) -> None:
        super().__init__()
        self.config = c = KeypointConfig.validated(config).model_dump()
        w, J1, bn = c["width"], c["joints"] + 1, bool(c["batchnorm"])

        def conv(cin: int, cout: int, k: int, relu: bool = True) -> list[nn.Module]:
            return _conv(cin, cout, k, relu, bn)

        self.trunk = nn.Sequential(
            *conv(3, w // 2, 3), *conv(w // 2, w // 2, 3), nn.MaxPool2d(2),
            *conv(w // 2, w, 3), *conv(w, w, 3), nn.MaxPool2d(2),
            *conv(w, w, 3), *conv(w, w, 3), *conv(w, w, 3),
        )  # fmt: skip
        self.stage1 = nn.Sequential(*conv(w, w, 5), *conv(w, w, 1), *conv(w, J1, 1, relu=False))
        self.squeeze = nn.Sequential(*conv(w, w // 2, 1))
        self.stages = nn.ModuleList(
            nn.Sequential(*conv(w // 2 + J1, w, 7), *conv(w, w, 7), *conv(w, w, 7), *conv(w, w, 1),
                          *conv(w, J1, 1, relu=False))  # fmt: skip
            for _ in range(c["stages"] - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.trunk(x)
        beliefs = [self.stage1(feats)]
        f2 = self.squeeze(feats)
        for stage in self.stages:
            beliefs.append(stage(torch.cat([f2, beliefs[-1]], 1)))
        return beliefs


def cpm_loss(beliefs: list[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Intermediate supervision (Wei et al. 2016, Eq. 4-5).

    Args:
        beliefs: T tensors (B, J + 1, h, w) from :class:`CPM`.
        target: (B, J + 1, h, w) Gaussian target maps.
    Returns:
        total ``F = sum_t f_t`` and the list of T per-stage losses ``f_t`` (each the
        squared L2 distance summed over joints and pixels, averaged over the batch).
    """
    per_stage = [((b - target) ** 2).sum((1, 2, 3)).mean() for b in beliefs]
    return torch.stack(per_stage).sum(), per_stage


def heatmap_peaks(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peaks of belief maps.

    Args:
        hm: (J, h, w) float belief maps.
    Returns:
        xy (J, 2) float64 heatmap px (arg-max refined by a 1D quadratic fit along each
        axis), peak (J,) float64 arg-max value.
    """
    J, h, w = hm.shape
    flat = hm.reshape(J, -1).argmax(1)
    ys, xs = np.divmod(flat, w)
    peak = hm[np.arange(J), ys, xs].astype(np.float64)
    xy = np.stack([xs, ys], 1).astype(np.float64)
    for j in range(J):
        x, y = xs[j], ys[j]
        if 0 < x < w - 1:
            l, c, r = hm[j, y, x - 1], hm[j, y, x], hm[j, y, x + 1]
            den = l - 2 * c + r
            if den < 0:
                xy[j, 0] += np.clip(0.5 * (l - r) / den, -0.5, 0.5)
        if 0 < y < h - 1:
            u, c, d = hm[j, y - 1, x], hm[j, y, x], hm[j, y + 1, x]
            den = u - 2 * c + d
            if den < 0:
                xy[j, 1] += np.clip(0.5 * (u - d) / den, -0.5, 0.5)
    return xy, peak


def load_keypoints(path: str | Path | None = None, device: str = "cpu") -> CPM:
    """Load trained CPM weights (see :func:`hoannot.annotate.weights.find_weights`).

    Raises:
        InputError: no weights (the message names ``hoannot train-kp``), hash mismatch,
            a file of another kind, or a stored config value the model refuses.
    Warns:
        UserWarning: the stored config has keys this version does not know (ignored; see
            :meth:`~hoannot.annotate.configs.NetConfig.from_stored`).
    """
    data = W.load_weights("keypoints", path)
    # older configs lack later options: their defaults are what those files were trained with
    model = CPM(KeypointConfig.from_stored(data["config"], str(data["path"])))
    model.load_state_dict(data["state_dict"])
    model.weights_path, model.sha256 = str(data["path"]), data["sha256"]
    return model.to(device).eval()


@torch.no_grad()
def detect_keypoints(model: CPM, rgb: np.ndarray, hand_mask: np.ndarray,
                     object_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """21 hand joints in one image.

    Args:
        model: a trained :class:`CPM` (eval mode).
        rgb: (H, W, 3) uint8.
        hand_mask: (H, W) bool (or labels == 1) hand pixels; the crop is a square of
            ``box_margin`` x the mask's larger extent around them
            (:func:`~hoannot.annotate.preprocess.hand_box`), or with the config's
            ``distal_crop`` around the hand end of the mask only
            (:func:`~hoannot.annotate.preprocess.distal_hand_box`: the forearm cut off).
        object_mask: (H, W) bool object pixels (labels == 2), or None; with
            ``distal_crop`` it tells the hand end of the mask from the arm's.
    Returns:
        uv (21, 2) float32 px in full-image coordinates (HO-3D order; NaN when the
        mask is empty), confidence (21,) float32 = peak belief value (0 when empty).
    Raises:
        InputError: rgb and mask (or object mask) sizes differ.
    """
    c = model.config
    if hand_mask.shape != rgb.shape[:2]:
        raise InputError(f"detect_keypoints: mask {hand_mask.shape} does not match rgb {rgb.shape[:2]}")
    J = c["joints"]
    if object_mask is not None and object_mask.shape != hand_mask.shape:
        raise InputError(f"detect_keypoints: object mask {object_mask.shape} does not match rgb {rgb.shape[:2]}")
    hand_mask = np.asarray(hand_mask, bool)
    if c.get("distal_crop", False):
        box = distal_hand_box(hand_mask, object_mask, c["box_margin"])
    else:
        box = hand_box(hand_mask, c["box_margin"])
    if box is None:
        return np.full((J, 2), np.nan, np.float32), np.zeros(J, np.float32)
    return detect_in_box(model, rgb, box)


@torch.no_grad()
def detect_in_box(model: CPM, rgb: np.ndarray, box: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """21 hand joints from a given square crop, then ``refine_passes`` crops around the joints.

    Args:
        model: a trained :class:`CPM` (eval mode).
        rgb: (H, W, 3) uint8.
        box: ``(cx, cy, side)`` px of the first crop (e.g. from
            :func:`~hoannot.annotate.preprocess.hand_box`).
    Returns:
        as :func:`detect_keypoints`: uv (21, 2) float32 px (HO-3D order), confidence (21,) float32.
    """
    c = model.config
    rgb = np.ascontiguousarray(rgb[..., :3])
    uv, peak = _detect_in_box(model, rgb, box)
    for _ in range(int(c.get("refine_passes", 0))):
        uv, peak = _detect_in_box(model, rgb, joint_box(uv, c["joint_margin"]))
    return uv.astype(np.float32), np.clip(peak, 0, 1).astype(np.float32)


def _detect_in_box(model: CPM, rgb: np.ndarray, box: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Joints (J, 2) float64 full-image px and peak beliefs (J,) from one square crop."""
    c = model.config
    M = crop_affine(box, c["crop"])
    crop = cv2.warpAffine(rgb, M, (c["crop"], c["crop"]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    dev = next(model.parameters()).device
    hm = model(torch.from_numpy(normalise_rgb(crop))[None].to(dev))[-1][0, : c["joints"]].cpu().numpy()
    xy, peak = heatmap_peaks(hm)
    uv_crop = (xy + 0.5) * c["stride"] - 0.5
    Minv = cv2.invertAffineTransform(M)
    return uv_crop @ Minv[:, :2].T + Minv[:, 2], peak


