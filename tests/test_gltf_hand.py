"""GltfHand: glTF parsing, bind pose, forward kinematics and skinning of the WebXR hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from hoannot.io import InputError
from hoannot.models.gltf_hand import JOINT_NAMES, GltfHand

GLB = Path(__file__).resolve().parents[2] / "shared" / "data" / "hands" / "webxr_generic_hand" / "right.glb"
pytestmark = pytest.mark.skipif(not GLB.is_file(), reason="../shared WebXR hand not available")


@pytest.fixture(scope="module")
def hand() -> GltfHand:
    return GltfHand.from_file(GLB)


def _identity():
    return np.tile(np.eye(3), (25, 1, 1))


def test_bind_pose_reproduces_glb_mesh(hand):
    # trimesh is an independent glTF reader; this mesh node has no transform of its own
    scene = trimesh.load(GLB, force="scene")
    (name, geom), = scene.geometry.items()
    node = scene.graph.geometry_nodes[name][0]
    T, _ = scene.graph[node]
    ref = trimesh.transform_points(geom.vertices, T)
    assert np.allclose(T, np.eye(4))
    verts, joints = hand.pose(_identity())
    assert verts.shape == (1360, 3) and hand.faces.shape == (2314, 3)
    assert np.abs(verts - ref).max() < 1e-6
    assert np.array_equal(hand.faces, geom.faces)
    # joint positions = world translations of the named nodes in trimesh's scene graph
    for j, n in enumerate(JOINT_NAMES):
        assert np.allclose(joints[j], scene.graph[n][0][:3, 3], atol=1e-7), n
    # inverse bind matrices undo the rest world matrices
    assert np.abs(hand.rest_world @ hand.inverse_bind - np.eye(4)).max() < 1e-5


def test_skin_data(hand):
    assert hand.skin_weights.shape == (1360, 4) and hand.skin_joints.shape == (1360, 4)
    assert np.allclose(hand.skin_weights.sum(1), 1.0)
    assert list(hand.parents[:5]) == [-1, 0, 1, 2, 3]
    assert all(hand.joint_names[hand.parents[j]].split("-")[0] in (hand.joint_names[j].split("-")[0], "wrist")
               for j in range(1, 25))


def test_wrist_rotation_is_rigid_about_the_wrist(hand):
    r = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
    rots = _identity()
    rots[0] = r
    verts, joints = hand.pose(rots)
    Rw = hand.rest_world[0, :3, :3]
    r_world = Rw @ r @ Rw.T  # local rotation expressed in the model frame
    w = hand.rest_world[0, :3, 3]
    expect = (hand.rest_vertices - w) @ r_world.T + w
    assert np.abs(verts - expect).max() < 1e-7  # float32 inverse bind matrices
    assert np.abs(joints - ((hand.rest_world[:, :3, 3] - w) @ r_world.T + w)).max() < 1e-9


def test_distal_joint_moves_only_its_vertices(hand):
    j = JOINT_NAMES.index("index-finger-phalanx-distal")
    rots = _identity()
    rots[j] = Rotation.from_rotvec([0.7, 0.0, 0.0]).as_matrix()
    verts, joints = hand.pose(rots)
    on = np.isin(hand.skin_joints, [j, j + 1]) & (hand.skin_weights > 0)
    untouched = ~on.any(1)
    assert np.abs(verts[untouched] - hand.rest_vertices[untouched]).max() < 1e-7
    assert np.abs(joints[:j + 1] - hand.rest_world[: j + 1, :3, 3]).max() < 1e-12
    full = (hand.skin_weights * on).sum(1) > 0.999
    assert full.sum() > 10
    # vertices fully bound to the distal joint keep their distance to it
    d0 = np.linalg.norm(hand.rest_vertices[full] - hand.rest_world[j, :3, 3], axis=1)
    d1 = np.linalg.norm(verts[full] - joints[j], axis=1)
    assert np.abs(d0 - d1).max() < 1e-7
    assert np.abs(verts[full] - hand.rest_vertices[full]).max() > 0.005


def test_errors_name_the_file(tmp_path, hand):
    with pytest.raises(InputError, match="missing.glb"):
        GltfHand.from_file(tmp_path / "missing.glb")
    bad = tmp_path / "garbage.glb"
    bad.write_bytes(b"not a gltf file at all")
    with pytest.raises(InputError, match="garbage.glb"):
        GltfHand.from_file(bad)
    box = tmp_path / "box.glb"
    trimesh.creation.box().export(box)
    with pytest.raises(InputError, match="box.glb.*skinned"):
        GltfHand.from_file(box)
    with pytest.raises(InputError, match="local_rotations"):
        hand.pose(np.eye(3)[None])
