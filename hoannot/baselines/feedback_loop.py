"""Feedback loop (Oberweger, Wohlhart & Lepetit, "Training a Feedback Loop for Hand Pose
Estimation", ICCV 2015; hand-object variant: "Generalized Feedback Loop for Joint Hand-Object
Pose Estimation", TPAMI 2019).

Components (all on the hand-centred normalised depth crop, see ``dataset``):

* **Localizer** -- CNN regressing the offset from the crop centre (centre of mass of the
  hand points) to the mean of the hand joints; the crop is then re-centred on the refined
  centre. Re-centring resamples the crop itself (shift in (u, v), depth offset), an
  approximation valid for the small offsets involved (it ignores the perspective change).
* **Predictor** -- CNN whose last layer is a 30-dimensional bottleneck followed by a fixed
  linear layer holding the PCA basis of the training poses (the pose prior; PCA of the
  poses relative to their joint mean, plus a free 3D translation, since the crop centre is
  the localizer's estimate of that mean); a second head
  predicts the object's 8 bounding-box corners (hand-object variant), from which the
  object pose is recovered by Procrustes (see ``bench``).
* **Synthesizer** -- pose (63) + object corners (24) -> depth crop, an FC layer followed
  by up-convolutions, trained with the L2 image loss.
* **Updater** -- CNN on the 2-channel input (observed crop, synthesised crop of the current
  pose) -> pose update ``Delta y``, trained with the hinge loss (Eq. 9)
  ``max(0, |y + Delta y - y_gt| - lambda |y - y_gt|)``, ``lambda = 0.6``: the update must
  bring the pose at least ``lambda`` times closer.
* **Training-set growth** (Eq. 10): the updater's training poses start as the predictor's
  outputs and copies with Gaussian noise (per-sample sigma uniform in ``[0, init_noise]``,
  normalised units); from epoch ``k`` on, poses obtained by applying the current
  updater up to ``min(k, updates)`` times are added (computed online per batch, since the
  crops are re-augmented every epoch).

Inference: localize -> predict -> ``updates`` (= 2) iterations ``y <- y + g(D, s(y))``.
Ablation switch: ``updates = 0`` gives the initial predictor (paper: NYU 12.2 -> 10.8 mm).
"""

from __future__ import annotations

import torch
from pydantic import Field
import torch.nn.functional as F
from torch import nn

from hoannot.baselines.settings import CropSettings
from hoannot.baselines.nets import Regressor2D, joint_loss

class Settings(CropSettings):
    """Feedback loop (Oberweger et al., ICCV 2015): its stages and its update loop."""

    localizer_epochs: int = Field(5, ge=0, description="epochs of the hand-centre localiser (refines the crop centre)")
    synth_epochs: int = Field(15, ge=0, description="epochs of the synthesiser (pose -> depth crop)")
    updater_epochs: int = Field(20, ge=0, description="epochs of the updater (crop and synthesised crop -> pose update)")
    pca_components: int = Field(30, ge=1, description="dimension of the PCA pose embedding the predictor regresses")
    object: bool = Field(True, description="also regress the object's centre")
    w_object: float = Field(0.5, ge=0, description="weight of the object loss")
    hinge_lambda: float = Field(0.6, ge=0, le=1, description="updater hinge loss: an update must shrink the error by this factor")
    updates: int = Field(2, ge=0, description="feedback updates at inference (0: the initial predictor alone)")
    init_noise: float = Field(0.15, ge=0, description="updater training: noise of the perturbed start poses, normalised crop units")
    localize: bool = Field(True, description="run the localiser stage")

DEFAULTS = Settings().model_dump()
ABLATION = {"overrides": {"updates": 0}, "retrain": False, "what": "initial predictor (no feedback updates)"}


def recentre(depth_n: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Shift a crop so that its centre moves by ``offset`` (normalised units).

    Args:
        depth_n: (B, 1, S, S) normalised depth. offset: (B, 3) normalised (x, y, z) shift of
            the centre; x, y are taken as crop-coordinate shifts (small-offset approximation).

    Returns:
        (B, 1, S, S): crop of the new centre; pixels from outside the old crop and background
        read 1.
    """
    B, _, S, _ = depth_n.shape
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = offset[:, :2]
    grid = F.affine_grid(theta, list(depth_n.shape), align_corners=False)
    d = F.grid_sample(depth_n - 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False) + 1.0
    shifted = (d - offset[:, 2, None, None, None]).clamp(-1, 1)
    return torch.where(d >= 0.999, torch.ones_like(d), shifted)


class Synthesizer(nn.Module):
    """(B, 87) pose (63 joints + 24 object corners, normalised) -> (B, 1, S, S) depth in [-1, 1]."""

    def __init__(self, size: int, n_in: int = 87):
        super().__init__()
        self.s0 = size // 8
        self.fc = nn.Sequential(nn.Linear(n_in, 1024), nn.ReLU(inplace=True), nn.Linear(1024, 32 * self.s0 * self.s0), nn.ReLU(inplace=True))
        up = lambda i, o: nn.Sequential(nn.ConvTranspose2d(i, o, 4, stride=2, padding=1), nn.ReLU(inplace=True))  # noqa: E731
        self.up = nn.Sequential(up(32, 32), up(32, 16), nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1))

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        x = self.fc(pose).view(-1, 32, self.s0, self.s0)
        return torch.tanh(self.up(x))


class FeedbackLoop(nn.Module):
    """Localizer, PCA-prior predictor (+ object corners), synthesizer and updater."""

    def __init__(self, cfg: dict):
        super().__init__()
        S, w, h = int(cfg["crop_size"]), tuple(cfg["widths"]), int(cfg["hidden"])
        k = int(cfg["pca_components"])
        self.localizer = Regressor2D(1, S, 3, w, 256)
        self.predictor = Regressor2D(1, S, k + 3 + 24, w, h)
        self.synthesizer = Synthesizer(S)
        self.updater = Regressor2D(2, S, 63, w, h)
        last = self.updater.head[-1]
        nn.init.zeros_(last.weight)  # the first updates are zero: y_new = y
        nn.init.zeros_(last.bias)
        self.register_buffer("pca_mean", torch.zeros(63))
        self.register_buffer("pca_basis", torch.zeros(k, 63))  # rows: components
        self.register_buffer("corner_mean", torch.zeros(24))
        self.k = k

    def localize(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,1,S,S) -> (offset (B, 3) normalised, re-centred crop (B,1,S,S))."""
        off = self.localizer(depth)
        return off, recentre(depth, off.detach())

    def predict_pose(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-centred crop -> (joints (B, 21, 3), corners (B, 8, 3)) relative to the refined centre."""
        out = self.predictor(depth)
        joints = (self.pca_mean + out[:, : self.k] @ self.pca_basis).view(-1, 21, 3)
        joints = joints + out[:, None, self.k: self.k + 3]  # residual translation w.r.t. the localized centre
        corners = self.corner_mean + out[:, self.k + 3:]
        return joints, corners.view(-1, 8, 3)

    def synthesize(self, joints: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        return self.synthesizer(torch.cat([joints.flatten(1), corners.flatten(1)], 1))

    def update(self, depth: torch.Tensor, joints: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        """One feedback step: y + g(D, s(y)); (B, 21, 3) in and out."""
        synth = self.synthesize(joints, corners)
        return joints + self.updater(torch.cat([depth, synth], 1)).view(-1, 21, 3)


def build_model(cfg: dict) -> FeedbackLoop:
    return FeedbackLoop(cfg)


def stages(cfg: dict) -> list[tuple[str, int]]:
    """localizer, predictor (``epochs``), synthesizer, updater."""
    s = [("localizer", int(cfg["localizer_epochs"]))] if cfg["localize"] else []
    return s + [("predictor", int(cfg["epochs"])), ("synthesizer", int(cfg["synth_epochs"])),
                ("updater", int(cfg["updater_epochs"]))]


def parameters(model: FeedbackLoop, stage: str):
    return getattr(model, stage).parameters()


def init_from_data(model: FeedbackLoop, dataset, cfg: dict) -> None:
    """PCA basis (``pca_components`` rows) of the training poses relative to their joint mean."""
    j = torch.as_tensor(dataset.all_joints())
    j = (j - j.mean(1, keepdim=True)).flatten(1)
    mean = j.mean(0)
    _, _, Vt = torch.linalg.svd(j - mean, full_matrices=False)
    k = min(model.k, Vt.shape[0])
    basis = torch.zeros(model.k, 63)
    basis[:k] = Vt[:k]
    model.pca_mean.copy_(mean)
    model.pca_basis.copy_(basis)
    c = [dataset[i]["obj_corners"] - dataset[i]["joints"].mean(0) for i in range(0, len(dataset), max(1, len(dataset) // 50))]
    model.corner_mean.copy_(torch.stack(c).mean(0).flatten())


def _targets(model: FeedbackLoop, batch: dict, cfg: dict):
    """Re-centred crop and targets relative to the localized centre (localizer frozen)."""
    depth = batch["depth"]
    if cfg["localize"]:
        with torch.no_grad():
            off, depth = model.localize(depth)
    else:
        off = torch.zeros(len(depth), 3)
    return depth, off, batch["joints"] - off[:, None], batch["obj_corners"] - off[:, None]


def hinge_loss(y: torch.Tensor, y_new: torch.Tensor, y_gt: torch.Tensor, lam: float = 0.6) -> torch.Tensor:
    """Eq. 9: mean over the batch of ``max(0, |y_new - y_gt| - lam |y - y_gt|)`` (pose vectors).

    Args:
        y, y_new, y_gt: (B, 21, 3). lam: lambda.
    """
    a = (y_new - y_gt).flatten(1).norm(dim=1)
    b = (y - y_gt).flatten(1).norm(dim=1)
    return F.relu(a - lam * b).mean()


def loss(model: FeedbackLoop, batch: dict, cfg: dict, stage: str):
    if stage == "localizer":
        off = model.localizer(batch["depth"])
        l = ((off - batch["joints"].mean(1)) ** 2).sum(-1).mean()
        return l, {"centre": float(l.detach())}
    depth, off, jt, ct = _targets(model, batch, cfg)
    has = batch["has_object"].float()
    if stage == "predictor":
        j, c = model.predict_pose(depth)
        lj = joint_loss(j, jt)
        lc = (((c - ct) ** 2).sum(-1).mean(-1) * has).sum() / has.sum().clamp_min(1)
        l = lj + (float(cfg["w_object"]) * lc if cfg["object"] else 0.0)
        return l, {"joint": float(lj.detach()), "corners": float(lc.detach())}
    if stage == "synthesizer":
        # trained on ground-truth poses (with the object's corners), as in the paper
        s = model.synthesize(jt, ct)
        l = ((s - depth) ** 2).mean()
        return l, {"image": float(l.detach())}
    # updater: hinge loss on a training set grown with its own outputs (Eq. 9, 10)
    with torch.no_grad():
        j0, c0 = model.predict_pose(depth)
        # noisy copies with a per-sample noise level in [0, init_noise] cover the larger errors
        # the predictor makes on unseen sequences than on its own training crops
        level = float(cfg["init_noise"]) * torch.rand(len(j0), 1, 1)
        ys = [j0, j0 + level * torch.randn_like(j0)]
        epoch = int(getattr(model, "train_epoch", 1))  # set by the training loop
        y = j0
        for _ in range(min(max(epoch, 1), int(cfg["updates"]))):
            y = model.update(depth, y, c0)
            ys.append(y)
    y = torch.cat(ys, 0)
    rep = len(ys)
    d, c, g = depth.repeat(rep, 1, 1, 1), c0.repeat(rep, 1, 1), jt.repeat(rep, 1, 1)
    y_new = model.update(d, y, c)
    l = hinge_loss(y, y_new, g, float(cfg["hinge_lambda"]))
    return l, {"hinge": float(l.detach())}


def predict(model: FeedbackLoop, batch: dict, cfg: dict) -> dict[str, torch.Tensor]:
    """{"joints": (B, 21, 3), "obj_corners": (B, 8, 3)} normalised, relative to the crop centre."""
    with torch.no_grad():
        depth = batch["depth"]
        off = torch.zeros(len(depth), 3)
        if cfg["localize"]:
            off, depth = model.localize(depth)
        j, c = model.predict_pose(depth)
        for _ in range(int(cfg["updates"])):
            j = model.update(depth, j, c)
    out = {"joints": j + off[:, None]}
    if cfg["object"]:
        out["obj_corners"] = c + off[:, None]
    return out
