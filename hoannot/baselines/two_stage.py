"""Two-stage hand-object pose estimation (Goudie & Galata, 2017).

Stage 1: a fully convolutional network segments the object's pixels in the hand-centred
depth crop (paper: 96 x 96; default here 48 x 48 for CPU training, set ``crop_size=96``
for the paper's size). Trained with per-pixel binary cross-entropy against the
segmentation labels (label 2 = object). Stage 1's quality decides whether stage 2 gains
anything: measured on 480 training sequences (benchmarks/baselines.py data, seed 0, 30
regression epochs), test MPJPE without segmentation 25.5 mm; with a 2-level FCN after 2 /
10 epochs (object IoU on training crops 0.62 / 0.77) 25.8 / 25.4 mm; with the default
3-level FCN after 10 epochs (IoU 0.87) 24.8 mm; with the ground-truth object mask 24.0 mm.

Stage 2: a CNN regressor on the 2-channel input ``(depth, depth with the object pixels
removed)`` -- removed pixels read as background (normalised depth 1, i.e. zero raw
depth) -- predicting the hand joints and the object centre in crop-normalised
``(u, v, relative depth)`` (see :func:`hoannot.baselines.dataset.uvd_to_camera`).
The paper predicts 20 hand joints; we predict all 21 HO-3D keypoints (the wrist included)
so that the standard metrics apply, plus the object centre (the object model's origin).

Ablation switch: ``segmentation`` (False = the regressor sees the depth crop alone and no
stage 1 is trained; paper: with segmentation 7.4 % better on the max-error metric).
"""

from __future__ import annotations

import torch
from pydantic import Field
import torch.nn.functional as F
from torch import nn

from hoannot.baselines.settings import CropSettings
from hoannot.baselines.dataset import OBJECT, to_normalised, uvd_to_camera
from hoannot.baselines.nets import Regressor2D

class Settings(CropSettings):
    """Two-stage (Goudie and Galata, 2017): object segmentation, then regression."""

    seg_epochs: int = Field(20, ge=0, description="epochs of stage 1, the object segmentation FCN")
    segmentation: bool = Field(True, description="use the segmentation stage (False: the regressor alone)")
    seg_threshold: float = Field(0.5, ge=0, le=1, description="object probability above which a pixel is masked as object")
    seg_levels: int = Field(3, ge=1, description="down-sampling levels of the segmentation FCN")
    w_object: float = Field(1.0, ge=0, description="weight of the object-centre loss")

DEFAULTS = Settings().model_dump()
ABLATION = {"overrides": {"segmentation": False}, "retrain": True, "what": "regressor without the segmentation stage"}


class SegFCN(nn.Module):
    """(B, 1, S, S) normalised depth -> (B, 1, S, S) object logits: a U-Net-style encoder-decoder.

    Args:
        w: channels of the first level (deeper levels have ``2 w``).
        levels: 2x2 max-pool steps; S must be divisible by ``2**levels``. Each level widens the
            receptive field, which telling the object from the hand by shape needs.
    """

    def __init__(self, w: int = 16, levels: int = 2):
        super().__init__()
        c = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(inplace=True))  # noqa: E731
        chans = [w] + [2 * w] * levels
        self.enc = nn.ModuleList([c(1, w)] + [c(chans[i], chans[i + 1]) for i in range(levels)])
        ins = [(w if i < levels - 1 else chans[levels]) + chans[i] for i in range(levels)]
        self.dec = nn.ModuleList([c(ins[i], w) for i in range(levels)])
        self.out = nn.Conv2d(w, 1, 1)
        if levels == 2:  # runs saved before ``levels`` existed named the same layers e1..e3, d2, d1
            self._register_load_state_dict_pre_hook(self._rename_legacy_keys)

    @staticmethod
    def _rename_legacy_keys(state: dict, prefix: str, *args) -> None:
        legacy = {"e1.": "enc.0.", "e2.": "enc.1.", "e3.": "enc.2.", "d1.": "dec.0.", "d2.": "dec.1."}
        for key in [k for k in state if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in legacy.items():
                if rest.startswith(old):
                    state[prefix + new + rest[len(old):]] = state.pop(key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.enc[0](x)]
        for e in self.enc[1:]:
            feats.append(e(F.max_pool2d(feats[-1], 2)))
        u = feats[-1]
        for i in reversed(range(len(self.dec))):
            u = self.dec[i](torch.cat([F.interpolate(u, scale_factor=2.0), feats[i]], 1))
        return self.out(u)


class TwoStage(nn.Module):
    """Segmentation FCN + 2-channel regressor -> (B, 22, 3) uvd (21 joints, object centre)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.use_seg = bool(cfg["segmentation"])
        self.seg = SegFCN(levels=int(cfg.get("seg_levels", 2))) if self.use_seg else None
        self.reg = Regressor2D(2 if self.use_seg else 1, int(cfg["crop_size"]), 66, tuple(cfg["widths"]), int(cfg["hidden"]))
        self.threshold = float(cfg["seg_threshold"])

    def regressor_input(self, depth: torch.Tensor, object_prob: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, S, S) depth (+ object probability) -> (B, C, S, S) regressor input."""
        if not self.use_seg:
            return depth
        removed = torch.where(object_prob > self.threshold, torch.ones_like(depth), depth)
        return torch.cat([depth, removed], 1)

    def forward(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        prob = torch.sigmoid(self.seg(depth)) if self.use_seg else None
        x = self.regressor_input(depth, None if prob is None else prob.detach())
        return self.reg(x).view(-1, 22, 3), prob


def build_model(cfg: dict) -> TwoStage:
    return TwoStage(cfg)


def stages(cfg: dict) -> list[tuple[str, int]]:
    """Stage 1 (segmentation, ``seg_epochs``) then stage 2 (regression, ``epochs``)."""
    s = [("segmentation", int(cfg["seg_epochs"]))] if cfg["segmentation"] else []
    return s + [("regression", int(cfg["epochs"]))]


def parameters(model: TwoStage, stage: str):
    return model.seg.parameters() if stage == "segmentation" else model.reg.parameters()


def init_from_data(model: TwoStage, dataset, cfg: dict) -> None:
    """Nothing data-dependent."""


def loss(model: TwoStage, batch: dict, cfg: dict, stage: str = "regression"):
    depth = batch["depth"]
    if stage == "segmentation":
        logits = model.seg(depth)
        target = (batch["labels"] == OBJECT).float()
        l = F.binary_cross_entropy_with_logits(logits, target)
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (target > 0)).sum().float()
            union = (pred | (target > 0)).sum().float().clamp_min(1)
        return l, {"bce": float(l.detach()), "iou": float(inter / union)}
    uvd, _ = model(depth)
    target = torch.cat([batch["joints_uvd"], batch["obj_centre_uvd"][:, None]], 1)
    err = ((uvd - target) ** 2).sum(-1)
    lh, lo = err[:, :21].mean(), err[:, 21].mean()
    return lh + float(cfg["w_object"]) * lo, {"hand": float(lh.detach()), "object": float(lo.detach())}


def predict(model: TwoStage, batch: dict, cfg: dict) -> dict[str, torch.Tensor]:
    """{"joints": (B, 21, 3), "obj_centre": (B, 3)} normalised crop-relative (unrotated crops)."""
    with torch.no_grad():
        uvd, _ = model(batch["depth"])
        xyz = uvd_to_camera(uvd, batch["centre"], batch["cube"], batch["K"])
        n = to_normalised(xyz, batch["centre"], batch["cube"])
    return {"joints": n[:, :21], "obj_centre": n[:, 21]}
