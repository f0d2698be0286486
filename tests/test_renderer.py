"""Renderer: depth against an independent open3d ray-cast; our rasterizer paths against PyTorch3D's native one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from hoannot.camera import Camera, look_at
from hoannot.models._open3d import load as load_open3d
from hoannot.renderers.cameras import ViewCameras, project_to_ndc, world_to_camera
from hoannot.renderers.rasterizer import Fragments, rasterize
from hoannot.renderers.renderer import HandObjectRenderer


def _scene():
    box = trimesh.creation.box(extents=(0.08, 0.06, 0.10))
    box = trimesh.Trimesh(*trimesh.remesh.subdivide_to_size(box.vertices, box.faces, 0.02))
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.03)
    sphere.apply_translation([0.02, -0.01, 0.05])  # pokes out of the box, towards camera 0
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    cams = [
        Camera("c0", K, 640, 480, look_at([0.0, -0.05, 0.45], [0, 0, 0], [0, -1, 0])),
        Camera("c1", K, 640, 480, look_at([0.35, 0.1, 0.3], [0, 0, 0], [0, 0, -1])),
    ]
    return sphere, box, cams


def _raycast(meshes, K, T_world_cam, H, W):
    o3d = load_open3d()
    scene = o3d.t.geometry.RaycastingScene()
    ids = [scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(
        o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(m.vertices), o3d.utility.Vector3iVector(m.faces))))
        for m in meshes]
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d_world = d_cam @ R.T
    rays = np.concatenate([np.broadcast_to(t, d_world.shape), d_world], -1).astype(np.float32)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    t_hit = ans["t_hit"].numpy()  # along d_cam whose z component is 1 -> camera depth
    geom = ans["geometry_ids"].numpy()
    depth = np.where(np.isfinite(t_hit), t_hit, 0.0)
    label = np.zeros((H, W), np.int64)
    for k, gid in enumerate(ids):
        label[(geom == gid) & np.isfinite(t_hit)] = k + 1
    return depth, label


def test_depth_and_labels_match_open3d_raycast():
    sphere, box, cams = _scene()
    boxes = np.array([[200.0, 120.0, 240.0, 240.0], [160.0, 100.0, 320.0, 320.0]])
    H = W = 96
    vc = ViewCameras.from_cameras(cams, boxes, (H, W))
    r = HandObjectRenderer()
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)[None]  # noqa: E731
    out = r(f32(sphere.vertices), torch.tensor(sphere.faces), f32(box.vertices), torch.tensor(box.faces), vc)
    for c in range(2):
        depth, label = _raycast([sphere, box], vc.K[c].double().numpy(), cams[c].T_world_cam, H, W)
        ours = out.zbuf[0, c].numpy()
        ours_label = out.labels[0, c].numpy()
        agree = ours_label == label
        assert agree.mean() > 0.985, agree.mean()  # disagreement only on silhouette edges
        both = agree & (label > 0)
        assert both.sum() > 1000 and (label == 1).sum() > 100
        assert np.abs(ours[both] - depth[both]).max() < 2e-4  # metres (float32 rasterizer)
        # the soft silhouette is ~1 inside each visible class and ~0 far outside everything
        sil = out.silhouette[0, c].numpy()
        assert sil[0][label == 1].mean() > 0.9 and sil[1][label == 2].mean() > 0.9
        assert sil.sum(0)[label == 0].mean() < 0.1
        assert ((sil[0] > 0.5) == (label == 1)).mean() > 0.98


@pytest.mark.parametrize("backend, faces_per_pixel", [("pytorch3d", 8), ("binned", 32)])
def test_fast_backends_match_native_outputs_and_gradients(backend, faces_per_pixel):
    """Our forward passes and autograd recomputation against PyTorch3D's own forward and
    backward. The binned rasterizer computes depths in another float order than PyTorch3D,
    so among faces that meet at a vertex (equal depth to 1e-7 m) it may keep another K of
    them when more than K lie within the blur radius (16 and more at this box's corners); at
    K = 32 the cut falls among faces behind a covering face, which add nothing, so the
    outputs must agree."""
    sphere, box, cams = _scene()
    image_size = (40, 48)
    boxes = np.array([[200.0, 120.0, 240.0, 200.0], [160.0, 100.0, 320.0, 266.7]])
    vc = ViewCameras.from_cameras(cams, boxes, image_size)
    hv0 = torch.tensor(sphere.vertices, dtype=torch.float32)[None].repeat(2, 1, 1)
    hv0[1] += torch.tensor([0.005, 0.0, -0.01])
    ov0 = torch.tensor(box.vertices, dtype=torch.float32)[None].repeat(2, 1, 1)
    hf, of = torch.tensor(sphere.faces), torch.tensor(box.faces)
    g = torch.Generator().manual_seed(0)
    w_sil = torch.rand((2, 2, 2) + image_size, generator=g)
    w_z = torch.rand((2, 2) + image_size, generator=g)
    res = {}
    for b in (backend, "native"):
        hv, ov = hv0.clone().requires_grad_(), ov0.clone().requires_grad_()
        out = HandObjectRenderer(faces_per_pixel=faces_per_pixel, backend=b)(hv, hf, ov, of, vc)
        loss = (out.silhouette * w_sil).sum() + (out.zbuf * w_z).sum()
        loss.backward()
        res[b] = (out.silhouette.detach(), out.zbuf.detach(), hv.grad, ov.grad)
    for a, b in zip(res[backend], res["native"]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * b.abs().max().item()), (a - b).abs().max()
    assert res[backend][2].abs().sum() > 0 and res[backend][3].abs().sum() > 0


def test_binned_rasterizer_keeps_pytorch3ds_fragments():
    """pix_to_face of the binned rasterizer equals PyTorch3D's (its public ``rasterize_meshes``)
    as sets per pixel (hard and soft pass), with depths to float precision."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    sphere, box, cams = _scene()
    vc = ViewCameras.from_cameras(cams, np.array([[200.0, 120.0, 240.0, 240.0], [160.0, 100.0, 320.0, 320.0]]), (64, 64))
    verts = torch.tensor(np.concatenate([sphere.vertices, box.vertices]), dtype=torch.float32)[None]
    faces = torch.cat([torch.tensor(sphere.faces), torch.tensor(box.faces) + len(sphere.vertices)])
    ndc = project_to_ndc(world_to_camera(verts, vc), vc).reshape(2, -1, 3)
    for blur, K in ((0.0, 1), (1e-3, 64)):
        a = rasterize(ndc, faces, (64, 64), blur, K, "binned")
        p2f, zbuf, _, _ = rasterize_meshes(Meshes(ndc, faces[None].expand(2, -1, -1)), (64, 64), blur, K, bin_size=0,
                                           perspective_correct=True)  # fmt: skip
        b = Fragments(p2f, zbuf, zbuf)
        assert not (b.pix_to_face[..., -1] >= 0).any() or K == 1  # nothing truncated at K = 64
        sa, sb = a.pix_to_face.sort(-1).values, b.pix_to_face.sort(-1).values
        assert torch.equal(sa, sb)
        assert (b.pix_to_face >= 0).sum() > 1000
        assert torch.allclose(a.zbuf.sort(-1).values, b.zbuf.sort(-1).values, atol=1e-5)
