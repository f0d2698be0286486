"""Hand-object physics metrics on shapes with known answers (hoannot.evaluation.physics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from hoannot.evaluation import physics as P

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MUSTARD = SHARED / "data" / "ycb" / "006_mustard_bottle"

BOX = trimesh.creation.box(extents=[0.1, 0.1, 0.1])  # object: 10 cm cube at the origin


def sphere_at(z, r=0.02):
    s = trimesh.creation.uv_sphere(radius=r, count=[32, 32])  # poles on the z axis
    s.apply_translation([0, 0, z])
    return s


def test_winding_number_closed_and_holed_cube():
    pts = np.array([[0, 0, 0], [0.2, 0, 0], [0.049, 0.049, -0.049], [0, 0, 0.06]])
    w = P.winding_number(pts, BOX.vertices, BOX.faces)
    np.testing.assert_allclose(w, [1, 0, 1, 0], atol=1e-9)
    # remove one of the 12 triangles: from the centre it covered 1/12 of the sphere
    holed = BOX.faces[1:]
    assert P.winding_number(np.zeros((1, 3)), BOX.vertices, holed)[0] == pytest.approx(11 / 12)
    assert P.inside(np.array([[0, 0, 0], [0, 0, 0.2]]), BOX.vertices, holed).tolist() == [True, False]
    # reversed orientation flips the sign
    assert P.winding_number(np.zeros((1, 3)), BOX.vertices, BOX.faces[:, ::-1])[0] == pytest.approx(-1)


def test_sphere_pushed_into_box_penetration():
    # sphere of radius 2 cm whose lowest point (a pole) is 1 cm below the box's top face (z=0.05)
    s = sphere_at(0.05 + 0.02 - 0.01)
    assert P.penetration_depth(s.vertices, BOX.vertices, BOX.faces) == pytest.approx(0.01, abs=1e-9)
    assert P.contact(s.vertices, BOX.vertices, BOX.faces)
    # touching from 3 mm above: no penetration, still contact; 8 mm above: no contact
    assert P.penetration_depth(sphere_at(0.073).vertices, BOX.vertices, BOX.faces) == 0.0
    assert P.contact(sphere_at(0.073).vertices, BOX.vertices, BOX.faces)
    assert not P.contact(sphere_at(0.078).vertices, BOX.vertices, BOX.faces)
    # fully inside: contact although no vertex is within 5 mm of the surface
    inner = trimesh.creation.icosphere(subdivisions=1, radius=0.01)
    assert P.contact(inner.vertices, BOX.vertices, BOX.faces)
    # inside an axis-aligned box the distance to the surface is 0.05 - max_i |v_i|
    expected = np.max(0.05 - np.abs(inner.vertices).max(axis=1))
    assert P.penetration_depth(inner.vertices, BOX.vertices, BOX.faces) == pytest.approx(expected, abs=1e-12)


def test_intersection_volume_box_exact():
    # hand = 2 cm cube overlapping the object by a 1 x 2 x 2 cm slab aligned with the 5 mm grid
    hand = trimesh.creation.box(extents=[0.02, 0.02, 0.02])
    hand.apply_translation([0.05, 0, 0])  # spans x in [0.04, 0.06]
    vol = P.intersection_volume(hand.vertices, hand.faces, BOX.vertices, BOX.faces)
    assert vol * 1e6 == pytest.approx(4.0)  # cm^3
    # model-frame voxelisation: same answer with both meshes moved by a rigid transform
    T = trimesh.transformations.rotation_matrix(0.7, [1, 2, 3])
    T[:3, 3] = [0.3, -0.1, 0.5]
    vol2 = P.intersection_volume(
        trimesh.transform_points(hand.vertices, T), hand.faces, BOX.vertices, BOX.faces, obj_frame=(T[:3, :3], T[:3, 3])
    )
    assert vol2 == pytest.approx(vol)
    far = hand.copy()
    far.apply_translation([0.5, 0, 0])
    assert P.intersection_volume(far.vertices, far.faces, BOX.vertices, BOX.faces) == 0.0


def test_intersection_volume_sphere_cap():
    # spherical cap of height h=1 cm on a 2 cm sphere: pi h^2 (3r - h) / 3 = 5.236 cm^3
    s = sphere_at(0.06)
    cap = np.pi * 1.0**2 * (3 * 2.0 - 1.0) / 3
    fine = P.intersection_volume(s.vertices, s.faces, BOX.vertices, BOX.faces, pitch=0.002) * 1e6
    assert fine == pytest.approx(cap, rel=0.1)
    coarse = P.intersection_volume(s.vertices, s.faces, BOX.vertices, BOX.faces) * 1e6
    assert coarse == pytest.approx(cap, rel=0.35)
    # an open hand mesh (a cap of faces cut off the far side, like MANO's wrist) gives the same count
    keep = s.triangles_center[:, 2] < 0.06 + 0.018  # remove faces near the top pole (away from the box)
    assert (~keep).any()
    opened = P.intersection_volume(s.vertices, s.faces[keep], BOX.vertices, BOX.faces) * 1e6
    assert opened == pytest.approx(coarse)


@pytest.mark.skipif(not MUSTARD.is_dir(), reason="../shared YCB models not available")
def test_mustard_bottle_with_holes():
    obj = next(MUSTARD.glob("*.obj"))
    m = trimesh.load(obj, force="mesh", process=False)
    m = trimesh.Trimesh(m.vertices, m.faces, process=True)  # merge texture-seam duplicates
    assert not m.is_watertight
    centre = m.bounds.mean(0)
    ext = m.extents
    inside_pts = centre + np.array([[0, 0, 0], [0, 0, 0.25 * ext[2]], [0, 0, -0.25 * ext[2]]])
    outside_pts = centre + np.array([[ext[0], 0, 0], [0, 0, ext[2]], [0, -ext[1], 0]])
    w = P.winding_number(np.concatenate([inside_pts, outside_pts]), m.vertices, m.faces)
    assert np.all(w[:3] > 0.9) and np.all(np.abs(w[3:]) < 0.1)
    # a small sphere pushed 1 cm into the bottle's side along -x
    x_surf = m.bounds[1, 0]
    ray_o = np.array([[x_surf + 0.05, centre[1], centre[2]]])
    hit = m.ray.intersects_location(ray_o, np.array([[-1.0, 0, 0]]))[0]
    x_hit = hit[:, 0].max()
    ball = trimesh.creation.uv_sphere(radius=0.01, count=[16, 16])
    ball.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))  # poles on x
    ball.apply_translation([x_hit + 0.01 - 0.004, centre[1], centre[2]])
    depth = P.penetration_depth(ball.vertices, m.vertices, m.faces)
    assert 0.002 < depth < 0.006
    assert P.contact(ball.vertices, m.vertices, m.faces)


def test_fast_winding_number_matches_exact():
    rng = np.random.default_rng(0)
    s = trimesh.creation.icosphere(subdivisions=3, radius=0.04)  # 1280 faces
    holed = s.faces[s.triangles_center[:, 2] < 0.035]  # open cap, like a wrist
    p = rng.uniform(-0.05, 0.05, (1500, 3))
    for faces in (s.faces, holed):
        exact = P.winding_number(p, s.vertices, faces)
        fast = P.fast_winding_number(p, s.vertices, faces)
        assert np.abs(exact - fast).max() < 0.05
        assert np.array_equal(exact > 0.5, fast > 0.5)
