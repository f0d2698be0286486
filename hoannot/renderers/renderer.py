"""Render hand + object together: per-class soft silhouettes and depth, B frames x C views.

One call rasterizes every (frame, view) pair as one batch of meshes that share a face
list (hand faces followed by object faces), so the hand and the object occlude each
other exactly as in the capture. Two passes:

* a **soft** pass (blur radius from ``sigma``, K faces per pixel) gives each class's
  silhouette by front-to-back compositing of a per-face coverage ``p_k`` (SoftRas,
  Liu et al. 2019, with the hand/object split of HOnnotate Eq. 4: a face only counts
  where nothing nearer covers it), ``S_c = sum_k [class_k = c] p_k prod_{j<k} (1 - p_j)``.
  Unlike SoftRas's ``sigmoid(-d/sigma)``, the coverage is one-sided,
  ``p_k = exp(-max(d_k, 0) / sigma)`` with ``d_k`` the signed squared distance of the
  pixel to face k: 1 inside the face, decaying outside it. The sigmoid gives 0.5 on
  every *interior* edge of a mesh, which leaves seams at 0.75 inside the silhouette;
  the one-sided form is 1 everywhere inside and moves the 0.5 level by
  ``sqrt(sigma ln 2)`` pixels outwards (0.3 px at the default);
* a **hard** pass (K = 1, no blur) gives the depth ``zbuf`` (metres, 0 where empty)
  and the label image; depth has gradients w.r.t. the vertices of the visible face.
  (Reading the hard image from the soft pass's K faces is not safe: on a finely
  tessellated hand more than K nearer faces can lie within the blur radius. The binned
  rasterizer finds both passes in one enumeration of candidate faces, keeping all of
  them for the hard pass.)

Faces farther than the blur radius, where ``p < P_MIN``, are left out of the soft pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hoannot.renderers.cameras import ViewCameras, project_to_ndc, world_to_camera
from hoannot.renderers.rasterizer import Backend, rasterize_hard_soft

HAND, OBJECT = 0, 1  # channel order of RenderOutput.silhouette
P_MIN = 1e-2  # smallest face coverage the soft pass keeps (sets the blur radius)


@dataclass
class RenderOutput:
    """What :class:`HandObjectRenderer` returns for B frames x C views of size (H, W).

    Attributes:
        silhouette: (B, C, 2, H, W) float32 in [0, 1], channel 0 hand, 1 object, each
            visible coverage (occluded parts of a class do not count). None when the
            soft pass was skipped.
        zbuf: (B, C, H, W) float32 depth along the camera z axis in metres, 0 where
            nothing is rendered.
        labels: (B, C, H, W) int64: 0 background, 1 hand, 2 object (the
            ``SEGMENTATION_LABELS`` of the sequence layout).
    """

    silhouette: torch.Tensor | None
    zbuf: torch.Tensor
    labels: torch.Tensor


class HandObjectRenderer(torch.nn.Module):
    """Differentiable renderer of a hand mesh and an object mesh seen by C cameras.

    Args:
        sigma: softness of the silhouette edge in squared *pixels* of the rendered
            image (converted to PyTorch3D's squared NDC units per render size);
            coverage falls to 1/2 at sqrt(sigma ln 2) px and 1e-4 at
            sqrt(4.6 sigma) px (``P_MIN``) outside an edge.
        faces_per_pixel: K faces composited per pixel in the soft pass.
        backend: see :mod:`hoannot.renderers.rasterizer` (``"auto"``: binned on CPU,
            PyTorch3D's forward on CUDA; both with autograd recomputation).
    """

    def __init__(self, sigma: float = 0.15, faces_per_pixel: int = 8, backend: Backend = "auto"):
        super().__init__()
        self.sigma = float(sigma)
        self.faces_per_pixel = int(faces_per_pixel)
        self.backend = backend

    def forward(
        self,
        hand_verts: torch.Tensor,
        hand_faces: torch.Tensor,
        obj_verts: torch.Tensor,
        obj_faces: torch.Tensor,
        cams: ViewCameras,
        soft: bool = True,
    ) -> RenderOutput:
        """Render B frames in C views.

        Args:
            hand_verts: (B, Vh, 3) float32 world coordinates, metres.
            hand_faces: (Fh, 3) int64.
            obj_verts: (B, Vo, 3) float32 world coordinates, metres.
            obj_faces: (Fo, 3) int64.
            cams: C views (crop-adjusted intrinsics and render size).
            soft: also run the soft silhouette pass.
        Returns:
            :class:`RenderOutput`.
        Raises:
            ValueError: batch sizes of hand and object differ.
        """
        if hand_verts.shape[0] != obj_verts.shape[0]:
            raise ValueError(f"hand batch {hand_verts.shape[0]} != object batch {obj_verts.shape[0]}")
        B, Vh = hand_verts.shape[:2]
        C = len(cams)
        H, W = cams.image_size
        verts = torch.cat([hand_verts, obj_verts], dim=1)
        faces = torch.cat([hand_faces, obj_faces + Vh], dim=0).to(verts.device)
        Fh, Ft = hand_faces.shape[0], faces.shape[0]
        ndc = project_to_ndc(world_to_camera(verts, cams.to(verts.device)), cams).reshape(B * C, -1, 3)

        sigma = self.sigma * (2.0 / min(H, W)) ** 2
        hard, frag = rasterize_hard_soft(ndc, faces, (H, W), math.log(1.0 / P_MIN) * sigma, self.faces_per_pixel,
                                         self.backend, soft)  # fmt: skip
        zbuf, labels = self._hard(hard.pix_to_face, hard.zbuf, hard.pix_to_face >= 0, Fh, Ft)
        zbuf, labels = zbuf.reshape(B, C, H, W), labels.reshape(B, C, H, W)
        if frag is None:
            return RenderOutput(None, zbuf, labels)
        valid = frag.pix_to_face >= 0
        p = torch.exp(-frag.dists.clamp(min=0.0) / sigma) * valid
        # transmittance in front of face k: prod_{j<k} (1 - p_j)
        trans = torch.cumprod(torch.cat([torch.ones_like(p[..., :1]), 1.0 - p[..., :-1]], dim=-1), dim=-1)
        w = p * trans
        is_hand = (torch.remainder(frag.pix_to_face, Ft) < Fh) & valid
        sil = torch.stack([(w * is_hand).sum(-1), (w * (~is_hand & valid)).sum(-1)], dim=1)
        return RenderOutput(sil.reshape(B, C, 2, H, W), zbuf, labels)

    @staticmethod
    def _hard(pix_to_face, zbuf_k, inside, Fh: int, Ft: int):
        """Depth and label of the first (nearest) fragment flagged ``inside``; (N, H, W)."""
        hit = inside.any(-1)
        first = torch.argmax(inside.to(torch.uint8), dim=-1, keepdim=True)
        face = torch.gather(pix_to_face, -1, first)[..., 0]
        z = torch.gather(zbuf_k, -1, first)[..., 0]
        local = torch.remainder(face, Ft)
        labels = torch.where(hit, torch.where(local < Fh, 1, 2), 0)
        return torch.where(hit, z, torch.zeros_like(z)), labels
