"""Export: HO-3D meta files (OpenGL camera frame) and labels.npz against the ground truth."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoannot.datasets.export import export_labels
from hoannot.datasets.poses import GroundTruth
from hoannot.evaluation.report import run_eval
from hoannot.models.hand import HandModel
from hoannot.models.objects import load_object
from hoannot.pipeline import synth_sequence

BOX = "primitive:box:0.05,0.07,0.1"
GL = np.diag([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Ground-truth poses of an open-hand capture exported as labels."""
    root = tmp_path_factory.mktemp("export") / "seq"
    seq = synth_sequence(root, BOX, "open", cameras=2, frames=2, seed=3, noise=False, width=64, height=48, focal=60.0)
    gt = GroundTruth.load(root / "gt" / "poses.npz")
    hand, obj = HandModel(None), load_object(BOX)
    path = export_labels(seq, gt.hand_params, hand, obj, root / "labels")
    return seq, gt, hand, obj, path


def test_labels_npz_reproduces_the_ground_truth(exported):
    seq, gt, _, _, path = exported
    z = np.load(path)
    np.testing.assert_allclose(z["hand_joints"], gt.hand_joints, atol=1e-5)
    assert str(z["joint_order"]) == "ho3d"
    res = run_eval(seq.root, seq.root)
    assert res["mpjpe_mm"] < 0.01 and res["add_mm"] < 0.01


def test_ho3d_meta_joints_project_onto_the_ground_truth_2d_joints(exported):
    seq, gt, _, _, _ = exported
    for cam in seq.cameras:
        kp = np.load(seq.root / "gt" / "keypoints2d" / f"{cam.name}.npz")
        for i, frame in enumerate(seq.frames):
            meta = pickle.loads((seq.root / "labels" / "ho3d" / cam.name / "meta" / f"{frame:04d}.pkl").read_bytes())
            j = meta["handJoints3D"].astype(np.float64)
            assert (j[:, 2] < 0).all()  # OpenGL: the camera looks down -z
            p = j @ GL.T  # back to OpenCV, as HO-3D's own projection code does
            uv = p @ meta["camMat"].T.astype(np.float64)
            np.testing.assert_allclose(uv[:, :2] / uv[:, 2:], kp["uv"][i], atol=1e-2)


def test_ho3d_meta_poses_are_consistent_in_the_camera_frame(exported):
    seq, gt, hand, obj, _ = exported
    cam = seq.cameras[1]
    T = cam.T_cam_world
    for i, frame in enumerate(seq.frames):
        meta = pickle.loads((seq.root / "labels" / "ho3d" / cam.name / "meta" / f"{frame:04d}.pkl").read_bytes())
        # the hand parameters, re-posed in the camera frame, give the exported joints
        hp = torch.as_tensor(meta["handPose"][None], dtype=torch.float32)
        out = hand(hp[:, :3], hp[:, 3:], torch.as_tensor(meta["handBeta"]), torch.as_tensor(meta["handTrans"][None]))
        np.testing.assert_allclose(out.joints[0].numpy(), meta["handJoints3D"], atol=1e-5)
        # objRot/objTrans move model points to where the ground truth puts them in this camera
        R_gt = Rotation.from_rotvec(gt.obj_rot[i]).as_matrix()
        world = obj.points @ R_gt.T + gt.obj_transl[i]
        cv = world @ T[:3, :3].T + T[:3, 3]
        gl = obj.points @ Rotation.from_rotvec(meta["objRot"][:, 0]).as_matrix().T + meta["objTrans"]
        np.testing.assert_allclose(gl, cv @ GL.T, atol=1e-5)
        assert meta["objName"] == obj.name
