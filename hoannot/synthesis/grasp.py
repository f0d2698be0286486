"""Physically plausible grasps of real object meshes with the WebXR hand rig.

``synthesize_grasp`` places the palm of a :class:`~hoannot.models.rig.HandRig` next to
an object and closes the fingers until they touch it, so that synthetic captures show
a hand that touches the object without passing through it. The closing rule follows
GraspIt!'s "auto grasp" (Miller & Allen, IEEE RAM 2004): all joints of a finger close
together in small angle steps; when a finger segment touches the object, the joint
that moves it and the more proximal joints stop, while the distal joints keep closing
until their own segments touch or reach their limits. A step that would push a
segment more than ``max_penetration`` into the object is retried with half the step.

Inside/outside uses open3d's ray-casting signed distance with several rays voting
(``nsamples``), on the vertex-merged mesh, which tolerates the small holes of
non-watertight scans (YCB 006 mustard bottle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from hoannot.io import InputError
from hoannot.models.gltf_hand import FINGERS, skin
from hoannot.models.rig import FLEX_LIMITS, HandRig, SPREAD_LIMITS


class ObjectSDF:
    """Signed distance to a triangle mesh (metres, positive outside, negative inside).

    The mesh is rebuilt from positions and faces with duplicate vertices merged
    (texture seams), then optionally quadric-decimated; the sign is the majority of
    ``nsamples`` ray parity tests (open3d ``RaycastingScene.compute_signed_distance``).

    Args:
        mesh: the object (metres, object frame).
        nsamples: odd number of rays voting for inside/outside.
        max_faces: decimate to at most this many faces (None: keep all).
    Raises:
        InputError: empty mesh.
    """

    def __init__(self, mesh: trimesh.Trimesh, nsamples: int = 5, max_faces: int | None = None):
        from hoannot.models import _open3d

        if mesh is None or len(mesh.faces) == 0:
            raise InputError("synthesize_grasp: object mesh has no faces")
        merged = trimesh.Trimesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces), process=True)
        merged.merge_vertices()
        v, f = merged.vertices, merged.faces
        o3d = _open3d.load()
        if max_faces is not None and len(f) > max_faces:
            m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f))
            m = m.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
            v, f = np.asarray(m.vertices), np.asarray(m.triangles)
        self.vertices = np.asarray(v, np.float64)
        self.faces = np.asarray(f, np.int64)
        self._o3d = o3d
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor(self.vertices.astype(np.float32)), o3d.core.Tensor(self.faces.astype(np.uint32))
        )
        self.nsamples = int(nsamples)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(N,) float64 signed distances of (N, 3) points."""
        q = self._o3d.core.Tensor(np.asarray(points, np.float32).reshape(-1, 3))
        return self._scene.compute_signed_distance(q, nsamples=self.nsamples).numpy().astype(np.float64)

    def normals(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) unit normals of the triangles closest to (N, 3) points."""
        q = self._o3d.core.Tensor(np.asarray(points, np.float32).reshape(-1, 3))
        return self._scene.compute_closest_points(q)["primitive_normals"].numpy().astype(np.float64)

    def first_hit(self, origin: np.ndarray, direction: np.ndarray) -> float:
        """Distance along a unit ray to the first surface hit (``inf`` if none)."""
        ray = np.concatenate([origin, direction]).astype(np.float32)[None]
        return float(self._scene.cast_rays(self._o3d.core.Tensor(ray))["t_hit"].numpy()[0])


@dataclass
class Grasp:
    """A hand pose holding an object; everything in the OBJECT frame (metres, radians).

    Attributes:
        flex: (5, 3) finger flexion (``HandRig.articulate``).
        spread: (5,) finger abduction.
        R: (3, 3), t: (3,) rig model frame -> object frame.
        keypoints: (21, 3) HO-3D order.
        vertices: (V, 3) hand mesh vertices (faces: ``rig.faces``).
        contacts: (5,) bool, finger touches the object (``FINGERS`` order; the thumb
            through its phalanges, not the thenar).
        contact_distance: (5,) smallest signed distance of each finger's vertices.
        max_penetration: largest depth of any hand vertex inside the object (>= 0).
        approach: (3,) unit direction from the object towards the palm.
        opposition: see :func:`opposition` (1 = thumb directly opposes the fingers).
    """

    flex: np.ndarray
    spread: np.ndarray
    R: np.ndarray
    t: np.ndarray
    keypoints: np.ndarray
    vertices: np.ndarray
    contacts: np.ndarray
    contact_distance: np.ndarray
    max_penetration: float
    approach: np.ndarray
    opposition: float

    @property
    def num_contacts(self) -> int:
        return int(self.contacts.sum())


def _frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Right-handed orthonormal basis (columns) from a unit vector a and a direction b."""
    b = b - (b @ a) * a
    b = b / np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)], axis=1)


class _Poser:
    """Skins subsets of the rig's vertices quickly (one FK, few rows)."""

    def __init__(self, rig: HandRig):
        self.rig = rig
        h = rig.hand
        self.rest, self.w, self.j, self.ibm = h.rest_vertices, h.skin_weights, h.skin_joints, h.inverse_bind

    def vertices(self, flex, spread, R, t, rows: np.ndarray) -> np.ndarray:
        g = self.rig.hand.forward_kinematics(self.rig.local_rotations(flex, spread))
        v = skin(self.rest[rows], self.w[rows], self.j[rows], g @ self.ibm)
        return v @ R.T + t


def _close_finger(
    poser: _Poser,
    sdf: ObjectSDF,
    fi: int,
    flex: np.ndarray,
    spread: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    step: float,
    contact_tol: float,
    max_penetration: float,
    min_step: float,
) -> None:
    """Close finger ``fi`` in place (GraspIt!-style, see module docstring)."""
    seg = poser.rig.vertex_segment
    rows = np.flatnonzero(seg[:, 0] == fi)
    seg_of_row = seg[rows, 1]
    active = np.ones(3, bool)
    lim = FLEX_LIMITS[fi, :, 1]
    cur = step
    for _ in range(400):
        active &= flex[fi] < lim - 1e-9
        if not active.any():
            return
        trial = flex.copy()
        trial[fi, active] = np.minimum(trial[fi, active] + cur, lim[active])
        d = sdf(poser.vertices(trial, spread, R, t, rows))
        dseg = np.array([d[seg_of_row == k].min() if (seg_of_row == k).any() else np.inf for k in range(3)])
        if dseg.min() < -max_penetration:
            if cur > min_step:
                cur /= 2
                continue
            # cannot advance without penetrating: the touching segments stop
            hit = np.flatnonzero(dseg < contact_tol)
            active[: (hit.max() + 1) if len(hit) else 3] = False
            continue
        flex[fi] = trial[fi]
        touching = np.flatnonzero(dseg < contact_tol)
        if len(touching):
            active[: touching.max() + 1] = False
        cur = step


def _finger_rows(rig: HandRig, fi: int) -> np.ndarray:
    """Vertices of finger ``fi``; the thumb's metacarpal (thenar, part of the palm) excluded."""
    fingers, segments = rig.vertex_segment[:, 0], rig.vertex_segment[:, 1]
    return np.flatnonzero((fingers == fi) & ((fi != 0) | (segments > 0)))


def opposition(rig: HandRig, vertices: np.ndarray, sdf: "ObjectSDF", contacts: np.ndarray) -> float:
    """How much the thumb pushes against the other touching fingers.

    ``-n_thumb . mean(n_fingers)`` of the object's surface normals at the closest
    contact of the thumb and of each other touching finger: 1 = directly opposed,
    0 = orthogonal, -1 = same side; -1 if the thumb or every other finger is free.
    """
    if not contacts[0] or not contacts[1:].any():
        return -1.0
    pts = []
    for fi in np.flatnonzero(contacts):
        rows = _finger_rows(rig, fi)
        pts.append(vertices[rows[np.argmin(sdf(vertices[rows]))]])
    nrm = sdf.normals(np.asarray(pts))
    mean = nrm[1:].mean(0)
    return float(-nrm[0] @ mean / max(np.linalg.norm(mean), 1e-12))


def grasp_metrics(rig: HandRig, vertices: np.ndarray, sdf, contact_tol: float = 0.002):
    """Contacts and penetration of posed hand vertices against an SDF.

    Args:
        rig: the rig that produced ``vertices`` (for the finger labels).
        vertices: (V, 3) hand vertices in the object frame.
        sdf: callable (N, 3) -> (N,) signed distance, positive outside.
        contact_tol: metres; a finger touches if some vertex is closer than this.
    Returns:
        contacts (5,) bool, contact_distance (5,) metres, max_penetration metres (>= 0).
    """
    d = np.asarray(sdf(vertices), np.float64)
    # the thumb's metacarpal segment is the thenar eminence (part of the palm): a thumb
    # contact needs its proximal or distal phalanx
    cd = np.array([d[_finger_rows(rig, fi)].min() for fi in range(5)])
    return cd < contact_tol, cd, float(max(0.0, -d.min()))


def synthesize_grasp(
    rig: HandRig,
    object_mesh: trimesh.Trimesh | ObjectSDF,
    rng: np.random.Generator,
    *,
    palm_gap: tuple[float, float] = (0.01, 0.02),
    tilt: float = 0.6,
    contact_tol: float = 0.002,
    max_penetration: float = 0.002,
    step: float = np.deg2rad(4.0),
    min_contacts: int = 3,
    min_opposition: float = 0.3,
    tries: int = 12,
    nsamples: int = 5,
    max_faces: int | None = None,
) -> Grasp:
    """Place the hand next to an object and close its fingers onto it.

    Approach: a random direction ``u`` perpendicular to the object's longest principal
    axis ``L`` (PCA of the vertices), through a point drawn in the middle half of the
    object along ``L``; the palm faces ``-u`` with its centre ``palm_gap`` metres off
    the first surface hit along ``-u``, the fingers point around the cross-section
    (``L x u``, jittered), and the thumb starts pre-opposed. The hand is backed off
    along ``u`` until no vertex is inside the object; then each finger is closed (see
    the module docstring). The attempt with the most touching fingers (ties: least
    penetration) among ``tries`` is returned; it stops early once ``min_contacts``
    fingers including the thumb touch.

    Args:
        rig: the hand.
        object_mesh: the object in its own frame (metres), or a prepared ``ObjectSDF``.
        rng: random generator (the only source of randomness).
        palm_gap: metres between the palm centre and the surface before closing.
        contact_tol: metres; segments closer than this touch.
        max_penetration: metres; the deepest a closing step may push a finger in.
        step: radians per closing step.
        min_contacts: fingers that must touch for early stopping.
        tries: approach directions to try.
        nsamples, max_faces: see :class:`ObjectSDF`.
    Returns:
        :class:`Grasp` in the object frame.
    Raises:
        InputError: empty mesh, or no approach ray hits the object.
    """
    sdf = object_mesh if isinstance(object_mesh, ObjectSDF) else ObjectSDF(object_mesh, nsamples, max_faces)
    v = sdf.vertices
    centre = 0.5 * (v.min(0) + v.max(0))
    evals, evecs = np.linalg.eigh(np.cov((v - v.mean(0)).T))
    L = evecs[:, -1]
    extent_L = np.ptp((v - centre) @ L)
    poser = _Poser(rig)
    rest = rig.hand
    p = rest.rest_world[:, :3, 3]
    f_rest = p[11] - p[0]  # wrist -> middle MCP
    B_rest = _frame(rig.palm_normal, f_rest)
    radius = float(np.linalg.norm(v - centre, axis=1).max()) + 0.05
    all_rows = np.arange(len(rest.rest_vertices))
    best, best_score = None, None
    for _ in range(tries):
        a = rng.normal(size=3)
        u = a - (a @ L) * L
        u /= np.linalg.norm(u)
        f = np.cross(L, u) * rng.choice([-1.0, 1.0])
        f = np.cos(j := rng.uniform(-tilt, tilt)) * f + np.sin(j) * L
        origin_line = centre + rng.uniform(-0.25, 0.25) * extent_L * L
        hit = sdf.first_hit(origin_line + radius * u, -u)
        if not np.isfinite(hit):
            continue
        surface = origin_line + (radius - hit) * u
        R = _frame(-u, f) @ B_rest.T
        flex = np.zeros((5, 3))
        flex[0, 0] = rng.uniform(0.3, 1.0)  # thumb pre-opposed
        spread = np.clip(rng.normal(0.0, 0.05, 5), SPREAD_LIMITS[:, 0], SPREAD_LIMITS[:, 1])
        spread[0] = rng.uniform(-0.3, 0.6)
        t = surface + rng.uniform(*palm_gap) * u - R @ rig.palm_centre
        for _ in range(20):  # back off until the open hand is outside the object
            dmin = sdf(poser.vertices(flex, spread, R, t, all_rows)).min()
            if dmin >= 0.5 * contact_tol:
                break
            t = t + (0.5 * contact_tol - dmin + 1e-3) * u
        for fi in (1, 2, 3, 4, 0):
            _close_finger(poser, sdf, fi, flex, spread, R, t, step, contact_tol, max_penetration, step / 16)
        out = rig.articulate(flex, spread, R, t)
        contacts, cd, pen = grasp_metrics(rig, out.vertices, sdf, contact_tol)
        opp = opposition(rig, out.vertices, sdf, contacts)
        g = Grasp(flex, spread, R, t, out.keypoints, out.vertices, contacts, cd, pen, u, opp)
        score = (min(g.num_contacts, min_contacts) + (opp > min_opposition), g.opposition)
        if best is None or score > best_score:
            best, best_score = g, score
        if g.num_contacts >= min_contacts and opp > min_opposition:
            break
    if best is None:
        raise InputError("synthesize_grasp: no approach ray hit the object")
    return best


__all__ = ["FINGERS", "Grasp", "ObjectSDF", "grasp_metrics", "synthesize_grasp"]
