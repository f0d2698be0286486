"""SDNet: CNN joint regressor with a skeleton-difference loss and hierarchical refinement.

Regressor: a 2D CNN on the normalised depth crop regresses the 21 joints (HO-3D order,
normalised crop-relative coordinates, see :mod:`hoannot.baselines.dataset`).

Loss (SDNet, Eq. 2-7): the joint loss (mean squared joint distance) plus a *skeleton
difference* loss over the 20 bones ``b = J[child] - J[parent]``:

* angle term ``L_angle = mean_bones (1 - cos(b_pred, b_gt))`` -- the directional
  difference of every bone (0 for parallel bones, 1 for a 90 degree bend);
* bone-length ratio term ``L_ratio = mean_bones (|b_pred| / |b_gt| - 1)^2``.

``L = L_joint + w_angle * L_angle + w_ratio * L_ratio``. (We give both terms in this form;
the paper's exact weights are not reproduced; ``w_angle``/``w_ratio`` are settings.)

The skeleton-difference terms need a regressor with capacity to spare: on the
benchmarks/baselines.py data (480 training sequences, seed 0, 30 epochs; validation / test
MPJPE) a small CNN (widths 8-16-32, FC 256) gets 22.4 / 22.0 mm with the plain joint loss and
23.2 / 22.1 mm with the skeleton-difference loss; the default (widths 16-32-64, FC 512)
21.4 / 20.3 mm plain and 21.0 / 19.9 mm with it.

Hierarchical refinement (inference, optional ``refine``): the predicted joints (camera
frame, metres) are optimised level by level along the kinematic tree -- wrist + MCP/CMC
joints first, then PIP, DIP, tips, earlier levels frozen -- minimising

* a data term ``|J - J_pred|^2 / sigma^2``;
* a bone-length prior ``-log p(lengths)`` under a 5-component diagonal Gaussian mixture
  fitted to the training bone lengths by EM (numpy; scikit-learn is not a dependency);
* 2D projection feasibility: the squared distance (crop pixels) from a joint's projection
  to the nearest foreground pixel of the crop (depth nearer than the cube's back face);
* a temporal term ``|J_t - J_{t+1}|^2`` between consecutive frames of the same camera
  present in the batch.

Ablation switch: ``sd_loss`` (False = plain joint loss, the paper's baseline: ICVL
12.7 -> 8.4 mm with the skeleton-difference loss).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from scipy.ndimage import distance_transform_edt
from torch import nn

from hoannot.baselines.settings import CropSettings
from hoannot.baselines.dataset import camera_to_uvd, to_camera, to_normalised
from hoannot.baselines.nets import Regressor2D, joint_loss

# parent of each joint in HO-3D order (-1 = root)
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14, 15, 3, 6, 12, 9])
BONES = np.array([(PARENTS[j], j) for j in range(21) if PARENTS[j] >= 0])  # (20, 2) parent, child
LEVELS = ([0, 1, 4, 7, 10, 13], [2, 5, 8, 11, 14], [3, 6, 9, 12, 15], [16, 17, 18, 19, 20])

class Settings(CropSettings):
    """SDNet: the skeleton-difference loss (Eq. 2-7) and the hierarchical refinement."""

    widths: list[int] = Field([16, 32, 64], min_length=1, description="channels of the CNN trunk's stages")
    hidden: int = Field(512, ge=1, description="width of the fully connected layer")
    sd_loss: bool = Field(True, description="add the skeleton-difference loss (False: plain joint loss)")
    w_angle: float = Field(0.1, ge=0, description="weight of the bone-angle term L_angle")
    w_ratio: float = Field(0.1, ge=0, description="weight of the bone-length ratio term L_ratio")
    refine: bool = Field(False, description="hierarchical refinement at inference")
    refine_steps: int = Field(30, ge=0, description="refinement: optimiser steps per level of the kinematic tree")
    gmm_components: int = Field(5, ge=1, description="refinement: components of the bone-length Gaussian mixture")
    w_prior: float = Field(1e-3, ge=0, description="refinement: weight of the bone-length prior")
    w_2d: float = Field(1.0, ge=0, description="refinement: weight of the 2D projection feasibility term")
    w_temporal: float = Field(0.5, ge=0, description="refinement: weight of the temporal term")
    sigma_m: float = Field(0.01, gt=0, description="refinement: std of the data term, metres")

DEFAULTS = Settings().model_dump()
ABLATION = {"overrides": {"sd_loss": False}, "retrain": True, "what": "plain joint loss (no skeleton-difference loss)"}


def bone_vectors(joints: torch.Tensor) -> torch.Tensor:
    """(..., 21, 3) joints -> (..., 20, 3) bone vectors child - parent (HO-3D tree)."""
    return joints[..., BONES[:, 1], :] - joints[..., BONES[:, 0], :]


def skeleton_difference_loss(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Skeleton-difference terms (SDNet Eq. 2-7, in the form given in the module docstring).

    Args:
        pred, gt: (B, 21, 3) joints (any consistent length unit).

    Returns:
        (angle term, ratio term): scalars, mean over batch and the 20 bones.
    """
    bp, bg = bone_vectors(pred), bone_vectors(gt)
    lp, lg = bp.norm(dim=-1), bg.norm(dim=-1)
    cos = (bp * bg).sum(-1) / (lp * lg).clamp_min(eps)
    angle = (1.0 - cos).mean()
    ratio = ((lp / lg.clamp_min(eps) - 1.0) ** 2).mean()
    return angle, ratio


class SDNet(nn.Module):
    """(B, 1, S, S) normalised depth -> (B, 21, 3) normalised joints; holds the GMM prior."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.net = Regressor2D(1, int(cfg["crop_size"]), 63, tuple(cfg["widths"]), int(cfg["hidden"]))
        k = int(cfg["gmm_components"])
        self.register_buffer("mean_joints", torch.zeros(21, 3))
        self.register_buffer("gmm_weights", torch.full((k,), 1.0 / k))
        self.register_buffer("gmm_means", torch.zeros(k, len(BONES)))
        self.register_buffer("gmm_vars", torch.ones(k, len(BONES)))

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        return self.mean_joints + self.net(depth).view(-1, 21, 3)


def fit_gmm(x: np.ndarray, k: int = 5, iters: int = 100, seed: int = 0, min_var: float = 1e-8):
    """Diagonal-covariance Gaussian mixture by EM.

    Args:
        x: (N, D) samples. k: components.

    Returns:
        (weights (k,), means (k, D), variances (k, D)) float64.
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    means = x[rng.choice(n, size=k, replace=n < k)]
    var = np.tile(x.var(0) + min_var, (k, 1))
    w = np.full(k, 1.0 / k)
    for _ in range(iters):
        logp = -0.5 * (((x[:, None, :] - means[None]) ** 2) / var[None] + np.log(2 * np.pi * var[None])).sum(-1) + np.log(w)[None]
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        nk = r.sum(0) + 1e-12
        w = nk / n
        means = (r.T @ x) / nk[:, None]
        var = (r.T @ x**2) / nk[:, None] - means**2 + min_var
        var = np.maximum(var, min_var)
    return w, means, var


def gmm_nll(x: torch.Tensor, w: torch.Tensor, means: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (B,) of (B, D) samples under a diagonal GMM."""
    logp = -0.5 * (((x[:, None, :] - means[None]) ** 2) / var[None] + torch.log(2 * torch.pi * var[None])).sum(-1)
    return -torch.logsumexp(logp + torch.log(w)[None], dim=1)


def build_model(cfg: dict) -> SDNet:
    return SDNet(cfg)


def stages(cfg: dict) -> list[tuple[str, int]]:
    return [("main", int(cfg["epochs"]))]


def parameters(model: SDNet, stage: str):
    return model.net.parameters()


def init_from_data(model: SDNet, dataset, cfg: dict) -> None:
    """Mean pose (output offset) and the bone-length GMM (metres) from the training joints."""
    j = dataset.all_joints()
    model.mean_joints.copy_(torch.as_tensor(j.mean(0)))
    lengths = np.linalg.norm(bone_vectors(torch.as_tensor(j)).numpy(), axis=-1) * 0.5 * dataset.cube_m
    w, m, v = fit_gmm(lengths, int(cfg["gmm_components"]), seed=int(cfg.get("seed", 0)))
    model.gmm_weights.copy_(torch.as_tensor(w))
    model.gmm_means.copy_(torch.as_tensor(m))
    model.gmm_vars.copy_(torch.as_tensor(v))


def loss(model: SDNet, batch: dict, cfg: dict, stage: str = "main"):
    pred = model(batch["depth"])
    lj = joint_loss(pred, batch["joints"])
    logs = {"joint": float(lj.detach())}
    total = lj
    if cfg["sd_loss"]:
        la, lr = skeleton_difference_loss(pred, batch["joints"])
        total = total + float(cfg["w_angle"]) * la + float(cfg["w_ratio"]) * lr
        logs.update(angle=float(la.detach()), ratio=float(lr.detach()))
    return total, logs


def _foreground_distance(depth_n: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) crops -> (B, 1, S, S) distance (pixels) to the nearest foreground pixel."""
    fg = (depth_n < 0.999).numpy()[:, 0]
    out = np.stack([distance_transform_edt(~m) if m.any() else np.zeros(m.shape) for m in fg])
    return torch.as_tensor(out, dtype=torch.float32)[:, None]


def refine(model: SDNet, joints_n: torch.Tensor, batch: dict, cfg: dict) -> torch.Tensor:
    """Hierarchical refinement of predicted joints (module docstring); (B, 21, 3) normalised in and out."""
    centre, cube = batch["centre"], batch["cube"]
    j0 = to_camera(joints_n, centre, cube).detach()
    J = j0.clone()
    S = batch["depth"].shape[-1]
    dist = _foreground_distance(batch["depth"])
    # consecutive frames of the same sequence and camera inside the batch
    key = [(int(s), int(c), int(f)) for s, c, f in zip(batch["seq"], batch["cam"], batch["frame"])]
    index = {k: i for i, k in enumerate(key)}
    pairs = [(i, index[(s, c, f + 1)]) for i, (s, c, f) in enumerate(key) if (s, c, f + 1) in index]
    sig2 = float(cfg["sigma_m"]) ** 2
    for level in LEVELS:
        free = torch.zeros(21, dtype=torch.bool)
        free[level] = True
        var = J[:, level].clone().requires_grad_(True)
        opt = torch.optim.Adam([var], lr=2e-3)
        for _ in range(int(cfg["refine_steps"])):
            Jc = J.clone()
            Jc[:, level] = var
            e = ((Jc - j0) ** 2).sum(-1).mean(-1) / sig2
            lengths = bone_vectors(Jc).norm(dim=-1)
            e = e + float(cfg["w_prior"]) * gmm_nll(lengths, model.gmm_weights, model.gmm_means, model.gmm_vars)
            ab = camera_to_uvd(Jc, centre, cube, batch["K"])[..., :2]
            d2d = torch.nn.functional.grid_sample(dist, ab[:, :, None, :], align_corners=False, padding_mode="border")
            e = e + float(cfg["w_2d"]) * (d2d[:, 0, :, 0] ** 2).mean(-1) / S
            if pairs:
                a = torch.tensor([p[0] for p in pairs])
                b = torch.tensor([p[1] for p in pairs])
                et = ((Jc[a] - Jc[b]) ** 2).sum(-1).mean(-1) / sig2
                e = e.index_add(0, a, float(cfg["w_temporal"]) * et)
            opt.zero_grad()
            e.sum().backward()
            opt.step()
        with torch.no_grad():
            J[:, level] = var.detach()
    return to_normalised(J, centre, cube)


def predict(model: SDNet, batch: dict, cfg: dict) -> dict[str, torch.Tensor]:
    """{"joints": (B, 21, 3) normalised}; refined when ``cfg["refine"]``."""
    with torch.no_grad():
        j = model(batch["depth"])
    if cfg.get("refine"):
        with torch.enable_grad():
            j = refine(model, j, batch, cfg)
    return {"joints": j}
