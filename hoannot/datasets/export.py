"""Export fitted poses as labels: HO-3D meta files per camera, and one ``.npz`` of everything.

``labels/``::

    labels.npz                    everything, world frame (OpenCV axes), HO-3D joint order
    ho3d/<cam>/meta/<frame:04d>.pkl  HO-3D style per-frame labels, that camera's OpenGL frame

HO-3D meta keys (HO-3D v2/v3 layout; OpenGL camera coordinates: y up, z backwards,
i.e. ``diag(1, -1, -1)`` times OpenCV coordinates; metres):
``handPose`` (48,) global_orient then hand_pose, absolute axis-angle (flat hand = 0,
smplx ``flat_hand_mean=True``); ``handBeta`` (10,); ``handTrans`` (3,);
``handJoints3D`` (21, 3) HO-3D order; ``objRot`` (3, 1) axis-angle; ``objTrans`` (3,);
``objName``; ``objCorners3DRest`` (8, 3) object-frame bounding-box corners;
``objCorners3D`` (8, 3) in the camera; ``camMat`` (3, 3); plus hoannot's quality fields
``fitQuality`` (dict of per-frame values) and ``handModel`` (which hand model the
parameters belong to).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hoannot.io import replace_dir, write_npz, write_pickle
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.sequence import Sequence
from hoannot.models.hand import HandModel, change_frame
from hoannot.models.objects import ObjectModel

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])


def _corners(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(0), points.max(0)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], np.float32)


def export_labels(
    seq: Sequence,
    poses: HandObjectPoses,
    hand_model: HandModel,
    obj: ObjectModel,
    out_dir: str | Path,
    quality: dict[str, np.ndarray] | None = None,
    ho3d: bool = True,
    then: Callable[[Path], Any] | None = None,
) -> Path:
    """Write ``labels.npz`` and (with ``ho3d``) HO-3D meta files for every camera and frame.

    Args:
        seq: the sequence (cameras, object name).
        poses: world-frame poses (e.g. ``fit/poses.npz``).
        hand_model: the model the hand parameters belong to.
        obj: the object model (its full mesh vertices are exported for ADD).
        out_dir: the ``labels/`` folder.
        quality: per-frame fit quality (``FitResult.quality``), exported alongside.
        ho3d: also write ``ho3d/<cam>/meta/*.pkl`` (False: ``labels.npz`` only, e.g. for
            ``export --format dexycb``).
        then: called with the folder being written after the labels (e.g. another format's
            files in a subfolder), so that they too are all or none.
    Returns:
        path of ``labels.npz``.
    Raises:
        OSError: a file could not be written (names it); ``out_dir`` then keeps its previous
            content (the labels are written to a staging folder that replaces it,
            :func:`hoannot.io.replace_dir`).
    """
    def fill(staging: Path) -> Path:
        labels = _export(seq, poses, hand_model, obj, staging, quality, ho3d)
        if then is not None:
            then(staging)
        return labels

    return replace_dir(out_dir, fill)


def _export(seq, poses, hand_model, obj, out: Path, quality, ho3d: bool) -> Path:
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    betas = t(poses.betas)
    with torch.no_grad():
        hand = hand_model(t(poses.global_orient), t(poses.hand_pose), betas, t(poses.transl))
    joints_w = hand.joints.numpy()
    verts_w = hand.vertices.numpy()
    R_obj = Rotation.from_rotvec(poses.obj_rot).as_matrix()
    corners_rest = _corners(obj.points)
    q = {k: np.asarray(v) for k, v in (quality or {}).items()}
    q_index = {int(f): i for i, f in enumerate(q.get("frames", []))}

    for cam in seq.cameras if ho3d else []:
        T = cam.T_cam_world
        R_gl, t_gl = OPENCV_TO_OPENGL @ T[:3, :3], OPENCV_TO_OPENGL @ T[:3, 3]
        with torch.no_grad():
            go_c, tr_c = change_frame(hand_model, t(R_gl), t(t_gl), t(poses.global_orient), t(poses.transl), betas)
        for i, frame in enumerate(poses.frames):
            Ro = R_gl @ R_obj[i]
            to = R_gl @ poses.obj_transl[i] + t_gl
            meta = {
                "handPose": np.concatenate([go_c[i].numpy(), poses.hand_pose[i]]).astype(np.float32),
                "handBeta": np.asarray(poses.betas, np.float32),
                "handTrans": tr_c[i].numpy().astype(np.float32),
                "handJoints3D": (joints_w[i] @ R_gl.T + t_gl).astype(np.float32),
                "objRot": Rotation.from_matrix(Ro).as_rotvec().reshape(3, 1).astype(np.float32),
                "objTrans": to.astype(np.float32),
                "objName": obj.name,
                "objCorners3DRest": corners_rest,
                "objCorners3D": (corners_rest @ Ro.T + to).astype(np.float32),
                "camMat": np.asarray(cam.K, np.float32),
                "handModel": hand_model.name,
                "fitQuality": {k: v[q_index[int(frame)]].item() for k, v in q.items() if k != "frames"}
                if int(frame) in q_index else {},
            }
            write_pickle(out / "ho3d" / cam.name / "meta" / f"{int(frame):04d}.pkl", meta)

    arrays = dict(
        frames=np.asarray(poses.frames),
        hand_joints=joints_w.astype(np.float32),
        hand_vertices=verts_w.astype(np.float32),
        hand_faces=hand.faces.numpy(),
        obj_rot=np.asarray(poses.obj_rot, np.float32),
        obj_transl=np.asarray(poses.obj_transl, np.float32),
        obj_points=np.asarray(obj.points, np.float32),
        obj_faces=np.asarray(obj.mesh.faces, np.int64),
        obj_symmetric=np.asarray(bool(obj.symmetric)),
        obj_name=np.asarray(obj.name),
        mano_global_orient=np.asarray(poses.global_orient, np.float32),
        mano_hand_pose=np.asarray(poses.hand_pose, np.float32),
        mano_betas=np.asarray(poses.betas, np.float32),
        mano_transl=np.asarray(poses.transl, np.float32),
        hand_model=np.asarray(hand_model.name),
        joint_order=np.asarray("ho3d"),
        coordinates=np.asarray("world, OpenCV axes, metres"),
        source=np.asarray(poses.source),
    )
    arrays.update({"quality_" + k: v for k, v in q.items()})
    path = out / "labels.npz"
    write_npz(path, **arrays)
    return path
