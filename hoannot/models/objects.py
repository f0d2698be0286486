"""Rigid object models: YCB meshes (or primitives) with a decimated copy for fitting.

An object spec (``SequenceConfig.object.mesh``) is one of

* a mesh file (OBJ/PLY/GLB..., metres), e.g. YCB ``textured_simple.obj`` or
  ``google_16k/textured.obj``;
* a directory holding one of those (YCB layout: ``<dir>/<id>/...``);
* ``primitive:box:<dx>,<dy>,<dz>`` or ``primitive:cylinder:<radius>,<height>``
  (metres, centred at the origin, cylinder axis z) -- the built-in demo uses these so
  the installed package runs without external data.

The full mesh is kept for evaluation (ADD uses its vertices); fitting uses a quadric
decimation (open3d) of the vertex-merged mesh, which is what makes CPU rendering cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from hoannot.io import InputError

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
_YCB_NAMES = ("textured_simple.obj", "textured.obj")


def parse_primitive(spec: str, where: Path | str = "object.mesh") -> tuple[str, tuple[float, ...]]:
    """Parse ``primitive:box:DX,DY,DZ`` or ``primitive:cylinder:RADIUS,HEIGHT`` (metres).

    Returns:
        (kind, dims) with kind "box" (3 dims) or "cylinder" (2 dims), all finite and > 0.
    Raises:
        InputError: unknown primitive or bad dimensions (names ``where``).
    """
    parts = spec.split(":")
    nd = {"box": 3, "cylinder": 2}
    if len(parts) != 3 or parts[0] != "primitive" or parts[1] not in nd:
        raise InputError(
            f"{where}: unknown object {spec!r} (expected a mesh file, "
            "'primitive:box:DX,DY,DZ' or 'primitive:cylinder:RADIUS,HEIGHT' in metres)"
        )
    kind = parts[1]
    try:
        dims = tuple(float(x) for x in parts[2].split(","))
    except ValueError:
        dims = ()
    if len(dims) != nd[kind] or not all(math.isfinite(d) and d > 0 for d in dims):
        raise InputError(f"{where}: object {spec!r} needs {nd[kind]} positive sizes in metres")
    return kind, dims


@dataclass
class ObjectModel:
    """A rigid object.

    Attributes:
        name: object id (e.g. ``"010_potted_meat_can"``).
        mesh: full-resolution ``trimesh.Trimesh`` (metres, object frame), with its
            texture/colours when the file had them.
        verts: (V, 3) float32 tensor, decimated vertices used for fitting.
        faces: (F, 3) int64 tensor, decimated faces.
        points: (N, 3) float32 numpy, full-mesh vertices (evaluation: ADD/ADD-S).
        diameter: metres, largest distance between two points of the mesh.
        symmetric: evaluation should use ADD-S.
    """

    name: str
    mesh: trimesh.Trimesh
    verts: torch.Tensor
    faces: torch.Tensor
    points: np.ndarray
    diameter: float
    symmetric: bool = False

    def surface_samples(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Points sampled uniformly (by area) on the full-resolution surface, with normals.

        Args:
            count: number of points.
            seed: sampling seed (the same seed gives the same points).
        Returns:
            (points, normals): (count, 3) float32 object frame, metres, and (count, 3) float32
            unit normals of the faces they lie on (outward for a consistently wound mesh).
        """
        points, face = trimesh.sample.sample_surface(self.mesh, count, seed=seed)
        return np.asarray(points, np.float32), np.asarray(self.mesh.face_normals[face], np.float32)

    def vertex_colors(self) -> np.ndarray:
        """(N, 3) uint8 colours of the full mesh's vertices (texture sampled at the UVs)."""
        vis = self.mesh.visual
        try:
            colors = vis.to_color().vertex_colors if vis.kind == "texture" else vis.vertex_colors
        except Exception:  # noqa: BLE001 - trimesh raises various errors for odd materials
            colors = None
        if colors is None or len(colors) != len(self.mesh.vertices):
            return np.tile(np.array([[180, 60, 40]], np.uint8), (len(self.mesh.vertices), 1))
        return np.asarray(colors)[:, :3].astype(np.uint8)


def _primitive(spec: str) -> trimesh.Trimesh:
    """The mesh of a primitive spec (sizes checked by :func:`parse_primitive`)."""
    kind, dims = parse_primitive(spec, where=spec)
    if kind == "box":
        mesh = trimesh.creation.box(extents=dims)
        return trimesh.Trimesh(*trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max(dims) / 6))
    return trimesh.creation.cylinder(radius=dims[0], height=dims[1], sections=32)


def resolve_mesh_path(spec: str, root: Path | None = None) -> Path:
    """Find the mesh file a spec names (relative specs are resolved against ``root``).

    Raises:
        InputError: nothing loadable there.
    """
    path = Path(spec).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    if path.is_dir():
        for name in _YCB_NAMES:
            hits = sorted(path.rglob(name))
            if hits:
                return hits[0]
        hits = sorted(p for p in path.rglob("*") if p.suffix.lower() in MESH_SUFFIXES)
        if not hits:
            raise InputError(f"{path}: no mesh file ({', '.join(MESH_SUFFIXES)}) in this directory")
        return hits[0]
    if not path.is_file():
        raise InputError(f"{path}: object mesh not found")
    return path


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex-merged, quadric-decimated copy (open3d) with at most ``max_faces`` faces.

    Returns:
        verts (V, 3) float32, faces (F, 3) int64.
    """
    merged = trimesh.Trimesh(mesh.vertices.copy(), mesh.faces.copy(), process=True)
    merged.merge_vertices()
    if len(merged.faces) <= max_faces:
        return merged.vertices.astype(np.float32), merged.faces.astype(np.int64)
    from hoannot.models import _open3d

    o3d = _open3d.load()
    m = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(merged.vertices), o3d.utility.Vector3iVector(merged.faces)
    )
    m = m.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
    m.remove_unreferenced_vertices()
    m.remove_degenerate_triangles()
    return np.asarray(m.vertices, np.float32), np.asarray(m.triangles, np.int64)


def load_object(
    spec: str,
    root: Path | None = None,
    max_faces: int = 1500,
    symmetric: bool = False,
    name: str | None = None,
) -> ObjectModel:
    """Load an object model from a spec (see module docstring).

    Args:
        spec: mesh file, directory or primitive spec.
        root: directory relative specs are resolved against (the sequence folder).
        max_faces: face budget of the decimated fitting mesh.
        symmetric: mark for ADD-S evaluation.
        name: object id; defaults to the mesh's parent directory name.
    Raises:
        InputError: missing, unreadable or empty mesh, a mesh with a non-finite vertex, or a
            bad primitive spec (not positive, finite sizes). The size is not checked here:
            see :func:`hoannot.datasets.validate.check_object_model`.
    """
    if spec.startswith("primitive:"):
        mesh = _primitive(spec)
        name = name or spec
    else:
        path = resolve_mesh_path(spec, root)
        try:  # unprocessed first: processing would drop a NaN vertex (a hole in the object)
            mesh = trimesh.load(path, force="mesh", process=False)
        except Exception as e:  # noqa: BLE001 - trimesh raises many types
            raise InputError(f"{path}: cannot read mesh ({e})".splitlines()[0]) from None
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise InputError(f"{path}: mesh has no faces")
        if not np.isfinite(mesh.vertices).all():
            i = int(np.argmax(~np.isfinite(mesh.vertices).all(1)))
            raise InputError(f"{path}: mesh has non-finite vertices (vertex {i} of {len(mesh.vertices)})")
        mesh.process()
        name = name or (path.parent.name if path.parent.name else path.stem)
    v, f = decimate(mesh, max_faces)
    points = np.asarray(mesh.vertices, np.float32)
    hull = trimesh.Trimesh(points).convex_hull if len(points) > 4 else None
    hv = np.asarray(hull.vertices) if hull is not None else points
    diameter = float(np.max(np.linalg.norm(hv[:, None] - hv[None], axis=-1)))
    return ObjectModel(
        name=name,
        mesh=mesh,
        verts=torch.from_numpy(v),
        faces=torch.from_numpy(f),
        points=points,
        diameter=diameter,
        symmetric=symmetric,
    )
