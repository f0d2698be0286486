"""The free variables of a fit: per-frame hand and object poses, a shared hand shape."""

from __future__ import annotations

import numpy as np
import torch
from pytorch3d.transforms import axis_angle_to_matrix, matrix_to_axis_angle

from hoannot.datasets.poses import HandObjectPoses
from hoannot.models.hand import HandModel, HandOutput


class PoseParameters(torch.nn.Module):
    """Hand (MANO) and object (6-DoF) poses of B frames, world frame.

    The object rotation is a small axis-angle *update* ``obj_delta`` applied on the left
    of the initial rotation (``R = exp(obj_delta) R_init``), which keeps the
    parametrisation far from the axis-angle singularity at pi.

    Attributes:
        global_orient: (B, 3) radians.  hand_pose: (B, 45) radians.
        transl: (B, 3) metres.  betas: (nb,) shared by all frames.
        obj_delta: (B, 3) radians.  obj_transl: (B, 3) metres.
        obj_R_init: (B, 3, 3) buffer.
        frozen: (B,) bool buffer; frozen frames keep their values (batch overlaps).
    """

    def __init__(self, poses: HandObjectPoses, num_betas: int, device: str = "cpu"):
        super().__init__()
        t = lambda a: torch.nn.Parameter(torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device).clone())  # noqa: E731
        self.frames = np.asarray(poses.frames)
        self.global_orient = t(poses.global_orient)
        self.hand_pose = t(poses.hand_pose)
        self.transl = t(poses.transl)
        betas = np.zeros(num_betas, np.float32)
        betas[: min(num_betas, len(poses.betas))] = poses.betas[:num_betas]
        self.betas = t(betas)
        self.obj_delta = t(np.zeros_like(poses.obj_rot))
        self.obj_transl = t(poses.obj_transl)
        R0 = axis_angle_to_matrix(torch.as_tensor(poses.obj_rot, dtype=torch.float32, device=device))
        self.register_buffer("obj_R_init", R0)
        self.register_buffer("frozen", torch.zeros(len(self.frames), dtype=torch.bool, device=device))
        self.source = poses.source

    def obj_R(self) -> torch.Tensor:
        """(B, 3, 3) object-to-world rotations."""
        return axis_angle_to_matrix(self.obj_delta) @ self.obj_R_init

    def hand(self, model: HandModel) -> HandOutput:
        """Posed hand of every frame."""
        return model(self.global_orient, self.hand_pose, self.betas, self.transl)

    def object_vertices(self, verts: torch.Tensor) -> torch.Tensor:
        """(V, 3) object-frame vertices -> (B, V, 3) world."""
        return torch.einsum("bij,vj->bvi", self.obj_R(), verts) + self.obj_transl[:, None]

    def zero_frozen_grads(self) -> None:
        """Clear gradients of frozen frames (call between backward and step)."""
        if not bool(self.frozen.any()):
            return
        for p in (self.global_orient, self.hand_pose, self.transl, self.obj_delta, self.obj_transl):
            if p.grad is not None:
                p.grad[self.frozen] = 0.0

    def to_poses(self, source: str = "fit") -> HandObjectPoses:
        """Current values as :class:`HandObjectPoses` (world frame)."""
        with torch.no_grad():
            n = lambda x: x.detach().cpu().numpy()  # noqa: E731
            return HandObjectPoses(
                frames=self.frames,
                global_orient=n(self.global_orient),
                hand_pose=n(self.hand_pose),
                betas=n(self.betas),
                transl=n(self.transl),
                obj_rot=n(matrix_to_axis_angle(self.obj_R())),
                obj_transl=n(self.obj_transl),
                source=source,
            )
