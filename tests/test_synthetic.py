"""Synthetic captures: sensor model, and ground truth consistent with the rendered depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from hoannot.io import InputError, read_image
from hoannot.datasets.poses import GroundTruth
from hoannot.synthesis.subjects import make_subject
from hoannot.synthesis.capture import SynthConfig, sensor_depth
from hoannot.models.hand import HandModel
from hoannot.models.objects import load_object
from hoannot.pipeline import synth_sequence

from conftest import WEBXR_RIGHT, YCB

BOX = "primitive:box:0.05,0.07,0.1"


def test_sensor_noise_grows_with_depth_as_modelled():
    rng = np.random.default_rng(0)
    cfg = SynthConfig(dropout=0.0, depth_scale=2e-5)  # fine quantisation (1 m = 50000 units): measure the noise
    for z in (0.5, 1.0):
        raw = sensor_depth(np.full((200, 200), z), cfg, rng)
        got = (raw.astype(np.float64) * cfg.depth_scale).std()
        assert got == pytest.approx(0.0012 + 0.0019 * (z - 0.4) ** 2, rel=0.05)  # Nguyen et al. Eq. 5


def test_quantisation_and_edge_holes():
    rng = np.random.default_rng(1)
    depth = np.full((20, 30), 0.6)
    depth[:, 15:] = 0.9  # a 30 cm step between columns 14 and 15
    clean = sensor_depth(depth, SynthConfig(noise=False, depth_scale=5e-4), rng)
    assert clean.dtype == np.uint16
    assert np.abs(clean * 5e-4 - depth).max() <= 2.5e-4 + 1e-12
    holes = sensor_depth(depth, SynthConfig(noise=True, edge_dropout=1.0, dropout=0.0), rng) == 0
    expected = np.zeros_like(holes)
    expected[:, 14:16] = True  # both sides of the discontinuity, nothing else
    np.testing.assert_array_equal(holes, expected)


def _distance_to_mesh(points, vertices, faces):
    _, d, _ = trimesh.proximity.closest_point(trimesh.Trimesh(vertices, faces, process=False), points)
    return d


def test_depth_pixels_lie_on_the_ground_truth_meshes(tmp_path):
    """Back-project each labelled depth pixel with K and T_world_cam: hand pixels must lie on
    the ground-truth hand mesh, object pixels on the object mesh moved by its ground-truth pose."""
    seq = synth_sequence(tmp_path / "s", BOX, "open", cameras=2, frames=2, seed=0, noise=False,
                         width=96, height=72, focal=90.0)  # fmt: skip
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    obj = load_object(BOX)
    for fi, frame in enumerate(seq.frames):
        R = Rotation.from_rotvec(gt.obj_rot[fi]).as_matrix()
        for cam in seq.cameras:
            depth = seq.read_depth(cam.name, frame)
            label = read_image(seq.root / "gt" / "segmentation" / cam.name / f"{frame:06d}.png")
            v, u = np.nonzero((depth > 0) & (label > 0))
            pc = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u, float)], -1)
            pc = pc * depth[v, u, None]
            pw = pc @ cam.T_world_cam[:3, :3].T + cam.T_world_cam[:3, 3]
            hand, objm = label[v, u] == 1, label[v, u] == 2
            assert hand.sum() > 20 and objm.sum() > 20
            d_hand = _distance_to_mesh(pw[hand], gt.hand_vertices[fi], gt.hand_faces)
            d_obj = _distance_to_mesh((pw[objm] - gt.obj_transl[fi]) @ R, obj.mesh.vertices, obj.mesh.faces)
            # quantisation (0.25 mm) + float32 depth; a pixel centre ray hits exactly the surface
            assert np.percentile(d_hand, 99) < 1e-3 and np.percentile(d_obj, 99) < 1e-3


def test_open_hand_ground_truth_parameters_reproduce_the_joints(tmp_path):
    seq = synth_sequence(tmp_path / "s", BOX, "open", cameras=1, frames=3, seed=2, noise=False, width=64, height=48, focal=60.0)
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    p = gt.hand_params
    out = HandModel(None)(*(torch.as_tensor(np.asarray(a), dtype=torch.float32)
                            for a in (p.global_orient, p.hand_pose, p.betas, p.transl)))  # fmt: skip
    np.testing.assert_allclose(out.joints.numpy(), gt.hand_joints, atol=1e-5)
    with pytest.raises(InputError, match="already holds a sequence"):
        synth_sequence(tmp_path / "s", BOX, "open", cameras=1, frames=3)


@pytest.mark.parametrize("hand", ["open", "webxr"])
def test_grasp_touches_without_passing_through(shared_dir, hand):
    obj = load_object(str(YCB / "006_mustard_bottle"), max_faces=4000)
    subject = make_subject("open" if hand == "open" else str(WEBXR_RIGHT), obj, seed=0)
    mesh = obj.mesh
    signed = trimesh.proximity.signed_distance(mesh, subject.vertices)  # > 0 inside (trimesh)
    assert signed.max() < 0.003  # penetration below 3 mm
    assert (np.abs(signed) < 0.003).sum() >= 20  # real contact, not a hand hovering nearby
    tips = subject.keypoints[16:21]
    assert np.sort(np.abs(trimesh.proximity.signed_distance(mesh, tips)))[2] < 0.02  # 3 fingertips near the surface
