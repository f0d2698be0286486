"""Energy terms (HOnnotate Eq. 4-8, E_tc) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoannot.fitting import energies as E


def test_tukey_closed_form():
    c = 2.0
    r = torch.tensor([0.0, 1.0, -1.0, 2.0, 5.0, -7.0])
    expected = [0.0, (4 / 6) * (1 - (1 - 0.25) ** 3), (4 / 6) * (1 - 0.75**3), 4 / 6, 4 / 6, 4 / 6]
    assert E.tukey(r, c).tolist() == pytest.approx(expected, abs=1e-7)


def test_silhouette_energy_counts_wrong_pixels():
    sil = torch.zeros(1, 2, 2, 4, 4)
    mask = torch.zeros_like(sil)
    assert E.silhouette_energy(sil, mask).item() == 0.0
    sil[0, 0, 0, :2, :] = 1.0  # 8 wrong hand pixels in camera 0 out of 2*2*16 = 64
    assert E.silhouette_energy(sil, mask).item() == pytest.approx(8 / 64)
    weight = torch.zeros(1, 2, 1, 4, 4)  # ignore every pixel
    assert E.silhouette_energy(sil, mask, weight).item() == 0.0


def test_depth_energy_robust_and_masked():
    z = torch.full((1, 1, 2, 2), 0.50)
    d = torch.tensor([[[[0.51, 0.50], [0.80, 0.0]]]])  # 1 cm off, exact, outlier, missing
    lab = torch.ones(1, 1, 2, 2, dtype=torch.long)
    got = E.depth_energy(z, lab, d, lab, c=2.0).item()
    want = (E.tukey(torch.tensor(1.0), 2.0).item() + 0.0 + 4 / 6) / 3  # missing pixel not counted
    assert got == pytest.approx(want, rel=1e-5)
    assert E.depth_energy(z, lab * 0, d, lab).item() == 0.0  # nothing rendered


def test_keypoint_2d_and_joint_limit_energies():
    proj = torch.zeros(1, 2, 21, 2)
    det = torch.zeros(1, 2, 21, 2)
    det[0, 1, 3] = torch.tensor([3.0, 4.0])
    conf = torch.ones(1, 2, 21)
    assert E.keypoint_2d_energy(proj, det, conf).item() == pytest.approx(25.0)
    conf[0, 1, 3] = 0.2
    assert E.keypoint_2d_energy(proj, det, conf).item() == pytest.approx(5.0)
    v = torch.zeros(2, 45)
    v[1, 7] = 0.3
    assert E.joint_limit_energy(v).tolist() == pytest.approx([0.0, 0.09])


@pytest.mark.parametrize("search", ["brute", "bvh"])
def test_point_to_surface_energy_matches_trimesh_closest_point(search):
    """Exact point-to-triangle distances, against trimesh's independent closest-point query
    on a coarse sphere (where a closest-vertex distance would be far off)."""
    trimesh = pytest.importorskip("trimesh")
    m = trimesh.creation.icosphere(1, radius=0.05)  # 80 large faces
    verts = torch.tensor(m.vertices, dtype=torch.float32)[None].repeat(3, 1, 1)
    faces = torch.tensor(m.faces, dtype=torch.int64)
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 40, 3))
    p = p / np.linalg.norm(p, axis=-1, keepdims=True) * rng.uniform(0.04, 0.07, size=(3, 40, 1))
    valid = torch.ones(3, 40, dtype=torch.bool)
    valid[1, 25:] = False
    valid[2] = False  # a frame without points
    got = E.point_to_surface_energy(torch.tensor(p, dtype=torch.float32), valid, verts, faces, truncate=1.5, search=search)
    for b in (0, 1):
        _, d, _ = trimesh.proximity.closest_point(m, p[b][valid[b].numpy()])
        assert got[b].item() == pytest.approx(np.minimum((d * 100) ** 2, 1.5**2).mean(), rel=1e-4)
    assert got[2].item() == 0.0
    # on this mesh the paper's closest-vertex distance is far larger than the exact one
    d_vertex = np.linalg.norm(p[0][:, None] - m.vertices[None], axis=-1).min(1)
    assert np.minimum((d_vertex * 100) ** 2, 1.5**2).mean() > got[0].item() * 1.2


def test_point_to_surface_candidates_and_bvh_match_the_full_search():
    """Searching only the nearest-centroid triangles, or the BVH's closest triangle, gives the
    full search's energy and gradient on a fine mesh; where the closest triangle is not among
    the candidates, the distance comes out larger (the search is really restricted)."""
    trimesh = pytest.importorskip("trimesh")
    m = trimesh.creation.icosphere(3, radius=0.05)  # 1280 faces
    rng = np.random.default_rng(1)
    p = torch.tensor(m.sample(300, seed=1)[None].repeat(2, 0) + rng.normal(0, 0.003, (2, 300, 3)), dtype=torch.float32)
    valid = torch.ones(2, 300, dtype=torch.bool)
    valid[1, 200:] = False
    faces = torch.tensor(m.faces, dtype=torch.int64)
    res = []
    for k, search in ((0, "brute"), (64, "brute"), (0, "bvh")):
        verts = torch.tensor(m.vertices, dtype=torch.float32)[None].repeat(2, 1, 1)
        verts[1] *= 1.02  # frames differ, so a frame mix-up in the search would show
        verts.requires_grad_()
        e = E.point_to_surface_energy(p, valid, verts, faces, truncate=1.0, candidates=k, search=search)
        e.sum().backward()
        res.append((e.detach(), verts.grad))
    (e_all, g_all), (e_64, g_64), (e_bvh, g_bvh) = res
    assert torch.allclose(e_64, e_all, rtol=1e-5) and torch.allclose(g_64, g_all, atol=1e-6)
    # float32 near-ties between triangles that share an edge move a few gradients (measured 6e-4 of the largest)
    assert torch.allclose(e_bvh, e_all, rtol=1e-5) and torch.allclose(g_bvh, g_all, atol=2e-3 * g_all.abs().max().item())
    # a large triangle whose centroid is farther than a small one's: K = 1 misses it
    verts = torch.tensor([[[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0.015, 0.015, 0.01], [0.016, 0.015, 0.01], [0.015, 0.016, 0.01]]])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    q = torch.tensor([[[0.005, 0.005, 0.002]]])  # 0.2 cm above the large triangle
    one = torch.ones(1, 1, dtype=torch.bool)
    assert E.point_to_surface_energy(q, one, verts, tri, candidates=2).item() == pytest.approx(0.04, rel=1e-4)
    assert E.point_to_surface_energy(q, one, verts, tri, candidates=1).item() > 1.0  # the small one, ~1.4 cm


def test_temporal_energy_orders():
    t = torch.arange(4, dtype=torch.float64)[:, None] * torch.tensor([[0.01, 0.0, 0.0]], dtype=torch.float64)
    # constant velocity: first-order term only, charged to frames 1..3; no acceleration
    assert E.temporal_energy(t, 1.0, 0.0).tolist() == pytest.approx([0, 1e-4, 1e-4, 1e-4])
    assert E.temporal_energy(t, 0.0, 1.0).tolist() == pytest.approx([0, 0, 0, 0], abs=1e-15)
    jump = torch.tensor([[0.0], [0.0], [1.0], [1.0]], dtype=torch.float64)
    assert E.temporal_energy(jump, 0.0, 1.0).tolist() == pytest.approx([0, 0, 1.0, 1.0])
    assert E.temporal_energy(jump[:1]).tolist() == [0.0]
    assert np.isfinite(E.temporal_energy(jump).numpy()).all()


def test_penetration_energy_inside_only():
    # object: a plane of vertices z = 0 with normals +z (outside is z > 0)
    g = torch.linspace(-0.02, 0.02, 5)
    ov = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    ov = torch.cat([ov, torch.zeros(len(ov), 1)], 1)[None]
    on = torch.tensor([0.0, 0.0, 1.0]).expand_as(ov)
    hand = torch.tensor([[[0.0, 0.0, 0.01], [0.01, 0.0, -0.002], [0.0, 0.0, -0.5]]])  # outside, 2 mm in, far
    got = E.penetration_energy(hand, ov, on, w=5.0, radius=2.0).item()
    assert got == pytest.approx((np.exp(5.0 * 0.2) - 1.0) / 3, rel=1e-5)


def test_hand_in_object_frame_invariant_to_a_shared_rigid_motion():
    from scipy.spatial.transform import Rotation

    g = torch.Generator().manual_seed(0)
    wrist, t_obj = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    R_hand = torch.as_tensor(Rotation.random(2, random_state=1).as_matrix(), dtype=torch.float32)
    R_obj = torch.as_tensor(Rotation.random(2, random_state=2).as_matrix(), dtype=torch.float32)
    base = E.hand_in_object_frame(wrist, R_hand, R_obj, t_obj)
    # the same world motion of hand and object: no change (what a stable grasp looks like)
    M = torch.as_tensor(Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix(), dtype=torch.float32)
    d = torch.tensor([0.1, -0.05, 0.2])
    moved = E.hand_in_object_frame(wrist @ M.T + d, M @ R_hand, M @ R_obj, t_obj @ M.T + d)
    assert torch.allclose(base, moved, atol=1e-5)
    # the hand sliding 1 cm along the object (in its frame): the position part says exactly that
    slid = E.hand_in_object_frame(wrist + R_obj[:, :, 0] * 0.01, R_hand, R_obj, t_obj)
    assert torch.allclose(slid[:, :3] - base[:, :3], torch.tensor([0.01, 0.0, 0.0]).expand(2, 3), atol=1e-6)
    assert torch.allclose(slid[:, 3:], base[:, 3:])


def test_nearest_sq_dists_kdtree_matches_a_brute_force_search():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(3, 400, 3, generator=g) * 0.1
    verts = (torch.rand(3, 150, 3, generator=g) * 0.1).requires_grad_()
    d_kd = E.nearest_sq_dists(points, verts, "kdtree")
    # independent: every pairwise distance, then the minimum
    d_all = ((points[:, :, None] - verts[:, None]) ** 2).sum(-1).min(-1).values
    torch.testing.assert_close(d_kd, d_all, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(E.nearest_sq_dists(points, verts, "brute"), d_all, rtol=1e-5, atol=1e-10)
    (g_kd,) = torch.autograd.grad(d_kd.sum(), verts)
    (g_all,) = torch.autograd.grad(d_all.sum(), verts)
    torch.testing.assert_close(g_kd, g_all, rtol=1e-4, atol=1e-8)
    with pytest.raises(ValueError, match="expected auto, kdtree or brute"):
        E.nearest_sq_dists(points, verts, "fast")


@pytest.mark.parametrize("name", ["010_potted_meat_can", "003_cracker_box", "006_mustard_bottle"])
def test_penetration_against_surface_samples_reads_a_resting_hand_as_outside(shared_dir, name):
    """E_phy's object points (FitConfig.penetration_samples, ObjectModel.surface_samples) on
    real YCB meshes: points 1 mm outside the full-resolution surface read as outside, 2 mm inside
    as 2 mm deep. The decimated render mesh's vertices and averaged normals read more of the
    outside points as inside (what biased the fits before)."""
    from pytorch3d.structures import Meshes

    from hoannot.models.objects import load_object

    obj = load_object(str(shared_dir / "data" / "ycb" / name), max_faces=1000)
    surface, normal = obj.surface_samples(300, seed=7)  # other points than E_phy's (seed 0)
    samples = obj.surface_samples(4000)
    decimated = (obj.verts.numpy(), Meshes([obj.verts], [obj.faces]).verts_normals_padded()[0].numpy())

    def depth_mm(points: np.ndarray, obj_points: np.ndarray, obj_normals: np.ndarray) -> np.ndarray:
        h = torch.as_tensor(points)[:, None]  # one hand vertex per batch entry
        o, n = (torch.as_tensor(a)[None].expand(len(h), -1, -1) for a in (obj_points, obj_normals))
        return np.log1p(E.penetration_energy(h, o, n, w=5.0, radius=2.0).numpy()) / 5.0 * 10.0

    outside = surface + 1e-3 * normal
    wrong = (depth_mm(outside, *samples) > 0.1).mean()
    assert wrong <= 0.03
    assert (depth_mm(outside, *decimated) > 0.1).mean() > wrong
    inside = depth_mm(surface - 2e-3 * normal, *samples)
    assert np.median(inside) == pytest.approx(2.0, abs=0.1) and (inside > 0.1).mean() > 0.95


def test_rigid_point_to_surface_matches_trimesh_on_the_posed_full_mesh(shared_dir):
    """E_3D of the object against its full-resolution surface (RigidSurface, points moved into
    the object frame) equals trimesh's closest-point distances to the posed full mesh; its
    gradient moves a shifted object back; and on points of the true surface it reads less
    than the decimated render mesh (whose facets sit off that surface)."""
    trimesh = pytest.importorskip("trimesh")
    from pytorch3d.transforms import axis_angle_to_matrix

    from hoannot.models.objects import load_object

    obj = load_object(str(shared_dir / "data" / "ycb" / "010_potted_meat_can"), max_faces=1000)
    surface = E.RigidSurface(obj.mesh.vertices, obj.mesh.faces)
    rng = np.random.default_rng(3)
    local = obj.surface_samples(400, seed=5)[0] + rng.normal(0, 0.003, (400, 3)).astype(np.float32)
    R = axis_angle_to_matrix(torch.tensor(rng.normal(size=(2, 3)), dtype=torch.float32))
    t = torch.tensor(rng.normal(0, 0.2, (2, 3)), dtype=torch.float32)
    world = torch.einsum("bij,nj->bni", R, torch.as_tensor(local)) + t[:, None]
    valid = torch.ones(2, 400, dtype=torch.bool)
    valid[1, 300:] = False
    got = E.rigid_point_to_surface_energy(world, valid, R, t, surface, truncate=1.5)
    brute = E.rigid_point_to_surface_energy(world, valid, R, t, surface, truncate=1.5, search="brute")
    torch.testing.assert_close(brute, got, rtol=1e-4, atol=1e-7)
    for b in (0, 1):
        posed = trimesh.Trimesh(obj.mesh.vertices @ R[b].numpy().T + t[b].numpy(), obj.mesh.faces, process=False)
        _, d, _ = trimesh.proximity.closest_point(posed, world[b][valid[b]].numpy())
        assert got[b].item() == pytest.approx(np.minimum((d * 100) ** 2, 1.5**2).mean(), rel=1e-3)
    # the object shifted 5 mm along x: the gradient of t points back along x
    shift = torch.tensor([0.005, 0.0, 0.0])
    t_off = (t + shift).requires_grad_()
    E.rigid_point_to_surface_energy(world, valid, R, t_off, surface).sum().backward()
    assert (t_off.grad[:, 0] > 0).all() and (t_off.grad[:, 0].abs() > t_off.grad[:, 1:].abs().max(1).values).all()
    # noise-free points on the true surface: ~0 against it, more against the decimated mesh
    exact = torch.as_tensor(obj.surface_samples(400, seed=6)[0])[None]
    one = torch.ones(1, 400, dtype=torch.bool)
    eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
    full = E.rigid_point_to_surface_energy(exact, one, eye, zero, surface).item()
    decimated = E.point_to_surface_energy(exact, one, obj.verts[None], obj.faces, search="bvh").item()
    assert full < 1e-6 and decimated > 100 * max(full, 1e-8)
