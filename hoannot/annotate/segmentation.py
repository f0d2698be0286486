"""Hand/object segmentation with DeepLabV3+ (3 classes: 0 background, 1 hand, 2 object).

The network is ``segmentation_models_pytorch.DeepLabV3Plus`` (Chen et al., "Encoder-
Decoder with Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018),
the segmentation network HOnnotate uses (Hampali et al., CVPR 2020, Sec. 3.2), built with
``encoder_weights=None``: nothing is downloaded at run time. A user may start from
their own weights (:func:`hoannot.annotate.training.train_segmentation` ``init_weights``: a hoannot segmentation
file, or any ``state_dict`` whose keys match the encoder, e.g. ImageNet weights saved
beforehand).

Variants: RGB (3 input channels) and RGB-D (4: depth as an extra channel, normalised by
:func:`hoannot.annotate.preprocess.normalise_depth`).

Inference (:func:`segment`) resizes the image to the working width the network was
trained at (the training views are rendered at 320x240 and shown to the network at
``work_width`` px wide, :class:`~hoannot.annotate.configs.SegmentationConfig`), pads to a multiple of 32, and upsamples the class
scores back to the input size before the arg-max.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hoannot.annotate import weights as W
from hoannot.annotate.configs import SegmentationConfig
from hoannot.annotate.preprocess import normalise_depth, normalise_rgb
from hoannot.io import InputError

#: Cross-entropy class weights (background, hand, object): the hand and object cover
#: a small part of each view.
CLASS_WEIGHTS = (0.5, 1.5, 1.0)


class SegmentationNet(torch.nn.Module):
    """DeepLabV3+ with its hoannot config.

    Args:
        config: a :class:`~hoannot.annotate.configs.SegmentationConfig`, or a dict of some
            of its fields (the others take the defaults); None: the defaults.

    Attributes:
        config: the full config as a plain dict (``SegmentationConfig.model_dump()``, what
            is saved with the weights).
        net: the ``smp.DeepLabV3Plus`` module; ``forward(x)`` maps (B, C, H, W) float32
            (C = 3, or 4 with ``rgbd``; H, W multiples of 32) to (B, 3, H, W) logits.

    Raises:
        InputError: an unknown field, or a value the config refuses.
    """

    def __init__(self, config: SegmentationConfig | dict | None = None) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.config = c = SegmentationConfig.validated(config).model_dump()
        self.net = smp.DeepLabV3Plus(
            encoder_name=c["encoder"], encoder_weights=None, in_channels=4 if c["rgbd"] else 3,
            classes=c["classes"], decoder_channels=c["decoder_channels"],
        )  # fmt: skip

    @property
    def in_channels(self) -> int:
        return 4 if self.config["rgbd"] else 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_segmentation(path: str | Path | None = None, device: str = "cpu") -> SegmentationNet:
    """Load trained segmentation weights (see :func:`hoannot.annotate.weights.find_weights`).

    Raises:
        InputError: no weights found (the message names ``hoannot train-seg``), hash
            mismatch, a file of another kind, or a stored config value the model refuses.
    Warns:
        UserWarning: the stored config has keys this version does not know (ignored; see
            :meth:`~hoannot.annotate.configs.NetConfig.from_stored`).
    """
    data = W.load_weights("segmentation", path)
    model = SegmentationNet(SegmentationConfig.from_stored(data["config"], str(data["path"])))
    model.net.load_state_dict(data["state_dict"])
    model.weights_path, model.sha256 = str(data["path"]), data["sha256"]
    return model.to(device).eval()


def prepare_input(rgb: np.ndarray, depth: np.ndarray | None, config: dict) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize/normalise/pad one image for the network.

    Args:
        rgb: (H, W, 3) uint8. depth: (H, W) metres or None (required for RGB-D).
        config: the network config (``model.config``, a plain dict).
    Returns:
        x (1, C, Hp, Wp) float32 and the (h, w) of the resized, unpadded image.
    Raises:
        InputError: bad shapes, or an RGB-D network without depth.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise InputError(f"segment: rgb must be (H, W, 3), got {rgb.shape}")
    H, Wd = rgb.shape[:2]
    s = config["work_width"] / Wd
    w, h = int(round(Wd * s)), int(round(H * s))
    img = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (w, h), interpolation=cv2.INTER_AREA)
    x = normalise_rgb(img)
    if config["rgbd"]:
        if depth is None:
            raise InputError("segment: this is an RGB-D network; pass the depth image")
        if depth.shape != (H, Wd):
            raise InputError(f"segment: depth {depth.shape} does not match rgb {rgb.shape[:2]}")
        d = cv2.resize(depth.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        x = np.concatenate([x, normalise_depth(d)[None]], 0)
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    xt = F.pad(torch.from_numpy(x)[None], (0, wp - w, 0, hp - h), mode="replicate")
    return xt, (h, w)


@torch.no_grad()
def segment_probs(model: SegmentationNet, rgb: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities at the input resolution, (H, W, 3) float32 (softmax)."""
    dev = next(model.parameters()).device
    x, (h, w) = prepare_input(rgb, depth, model.config)
    logits = model(x.to(dev))[:, :, :h, :w]
    logits = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False)
    return torch.softmax(logits, 1)[0].permute(1, 2, 0).cpu().numpy()


def segment(model: SegmentationNet, rgb: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
    """Segment one image into background / hand / object.

    Args:
        model: a trained :class:`SegmentationNet` (eval mode).
        rgb: (H, W, 3) uint8.
        depth: (H, W) float metres (0 = no reading); required for RGB-D networks.
    Returns:
        (H, W) uint8 labels, 0 background, 1 hand, 2 object.
    Raises:
        InputError: bad shapes, or missing depth for an RGB-D network.
    """
    return segment_probs(model, rgb, depth).argmax(-1).astype(np.uint8)


