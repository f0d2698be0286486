"""A skinned glTF 2.0 hand (WebXR Hand Input joint layout) with linear blend skinning.

This is an *independent* hand for synthetic captures: its mesh, skeleton and skin
weights come from a glTF rig (e.g. the MIT-licensed WebXR "generic hand"), not from
MANO, so fits are never tested on data made by the hand model being fitted.

The file must hold one skinned mesh whose skin has the 25 joints named by the WebXR
Hand Input specification (W3C, "XRHand" joint list, ``JOINT_NAMES`` below). Parents
are taken from the WebXR joint tree (glTF rigs of this family are often exported
flat, every joint a child of the armature), and the rest *local* transform of a
joint is ``inv(G_parent) @ G_joint`` of the rest world matrices ``G``, so any glTF
node hierarchy (including transforms on the armature/scene roots) is honoured.

Skinning (glTF 2.0 specification, section 3.7.3 "Skins")::

    v' = sum_k w_k * G'_{j_k} @ IBM_{j_k} @ v

where ``G'`` are posed world matrices of the joints and ``IBM`` the inverse bind
matrices. The "model frame" below is the glTF scene (world) frame; the skinned
mesh node's own transform is ignored, as the specification requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoannot.io import InputError

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

#: The 25 WebXR Hand Input joints, in specification order.
JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb-metacarpal",
    "thumb-phalanx-proximal",
    "thumb-phalanx-distal",
    "thumb-tip",
    *[
        f"{f}-finger-{p}"
        for f in FINGERS[1:]
        for p in ("metacarpal", "phalanx-proximal", "phalanx-intermediate", "phalanx-distal", "tip")
    ],
)

#: Parent index of each joint of ``JOINT_NAMES`` (-1 for the wrist).
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 3) + tuple(
    p for b in (5, 10, 15, 20) for p in (0, b, b + 1, b + 2, b + 3)
)

_COMPONENT = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _read_accessor(gltf, blob: bytes, index: int, path: Path) -> np.ndarray:
    """Read a glTF accessor into a (count, ncomp) array (sparse accessors unsupported)."""
    acc = gltf.accessors[index]
    if acc.bufferView is None or acc.sparse is not None:
        raise InputError(f"{path}: accessor {index} is sparse or has no bufferView (unsupported)")
    bv = gltf.bufferViews[acc.bufferView]
    dtype = np.dtype(_COMPONENT[acc.componentType])
    n = _NCOMP[acc.type]
    start = (bv.byteOffset or 0) + (acc.byteOffset or 0)
    stride = bv.byteStride or n * dtype.itemsize
    raw = np.frombuffer(blob, np.uint8, count=stride * (acc.count - 1) + n * dtype.itemsize, offset=start)
    rows = np.lib.stride_tricks.as_strided(raw, (acc.count, n * dtype.itemsize), (stride, 1))
    out = np.ascontiguousarray(rows).view(dtype).reshape(acc.count, n)
    if acc.normalized and dtype.kind in "iu":
        out = out.astype(np.float64) / np.iinfo(dtype).max
    return out


def _node_matrix(node) -> np.ndarray:
    """(4, 4) float64 local matrix of a glTF node (matrix or T*R*S)."""
    if node.matrix is not None:
        return np.asarray(node.matrix, np.float64).reshape(4, 4).T  # column-major in glTF
    from scipy.spatial.transform import Rotation

    m = np.eye(4)
    r = node.rotation if node.rotation is not None else [0.0, 0.0, 0.0, 1.0]  # x, y, z, w
    s = node.scale if node.scale is not None else [1.0, 1.0, 1.0]
    m[:3, :3] = Rotation.from_quat(r).as_matrix() * np.asarray(s, np.float64)[None, :]
    if node.translation is not None:
        m[:3, 3] = node.translation
    return m


def _world_matrices(gltf) -> np.ndarray:
    """(N, 4, 4) rest world matrices of all nodes (scene roots included)."""
    n = len(gltf.nodes)
    parent = [-1] * n
    for i, node in enumerate(gltf.nodes):
        for c in node.children or []:
            parent[c] = i
    world = [None] * n

    def get(i: int) -> np.ndarray:
        if world[i] is None:
            local = _node_matrix(gltf.nodes[i])
            world[i] = local if parent[i] < 0 else get(parent[i]) @ local
        return world[i]

    return np.stack([get(i) for i in range(n)])


def skin(
    rest_vertices: np.ndarray, weights: np.ndarray, joints: np.ndarray, skin_matrices: np.ndarray
) -> np.ndarray:
    """Linear blend skinning (glTF 2.0 spec, section 3.7.3).

    Args:
        rest_vertices: (V, 3) float, bind-pose positions.
        weights: (V, K) float, per-vertex weights (rows sum to 1).
        joints: (V, K) int, joint index of each weight.
        skin_matrices: (J, 4, 4) float, ``G'_j @ IBM_j`` per joint.
    Returns:
        (V, 3) float64 skinned positions.
    """
    m = np.einsum("vk,vkab->vab", weights, skin_matrices[joints])  # (V, 4, 4)
    return np.einsum("vab,vb->va", m[:, :3, :3], rest_vertices) + m[:, :3, 3]


@dataclass
class GltfHand:
    """A skinned WebXR hand loaded from a glTF 2.0 file (metres, model = glTF scene frame).

    Attributes:
        path: source file.
        joint_names: the 25 WebXR joint names (``JOINT_NAMES`` order).
        parents: (25,) int64, parent joint index, -1 for the wrist.
        rest_vertices: (V, 3) float64, bind-pose vertex positions.
        faces: (F, 3) int64 triangle indices.
        skin_joints: (V, 4) int64 joint index (``joint_names`` order) per weight.
        skin_weights: (V, 4) float64 weights, rows sum to 1.
        inverse_bind: (25, 4, 4) float64 inverse bind matrices.
        rest_world: (25, 4, 4) float64 rest world matrices of the joints.
        rest_local: (25, 4, 4) float64 rest transform of each joint relative to its
            parent (the wrist's is its world matrix).
    """

    path: Path
    joint_names: tuple[str, ...]
    parents: np.ndarray
    rest_vertices: np.ndarray
    faces: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    inverse_bind: np.ndarray
    rest_world: np.ndarray
    rest_local: np.ndarray

    @classmethod
    def from_file(cls, path: str | Path) -> "GltfHand":
        """Load a ``.glb``/``.gltf`` hand.

        Raises:
            InputError: unreadable file, no skinned triangle mesh, missing WebXR joint
                names, or malformed attributes; the message names the file.
        """
        import pygltflib

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: glTF hand not found")
        try:
            gltf = pygltflib.GLTF2().load(str(path))
            blob = gltf.binary_blob()
            if blob is None and gltf.buffers:
                blob = gltf.get_data_from_buffer_uri(gltf.buffers[0].uri)
        except Exception as e:  # noqa: BLE001 - pygltflib raises many types
            raise InputError(f"{path}: cannot read glTF ({e})") from None
        if gltf is None or blob is None:
            raise InputError(f"{path}: cannot read glTF buffers")
        if not gltf.skins or not gltf.meshes:
            raise InputError(f"{path}: no skinned mesh")
        mesh_nodes = [n for n in gltf.nodes if n.mesh is not None and n.skin is not None]
        if len(mesh_nodes) != 1:
            raise InputError(f"{path}: expected one skinned mesh node, found {len(mesh_nodes)}")
        skin_def = gltf.skins[mesh_nodes[0].skin]
        prims = gltf.meshes[mesh_nodes[0].mesh].primitives
        if len(prims) != 1 or (prims[0].mode not in (None, 4)) or prims[0].indices is None:
            raise InputError(f"{path}: expected one indexed triangle primitive")
        attrs = prims[0].attributes
        if attrs.POSITION is None or attrs.JOINTS_0 is None or attrs.WEIGHTS_0 is None:
            raise InputError(f"{path}: primitive lacks POSITION/JOINTS_0/WEIGHTS_0")
        try:
            pos = _read_accessor(gltf, blob, attrs.POSITION, path).astype(np.float64)
            sj = _read_accessor(gltf, blob, attrs.JOINTS_0, path).astype(np.int64)
            sw = _read_accessor(gltf, blob, attrs.WEIGHTS_0, path).astype(np.float64)
            idx = _read_accessor(gltf, blob, prims[0].indices, path).astype(np.int64).reshape(-1, 3)
            if skin_def.inverseBindMatrices is None:
                ibm_skin = np.tile(np.eye(4), (len(skin_def.joints), 1, 1))
            else:
                ibm_skin = (
                    _read_accessor(gltf, blob, skin_def.inverseBindMatrices, path)
                    .astype(np.float64)
                    .reshape(-1, 4, 4)
                    .transpose(0, 2, 1)
                )
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise InputError(f"{path}: malformed accessor ({e})") from None
        names = [gltf.nodes[j].name for j in skin_def.joints]
        missing = [n for n in JOINT_NAMES if n not in names]
        if missing:
            raise InputError(f"{path}: skin lacks WebXR joints {missing[:3]}{'...' if len(missing) > 3 else ''}")
        order = np.array([names.index(n) for n in JOINT_NAMES])  # skin index of each WebXR joint
        if sj.max() >= len(names) or idx.max() >= len(pos) or sj.shape[1] != sw.shape[1]:
            raise InputError(f"{path}: joint or vertex index out of range")
        # remap skin joint indices to JOINT_NAMES order; weights on other joints are dropped
        remap = np.full(len(names), -1)
        remap[order] = np.arange(len(JOINT_NAMES))
        sj = remap[sj]
        sw = np.where(sj >= 0, sw, 0.0)
        sj = np.maximum(sj, 0)
        total = sw.sum(1, keepdims=True)
        if not np.isfinite(pos).all() or (total <= 0).any():
            raise InputError(f"{path}: non-finite positions or vertices without weights")
        sw = sw / total

        world_all = _world_matrices(gltf)
        rest_world = world_all[np.asarray(skin_def.joints)[order]]
        parents = np.asarray(PARENTS, np.int64)
        rest_local = rest_world.copy()
        for j in range(1, len(JOINT_NAMES)):
            rest_local[j] = np.linalg.inv(rest_world[parents[j]]) @ rest_world[j]
        return cls(
            path=path,
            joint_names=JOINT_NAMES,
            parents=parents,
            rest_vertices=pos,
            faces=idx,
            skin_joints=sj,
            skin_weights=sw,
            inverse_bind=ibm_skin[order],
            rest_world=rest_world,
            rest_local=rest_local,
        )

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def forward_kinematics(self, local_rotations: np.ndarray) -> np.ndarray:
        """Posed world matrices of the joints.

        Args:
            local_rotations: (25, 3, 3) rotation of each joint in its own rest frame
                (identity = bind pose); the wrist's rotates the whole hand about the wrist.
        Returns:
            (25, 4, 4) float64 world matrices ``G'_j = G'_parent @ rest_local_j @ R_j``.
        Raises:
            InputError: wrong shape.
        """
        r = np.asarray(local_rotations, np.float64)
        if r.shape != (self.num_joints, 3, 3):
            raise InputError(f"{self.path}: local_rotations must be ({self.num_joints}, 3, 3), got {r.shape}")
        out = np.empty((self.num_joints, 4, 4))
        for j in range(self.num_joints):  # parents precede children in JOINT_NAMES order
            rot = np.eye(4)
            rot[:3, :3] = r[j]
            m = self.rest_local[j] @ rot
            out[j] = m if self.parents[j] < 0 else out[self.parents[j]] @ m
        return out

    def pose(self, local_rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Skin the mesh for per-joint local rotations.

        Args:
            local_rotations: (25, 3, 3) float, see :meth:`forward_kinematics`.
        Returns:
            vertices (V, 3) float64 and joint_positions (25, 3) float64, metres, model frame.
        """
        g = self.forward_kinematics(local_rotations)
        verts = skin(self.rest_vertices, self.skin_weights, self.skin_joints, g @ self.inverse_bind)
        return verts, g[:, :3, 3].copy()
