"""Initial poses for ``hoannot fit``: from a file, or from ground truth plus noise.

Perception-based initialisation (2D joints, segmentation) is the job of a later stage;
until then ``hoannot init`` says which of these it used (``HandObjectPoses.source``).

* ``from_file``: a ``.npz`` written by :meth:`HandObjectPoses.save` (world frame).
* ``from_ground_truth``: the synthetic capture's ground truth, perturbed. When the
  capture was rendered with a hand that is not the fitting model (e.g. the WebXR rig),
  the model's parameters are first fitted to the ground-truth keypoints
  (:func:`hoannot.fitting.ik.fit_keypoints`); then every frame gets an independent
  rigid perturbation of the hand (rotation about the wrist, translation) and of the
  object (rotation about its centroid, translation) of the stated sizes, and Gaussian
  noise on the finger angles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hoannot.io import InputError
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.fitting.ik import fit_keypoints
from hoannot.models.hand import HandModel


def from_file(path: str | Path) -> HandObjectPoses:
    """Read initial poses (world frame).

    Raises:
        InputError: missing or malformed file.
    """
    poses = HandObjectPoses.load(path)
    poses.source = f"file:{Path(path).name}"
    return poses


def _random_rotations(rng: np.random.Generator, n: int, angle_rad: float) -> Rotation:
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return Rotation.from_rotvec(axes * angle_rad)


def _random_offsets(rng: np.random.Generator, n: int, norm: float) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True) * norm


def from_ground_truth(
    gt: GroundTruth,
    hand_model: HandModel,
    object_centroid: np.ndarray,
    rot_deg: float = 10.0,
    transl_mm: float = 15.0,
    pose_noise_rad: float = 0.1,
    seed: int = 0,
) -> HandObjectPoses:
    """Ground-truth poses with a controlled perturbation.

    Args:
        gt: ground truth of the capture.
        hand_model: the model that will be fitted.
        object_centroid: (3,) object-frame centre the object noise rotates about.
        rot_deg: rotation error of hand (about the wrist) and object, degrees, every frame.
        transl_mm: translation error of hand and object, millimetres, every frame.
        pose_noise_rad: std of Gaussian noise on the 45 finger angles, radians.
        seed: random seed.
    A frame whose ground truth has no hand (non-finite keypoints: DexYCB labels frames
    before the hand enters the view so) starts from the hand of the nearest labelled frame;
    ``source`` counts them.

    Returns:
        world-frame poses; ``source`` says what was done.
    Raises:
        InputError: ground truth without any frame of finite hand keypoints.
    """
    F = len(gt.frames)
    labelled = (np.isfinite(gt.hand_joints).reshape(F, -1).all(1) if gt.hand_joints.size else np.zeros(F, bool))
    if not labelled.any():
        raise InputError("ground truth has no (finite) hand keypoints to initialise from")
    idx = np.flatnonzero(labelled)
    nearest = idx[np.abs(np.arange(F)[:, None] - idx[None]).argmin(1)]  # (F,) the labelled frame each one starts from
    rng = np.random.default_rng(seed)
    params = gt.hand_params
    if params is not None and gt.hand_model == hand_model.name and np.isfinite(params.hand_pose[idx]).all():
        go, pose, transl = params.global_orient[nearest], params.hand_pose[nearest], params.transl[nearest]
        betas = params.betas
        how = "ground-truth parameters"
    else:
        ik = fit_keypoints(hand_model, gt.hand_joints[idx])
        at = np.searchsorted(idx, nearest)
        go, pose, transl, betas = ik["global_orient"][at], ik["hand_pose"][at], ik["transl"][at], ik["betas"]
        how = f"model fitted to ground-truth keypoints ({float(ik['mpjpe_mm'].mean()):.1f} mm)"
    if not labelled.all():
        how += f"; {F - len(idx)} of {F} frames without a hand label start from the nearest labelled frame"
    # hand: rotate about the posed wrist joint, then translate
    import torch

    with torch.no_grad():
        out = hand_model(torch.as_tensor(go), torch.as_tensor(pose), torch.as_tensor(betas), torch.as_tensor(transl))
        wrist = out.joints[:, 0].numpy().astype(np.float64)
        J0 = hand_model.root_joint(torch.as_tensor(betas)).numpy()[0].astype(np.float64)
    dR = _random_rotations(rng, F, np.deg2rad(rot_deg))
    go_n = (dR * Rotation.from_rotvec(go)).as_rotvec()
    # wrist = J0 + transl; keep it fixed under the rotation, then shift
    transl_n = wrist - J0 + _random_offsets(rng, F, transl_mm / 1000)
    pose_n = pose + rng.normal(0, pose_noise_rad, pose.shape)
    lo, hi = hand_model.limits.lower, hand_model.limits.upper
    pose_n = np.clip(pose_n, lo, hi)
    # object: rotate about its centroid, then shift
    R = Rotation.from_rotvec(gt.obj_rot)
    oR = _random_rotations(rng, F, np.deg2rad(rot_deg)) * R
    c_world = R.apply(object_centroid) + gt.obj_transl
    obj_t = c_world - oR.apply(object_centroid) + _random_offsets(rng, F, transl_mm / 1000)
    return HandObjectPoses(
        frames=gt.frames,
        global_orient=go_n,
        hand_pose=pose_n,
        betas=betas,
        transl=transl_n,
        obj_rot=oR.as_rotvec(),
        obj_transl=obj_t,
        source=f"ground truth + noise ({rot_deg:g} deg, {transl_mm:g} mm, {pose_noise_rad:g} rad; hand: {how})",
    )
