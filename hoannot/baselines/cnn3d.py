"""3D CNN on a TSDF volume (Deng et al., "Hand3D: Hand pose estimation using 3D neural network", 2017).

Volume: a ``grid^3`` projective truncated signed distance field over the hand-centred cube
(side ``cube_m``, centred at ``C``, camera axes). The paper uses 60^3 voxels of 5 mm
(a 0.3 m cube) and 50 mm truncation; the CPU default here is ``grid = 24`` over the same
0.3 m cube (12.5 mm voxels; 3D convolutions dominate CPU training time), truncation 50 mm.
Set ``grid=60`` for the paper's volume (any multiple of 4 works with the default widths).

For a voxel centre ``X`` (camera frame) projecting into the crop at ``(a, b)`` with observed
depth ``d(a, b)``: ``tsdf = clip((d - X_z) / trunc, -1, 1)`` -- positive in front of the
surface (free space), negative behind it (occluded). Background/missing depth and
voxels projecting outside the crop read ``+1``.

Optional TSDF refinement: a 3D fully convolutional encoder-decoder that adds a bounded
residual to the volume before the regressor, trained end to end with the joint loss
(the refinement is the ablation switch ``refine``; without it the regressor sees the raw
TSDF). Regressor: 3D conv/pool blocks and two FC layers -> 21 joints relative to ``C``
(normalised).
"""

from __future__ import annotations

import torch
from pydantic import Field
import torch.nn.functional as F
from torch import nn

from hoannot.baselines.settings import CropSettings
from hoannot.baselines.dataset import camera_to_uvd
from hoannot.baselines.nets import joint_loss, mlp

class Settings(CropSettings):
    """3D CNN on a TSDF (Deng et al., 2017): the voxel grid and the refinement FCN."""

    epochs: int = Field(30, ge=0, description="epochs of the main stage")
    grid: int = Field(24, ge=4, description="voxels per side of the TSDF grid")
    trunc_m: float = Field(0.05, gt=0, description="TSDF truncation distance, metres")
    refine: bool = Field(True, description="use the TSDF refinement FCN")
    refine_width: int = Field(4, ge=1, description="channels of the refinement FCN")

DEFAULTS = Settings().model_dump()
ABLATION = {"overrides": {"refine": False}, "retrain": True, "what": "without the TSDF refinement FCN"}


def voxel_centres(centre: torch.Tensor, cube: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, 3) centre, (B,) cube side -> (B, G, G, G, 3) voxel centres, metres, index order (z, y, x)."""
    lin = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
    z, y, x = torch.meshgrid(lin, lin, lin, indexing="ij")
    offs = torch.stack([x, y, z], -1)  # (G, G, G, 3)
    return centre[:, None, None, None, :] + offs[None] * (0.5 * cube)[:, None, None, None, None]


def tsdf_volume(depth_n: torch.Tensor, centre: torch.Tensor, cube: torch.Tensor, K: torch.Tensor,
                grid: int = 32, trunc_m: float = 0.05) -> torch.Tensor:
    """Projective TSDF of a normalised depth crop (module docstring).

    Args:
        depth_n: (B, 1, S, S) normalised depth crop (unrotated geometry: crop pixel (a, b)
            is image pixel ``p_c + r (a, b)``; a rotated training crop is the unrotated crop
            of the rotated scene, whose joints the dataset rotates accordingly).
        centre: (B, 3) metres. cube: (B,) metres. K: (B, 3, 3).
        grid: voxels per side G. trunc_m: truncation distance, metres.

    Returns:
        (B, 1, G, G, G) float32 in [-1, 1], indexed (z, y, x).
    """
    B = depth_n.shape[0]
    X = voxel_centres(centre, cube, grid).reshape(B, -1, 3)
    uvd = camera_to_uvd(X, centre, cube, K)
    ab = uvd[..., :2]
    d = F.grid_sample(depth_n, ab[:, :, None, :], mode="nearest", padding_mode="border", align_corners=False)[:, 0, :, 0]
    inside = (ab.abs() <= 1).all(-1)
    d_m = centre[:, 2, None] + d * (0.5 * cube)[:, None]
    sdf = (d_m - X[..., 2]) / trunc_m
    t = sdf.clamp(-1, 1)
    t = torch.where(inside & (d < 0.999), t, torch.ones_like(t))
    return t.reshape(B, 1, grid, grid, grid)


class Refine3D(nn.Module):
    """(B, 1, G, G, G) TSDF -> refined TSDF in [-1, 1].

    A residual 3D FCN: a strided encoder at half resolution, a transposed-convolution decoder
    back to full resolution, concatenated with the input volume (skip link), and a final
    1x1x1 convolution giving a residual added to the input.
    """

    def __init__(self, w: int = 4):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv3d(1, w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv3d(w, w, 3, padding=1), nn.ReLU(inplace=True))
        self.up = nn.ConvTranspose3d(w, w, 2, stride=2)
        self.out = nn.Conv3d(w + 1, 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity: refinement is learnt as a residual
        nn.init.zeros_(self.out.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        u = torch.relu(self.up(self.enc(v)))
        return (v + self.out(torch.cat([u, v], 1))).clamp(-1, 1)


class CNN3D(nn.Module):
    """TSDF (+ refinement) -> 3D CNN -> (B, 21, 3) normalised joints."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.grid, self.trunc = int(cfg["grid"]), float(cfg["trunc_m"])
        self.refiner = Refine3D(int(cfg["refine_width"])) if cfg["refine"] else None
        layers, c, g = [], 1, self.grid
        for i, w in enumerate(cfg["widths"]):  # first block strided (CPU cost), then conv + max-pool
            if i == 0:
                layers += [nn.Conv3d(c, w, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            else:
                layers += [nn.Conv3d(c, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool3d(2)]
            c, g = w, g // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = mlp(c * g**3, int(cfg["hidden"]), 63, 0.1)
        self.register_buffer("mean_joints", torch.zeros(21, 3))

    def volume(self, batch: dict) -> torch.Tensor:
        return tsdf_volume(batch["depth"], batch["centre"], batch["cube"], batch["K"], self.grid, self.trunc)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        if self.refiner is not None:
            volume = self.refiner(volume)
        return self.mean_joints + self.head(self.features(volume)).view(-1, 21, 3)


def build_model(cfg: dict) -> CNN3D:
    return CNN3D(cfg)


def stages(cfg: dict) -> list[tuple[str, int]]:
    return [("main", int(cfg["epochs"]))]


def parameters(model: CNN3D, stage: str):
    return model.parameters()


def init_from_data(model: CNN3D, dataset, cfg: dict) -> None:
    """Output offset = mean training pose (normalised)."""
    model.mean_joints.copy_(torch.as_tensor(dataset.all_joints().mean(0)))


def loss(model: CNN3D, batch: dict, cfg: dict, stage: str = "main"):
    with torch.no_grad():
        vol = model.volume(batch)
    l = joint_loss(model(vol), batch["joints"])
    return l, {"joint": float(l.detach())}


def predict(model: CNN3D, batch: dict, cfg: dict) -> dict[str, torch.Tensor]:
    """{"joints": (B, 21, 3) normalised}."""
    with torch.no_grad():
        return {"joints": model(model.volume(batch))}
