"""What the perception networks' training renders are made of (HOnnotate, Hampali et al.,
CVPR 2020, Sec. 3.2): the objects (YCB meshes with their texture, or primitives with a
procedural texture, so the package trains without ../shared; :func:`default_objects`
splits YCB into training and held-out objects) and the hands (:class:`HandSampler`:
hoannot's open hand in a random pose inside its joint limits, or -- for held-out tests
only -- the WebXR glTF hand; optionally a skin-coloured forearm, labelled hand).

Rendering and compositing: :mod:`hoannot.synthesis.training_renders`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from hoannot.io import InputError


#: YCB objects used for training; the other two of ../shared/data/ycb are held out.
TRAIN_YCB = ("003_cracker_box", "004_sugar_box", "010_potted_meat_can")


#: YCB objects held out for testing (never seen in training).
TEST_YCB = ("006_mustard_bottle", "011_banana")


#: Primitive objects (always available; random procedural textures).
PRIMITIVES = (
    "primitive:box:0.06,0.09,0.16",
    "primitive:box:0.05,0.05,0.05",
    "primitive:box:0.03,0.12,0.2",
    "primitive:cylinder:0.035,0.12",
    "primitive:cylinder:0.05,0.18",
    "primitive:cylinder:0.025,0.09",
)


@dataclass
class TexturedMesh:
    """A mesh prepared for ray casting and shading (object frame, metres).

    Attributes:
        name: id.
        vertices: (V, 3) float64; faces: (F, 3) int64; normals: (V, 3) float64 vertex normals.
        uv: (V, 2) float32 texture coordinates or None; texture: (Ht, Wt, 3) uint8 or None.
        colors: (V, 3) float32 per-vertex albedo 0..255 (used where there is no texture).
        procedural: use a random solid texture (primitives) instead of ``colors``.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    colors: np.ndarray | None = None
    procedural: bool = False

    @property
    def radius(self) -> float:
        c = self.vertices.mean(0)
        return float(np.linalg.norm(self.vertices - c, axis=1).max())


def load_textured(spec: str, max_texture: int = 1024) -> TexturedMesh:
    """Load an object for rendering: a mesh file/YCB folder or a primitive spec.

    Args:
        spec: as :func:`hoannot.models.objects.load_object` accepts.
        max_texture: textures are downsampled to at most this many pixels a side.
    Raises:
        InputError: missing/unreadable mesh or bad primitive spec.
    """
    from hoannot.models.objects import _primitive, resolve_mesh_path

    if spec.startswith("primitive:"):
        mesh = _primitive(spec)
        name = spec
    else:
        path = resolve_mesh_path(spec)
        try:
            mesh = trimesh.load(path, force="mesh")
        except Exception as e:  # noqa: BLE001 - trimesh raises many types
            raise InputError(f"{path}: cannot read mesh ({e})".splitlines()[0]) from None
        name = path.parent.name
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    tm = TexturedMesh(name, v - v.mean(0), f, np.asarray(mesh.vertex_normals, np.float64))
    vis = mesh.visual
    img = getattr(getattr(vis, "material", None), "image", None) if vis.kind == "texture" else None
    if img is not None and getattr(vis, "uv", None) is not None and len(vis.uv) == len(v):
        tex = np.asarray(img.convert("RGB"))
        s = max_texture / max(tex.shape[:2])
        if s < 1:
            tex = cv2.resize(tex, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        tm.uv, tm.texture = np.asarray(vis.uv, np.float32), tex
    elif spec.startswith("primitive:"):
        tm.procedural = True
    else:
        try:
            tm.colors = np.asarray(vis.to_color().vertex_colors, np.float32)[:, :3]
        except Exception:  # noqa: BLE001
            tm.colors = None
        if tm.colors is None or len(tm.colors) != len(v):
            tm.procedural = True
    return tm


def default_objects(ycb_dir: str | Path | None = None, split: str = "train") -> list[str]:
    """Object specs for a split: the split's YCB objects found in ``ycb_dir`` plus primitives.

    Args:
        ycb_dir: a YCB folder (``<dir>/<id>/...``); None uses ``$HOANNOT_YCB`` if set,
            else primitives only.
        split: ``"train"`` (:data:`TRAIN_YCB` + primitives) or ``"test"`` (:data:`TEST_YCB`
            only, plus primitives when none is found).
    """
    ycb_dir = ycb_dir or os.environ.get("HOANNOT_YCB")
    names = TRAIN_YCB if split == "train" else TEST_YCB
    found = [str(Path(ycb_dir) / n) for n in names if ycb_dir and (Path(ycb_dir) / n).is_dir()]
    if split == "train":
        return found + list(PRIMITIVES)
    return found or list(PRIMITIVES)


class HandSampler:
    """Random hand meshes with 21 keypoints (HO-3D order), in a hand-centred frame.

    Args:
        hand: ``"open"`` (hoannot's open hand; poses uniform inside its joint limits,
            biased towards flexion) or a path to a skinned glTF hand (WebXR rig; flexion
            and spread uniform inside :data:`hoannot.models.rig.FLEX_LIMITS` /
            ``SPREAD_LIMITS``).
    """

    def __init__(self, hand: str = "open") -> None:
        self.kind = hand
        if hand == "open":
            from hoannot.models.hand import HandModel

            self.model = HandModel(None)
            self.faces = self.model.faces.numpy().astype(np.int64)
            self.lower, self.upper = self.model.limits.lower, self.model.limits.upper
        else:
            from hoannot.models.rig import HandRig

            if not Path(hand).is_file():
                raise InputError(f"{hand}: hand model file not found")
            self.rig = HandRig.from_file(hand)
            self.faces = np.asarray(self.rig.faces, np.int64)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random hand: vertices (V, 3) and keypoints (21, 3), float64, metres,
        centred on the keypoints' mean, in a random orientation."""
        if self.kind == "open":
            a = rng.beta(1.2, 1.6, 45)  # more open than closed, full range covered
            pose = self.lower + a * (self.upper - self.lower)
            with torch.no_grad():
                out = self.model(torch.zeros(1, 3), torch.as_tensor(pose, dtype=torch.float32)[None])
            v, kp = out.vertices[0].numpy().astype(np.float64), out.joints[0].numpy().astype(np.float64)
        else:
            from hoannot.models.rig import FLEX_LIMITS, SPREAD_LIMITS

            flex = FLEX_LIMITS[..., 0] + rng.beta(1.2, 1.6, (5, 3)) * (FLEX_LIMITS[..., 1] - FLEX_LIMITS[..., 0])
            spread = rng.uniform(SPREAD_LIMITS[:, 0], SPREAD_LIMITS[:, 1])
            out = self.rig.articulate(flex, spread)
            v, kp = np.asarray(out.vertices, np.float64), np.asarray(out.keypoints, np.float64)
        c = kp.mean(0)
        R = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
        return (v - c) @ R.T, (kp - c) @ R.T


def _forearm(kp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A tapered skin cylinder from the wrist away from the fingers (hand-centred frame)."""
    wrist, mid = kp[0], kp[4]
    d = wrist - mid
    d /= np.linalg.norm(d)
    length = rng.uniform(0.12, 0.3)
    cyl = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=16)
    v = np.asarray(cyl.vertices, np.float64).copy()
    z = v[:, 2] + 0.5  # 0 at the wrist end, 1 far end
    r = rng.uniform(0.022, 0.03) * (1 + 0.35 * z)
    v[:, :2] *= r[:, None]
    v[:, 2] = z * length - 0.01
    # rotate +z onto d
    Rz = Rotation.align_vectors([d], [[0.0, 0.0, 1.0]])[0].as_matrix()
    return v @ Rz.T + wrist, np.asarray(cyl.faces, np.int64)
