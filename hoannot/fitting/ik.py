"""Hand model parameters from 3D keypoints (inverse kinematics).

Used to start a fit from keypoints (ground truth of a synthetic capture, or another
labelling): a Kabsch alignment of the palm gives ``global_orient`` and ``transl``, then
Adam minimises the keypoint distance with the joint-limit hinge (HOnnotate Eq. 8) and a
small shape prior.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch3d.transforms import matrix_to_axis_angle

from hoannot.models.hand import HandModel

#: palm keypoints (HO-3D order): wrist and the four finger MCPs -- nearly rigid
PALM = [0, 1, 4, 7, 10]


def kabsch(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation R and translation t minimising ||R src + t - dst|| per batch.

    Args:
        src, dst: (B, P, 3).
    Returns:
        R (B, 3, 3), t (B, 3).
    """
    cs, cd = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    H = (src - cs).transpose(1, 2) @ (dst - cd)
    U, _, Vt = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(Vt.transpose(1, 2) @ U.transpose(1, 2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = Vt.transpose(1, 2) @ D @ U.transpose(1, 2)
    t = cd[:, 0] - (R @ cs[:, 0, :, None])[..., 0]
    return R, t


def fit_keypoints(
    model: HandModel,
    keypoints: np.ndarray,
    iterations: int = 300,
    fit_betas: bool = True,
    lr: float = 0.02,
) -> dict[str, np.ndarray]:
    """Fit MANO parameters to 3D keypoints.

    Args:
        model: the hand model.
        keypoints: (F, 21, 3) metres, HO-3D order.
        iterations: Adam steps.
        fit_betas: estimate one shape for all frames (else the mean shape).
        lr: Adam step size (radians, shape units; a tenth of it in metres for ``transl``).
    Returns:
        dict with ``global_orient`` (F, 3), ``hand_pose`` (F, 45), ``betas`` (nb,),
        ``transl`` (F, 3) float32 and ``mpjpe_mm`` (F,) the remaining keypoint error.
    """
    target = torch.as_tensor(keypoints, dtype=torch.float32)
    F = target.shape[0]
    with torch.no_grad():
        rest = model(torch.zeros(1, 3), torch.zeros(1, 45)).joints[0]
        J0 = model.root_joint()[0]
        R, t = kabsch(rest[PALM][None].expand(F, -1, -1), target[:, PALM])
    # x -> R x + t about the origin == rotate about J0 with transl = R J0 + t - J0
    go = matrix_to_axis_angle(R).clone().requires_grad_()
    transl = ((R @ J0) + t - J0).clone().requires_grad_()
    pose = torch.zeros(F, 45, requires_grad=True)
    betas = torch.zeros(model.num_betas, requires_grad=fit_betas)
    groups = [{"params": [go, pose] + ([betas] if fit_betas else []), "lr": lr}, {"params": [transl], "lr": lr * 0.1}]
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    for _ in range(iterations):
        opt.zero_grad()
        out = model(go, pose, betas, transl)
        err = (out.joints - target).square().sum(-1).mean() * 1e4  # cm^2
        loss = err + 10.0 * model.limits.violation(pose).square().sum(-1).mean() + 0.01 * betas.square().sum()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = model(go, pose, betas, transl)
        mpjpe = (out.joints - target).norm(dim=-1).mean(-1) * 1000
    n = lambda x: x.detach().numpy().astype(np.float32)  # noqa: E731
    return {"global_orient": n(go), "hand_pose": n(pose), "betas": n(betas), "transl": n(transl), "mpjpe_mm": n(mpjpe)}
