"""All settings of a fit in one object, loadable from YAML and overridable from the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hoannot.io import InputError


class EnergyWeights(BaseModel):
    """Weights of the energy terms (HOnnotate Eq. 3; multi-camera defaults of Sec. 4.2:
    alpha..eta = 20, 20, 5e-5, 50, 100, 50, 100). Units of each term: see
    :mod:`hoannot.fitting.energies`. A weight of 0 switches the term off; weights are finite
    and not negative."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mask: float = Field(20.0, ge=0, description="alpha: weight of E_mask, the silhouette term (HOnnotate Eq. 4)")
    depth: float = Field(20.0, ge=0, description="beta: weight of E_dpt, the Tukey depth term (Eq. 5)")
    j2d: float = Field(5e-5, ge=0, description="gamma: weight of E_j2d, the 2D joint term (Eq. 6), used when 2D joints exist")
    points3d: float = Field(50.0, ge=0, description="delta: weight of E_3D, the point-to-mesh term (Eq. 7)")
    joint: float = Field(100.0, ge=0, description="epsilon: weight of E_joint, the joint-angle limits (Eq. 8)")
    penetration: float = Field(50.0, ge=0, description="zeta: weight of E_phy, hand-object penetration (Eq. 9-10)")
    temporal: float = Field(100.0, ge=0, description="eta: weight of E_tc, temporal consistency")


class FitConfig(BaseModel):
    """Settings of ``hoannot fit``.

    Attributes (units): learning rates are Adam step sizes in radians (rotations, pose),
    metres (translations) and shape units (betas); ``crop_size`` in pixels. ``iterations``
    and ``batch_size``/``overlap`` are those of the multi-frame joint optimisation (and of
    the single-camera joint refinement); the schedules are in :mod:`hoannot.fitting.schedule`.
    ``keypoints="auto"`` uses ``keypoints2d/`` when the sequence has it.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # counts and sizes are bounded below
    weights: EnergyWeights = Field(EnergyWeights(), description="weights of the energy terms (HOnnotate Eq. 3)")
    schedule: Literal["auto", "multi", "single"] = Field("auto", description="auto (multi with more than one camera), multi (HOnnotate Sec. 4.2) or single (Sec. 4.3)")
    # multi-camera per-frame tracking before the batches (0: off). Off by default: measured on
    # WebXR hand + YCB can (2 cams x 4 frames, 30 batch its) tracking 30 its first gave MPJPE
    # 10.8 mm vs 8.2 mm without (single frames with the shape not yet fitted settle in worse poses).
    track_iterations: int = Field(0, ge=0, description="multi-camera: Adam iterations of per-frame tracking before the batches (0: off)")
    grasp_frames: int = Field(10, ge=1, description="single camera: frames of the random subset the grasp is fitted on (Eq. 12)")
    grasp_iterations: int = Field(100, ge=0, description="single camera: Adam iterations of the grasp step")
    object_iterations: int = Field(30, ge=0, description="single camera: Adam iterations of the per-frame object step")
    keypoints: Literal["auto", "keypoints2d", "gt", "none"] = Field("auto", description="2D joints for E_j2d: auto (keypoints2d/ when present), keypoints2d, gt or none")
    penetration_w: float = Field(0.5, ge=0, description="E_phy steepness per cm (the paper: w = 5; see energies.penetration_energy)")
    # E_phy tests the hand against points sampled on the full-resolution object surface (their
    # face normals), not against the decimated render mesh: on that mesh's vertices and averaged
    # normals a hand resting on the true surface reads as inside it, and E_phy pushed hand and
    # object apart (automatic starts, object ADD after / before the fit 0.33-0.46 / 0.09-0.13 mm on
    # cracker_a, meat_a, meat_b in benchmarks/results/auto_annotation.md at 921d368; with the
    # samples 0.15 / 0.28 / 0.41 mm at bfe72f2). Cost: E_phy's nearest-point search against 4000
    # instead of ~500 points, about 20 ms more per iteration of an 8-frame batch on one CPU thread
    penetration_samples: int = Field(4000, ge=0, description="E_phy: points sampled on the full-resolution object surface (0: the decimated mesh's vertices)")
    # which poses E_phy moves: in the paper both hand and object. The object is pinned by its depth
    # points and silhouettes, the hand much less; with a wrong hand the object gave way instead:
    # meat_b at fd52c04, automatic fit 7.03 mm, object ADD 0.13 mm after init and 0.50 after the fit,
    # and with the object at its true pose every data term lower and only E_phy higher.
    # Probe (`hand`, each fit of the fd52c04 benchmark refitted from its own init; captures where
    # E_phy moved the object; hand mm, object ADD mm, before -> after), automatic / ground-truth
    # starts: meat_a 6.86 -> 6.83, 0.18 -> 0.16 / 6.49 -> 6.51, 0.19 -> 0.13; meat_b 7.03 -> 7.06,
    # 0.50 -> 0.14 / 5.55 -> 5.64, 0.40 -> 0.14; meat_c 5.48 -> 5.50, 0.16 -> 0.12 / 5.42 -> 5.47,
    # 0.16 -> 0.12; cracker_a 4.25 -> 4.24, 0.13 -> 0.13 / 4.27 -> 4.27, 0.22 -> 0.15. Held out:
    # meat_d 7.51 -> 7.49, 0.13 -> 0.09 / 5.65 -> 5.63, 0.10 -> 0.08; cracker_e (auto) 5.87 -> 5.91,
    # 0.11 -> 0.10; mustard_d (ground truth) 11.84 -> 11.87, 0.15 -> 0.11. Objects better on 11 of
    # 12, hands within 0.09 mm. Not the default yet: auto_annotation{,_validation} not rerun.
    penetration_moves: Literal["both", "hand"] = Field("both", description="E_phy: poses its gradient moves, hand and object (the paper) or the hand alone (the object held where its data put it)")
    # E_tc parts: velocity ||x_t - x_{t-1}||^2 and acceleration ||x_{t+1} - 2x_t + x_{t-1}||^2,
    # each scaled by its factor here and then by eta. The velocity part pulls every moving frame
    # towards its neighbours (measured: object ADD 0.6 mm without E_tc, 3.7 mm with it,
    # WebXR+can 2 cams x 4 frames); off by default. The acceleration factor converts the paper's
    # eta = 100 to our units: our data terms are means over pixels and points, so at a factor
    # of 1 eta swamps them (measured, WebXR hand + YCB can, 5 cameras x 6 frames, full fit,
    # hand MPJPE / ADD: 5.75 / 0.87 mm at 1, 5.54 / 0.53 at 0.3, 5.24 / 0.29 at 0.1, 4.99 / 0.21
    # at 0.03; the same capture with our own hand model as the data hand: 0.84 mm at 0.1, and 1.85 mm
    # at 1 when the hand E_3D was still the closest-vertex term).
    tc_velocity: float = Field(0.0, ge=0, description="E_tc: factor of the velocity part ||x_t - x_{t-1}||^2 (then times eta)")
    tc_acceleration: float = Field(0.03, ge=0, description="E_tc: factor of the acceleration part ||x_{t+1} - 2 x_t + x_{t-1}||^2 (then times eta)")
    # grasp stability, a third E_tc part: velocity of the wrist pose in the object's frame and of
    # the finger angles (energies.hand_in_object_frame); None = 10 for the single-camera
    # schedule, 0 for multi-camera. Measured (WebXR hand + YCB can, 6 frames, 100 iterations):
    # 1 camera hand 12.0 / 10.1 / 9.6 / 9.6 mm, ADD 1.1 / 1.1 / 1.2 / 2.0 mm at 0 / 1 / 10 / 100
    # (one view lets the hand drift along the line of sight); 5 cameras 5.8 -> 6.3 mm at 10.
    tc_grasp: Optional[float] = Field(None, ge=0, description="E_tc: factor of the hand's motion in the object frame (None: 10 single camera, 0 multi-camera)")
    # HOnnotate Sec. 4.2: 100 Adam iterations per batch. Measured (WebXR hand + YCB can, 5 cameras
    # x 6 frames): hand MPJPE 6.29 mm at 60 iterations, 5.82 mm at 100.
    iterations: int = Field(100, ge=0, description="Adam iterations per batch (HOnnotate Sec. 4.2: 100)")
    # finger search (hoannot.fitting.finger_search): moves of one finger at a time that gradient
    # descent cannot take (a straight finger to a curled one), scored by the data energy, then
    # the batch pass again. Measured on 16 captures x 2 starts (benchmarks/results/finger_search.md):
    # automatic starts: a finger moved on 11 of 16, fitted hand MPJPE lower on all 11 (median on /
    # off 0.78; cracker_b 9.05 -> 4.73 mm); ground-truth starts: moved on 6, worse by > 0.1 mm on 3
    # (meat_d 4.44 -> 5.67 mm); fit time x2.2 / x1.9 (measured before the copy moves and E_phy's
    # surface samples; auto_annotation.md has the current defaults). On by default: labels without ground truth
    # start from automatic initialisations.
    finger_search: int = Field(1, ge=0, description="rounds of finger search after the batch pass, each followed by another batch pass (when a finger moved, or always: finger_pass) (0: off)")
    # the batch pass after a finger search that moved no finger: was skipped (`moved`; measured
    # at 760f93c: it alone moved meat_a's ground-truth start 6.29 -> 7.24 mm). Probe on cached
    # fits at 68e3701 (one more batch pass over all frames, fitted hand mm): automatic starts
    # mustard_b 5.85 -> 5.08, cracker_e 6.56 -> 5.73; ground-truth start mustard_b 4.54 -> 4.54.
    # benchmarks/results/auto_annotation_finger_pass.md (646dda6, 8 captures): the 5 automatic
    # fits that ran the pass all improved (mustard_b 5.85 -> 5.14, cracker_e 6.56 -> 5.87, mustard_d
    # 7.59 -> 7.06, cracker_a 4.46 -> 4.25, meat_e 4.97 -> 4.84 mm); ground-truth starts meat_a
    # 5.96 -> 6.49, cracker_d 4.80 -> 4.55, meat_e 5.04 -> 4.78. The default since then: users'
    # fits start from automatic initialisations, and every automatic fit that took the pass improved.
    finger_pass: Literal["moved", "always"] = Field("always", description="the batch pass after a finger search: only when a finger moved, or always")
    # sweeps of one finger search over the five fingers (a finger may need two moves), with distal
    # flexion steps of 0.25 rad as well: probe on cached inits at ce11b07 (fitted hand mm, one
    # sweep without the 0.25 steps -> 3 sweeps with them): automatic starts meat_d 10.14 -> 7.10,
    # mustard_c 10.62 -> 9.25, meat_b 13.87 -> 11.64, mustard_e 15.22 -> 14.81, cracker_d 6.15 ->
    # 5.47, mustard_a 5.54 -> 5.18; ground-truth starts of meat_d, mustard_c, meat_b, mustard_e
    # unchanged (5.65, 4.73, 5.92, 5.79). Scoring is cheap next to the batch pass a move brings.
    finger_sweeps: int = Field(3, ge=1, description="most sweeps over the five fingers in one finger search (a sweep that moves nothing ends it)")
    # restarts: the whole plan run again with other depth-point samples (seed + 1000 k); the fit
    # whose data energy (Eq. 3 without E_tc) is lowest on finger_frames evenly spaced frames, read
    # with this config's seed, wins. The fit is chaotic on the margin: a different sample set can
    # lead the finger search down another branch. Probe on cached automatic inits at 9666b0f
    # (fitted hand mm / data energy, seeds 0, 1, 2): meat_b 13.87 / 50.37, 6.71 / 43.57,
    # 7.52 / 44.70; cracker_d 6.15 / 43.76, 5.62 / 43.37, 5.70 / 43.74; sugar_single 10.35 /
    # 95.24, 11.02 / 95.45, 8.92 / 93.13; mustard_c 10.62 / 52.23, 10.22 / 52.67, 10.01 / 52.40
    # (the lowest energy is the best fit on 3 of 4). Off until auto_annotation has measured it
    # (costs restarts x the fit's time).
    restarts: int = Field(1, ge=1, description="fits of the whole plan with other point samples; the lowest data energy wins (1: one fit)")
    finger_frames: int = Field(8, ge=1, description="frames (evenly spaced) on which the finger search scores its moves")
    batch_size: int = Field(20, ge=1, description="frames optimised jointly in a batch")
    overlap: int = Field(2, ge=0, description="frames shared by consecutive batches (held fixed in the later one)")
    crop_size: int = Field(80, ge=8, description="side of the square render crop around hand and object, pixels")
    num_points: int = Field(1500, ge=1, description="depth points per frame for E_3D")
    lr_rot: float = Field(0.01, gt=0, description="Adam step size of rotations (global_orient, object), radians")
    # measured on WebXR hand + YCB can, 6 frames, 60 iterations: 5 cameras 6.3 / 6.5 / 6.3 mm
    # hand MPJPE at 0.005 / 0.01 / 0.02; one camera 9.9 / 12.7 / 15.3 mm (a single view leaves
    # fingers under-constrained, and a faster articulation wanders further from a good start);
    # not free: benchmarks/fit.py (2 cameras x 8 frames) hand 6.13 -> 6.69 mm, ADD 1.31 -> 0.91 mm
    lr_pose: float = Field(0.005, gt=0, description="Adam step size of hand_pose, radians")
    lr_transl: float = Field(0.002, gt=0, description="Adam step size of translations, metres")
    lr_betas: float = Field(0.05, gt=0, description="Adam step size of the hand shape betas")
    fit_betas: bool = Field(True, description="estimate the hand shape in the first multi-frame step")
    betas_prior: float = Field(0.1, ge=0, description="weight of the ||betas||^2 prior")
    tukey_c_cm: float = Field(2.0, gt=0, description="E_dpt: Tukey constant, cm")
    points3d_truncate_cm: float = Field(2.0, gt=0, description="E_3D: a point farther than this from the mesh counts as an outlier, cm")
    # E_3D closest-triangle search: 0 = the exact closest triangle (points3d_search); K = only
    # the K triangles with the nearest centroids (approximate; see
    # energies.point_to_surface_energy). The benchmarks in benchmarks/results/ ran with 0. With
    # the BVH search (the CPU default) the exact search is the fast one: E_3D costs 0.04 s per
    # iteration on annotation_accuracy's capture (5 cameras x 6 frames), against 1.85 s for the
    # brute-force search that K = 32 made about 5x faster (benchmarks/results/speed.md).
    points3d_candidates: int = Field(0, ge=0, description="E_3D: 0 = the exact closest triangle; K = among the K nearest centroids only (approximate)")
    # E_3D's exact closest-triangle search: bvh (open3d's Embree BVH, CPU), brute (every
    # triangle, pytorch3d; no host synchronisation); auto = bvh on CPU, brute on CUDA
    # E_3D's object surface: "full" = the full-resolution mesh in the object's frame (a BVH built
    # once; energies.rigid_point_to_surface_energy), "decimated" = the render mesh
    # (object_max_faces). The render mesh's flat facets sit off the true surface, so the depth
    # points pulled the registered object off it. Measured (same starts, fit from the cached
    # inits of auto_annotation at bfe72f2, object ADD decimated -> full, mm): automatic starts
    # meat_a 0.28 -> 0.23, meat_c 0.29 -> 0.24, meat_d 0.19 -> 0.15, meat_e 0.18 -> 0.16;
    # ground-truth starts meat_a 0.20 -> 0.17, meat_e 0.12 -> 0.09, meat_c and meat_d unchanged.
    points3d_object_surface: Literal["full", "decimated"] = Field("full", description="E_3D's object surface: full (full-resolution mesh, BVH) or decimated (the render mesh)")
    # E_3D's object points: the object mask's border pixels are dropped before back-projection,
    # as the registration of the object does (hoannot.annotate.object_pose.object_points): at the
    # border the depth mixes the object with the fingers in front of it. Probe on cached inits
    # (object ADD after the fit, 0 -> 1 px, mm): automatic starts meat_a 0.257 -> 0.179, meat_c
    # 0.28 -> 0.161; ground-truth starts (ground-truth masks) meat_a 0.181 -> 0.217, meat_c
    # 0.13 -> 0.161; fitted hand MPJPE within 0.15 mm of the fits without it.
    points3d_object_erode: int = Field(1, ge=0, description="E_3D: pixels dropped from the border of each object mask before its depth points are back-projected (0: none)")
    points3d_search: Literal["auto", "bvh", "brute"] = Field("auto", description="E_3D's closest-triangle search: bvh (open3d Embree, CPU), brute (pytorch3d), auto (bvh on CPU, brute on CUDA)")
    sigma_px2: float = Field(0.15, gt=0, description="soft rasterizer blur sigma, pixels^2")
    faces_per_pixel: int = Field(8, ge=1, description="soft rasterizer: faces blended per pixel")
    object_max_faces: int = Field(1000, ge=4, description="faces of the decimated object mesh that is rendered")
    segmentation: Literal["segmentation", "gt"] = Field("segmentation", description="masks the fit reads: segmentation/ or gt/segmentation/")
    # rasterizer (hoannot.renderers.rasterizer): auto = binned on CPU, PyTorch3D's forward on CUDA
    backend: Literal["auto", "binned", "pytorch3d", "native"] = Field("auto", description="rasterizer: auto (binned on CPU, PyTorch3D's forward on CUDA), binned, pytorch3d or native")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    seed: int = Field(0, description="random seed (point sampling, grasp frames)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        """``cpu``, ``cuda`` or ``cuda:N``; CUDA only where torch sees a GPU
        (:func:`hoannot.datasets.validate.check_device`)."""
        from hoannot.io import InputError
        from hoannot.datasets.validate import check_device

        try:
            return check_device(v, "device")
        except InputError as e:
            raise ValueError(str(e).removeprefix("device ")) from None

    def grasp_weight(self, schedule: str) -> float:
        """``tc_grasp`` for a resolved schedule (``"multi"`` or ``"single"``)."""
        if self.tc_grasp is not None:
            return self.tc_grasp
        return 10.0 if schedule == "single" else 0.0

    def resolved_points3d_search(self) -> str:
        """``points3d_search`` with ``"auto"`` resolved for ``device``."""
        if self.points3d_search != "auto":
            return self.points3d_search
        return "brute" if self.device.startswith("cuda") else "bvh"

    def digest(self) -> str:
        """Short hash of the settings that change results (device excluded)."""
        d = self.model_dump()
        d.pop("device")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def load_fit_config(path: str | Path | None = None, **overrides) -> FitConfig:
    """Defaults, then a YAML file, then keyword overrides (``None`` values ignored;
    ``weights`` may be a partial dict).

    Raises:
        InputError: unreadable YAML, a file that is not a mapping, or an unknown/invalid
            field: names the file and the field, and the command-line option when the bad
            value is an override (``fit config: field 'iterations': ... (from --iterations -5)``).
    """
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: fit config not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputError(f"{p}: expected a mapping of FitConfig fields, got a YAML {type(data).__name__}")
    for k, v in overrides.items():
        if v is None:
            continue
        if k == "weights":
            data["weights"] = {**data.get("weights", {}), **v}
        else:
            data[k] = v
    try:
        return FitConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        given = overrides.get(loc[0]) if loc else None
        where = path or "fit config"
        if loc and loc[0] == "weights" and isinstance(given, dict) and len(loc) > 1 and loc[1] in given:
            where, msg = "fit config", f"{msg} (from --weight {loc[1]}={given[loc[1]]})"
        elif given is not None and loc[0] != "weights":  # a command-line value: name the option
            where, msg = "fit config", f"{msg} (from --{loc[0].replace('_', '-')} {given!r})"
        raise InputError(f"{where}: field {'.'.join(loc)!r}: {msg}") from None
