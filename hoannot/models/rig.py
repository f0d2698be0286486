"""Anatomical controls over a :class:`~hoannot.models.gltf_hand.GltfHand`.

``HandRig.articulate(flex, spread, R, t)`` poses the WebXR hand with per-finger
flexion/abduction angles and a rigid transform, and returns its mesh and the 21
keypoints in HO-3D order (0 wrist; 1-3 index MCP/PIP/DIP; 4-6 middle; 7-9 pinky;
10-12 ring; 13-15 thumb CMC/MCP/IP; 16-20 tips of thumb, index, middle, ring, pinky).

Rotation axes are derived from the bind geometry (metres, model frame):

* palm normal ``n``: normal of the plane through the wrist and the index and pinky
  MCPs, oriented towards the palm side (opposite the WebXR joints' +Y, which the
  WebXR Hand Input spec defines as pointing out of the back of the hand);
* finger joint flexion axis: ``a = d x n`` with ``d`` the bone direction leaving the
  joint, so that a positive rotation moves the bone towards ``n`` (curls the finger
  towards the palm); abduction (spread) is a rotation about ``n`` applied after the
  flexion, signed so that a positive spread moves the finger away from the middle
  finger (the middle finger itself abducts towards the index);
* thumb: the pad normal ``p`` of each thumb bone is the direction from the bone to
  the palm centre, made orthogonal to the bone; flexion axis ``d x p`` (curls the
  thumb towards the palm centre, i.e. opposes it to the fingers); thumb spread
  rotates the metacarpal about ``n``, positive away from the index finger.

Only the proximal, intermediate and distal phalanges and the thumb's metacarpal
are articulated; the four finger metacarpals stay rigid with the wrist, so the palm
is rigid and ``palm_centre``/``palm_normal`` follow the global transform only.

Tip keypoints: the WebXR "tip" joints of this rig lie inside the fingertip, about
1 cm short of its end, whereas HO-3D/MANO tips are fingertip surface points. The
rig therefore uses, per finger, the bind-pose vertex farthest along the distal bone
(like MANO's tip vertices); ``RigOutput.joints`` keeps the raw 25 WebXR joints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hoannot.io import InputError
from hoannot.models.gltf_hand import FINGERS, GltfHand

#: WebXR joint index of the first joint of each finger's chain, ``FINGERS`` order.
#: For the thumb the chain is metacarpal(CMC), proximal(MCP), distal(IP), tip;
#: for the others proximal(MCP), intermediate(PIP), distal(DIP), tip.
CHAIN_START = {"thumb": 1, "index": 6, "middle": 11, "ring": 16, "pinky": 21}

#: WebXR joint index of each of the 21 HO-3D keypoints (tips: -1, see ``tip_vertices``).
HO3D_FROM_WEBXR = (0, 6, 7, 8, 11, 12, 13, 21, 22, 23, 16, 17, 18, 1, 2, 3, -1, -1, -1, -1, -1)
#: HO-3D keypoint index of each finger's tip, ``FINGERS`` order.
HO3D_TIPS = (16, 17, 18, 19, 20)
#: HO-3D keypoint indices of each finger's (base, middle, distal joint, tip), ``FINGERS`` order.
HO3D_FINGER_CHAINS = {
    "thumb": (13, 14, 15, 16),
    "index": (1, 2, 3, 17),
    "middle": (4, 5, 6, 18),
    "ring": (10, 11, 12, 19),
    "pinky": (7, 8, 9, 20),
}

#: Flexion limits (radians), rows ``FINGERS``, columns the three joints of the chain.
FLEX_LIMITS = np.array(
    [
        [[-0.3, 1.0], [-0.2, 1.0], [-0.3, 1.4]],  # thumb CMC, MCP, IP
        [[-0.3, 1.6], [0.0, 1.9], [0.0, 1.4]],  # index MCP, PIP, DIP
        [[-0.3, 1.6], [0.0, 1.9], [0.0, 1.4]],
        [[-0.3, 1.6], [0.0, 1.9], [0.0, 1.4]],
        [[-0.3, 1.6], [0.0, 1.9], [0.0, 1.4]],
    ]
)
#: Spread (abduction) limits (radians), ``FINGERS`` order.
SPREAD_LIMITS = np.array([[-0.4, 0.8], [-0.35, 0.35], [-0.3, 0.3], [-0.3, 0.3], [-0.35, 0.5]])


@dataclass
class RigOutput:
    """A posed rig (metres, in the frame given by the ``R``, ``t`` passed to ``articulate``).

    Attributes:
        vertices: (V, 3) float64 mesh vertices.
        faces: (F, 3) int64 triangles.
        keypoints: (21, 3) float64, HO-3D order.
        joints: (25, 3) float64 WebXR joint positions.
        palm_centre: (3,) float64 point on the palm's skin.
        palm_normal: (3,) float64 unit normal leaving the palm.
    """

    vertices: np.ndarray
    faces: np.ndarray
    keypoints: np.ndarray
    joints: np.ndarray
    palm_centre: np.ndarray
    palm_normal: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class HandRig:
    """Finger flexion/abduction controls over a WebXR glTF hand.

    Attributes:
        hand: the underlying :class:`GltfHand`.
        palm_normal: (3,) unit palm normal in the model frame (bind pose).
        palm_centre: (3,) point on the palm skin in the model frame (bind pose).
        flex_axes: (5, 3, 3) unit flexion axis of each finger joint, model frame (bind pose).
        spread_axes: (5, 3) unit abduction axis (signed), model frame.
        tip_vertices: (5,) vertex index used as each finger's tip keypoint.
        vertex_joint: (V,) WebXR joint with the largest skin weight of each vertex.
        vertex_segment: (V, 2) (finger index or -1 for palm/wrist, segment 0..2).
    """

    def __init__(self, hand: GltfHand):
        self.hand = hand
        p = hand.rest_world[:, :3, 3]
        wrist, idx_mcp, pky_mcp = p[0], p[CHAIN_START["index"]], p[CHAIN_START["pinky"]]
        n = _unit(np.cross(idx_mcp - wrist, pky_mcp - wrist))
        back = hand.rest_world[0, :3, 1]  # WebXR: +Y out of the back of the hand
        if n @ back > 0:
            n = -n
        self.palm_normal = n
        mcps = p[[CHAIN_START[f] for f in FINGERS[1:]]]
        centre = 0.5 * wrist + 0.5 * mcps.mean(0)
        # move the joint-level centre onto the palm skin along n
        v = hand.rest_vertices
        dom = hand.skin_joints[np.arange(len(v)), hand.skin_weights.argmax(1)]
        rel = v - centre
        along = rel @ n
        radial = np.linalg.norm(rel - np.outer(along, n), axis=1)
        thumb = (dom >= CHAIN_START["thumb"]) & (dom < CHAIN_START["thumb"] + 4)
        near = (radial < 0.01) & (along > 0) & ~thumb
        if not near.any():
            raise InputError(f"{hand.path}: cannot find the palm surface along the palm normal")
        self.palm_centre = centre + along[near].max() * n

        self.flex_axes = np.zeros((5, 3, 3))
        self.spread_axes = np.zeros((5, 3))
        middle_mcp = p[CHAIN_START["middle"]]
        radial_dir = _unit(p[CHAIN_START["index"]] - p[CHAIN_START["pinky"]])  # towards thumb side
        radial_dir = _unit(radial_dir - (radial_dir @ n) * n)
        for fi, finger in enumerate(FINGERS):
            s = CHAIN_START[finger]
            for k in range(3):
                d = _unit(p[s + k + 1] - p[s + k])
                if finger == "thumb":
                    to_palm = self.palm_centre - p[s + k]
                    pad = _unit(to_palm - (to_palm @ d) * d)
                    self.flex_axes[fi, k] = _unit(np.cross(d, pad))
                else:
                    self.flex_axes[fi, k] = _unit(np.cross(d, n))
            # abduction: positive moves the finger away from the middle finger
            if finger == "middle":
                side = radial_dir
            elif finger == "thumb":
                side = _unit(p[s + 1] - p[CHAIN_START["index"]])
                side = _unit(side - (side @ n) * n)
            else:
                side = _unit(p[s] - middle_mcp)
                side = _unit(side - (side @ n) * n)
            d0 = _unit(p[s + 1] - p[s])
            # rotation about +n moves d0 towards n x d0; choose the sign that moves towards `side`
            self.spread_axes[fi] = n if np.cross(n, d0) @ side > 0 else -n

        self.vertex_joint = dom
        seg = np.full((len(v), 2), -1, np.int64)
        for fi, finger in enumerate(FINGERS):
            s = CHAIN_START[finger]
            for k in range(3):
                seg[dom == s + k] = (fi, k)
            seg[dom == s + 3] = (fi, 2)  # tip joint (normally unweighted) -> distal segment
        self.vertex_segment = seg
        tips = []
        for finger in FINGERS:
            s = CHAIN_START[finger]
            d = _unit(p[s + 3] - p[s + 2])
            cand = np.flatnonzero((dom == s + 2) | (dom == s + 3))
            tips.append(cand[np.argmax((v[cand] - p[s + 3]) @ d)])
        self.tip_vertices = np.asarray(tips, np.int64)

    @classmethod
    def from_file(cls, path: str | Path) -> "HandRig":
        """Load the glTF hand at ``path`` (see :meth:`GltfHand.from_file`)."""
        return cls(GltfHand.from_file(path))

    @property
    def faces(self) -> np.ndarray:
        return self.hand.faces

    def local_rotations(self, flex: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """(25, 3, 3) per-joint local rotations for the given angles.

        Args:
            flex: (5, 3) radians, rows thumb,index,middle,ring,pinky; columns the three
                joints of each chain (thumb CMC/MCP/IP, fingers MCP/PIP/DIP).
            spread: (5,) radians abduction at the chain's first joint.
        Raises:
            InputError: wrong shapes or non-finite angles.
        """
        flex = np.asarray(flex, np.float64)
        spread = np.asarray(spread, np.float64)
        if flex.shape != (5, 3) or spread.shape != (5,):
            raise InputError(f"articulate: flex must be (5, 3) and spread (5,), got {flex.shape}, {spread.shape}")
        if not (np.isfinite(flex).all() and np.isfinite(spread).all()):
            raise InputError("articulate: non-finite flex/spread angles")
        rw = self.hand.rest_world[:, :3, :3]
        out = np.tile(np.eye(3), (self.hand.num_joints, 1, 1))
        for fi, finger in enumerate(FINGERS):
            s = CHAIN_START[finger]
            for k in range(3):
                j = s + k
                # world-frame axis -> the joint's rest frame (rotations act in that frame)
                rot_f = Rotation.from_rotvec(flex[fi, k] * (rw[j].T @ self.flex_axes[fi, k]))
                rot = rot_f
                if k == 0:
                    rot = Rotation.from_rotvec(spread[fi] * (rw[j].T @ self.spread_axes[fi])) * rot_f
                out[j] = rot.as_matrix()
        return out

    def articulate(
        self,
        flex: np.ndarray,
        spread: np.ndarray | None = None,
        R: np.ndarray | None = None,
        t: np.ndarray | None = None,
    ) -> RigOutput:
        """Pose the hand.

        Args:
            flex: (5, 3) radians flexion (see :meth:`local_rotations`); positive curls
                towards the palm.
            spread: (5,) radians abduction, positive away from the middle finger; zeros
                if None.
            R: (3, 3) rotation and ``t``: (3,) metres; outputs are ``R @ x + t`` of the
                model-frame points (identity/zero if None).
        Returns:
            :class:`RigOutput` in the target frame.
        Raises:
            InputError: wrong shapes or non-finite values.
        """
        spread = np.zeros(5) if spread is None else spread
        R = np.eye(3) if R is None else np.asarray(R, np.float64)
        t = np.zeros(3) if t is None else np.asarray(t, np.float64)
        if R.shape != (3, 3) or t.shape != (3,):
            raise InputError(f"articulate: R must be (3, 3) and t (3,), got {R.shape}, {t.shape}")
        verts, joints = self.hand.pose(self.local_rotations(flex, spread))
        kp = np.empty((21, 3))
        src = np.asarray(HO3D_FROM_WEBXR)
        kp[src >= 0] = joints[src[src >= 0]]
        kp[list(HO3D_TIPS)] = verts[self.tip_vertices]
        return RigOutput(
            vertices=verts @ R.T + t,
            faces=self.hand.faces,
            keypoints=kp @ R.T + t,
            joints=joints @ R.T + t,
            palm_centre=R @ self.palm_centre + t,
            palm_normal=R @ self.palm_normal,
        )
