"""The objective every step of a fit minimises (HOnnotate Eq. 3): what it owns and its terms.

:class:`Objective` owns the hand model, the object, the renderer and the resolved fit config
(weights, robust-loss scales, ``tc_grasp`` resolved for the schedule), and returns the
per-frame energy of each term of :mod:`hoannot.fitting.energies` for some poses and the
observations of their frames:

=========== ====================================================== =====================
term        what                                                   HOnnotate
=========== ====================================================== =====================
mask        rendered vs observed hand/object silhouettes           E_mask, Eq. 4
depth       rendered vs observed depth, Tukey                      E_dpt, Eq. 5
j2d         projected vs detected 2D joints, confidence-weighted   E_j2D, Eq. 6
points3d    observed points to the posed surfaces, truncated       E_3D, Eq. 7
joint       hand joint-angle limits                                E_joint, Eq. 8
penetration hand vertices inside the object                        E_phy, Eq. 9-10
temporal    smoothness of the poses over frames (and, single        E_tc, Sec. 4.2
            camera, of the hand in the object's frame)             (Eq. 12, made soft)
=========== ====================================================== =====================

E_phy moves hand and object, as in the paper, or the hand alone
(``FitConfig.penetration_moves``). A term whose weight is 0 is not computed (a render is
skipped when neither ``mask`` nor ``depth`` is on). The fit's steps (:mod:`hoannot.fitting.steps`), the re-fit, the chunked
fit and the quality pass (:mod:`hoannot.fitting.quality`) all read energies from here, so
the number a step minimises is the number the quality pass reports.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from pytorch3d.structures import Meshes
from pytorch3d.transforms import axis_angle_to_matrix

from hoannot.datasets.sequence import Sequence
from hoannot.fitting import energies as E
from hoannot.fitting.config import FitConfig
from hoannot.fitting.observations import Observations, load_observations
from hoannot.fitting.parameters import PoseParameters
from hoannot.fitting.schedule import resolve_schedule
from hoannot.models.hand import HandModel
from hoannot.models.objects import ObjectModel
from hoannot.renderers.cameras import project_points
from hoannot.renderers.renderer import HandObjectRenderer

#: the energy terms, in the order they are reported
TERMS = ("mask", "depth", "j2d", "points3d", "joint", "penetration", "temporal")
#: E_phy uses every 4th hand vertex
PENETRATION_STRIDE = 4


@dataclass
class Objective:
    """HOnnotate's fit objective (Eq. 3) of one sequence, on one device.

    Attributes:
        hand_model: MANO-layout hand model on ``device``.
        obj: the object; its decimated vertices (V, 3) float32 (object frame, metres) and
            faces on ``device``.
        phy_points: (P, 3) float32 object-frame points E_phy tests the hand against: ``P =
            FitConfig.penetration_samples`` points sampled on the full-resolution surface (seed
            0), or the decimated vertices when that is 0.
        phy_normals: (P, 3) float32 their outward unit normals (face normals of the full mesh,
            or the decimated mesh's vertex normals).
        surface: the object's full-resolution surface for E_3D
            (``FitConfig.points3d_object_surface == "full"``), else None (E_3D against the
            decimated mesh).
        renderer: the silhouette/depth renderer.
        cfg: the config the energies see: the fit's settings with ``tc_grasp`` resolved for
            the schedule (the checkpoint digest and the recorded config keep the settings as
            given).
        keypoints: the 2D joints the observations carry (``"keypoints2d"``, ``"gt"`` or ``"none"``).
        device: the torch device (a string).
    """

    hand_model: HandModel
    obj: ObjectModel
    phy_points: torch.Tensor
    phy_normals: torch.Tensor
    surface: E.RigidSurface | None
    renderer: HandObjectRenderer
    cfg: FitConfig
    keypoints: str
    device: str

    @staticmethod
    def make(seq: Sequence, hand_model: HandModel, obj: ObjectModel, cfg: FitConfig) -> "Objective":
        """The objective of a fit of ``seq`` with ``cfg``: models moved to ``cfg.device``,
        ``tc_grasp`` resolved for the sequence's schedule, ``keypoints: auto`` resolved
        (``keypoints2d`` when the sequence has that folder, else ``none``)."""
        device = str(torch.device(cfg.device))
        resolved = cfg.model_copy(update={"tc_grasp": cfg.grasp_weight(resolve_schedule(cfg, len(seq.cameras)))})
        keypoints = cfg.keypoints
        if keypoints == "auto":
            keypoints = "keypoints2d" if (seq.root / "keypoints2d").is_dir() else "none"
        verts, faces = obj.verts.to(device), obj.faces.to(device)
        objd = ObjectModel(obj.name, obj.mesh, verts, faces, obj.points, obj.diameter, obj.symmetric)
        if cfg.penetration_samples > 0:
            points, normals = (torch.as_tensor(a, device=device) for a in obj.surface_samples(cfg.penetration_samples))
        else:
            points, normals = verts, Meshes([verts], [faces]).verts_normals_padded()[0]
        surface = E.RigidSurface(obj.mesh.vertices, obj.mesh.faces, device) if cfg.points3d_object_surface == "full" else None
        renderer = HandObjectRenderer(cfg.sigma_px2, cfg.faces_per_pixel, cfg.backend)
        return Objective(hand_model.to(device), objd, points, normals, surface, renderer, resolved, keypoints, device)

    def with_weights(self, **weights: float) -> "Objective":
        """The same objective with some term weights changed (e.g. ``mask=0``)."""
        cfg = self.cfg.model_copy(update={"weights": self.cfg.weights.model_copy(update=weights)})
        return replace(self, cfg=cfg)

    def observations(self, seq: Sequence, frames: list[int], seed: int) -> Observations:
        """The observations of ``frames`` as the energies read them, on the device.

        Raises:
            InputError: as :func:`hoannot.fitting.observations.load_observations`.
        """
        c = self.cfg
        return load_observations(seq, frames, c.crop_size, c.num_points, c.segmentation, seed, self.keypoints,
                                 c.points3d_object_erode).to(self.device)  # fmt: skip

    def energies(self, params, obs: Observations) -> dict[str, torch.Tensor]:
        """Every term's per-frame energy of ``params`` against ``obs``.

        Args:
            params: :class:`hoannot.fitting.parameters.PoseParameters` or
                :class:`~hoannot.fitting.parameters.GraspParameters` of B frames.
            obs: the observations of the same B frames.
        Returns:
            {term: (B,) float32} for each term of :data:`TERMS` whose weight is > 0 (``j2d``
            only with 2D joints, ``temporal`` only for :class:`PoseParameters` of more than one
            frame); units of :mod:`hoannot.fitting.energies`; differentiable.
        """
        w, cfg, hand_model, obj = self.cfg.weights, self.cfg, self.hand_model, self.obj
        hand = params.hand(hand_model)
        ov = params.object_vertices(obj.verts)
        out: dict[str, torch.Tensor] = {}
        if w.mask > 0 or w.depth > 0:
            r = self.renderer(hand.vertices, hand.faces, ov, obj.faces, obs.cams, soft=w.mask > 0)
            if w.mask > 0:
                out["mask"] = E.silhouette_energy(r.silhouette, obs.masks)
            if w.depth > 0:
                out["depth"] = E.depth_energy(r.zbuf, r.labels, obs.depth, obs.labels, cfg.tukey_c_cm)
        if w.points3d > 0:
            c, k, search = cfg.points3d_truncate_cm, cfg.points3d_candidates, cfg.resolved_points3d_search()
            if self.surface is not None:
                e_obj = E.rigid_point_to_surface_energy(obs.object_points, obs.object_points_valid, params.obj_R(),
                                                        params.obj_transl, self.surface, c, search)  # fmt: skip
            else:
                e_obj = E.point_to_surface_energy(obs.object_points, obs.object_points_valid, ov, obj.faces, c, k, search)
            out["points3d"] = E.point_to_surface_energy(obs.hand_points, obs.hand_points_valid, hand.vertices, hand.faces, c, k, search) + e_obj
        if w.j2d > 0 and obs.kp_uv is not None:
            out["j2d"] = E.keypoint_2d_energy(project_points(hand.joints, obs.full_cams), obs.kp_uv, obs.kp_conf)
        if w.penetration > 0:
            pts = params.object_vertices(self.phy_points)
            on = torch.einsum("bij,vj->bvi", params.obj_R(), self.phy_normals)
            if cfg.penetration_moves == "hand":  # the object's pose gets no gradient from E_phy
                pts, on = pts.detach(), on.detach()
            out["penetration"] = E.penetration_energy(hand.vertices[:, ::PENETRATION_STRIDE], pts, on, cfg.penetration_w)
        if w.joint > 0:
            out["joint"] = E.joint_limit_energy(hand_model.limits.violation(params.hand_pose))
        if w.temporal > 0 and isinstance(params, PoseParameters) and len(params.frames) > 1:
            traj = torch.cat([params.transl, axis_angle_to_matrix(params.global_orient).flatten(1), params.hand_pose,
                              params.obj_transl, params.obj_R().flatten(1)], dim=1)  # fmt: skip
            out["temporal"] = E.temporal_energy(traj, cfg.tc_velocity, cfg.tc_acceleration)
            if cfg.tc_grasp:  # the hand held still in the object's frame (single-camera schedule)
                rel = E.hand_in_object_frame(hand.joints[:, 0], axis_angle_to_matrix(params.global_orient),
                                             params.obj_R(), params.obj_transl)  # fmt: skip
                out["temporal"] = out["temporal"] + E.temporal_energy(torch.cat([rel, params.hand_pose], 1), cfg.tc_grasp, 0.0)
        return out

    def total(self, terms: dict[str, torch.Tensor], params) -> torch.Tensor:
        """Eq. 3: the weighted sum of the terms' means over frames, plus the Gaussian prior
        ``betas_prior * |betas|^2`` when the shape is free. Returns a scalar tensor."""
        total = sum(getattr(self.cfg.weights, k) * v.mean() for k, v in terms.items())
        if params.betas.requires_grad:
            total = total + self.cfg.betas_prior * params.betas.square().sum()
        return total

    def value(self, params, obs: Observations) -> float:
        """Eq. 3 of ``params`` as a number (no gradients)."""
        with torch.no_grad():
            return float(self.total(self.energies(params, obs), params))

    def frame_data_energy(self, params, obs: Observations) -> torch.Tensor:
        """(B,) weighted data energy of each frame: Eq. 3 without E_tc, which links frames
        (no gradients)."""
        with torch.no_grad():
            terms = self.energies(params, obs)
            return sum(getattr(self.cfg.weights, k) * v for k, v in terms.items() if k != "temporal")
