"""Fit hand and object poses to a sequence, step by step along a schedule; resumable.

The schedule (:mod:`hoannot.fitting.schedule`) is HOnnotate's multi-camera one (track frame
by frame, then optimise overlapping batches of frames jointly, Sec. 4.2) or its
single-camera one (shared grasp, per-frame object, joint refinement, Sec. 4.3). Every step
minimises the weighted sum of the energies of :mod:`hoannot.fitting.energies` with Adam.
Only the observations of a step's frames are loaded, so memory is bounded by the batch
size, not by the sequence length.

After every step the state (all poses so far, per-frame quality, next step) is written
atomically to ``<out>/ckpt/state.npz``; ``resume=True`` continues from it and gives the
same result as an uninterrupted run (every step is seeded from the config).
"""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from pytorch3d.structures import Meshes
from pytorch3d.transforms import axis_angle_to_matrix

from hoannot.io import InputError, json_bytes, npz_bytes, write_files, write_npz
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.sequence import Sequence
from hoannot.fitting import energies as E
from hoannot.fitting.config import FitConfig
from hoannot.fitting.observations import Observations, load_observations
from hoannot.fitting.parameters import GraspParameters, PoseParameters
from hoannot.fitting.quality import frame_quality, sequence_quality
from hoannot.fitting.schedule import Step, make_plan, resolve_schedule
from hoannot.models.hand import HandModel
from hoannot.models.objects import ObjectModel
from hoannot.renderers.cameras import project_points
from hoannot.renderers.renderer import HandObjectRenderer

TERMS = ("mask", "depth", "j2d", "points3d", "joint", "penetration", "temporal")
PENETRATION_STRIDE = 4  # E_phy uses every 4th hand vertex
#: iterations between the loop's host reads (divergence check, progress); none in between, so
#: on a GPU the iterations queue without synchronising
CHECK_EVERY = 5


@dataclass
class FitResult:
    """Fitted poses and per-frame quality.

    Attributes:
        poses: world-frame poses of every frame (``source == "fit"``).
        quality: per-frame arrays (F,) of :func:`hoannot.fitting.quality.sequence_quality`:
            ``frames``, ``E_<term>`` final energies, ``iou_hand``, ``iou_object`` silhouette
            IoU against the segmentation (crop), ``depth_residual_mm`` median |rendered -
            observed| depth, the error features, ``hand_error_est_mm`` and
            ``object_error_est_mm`` (estimated hand MPJPE and object ADD without ground truth;
            absent when the package has no calibration: ``error_est_calibrated`` False),
            ``flag`` bool: the frame looks wrong. A fit stopped early (``stop_after``) has the
            last steps' residuals and hard flags only.
    """

    poses: HandObjectPoses
    quality: dict[str, np.ndarray]


def _energies(params: PoseParameters, obs: Observations, hand_model: HandModel, obj: ObjectModel,
              obj_normals: torch.Tensor, renderer: HandObjectRenderer, cfg: FitConfig) -> dict[str, torch.Tensor]:
    w = cfg.weights
    hand = params.hand(hand_model)
    ov = params.object_vertices(obj.verts)
    out: dict[str, torch.Tensor] = {}
    need_render = w.mask > 0 or w.depth > 0
    if need_render:
        r = renderer(hand.vertices, hand.faces, ov, obj.faces, obs.cams, soft=w.mask > 0)
        if w.mask > 0:
            out["mask"] = E.silhouette_energy(r.silhouette, obs.masks)
        if w.depth > 0:
            out["depth"] = E.depth_energy(r.zbuf, r.labels, obs.depth, obs.labels, cfg.tukey_c_cm)
    if w.points3d > 0:
        c, k, search = cfg.points3d_truncate_cm, cfg.points3d_candidates, cfg.resolved_points3d_search()
        out["points3d"] = E.point_to_surface_energy(obs.hand_points, obs.hand_points_valid, hand.vertices, hand.faces, c, k, search) + \
            E.point_to_surface_energy(obs.object_points, obs.object_points_valid, ov, obj.faces, c, k, search)
    if w.j2d > 0 and obs.kp_uv is not None:
        proj = project_points(hand.joints, obs.full_cams)
        out["j2d"] = E.keypoint_2d_energy(proj, obs.kp_uv, obs.kp_conf)
    if w.penetration > 0:
        on = torch.einsum("bij,vj->bvi", params.obj_R(), obj_normals)
        out["penetration"] = E.penetration_energy(hand.vertices[:, ::PENETRATION_STRIDE], ov, on, cfg.penetration_w)
    if w.joint > 0:
        out["joint"] = E.joint_limit_energy(hand_model.limits.violation(params.hand_pose))
    if w.temporal > 0 and isinstance(params, PoseParameters) and len(params.frames) > 1:
        traj = torch.cat([params.transl, axis_angle_to_matrix(params.global_orient).flatten(1), params.hand_pose,
                          params.obj_transl, params.obj_R().flatten(1)], dim=1)  # fmt: skip
        out["temporal"] = E.temporal_energy(traj, cfg.tc_velocity, cfg.tc_acceleration)
        if cfg.tc_grasp:  # the hand held still in the object's frame (resolved for the schedule by fit_sequence)
            rel = E.hand_in_object_frame(hand.joints[:, 0], axis_angle_to_matrix(params.global_orient),
                                         params.obj_R(), params.obj_transl)  # fmt: skip
            out["temporal"] = out["temporal"] + E.temporal_energy(torch.cat([rel, params.hand_pose], 1), cfg.tc_grasp, 0.0)
    return out


def _total(terms: dict[str, torch.Tensor], params: PoseParameters, cfg: FitConfig) -> torch.Tensor:
    total = sum(getattr(cfg.weights, k) * v.mean() for k, v in terms.items())
    if params.betas.requires_grad:
        total = total + cfg.betas_prior * params.betas.square().sum()
    return total


@dataclass
class FitContext:
    """What every step of a fit shares: the models on the fit's device, the renderer, and the
    config the energies see (``tc_grasp`` resolved for the schedule; the checkpoint digest and
    the recorded config keep the settings as given).

    Attributes:
        hand_model: on ``device``.  obj: its vertices (V, 3) and faces on ``device``.
        obj_normals: (V, 3) float32 object-frame vertex normals.
        renderer: the fit's renderer.  ecfg: the energies' config.
        keypoints: the 2D joints the fit reads (``"keypoints2d"``, ``"gt"`` or ``"none"``).
        device: the torch device (a string).
    """

    hand_model: HandModel
    obj: ObjectModel
    obj_normals: torch.Tensor
    renderer: HandObjectRenderer
    ecfg: FitConfig
    keypoints: str
    device: str

    @staticmethod
    def make(seq: Sequence, hand_model: HandModel, obj: ObjectModel, cfg: FitConfig) -> "FitContext":
        """The context of a fit of ``seq`` with ``cfg``."""
        device = str(torch.device(cfg.device))
        ecfg = cfg.model_copy(update={"tc_grasp": cfg.grasp_weight(resolve_schedule(cfg, len(seq.cameras)))})
        keypoints = cfg.keypoints
        if keypoints == "auto":
            keypoints = "keypoints2d" if (seq.root / "keypoints2d").is_dir() else "none"
        verts, faces = obj.verts.to(device), obj.faces.to(device)
        objd = ObjectModel(obj.name, obj.mesh, verts, faces, obj.points, obj.diameter, obj.symmetric)
        normals = Meshes([verts], [faces]).verts_normals_padded()[0]
        renderer = HandObjectRenderer(cfg.sigma_px2, cfg.faces_per_pixel, cfg.backend)
        return FitContext(hand_model.to(device), objd, normals, renderer, ecfg, keypoints, device)

    def observations(self, seq: Sequence, frames: list[int], seed: int) -> Observations:
        """The observations of ``frames`` as the fit's steps read them, on the device.

        Raises:
            InputError: as :func:`hoannot.fitting.observations.load_observations`.
        """
        c = self.ecfg
        return load_observations(seq, frames, c.crop_size, c.num_points, c.segmentation, seed, self.keypoints).to(self.device)

    def energies(self, params, obs: Observations) -> dict[str, torch.Tensor]:
        """Every term's per-frame energy (B,) of ``params`` (see :func:`_energies`)."""
        return _energies(params, obs, self.hand_model, self.obj, self.obj_normals, self.renderer, self.ecfg)

    def quality(self, params, obs: Observations) -> dict[str, np.ndarray]:
        """The per-frame quality of ``params`` (the arrays of :class:`FitResult`)."""
        return frame_quality(params, obs, self.hand_model, self.obj, self.obj_normals, self.renderer, self.ecfg)


def run_step(params, groups, obs: Observations, ctx: FitContext, iterations: int, root: Path, where: str,
             on_check=None, on_iteration=None) -> None:  # fmt: skip
    """Minimise the weighted energy (HOnnotate Eq. 3) of ``params`` with Adam for
    ``iterations`` iterations, frozen frames held (:meth:`PoseParameters.zero_frozen_grads`).

    Args:
        params: :class:`PoseParameters` or :class:`GraspParameters` (changed in place).
        groups: Adam parameter groups (:func:`_step_parameters`).
        where: names the step in a divergence error (``"batch step 2, frames 18-37"``).
        on_check: called every :data:`CHECK_EVERY` iterations with the energies as text.
        on_iteration: called after every iteration.
    Raises:
        InputError: a non-finite energy (names ``root``, ``where`` and the terms).
    """
    opt = torch.optim.Adam(groups)
    for it in range(iterations):
        opt.zero_grad(set_to_none=True)
        terms = ctx.energies(params, obs)
        loss = _total(terms, params, ctx.ecfg)
        check = it % CHECK_EVERY == 0 or it == iterations - 1
        if check:  # the only host read of the loop: one every CHECK_EVERY iterations
            vals = torch.stack([loss.detach()] + [v.detach().mean() for v in terms.values()]).tolist()
            if not np.isfinite(vals[0]):
                bad = [k for k, v in zip(terms, vals[1:]) if not np.isfinite(v)] or ["the pose parameters"]
                raise InputError(f"{root}: fit diverged ({where}, iteration {it}): non-finite {', '.join(bad)}; check "
                                 "this sequence's keypoints2d/, segmentation/ and depth")  # fmt: skip
        loss.backward()
        params.zero_frozen_grads()
        opt.step()
        if check and on_check is not None:
            on_check(" ".join(f"{k}={v:.3g}" for k, v in zip(terms, vals[1:])))
        if on_iteration is not None:
            on_iteration()


def inputs_digest(seq: Sequence, init: HandObjectPoses) -> str:
    """Short hash of what a fit starts from: the initial poses of the sequence's frames, the
    sequence header and calibration, the 2D joints, and the name and content of every depth
    and segmentation image of those frames (a segmentation made again by ``init --auto`` has
    the same size but other labels; hashing 1000 frames x 5 cameras of 320 x 240 reads about
    0.5 GB, a second or two, against minutes per frame of fitting)."""
    h = hashlib.sha1()
    for f in fields(HandObjectPoses):
        if f.name != "source":
            h.update(np.ascontiguousarray(getattr(init, f.name)).tobytes())
    for name in ("sequence.yaml", "calibration/cameras.json"):
        if (seq.root / name).is_file():
            h.update((seq.root / name).read_bytes())
    for p in sorted((seq.root / "keypoints2d").glob("*/*.npz")) + sorted((seq.root / "keypoints2d").glob("*.npz")):
        h.update(p.read_bytes())
    for cam in seq.cameras:
        for fr in seq.frames:
            for p in (seq.depth_path(cam.name, fr), seq.segmentation_path(cam.name, fr)):
                h.update(f"{p.relative_to(seq.root)}:".encode())
                h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:12]


def _save_state(path: Path, poses: HandObjectPoses, next_step: int, quality: dict, digest: str, inputs: str) -> None:
    arrays = {f.name: np.asarray(getattr(poses, f.name)) for f in fields(HandObjectPoses)}
    arrays.update({"q_" + k: v for k, v in quality.items()})
    write_npz(path, next_step=np.int64(next_step), config_digest=np.asarray(digest), inputs_digest=np.asarray(inputs),
              **arrays)  # fmt: skip


def _load_state(path: Path, digest: str, inputs: str):
    with np.load(path, allow_pickle=False) as z:
        if str(z["config_digest"]) != digest:
            raise InputError(f"{path}: checkpoint was written with other fit settings; rerun without --resume")
        if "inputs_digest" not in z.files or str(z["inputs_digest"]) != inputs:
            raise InputError(f"{path}: checkpoint was made from other inputs (initial poses, frames, calibration, "
                             "2D joints or images changed since); rerun without --resume")  # fmt: skip
        poses = HandObjectPoses(**{f.name: z[f.name] for f in fields(HandObjectPoses)})
        quality = {k[2:]: z[k] for k in z.files if k.startswith("q_")}
        return poses, int(z["next_step"]), quality


def fit_sequence(
    seq: Sequence,
    init: HandObjectPoses,
    hand_model: HandModel,
    obj: ObjectModel,
    cfg: FitConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> FitResult:
    """Optimise hand and object poses of every frame of ``seq`` along the config's schedule.

    Args:
        seq: the sequence (observations are read from it).
        init: initial world-frame poses of (at least) the sequence's frames.
        hand_model: MANO-layout hand model.
        obj: object model (its decimated mesh is rendered).
        cfg: settings (schedule, weights, iterations...).
        out_dir: folder for ``ckpt/state.npz`` (None: no checkpoints).
        resume: continue from the checkpoint in ``out_dir``.
        progress: show a rich progress bar with the current energies.
        stop_after: stop after this many steps (for tests of resuming).
    Returns:
        :class:`FitResult`.
    Raises:
        InputError: missing observations, an init without the sequence's frames, a
            checkpoint written with other settings or from other inputs (:func:`inputs_digest`),
            or a non-finite energy (checked
            every 5 iterations; names the step, frames and terms).
    """
    device = torch.device(cfg.device)
    frames = list(seq.frames)
    try:
        current = init.select(frames)
    except KeyError as e:
        raise InputError(f"initial poses lack frame {e}") from None
    current.source = "fit"
    plan = make_plan(cfg, len(frames), len(seq.cameras))
    ckpt = Path(out_dir) / "ckpt" / "state.npz" if out_dir is not None else None
    inputs = inputs_digest(seq, current) if ckpt is not None else ""
    quality: dict[str, np.ndarray] = {}
    first = 0
    if resume and ckpt is not None and ckpt.is_file():
        current, first, quality = _load_state(ckpt, cfg.digest(), inputs)
    ctx = FitContext.make(seq, hand_model, obj, cfg)
    hand_model, objd, obj_normals, renderer, ecfg = ctx.hand_model, ctx.obj, ctx.obj_normals, ctx.renderer, ctx.ecfg

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[energies]}")]  # fmt: skip
    with Progress(*cols, disable=not progress, transient=False) as bar:
        task = bar.add_task("fit", total=sum(s.iterations for s in plan[first:]), energies="")
        for si in range(first, len(plan)):
            if stop_after is not None and si - first >= stop_after:
                break
            step = plan[si]
            step_frames = [frames[i] for i in step.indices]
            bar.update(task, description=f"{step.kind} {si + 1}/{len(plan)} frames {step_frames[0]}-{step_frames[-1]}")
            torch.manual_seed(cfg.seed + si)
            try:
                obs = ctx.observations(seq, step_frames, cfg.seed + si)
            except InputError:  # bad input (hoannot.datasets.validate): the error line alone, no half bar
                bar.live.transient = True
                raise
            if step.init_from_previous:
                candidate = _copy_previous(current, step.indices[0])
                start_energy = [_start_energy(step, c.select(step_frames), obs, hand_model, objd, obj_normals,
                                              renderer, ecfg, str(device)) for c in (current, candidate)]  # fmt: skip
                if start_energy[1] < start_energy[0]:
                    current = candidate
            params, groups = _step_parameters(step, current.select(step_frames), hand_model, cfg, str(device))
            where = f"{step.kind} step {si + 1}, frames {step_frames[0]}-{step_frames[-1]}"
            run_step(params, groups, obs, ctx, step.iterations, seq.root, where,
                     lambda text: bar.update(task, energies=text), lambda: bar.advance(task))  # fmt: skip
            if step.kind == "grasp":  # the grasp holds for every frame: re-pose all of them
                current = _merge(current, params.to_poses(hand_model), step_frames)  # its frames' object poses
                whole = GraspParameters(current, hand_model, hand_model.num_betas, str(device))
                with torch.no_grad():
                    for name in ("grasp_orient", "grasp_pose", "grasp_transl", "betas"):
                        getattr(whole, name).copy_(getattr(params, name))
                current = _merge(current, whole.to_poses(hand_model), frames)
            else:
                current = _merge(current, params.to_poses(hand_model), step_frames)
            # a finished plan gets its quality from the final pass below (which renders every
            # frame once); only a fit stopped early returns the last steps' residuals
            if stop_after is not None and step.kind != "grasp":
                q = frame_quality(params, obs, hand_model, objd, obj_normals, renderer, ecfg)
                quality = _merge_quality(quality, q, step_frames, frames)
            if ckpt is not None:
                _save_state(ckpt, current, si + 1, quality, cfg.digest(), inputs)
            _signal_hook(si + 1)
    current.source = "fit"
    if stop_after is None or first + stop_after >= len(plan):  # the whole plan ran: estimate errors on the final poses
        quality = sequence_quality(seq, current, hand_model, objd, ecfg, ctx.keypoints)
    return FitResult(current, quality)


def _signal_hook(steps_done: int) -> None:
    """Test hook: ``HOANNOT_SIGNAL_AFTER_STEP="K:NAME"`` sends this process signal SIGNAME
    (e.g. ``2:KILL``, ``1:INT``) once step K's checkpoint is written, so tests can interrupt a
    fit at an exact point instead of racing it with a timer."""
    spec = os.environ.get("HOANNOT_SIGNAL_AFTER_STEP")
    if spec:
        k, _, name = spec.partition(":")
        if int(k) == steps_done:
            os.kill(os.getpid(), getattr(signal, "SIG" + name))


def _start_energy(step, poses, obs, hand_model, obj, obj_normals, renderer, cfg, device) -> float:
    """Total energy of a step's starting poses (no gradients)."""
    params, _ = _step_parameters(step, poses, hand_model, cfg, device)
    with torch.no_grad():
        return float(_total(_energies(params, obs, hand_model, obj, obj_normals, renderer, cfg), params, cfg))


def _copy_previous(current: HandObjectPoses, i: int) -> HandObjectPoses:
    """Frame ``i`` started from frame ``i - 1``'s result: every pose (``track``) or the object
    pose and the hand attached to it by the grasp (``object``, the same hand parameters).

    The fit keeps this candidate only where its energy is lower than that of the frame's own
    initialisation: HOnnotate tracks from the previous frame, but a per-frame initialisation
    from 2D joints (Eq. 11) is often closer after fast motion."""
    kw = {f.name: np.array(getattr(current, f.name), copy=True) for f in fields(HandObjectPoses)}
    for name in ("global_orient", "hand_pose", "transl", "obj_rot", "obj_transl"):
        kw[name][i] = kw[name][i - 1]
    return HandObjectPoses(**kw)


def _step_parameters(step: Step, poses: HandObjectPoses, hand_model: HandModel, cfg: FitConfig, device: str):
    """Free variables of a step and their Adam parameter groups."""
    if step.kind in ("grasp", "object"):
        params = GraspParameters(poses, hand_model, hand_model.num_betas, device)
        if step.kind == "grasp":  # Eq. 12-13: the grasp and the object poses of its frames together
            groups = [{"params": [params.grasp_orient, params.obj_delta], "lr": cfg.lr_rot},
                      {"params": [params.grasp_pose], "lr": cfg.lr_pose},
                      {"params": [params.grasp_transl, params.obj_transl], "lr": cfg.lr_transl}]  # fmt: skip
        else:
            groups = [{"params": [params.obj_delta], "lr": cfg.lr_rot}, {"params": [params.obj_transl], "lr": cfg.lr_transl}]
    else:
        params = PoseParameters(poses, hand_model.num_betas, device)
        params.frozen[: step.frozen] = True
        if step.frozen_end:
            params.frozen[-step.frozen_end :] = True
        groups = [
            {"params": [params.global_orient, params.obj_delta], "lr": cfg.lr_rot},
            {"params": [params.hand_pose], "lr": cfg.lr_pose},
            {"params": [params.transl, params.obj_transl], "lr": cfg.lr_transl},
        ]
    params.betas.requires_grad_(step.fit_betas)
    if step.fit_betas:
        groups.append({"params": [params.betas], "lr": cfg.lr_betas})
    return params, groups


def _merge(current: HandObjectPoses, batch: HandObjectPoses, batch_frames: list[int]) -> HandObjectPoses:
    index = {int(f): i for i, f in enumerate(current.frames)}
    idx = np.array([index[int(f)] for f in batch_frames])
    kw = {f.name: np.array(getattr(current, f.name), copy=True) for f in fields(HandObjectPoses)}
    for name in ("global_orient", "hand_pose", "transl", "obj_rot", "obj_transl"):
        kw[name][idx] = getattr(batch, name)
    kw["betas"] = batch.betas
    return HandObjectPoses(**kw)


def _merge_quality(quality: dict, q: dict, batch_frames: list[int], frames: list[int]) -> dict:
    if not quality:
        quality = {"frames": np.asarray(frames)}
        for k, v in q.items():
            quality[k] = np.ones(len(frames), bool) if v.dtype == bool else np.full(len(frames), np.nan, np.float32)
    index = {int(f): i for i, f in enumerate(frames)}
    idx = np.array([index[int(f)] for f in batch_frames])
    for k, v in q.items():
        if k in quality:
            quality[k][idx] = v
    return quality


def save_fit(out_dir: str | Path, result: FitResult, info: dict | None = None) -> None:
    """Write ``fit/poses.npz``, ``fit/quality.json`` (and ``info.json`` when given) atomically,
    all of them or none (:func:`hoannot.io.write_files`).

    Raises:
        OSError: a file could not be written (names it); the folder's files are then unchanged.
    """
    out = Path(out_dir)
    files = {out / "poses.npz": npz_bytes(**{f.name: np.asarray(getattr(result.poses, f.name))
                                              for f in fields(HandObjectPoses)}),
             out / "quality.json": json_bytes({k: np.asarray(v).tolist() for k, v in result.quality.items()})}  # fmt: skip
    if info is not None:
        files[out / "info.json"] = json_bytes(info)
    write_files(files)
