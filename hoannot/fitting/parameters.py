"""The free variables of a fit: per-frame hand and object poses, a shared hand shape."""

from __future__ import annotations

import numpy as np
import torch
from pytorch3d.transforms import axis_angle_to_matrix, matrix_to_axis_angle
from scipy.spatial.transform import Rotation

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
        """Clear gradients of frozen frames (call between backward and step; no host sync)."""
        for p in (self.global_orient, self.hand_pose, self.transl, self.obj_delta, self.obj_transl):
            if p.grad is not None:
                p.grad.masked_fill_(self.frozen[:, None], 0.0)

    def to_poses(self, model: HandModel | None = None, source: str = "fit") -> HandObjectPoses:
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


class GraspParameters(torch.nn.Module):
    """A hand rigidly attached to the object (HOnnotate Sec. 4.3, Eq. 12-13): one hand pose in
    the **object frame** shared by B frames, and per-frame object poses.

    The shared grasp starts as the mean over the given frames of their hand parameters moved
    into each frame's object frame (rotation mean for ``global_orient``, arithmetic mean of
    ``hand_pose`` and ``transl``), so that independent per-frame errors of an initialisation
    average out. :meth:`to_poses` returns world-frame parameters of
    every frame, so a plan can switch between this and :class:`PoseParameters`.

    Attributes:
        grasp_orient: (1, 3) radians, object frame.  grasp_pose: (1, 45) radians.
        grasp_transl: (1, 3) metres, object frame.  betas: (nb,).
        obj_delta, obj_transl, obj_R_init: as in :class:`PoseParameters`.
    """

    def __init__(self, poses: HandObjectPoses, model: HandModel, num_betas: int, device: str = "cpu"):
        super().__init__()
        from hoannot.models.hand import change_frame

        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        self.frames = np.asarray(poses.frames)
        betas = np.zeros(num_betas, np.float32)
        betas[: min(num_betas, len(poses.betas))] = poses.betas[:num_betas]
        self.betas = torch.nn.Parameter(f32(betas))
        R0 = axis_angle_to_matrix(f32(poses.obj_rot))
        with torch.no_grad():  # every frame's hand in its object frame, then their mean
            Rt = R0.transpose(1, 2)
            t = -torch.einsum("bij,bj->bi", Rt, f32(poses.obj_transl))
            go, tr = change_frame(model.to(device), Rt, t, f32(poses.global_orient), f32(poses.transl), self.betas)
        mean_orient = Rotation.from_rotvec(go.cpu().numpy().astype(np.float64)).mean().as_rotvec()
        self.grasp_orient = torch.nn.Parameter(f32(mean_orient[None]))
        self.grasp_pose = torch.nn.Parameter(f32(np.asarray(poses.hand_pose).mean(0, keepdims=True)))
        self.grasp_transl = torch.nn.Parameter(tr.mean(0, keepdim=True).clone())
        self.obj_delta = torch.nn.Parameter(torch.zeros_like(f32(poses.obj_rot)))
        self.obj_transl = torch.nn.Parameter(f32(poses.obj_transl).clone())
        self.register_buffer("obj_R_init", R0)
        self.register_buffer("frozen", torch.zeros(len(self.frames), dtype=torch.bool, device=device))

    @property
    def hand_pose(self) -> torch.Tensor:
        """(B, 45) the shared articulation, per frame."""
        return self.grasp_pose.expand(len(self.frames), -1)

    def obj_R(self) -> torch.Tensor:
        """(B, 3, 3) object-to-world rotations."""
        return axis_angle_to_matrix(self.obj_delta) @ self.obj_R_init

    def object_vertices(self, verts: torch.Tensor) -> torch.Tensor:
        """(V, 3) object-frame points -> (B, V, 3) world."""
        return torch.einsum("bij,vj->bvi", self.obj_R(), verts) + self.obj_transl[:, None]

    def hand(self, model: HandModel) -> HandOutput:
        """The grasp moved by each frame's object pose (world frame)."""
        out = model(self.grasp_orient, self.grasp_pose, self.betas, self.grasp_transl)
        R, t = self.obj_R(), self.obj_transl[:, None]
        return HandOutput(torch.einsum("bij,vj->bvi", R, out.vertices[0]) + t,
                          torch.einsum("bij,vj->bvi", R, out.joints[0]) + t, out.faces)  # fmt: skip

    def zero_frozen_grads(self) -> None:
        """Nothing is frozen per frame here (steps choose which parameters are free)."""

    def to_poses(self, model: HandModel, source: str = "fit") -> HandObjectPoses:
        """World-frame parameters of every frame."""
        from hoannot.models.hand import change_frame

        with torch.no_grad():
            B = len(self.frames)
            R = self.obj_R()
            go, tr = change_frame(model, R, self.obj_transl, self.grasp_orient.expand(B, -1),
                                  self.grasp_transl.expand(B, -1), self.betas)  # fmt: skip
            n = lambda x: x.detach().cpu().numpy()  # noqa: E731
            return HandObjectPoses(
                frames=self.frames, global_orient=n(go), hand_pose=n(self.hand_pose), betas=n(self.betas),
                transl=n(tr), obj_rot=n(matrix_to_axis_angle(R)), obj_transl=n(self.obj_transl), source=source,
            )  # fmt: skip
