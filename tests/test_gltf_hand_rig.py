"""HandRig: HO-3D keypoints of the WebXR hand, flexion/abduction directions, palm frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from hoannot.io import InputError
from hoannot.models.rig import HO3D_FINGER_CHAINS, HandRig

GLB = Path(__file__).resolve().parents[2] / "shared" / "data" / "hands" / "webxr_generic_hand" / "right.glb"
pytestmark = pytest.mark.skipif(not GLB.is_file(), reason="../shared WebXR hand not available")

# HO-3D keypoints 0..15 written out by WebXR joint name (independent of the module's table)
HO3D_NAMES = [
    "wrist",
    "index-finger-phalanx-proximal", "index-finger-phalanx-intermediate", "index-finger-phalanx-distal",
    "middle-finger-phalanx-proximal", "middle-finger-phalanx-intermediate", "middle-finger-phalanx-distal",
    "pinky-finger-phalanx-proximal", "pinky-finger-phalanx-intermediate", "pinky-finger-phalanx-distal",
    "ring-finger-phalanx-proximal", "ring-finger-phalanx-intermediate", "ring-finger-phalanx-distal",
    "thumb-metacarpal", "thumb-phalanx-proximal", "thumb-phalanx-distal",
]
TIP_NAMES = ["thumb-tip", "index-finger-tip", "middle-finger-tip", "ring-finger-tip", "pinky-finger-tip"]
TIPS = [16, 17, 18, 19, 20]


@pytest.fixture(scope="module")
def rig() -> HandRig:
    return HandRig.from_file(GLB)


@pytest.fixture(scope="module")
def scene():
    return trimesh.load(GLB, force="scene")


def test_keypoints_follow_ho3d_order(rig, scene):
    out = rig.articulate(np.zeros((5, 3)))
    kp = out.keypoints
    for i, name in enumerate(HO3D_NAMES):
        assert np.allclose(kp[i], scene.graph[name][0][:3, 3], atol=1e-7), name
    for finger, chain in HO3D_FINGER_CHAINS.items():
        pts = kp[[0, *chain]]
        axis = pts[-1] - pts[1]
        along = (pts - pts[1]) @ axis / np.linalg.norm(axis)
        assert np.all(np.diff(along) > 0.01), finger  # wrist -> base -> ... -> tip, monotonic
        bones = np.linalg.norm(np.diff(pts[1:], axis=0), axis=1)
        assert np.all((bones > 0.02) & (bones < 0.05)), (finger, bones)
    # wrist -> finger MCP 7-10 cm, thumb CMC 3-6 cm
    assert np.all((np.linalg.norm(kp[[1, 4, 7, 10]] - kp[0], axis=1) > 0.07)
                  & (np.linalg.norm(kp[[1, 4, 7, 10]] - kp[0], axis=1) < 0.10))
    assert 0.03 < np.linalg.norm(kp[13] - kp[0]) < 0.06


def test_tip_keypoints_are_fingertip_surface_points(rig, scene):
    out = rig.articulate(np.zeros((5, 3)))
    v = out.vertices
    for k, name in zip(TIPS, TIP_NAMES):
        tip_joint = scene.graph[name][0][:3, 3]
        assert np.linalg.norm(v - out.keypoints[k], axis=1).min() < 1e-9  # on the mesh
        assert np.linalg.norm(out.keypoints[k] - tip_joint) < 0.02  # near the WebXR tip joint
        # nothing of the mesh lies further along the distal bone than the tip keypoint
        d = tip_joint - out.joints[rig.hand.joint_names.index(name) - 1]
        d /= np.linalg.norm(d)
        near = np.linalg.norm(v - tip_joint, axis=1) < 0.02
        assert (v[near] @ d).max() <= out.keypoints[k] @ d + 1e-9


def test_palm_frame_matches_mesh_normals(rig):
    m = trimesh.Trimesh(rig.hand.rest_vertices, rig.hand.faces, process=False)
    near = np.linalg.norm(m.vertices - rig.palm_centre, axis=1) < 0.015
    assert near.sum() >= 5
    assert (m.vertex_normals[near] @ rig.palm_normal).mean() > 0.7
    assert np.linalg.norm(m.vertices - rig.palm_centre, axis=1).min() < 0.01


def test_flexion_curls_towards_the_palm(rig):
    rest = rig.articulate(np.zeros((5, 3)))
    n, c = rig.palm_normal, rig.palm_centre
    for fi in range(1, 5):
        for k in range(3):
            flex = np.zeros((5, 3))
            flex[fi, k] = 0.6
            out = rig.articulate(flex)
            tip = TIPS[fi]
            assert (out.keypoints[tip] - rest.keypoints[tip]) @ n > 0.003, (fi, k)
            # rigid bones: lengths along the chain unchanged
            chain = [0, *list(HO3D_FINGER_CHAINS.values())[fi]]
            for a, b in zip(chain[1:-1], chain[2:]):
                assert np.isclose(np.linalg.norm(out.keypoints[b] - out.keypoints[a]),
                                  np.linalg.norm(rest.keypoints[b] - rest.keypoints[a]), atol=1e-6)
    # a full fist brings all fingertips close to the palm, the thumb opposes (moves to the palm)
    fist = rig.articulate(np.array([[0.8, 0.6, 0.8]] + [[1.5, 1.6, 1.0]] * 4))
    d_rest = np.linalg.norm(rest.keypoints[TIPS] - c, axis=1)
    d_fist = np.linalg.norm(fist.keypoints[TIPS] - c, axis=1)
    assert np.all(d_fist < d_rest - 0.02), (d_rest, d_fist)
    assert np.all(d_fist[1:] < 0.07)


def test_spread_separates_fingers(rig):
    kp0 = rig.articulate(np.zeros((5, 3))).keypoints
    kp1 = rig.articulate(np.zeros((5, 3)), np.full(5, 0.25)).keypoints
    dist = lambda kp, a, b: np.linalg.norm(kp[a] - kp[b])  # noqa: E731
    kp_thumb = rig.articulate(np.zeros((5, 3)), np.array([0.25, 0, 0, 0, 0])).keypoints
    assert dist(kp_thumb, 16, 17) > dist(kp0, 16, 17) + 0.01  # thumb away from index
    kp_index = rig.articulate(np.zeros((5, 3)), np.array([0, 0.25, 0, 0, 0])).keypoints
    assert dist(kp_index, 17, 18) > dist(kp0, 17, 18) + 0.01  # index away from middle
    kp_pinky = rig.articulate(np.zeros((5, 3)), np.array([0, 0, 0, 0, 0.25])).keypoints
    assert dist(kp_pinky, 19, 20) > dist(kp0, 19, 20) + 0.01  # pinky away from ring
    kp_ring = rig.articulate(np.zeros((5, 3)), np.array([0, 0, 0, 0.25, 0])).keypoints
    assert dist(kp_ring, 18, 19) > dist(kp0, 18, 19) + 0.01  # ring away from middle
    assert dist(kp1, 17, 20) > dist(kp0, 17, 20) + 0.02  # index - pinky
    # abduction is a rotation about the palm normal: tips stay at the same palm height
    n = rig.palm_normal
    assert np.allclose((kp1[TIPS[1:]] - kp1[0]) @ n, (kp0[TIPS[1:]] - kp0[0]) @ n, atol=0.005)


def test_rigid_transform_and_errors(rig):
    rng = np.random.default_rng(0)
    flex, spread = rng.uniform(0, 0.8, (5, 3)), rng.uniform(-0.1, 0.1, 5)
    R, t = Rotation.random(random_state=1).as_matrix(), np.array([0.1, -0.2, 0.5])
    a, b = rig.articulate(flex, spread), rig.articulate(flex, spread, R, t)
    assert np.allclose(b.vertices, a.vertices @ R.T + t)
    assert np.allclose(b.keypoints, a.keypoints @ R.T + t)
    assert np.allclose(b.palm_normal, R @ a.palm_normal)
    with pytest.raises(InputError, match="flex"):
        rig.articulate(np.zeros((5, 2)))
    with pytest.raises(InputError, match="non-finite"):
        rig.articulate(np.full((5, 3), np.nan))
