"""Hands that hold the object in synthetic captures (:class:`~hoannot.synthesis.capture.HandSubject`).

* ``"open"``: hoannot's bundled open hand (MANO layout), grasping by the same rule as
  :mod:`hoannot.synthesis.grasp` (palm against the surface, then each finger joint closed
  proximal to distal until its segment touches the object's signed distance field).
  It needs nothing outside the package, so the built-in demo uses it; its ground truth
  includes the MANO parameters.
* a path to a skinned glTF hand (e.g. ../shared's WebXR hand): an independent subject
  posed by :func:`hoannot.synthesis.grasp.synthesize_grasp`, so that a fit with our hand
  model is scored on a hand it did not generate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hoannot.synthesis.grasp import ObjectSDF
from hoannot.io import InputError
from hoannot.synthesis.capture import HandSubject
from hoannot.models.hand import HandModel, open_hand_axes
from hoannot.models.objects import ObjectModel

#: MANO joint chains (joint ids 1..15) of index, middle, pinky, ring, thumb
CHAINS = ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12), (13, 14, 15))
CONTACT_M = 0.0015  # a segment touches the object when a vertex is this close
STEP_RAD = 0.06
#: largest flexion per chain joint (radians): fingers MCP/PIP/DIP, thumb CMC/MCP/IP
MAX_FLEX = {0: (1.4, 1.5, 1.2), 1: (0.8, 0.9, 1.0)}


def make_subject(hand: str, obj: ObjectModel, seed: int = 0) -> HandSubject:
    """A hand grasping ``obj`` (object frame).

    Args:
        hand: ``"open"`` or a path to a skinned glTF hand.
        obj: the object.
        seed: chooses the approach direction.
    Raises:
        InputError: an unknown hand spec or an unreadable glTF file.
    """
    rng = np.random.default_rng(seed)
    if hand == "open":
        return open_hand_grasp(HandModel(None), obj, rng)
    path = Path(hand)
    if path.suffix.lower() not in (".glb", ".gltf"):
        raise InputError(f"{hand}: --hand must be 'open' or a skinned glTF hand (.glb/.gltf)")
    from hoannot.synthesis.grasp import synthesize_grasp
    from hoannot.models.rig import HandRig

    rig = HandRig.from_file(path)
    g = synthesize_grasp(rig, obj.mesh, rng)
    return HandSubject("webxr", np.asarray(g.vertices, np.float32), np.asarray(rig.faces, np.int64),
                       np.asarray(g.keypoints, np.float32))  # fmt: skip


def _approach(obj: ObjectModel, sdf: ObjectSDF, rng: np.random.Generator):
    """Palm direction ``d`` (outwards from the surface), finger direction ``f`` and the surface point."""
    pts = np.asarray(obj.mesh.vertices, np.float64)
    centre = pts.mean(0)
    _, _, Vt = np.linalg.svd(pts - centre, full_matrices=False)
    long_axis = Vt[0]
    d = np.cross(long_axis, rng.normal(size=3))
    d /= np.linalg.norm(d)
    f = np.cross(long_axis, d)
    spin = Rotation.from_rotvec(d * rng.uniform(-0.3, 0.3))
    f = spin.apply(f) * rng.choice([-1.0, 1.0])
    far = 1.0
    hit = sdf.first_hit(centre + far * d, -d)
    if not np.isfinite(hit):
        raise InputError(f"object {obj.name}: no surface found from its centre")
    return d, f, centre + (far - hit) * d


def open_hand_grasp(model: HandModel, obj: ObjectModel, rng: np.random.Generator) -> HandSubject:
    """Place the open hand's palm on ``obj`` and close its fingers until they touch it.

    Returns:
        the grasp as a :class:`HandSubject` with MANO parameters (object frame).
    """
    sdf = ObjectSDF(obj.mesh, max_faces=4000)
    d, f, surface = _approach(obj, sdf, rng)
    R = np.stack([-f, d, np.cross(-f, d)], axis=1)  # model x -> -f (fingers), y -> d (back), palm faces -d
    weights = model.mano.lbs_weights.detach().numpy()
    dominant = weights.argmax(1)
    pose = torch.zeros(1, 45)

    def verts_at(p: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(torch.zeros(1, 3), p).vertices[0].numpy().astype(np.float64)

    v0 = verts_at(pose)
    with torch.no_grad():
        kp = model(torch.zeros(1, 3), pose).joints[0].numpy()
    palm = 0.5 * (kp[0] + kp[4])
    near = np.linalg.norm((v0 - palm)[:, [0, 2]], axis=1) < 0.015
    palm_skin = palm.copy()
    palm_skin[1] = v0[near, 1].min()  # the palm side is -y
    t = surface + 0.004 * d - R @ palm_skin
    # back off until the flat hand is clear of the object
    for _ in range(100):
        if sdf(v0 @ R.T + t).min() > CONTACT_M:
            break
        t = t + 0.002 * d
    axes = open_hand_axes()  # (15, 3, 3): flexion, abduction, twist axis per joint
    for ci, chain in enumerate(CHAINS):
        for k, j in enumerate(chain):
            theta_max = MAX_FLEX[int(ci == 4)][k]
            moving = np.isin(dominant, chain[k:])
            theta = 0.0
            step = STEP_RAD
            while theta + step <= theta_max and step > 0.005:
                trial = pose.clone()
                trial[0, 3 * (j - 1): 3 * j] = torch.as_tensor((theta + step) * axes[j - 1, 0], dtype=torch.float32)
                v = verts_at(trial)[moving] @ R.T + t
                if sdf(v).min() < CONTACT_M:
                    step /= 2  # closer, in smaller steps, until touching
                    continue
                theta += step
                pose = trial
    v = verts_at(pose) @ R.T + t
    with torch.no_grad():
        kp = model(torch.zeros(1, 3), pose).joints[0].numpy() @ R.T + t
        J0 = model.root_joint()[0].numpy().astype(np.float64)
    mano = {
        "global_orient": Rotation.from_matrix(R).as_rotvec(),
        "hand_pose": pose[0].numpy().astype(np.float64),
        "betas": np.zeros(model.num_betas),
        "transl": R @ J0 + t - J0,
        "root": J0,
    }
    return HandSubject("open", v.astype(np.float32), model.faces.numpy(), kp.astype(np.float32), mano)
