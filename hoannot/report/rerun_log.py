"""``hoannot report SEQ/ --rerun FILE.rrd``: the capture and its poses as a Rerun recording.

``rerun FILE.rrd`` (the viewer ships with ``pip install "hoannot[viewer]"``) then shows the
cameras, their images, the depth point clouds and the posed meshes in 3D, with a ``frame``
time slider. Entity paths (world frame = the sequence's, metres)::

    world/cameras/<cam>               Transform3D camera-to-world (``Camera.T_world_cam``), static
    world/cameras/<cam>/image         Pinhole (``K``, width x height, OpenCV axes: RDF), static
    world/cameras/<cam>/image/rgb     EncodedImage: the RGB file's bytes, per frame
    world/cameras/<cam>/image/depth   EncodedDepthImage: the uint16 depth PNG's bytes with
                                      ``meter = 1 / depth_scale``, per frame
    world/points/<cam>                Points3D: the depth back-projected to the world
                                      (:meth:`Camera.backproject`, every ``step``-th pixel in
                                      both directions), coloured from the RGB image, per frame
    world/hand, world/object          Mesh3D: triangle indices and colour static, vertex
                                      positions and normals (world frame) per frame

The meshes are posed with the report's own code (:func:`hoannot.report.panels.posed_meshes`,
the fit's :class:`~hoannot.fitting.parameters.PoseParameters`) from the same poses, hand
model and (decimated) object mesh as the fit. Lens distortion is not modelled (``Pinhole``
is ideal; the images are shown as stored).

``rerun`` is imported only when a recording is written: it is an optional extra.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from hoannot.io import InputError
from hoannot.report.build import fit_config, load_stage
from hoannot.report.panels import HAND_RGB, OBJECT_RGB, posed_meshes

TIMELINE = "frame"
MAX_POINTS_PER_VIEW = 5_000  # back-projected depth points logged per camera and frame, at most (16 B each)
INSTALL_HINT = 'pip install "hoannot[viewer]"'


def check_rerun(path: str | Path):
    """The ``rerun`` module (rerun-sdk), once ``path`` is known to be usable for a recording.

    Raises:
        InputError: rerun-sdk is not installed (one line, with the install command), or
            ``path`` does not end in ``.rrd`` or is a folder.
    """
    try:
        import rerun
    except ImportError:
        raise InputError(f"--rerun needs rerun-sdk, which is not installed: {INSTALL_HINT}") from None
    path = Path(path)
    if path.suffix != ".rrd":
        raise InputError(f"--rerun {path}: expected a file name ending in .rrd")
    if path.is_dir():
        raise InputError(f"--rerun {path}: is a folder")
    return rerun


def point_step(height: int, width: int, max_points: int = MAX_POINTS_PER_VIEW) -> int:
    """Pixel stride (both directions) keeping at most ``max_points`` of an image's pixels."""
    return max(1, math.ceil(math.sqrt(height * width / max(1, max_points))))


def _vertex_normals(verts, faces):
    """(B, V, 3) float32 unit vertex normals of (B, V, 3) vertices sharing (F, 3) faces."""
    from pytorch3d.structures import Meshes

    return Meshes(verts=verts, faces=faces[None].expand(len(verts), -1, -1)).verts_normals_padded()


def write_recording(
    seq_dir: str | Path,
    path: str | Path,
    stage: str = "fit",
    device: str = "cpu",
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    max_points: int = MAX_POINTS_PER_VIEW,
    progress: bool = True,
) -> Path:
    """Write a Rerun recording (``.rrd``) of a sequence and its ``fit`` or ``init`` poses.

    One ``frame`` timeline step (= the frame id) per frame that has a pose; see the module
    docstring for what is logged where. The file is written beside ``path`` under a
    temporary name and renamed when complete (an interrupted run leaves any previous file).

    Args:
        seq_dir: the sequence folder.
        path: the ``.rrd`` file to write (its folder is created).
        stage: ``"fit"`` (``fit/poses.npz``) or ``"init"`` (``init/poses.npz``).
        device: torch device for posing the meshes.
        mano_model_path, ycb_dir: as for ``hoannot fit`` (the models must be the fit's).
        max_points: depth points per camera and frame, at most (a regular pixel grid).
        progress: show a rich progress bar.
    Returns:
        ``path``.
    Raises:
        InputError: rerun-sdk not installed, ``path`` not ending in ``.rrd`` or a folder,
            unknown stage, no sequence, missing or malformed poses, unreadable image (names
            the file).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    rr = check_rerun(path)
    path = Path(path)
    seq, poses, frames = load_stage(seq_dir, stage)
    cfg, _, _ = fit_config(seq)
    hand_model = load_hand_model(seq, mano_model_path).to(device)
    obj = load_sequence_object(seq, ycb_dir, cfg.object_max_faces)
    obj_verts, obj_faces = obj.verts.to(device), obj.faces.to(device)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.rrd")
    rec = rr.RecordingStream("hoannot")
    rec.set_log_time_enabled(False)  # one timeline: "frame"
    rec.save(tmp)
    try:
        rec.send_recording_name(f"{seq.config.name} ({stage})")
        for cam in seq.cameras:
            base = f"world/cameras/{cam.name}"
            T = np.asarray(cam.T_world_cam, np.float64)
            rec.log(base, rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]), static=True)
            rec.log(f"{base}/image", rr.Pinhole(image_from_camera=np.asarray(cam.K), resolution=[cam.width, cam.height],
                                                camera_xyz=rr.ViewCoordinates.RDF), static=True)  # fmt: skip
        for name, rgb, faces in (("hand", HAND_RGB, hand_model.faces), ("object", OBJECT_RGB, obj_faces)):
            rec.log(f"world/{name}", rr.Mesh3D.from_fields(triangle_indices=faces.cpu().numpy().astype(np.uint32),
                                                           albedo_factor=[*rgb, 255]), static=True)  # fmt: skip

        cols = [TextColumn("rerun"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), TimeRemainingColumn()]
        with Progress(*cols, disable=not progress, transient=False) as bar:
            task = bar.add_task("rerun", total=len(frames))
            batch = max(1, cfg.batch_size)
            for i in range(0, len(frames), batch):
                chunk = frames[i : i + batch]
                hand, ov = posed_meshes(poses.select(chunk), hand_model, obj_verts, device)
                hn, on = _vertex_normals(hand.vertices, hand.faces), _vertex_normals(ov, obj_faces)
                hv, hn, ov, on = (t.cpu().numpy().astype(np.float32) for t in (hand.vertices, hn, ov, on))
                for b, frame in enumerate(chunk):
                    rec.set_time(TIMELINE, sequence=int(frame))
                    rec.log("world/hand", rr.Mesh3D.from_fields(vertex_positions=hv[b], vertex_normals=hn[b]))
                    rec.log("world/object", rr.Mesh3D.from_fields(vertex_positions=ov[b], vertex_normals=on[b]))
                    for cam in seq.cameras:
                        base = f"world/cameras/{cam.name}/image"
                        rgb_path, depth_path = seq.rgb_path(cam.name, frame), seq.depth_path(cam.name, frame)
                        try:
                            rec.log(f"{base}/rgb", rr.EncodedImage(path=rgb_path))
                            rec.log(f"{base}/depth", rr.EncodedDepthImage(depth_path.read_bytes(), media_type="image/png",
                                                                          meter=1.0 / cam.depth_scale))  # fmt: skip
                        except OSError as e:
                            raise InputError(f"{e.filename}: unreadable ({e.strerror})") from None
                        rgb = seq.read_rgb(cam.name, frame)
                        depth = seq.read_depth(cam.name, frame)  # metres
                        step = point_step(*depth.shape, max_points)
                        grid = np.zeros(depth.shape, bool)
                        grid[::step, ::step] = True
                        pts, vu = cam.backproject(depth, grid)
                        colours = rgb[vu[:, 0], vu[:, 1]] if rgb.shape[:2] == depth.shape else None
                        rec.log(f"world/points/{cam.name}", rr.Points3D(pts.astype(np.float32), colors=colours,
                                                                       radii=rr.Radius.ui_points(2.0)))  # fmt: skip
                    bar.advance(task)
        rec.flush()
        rec.disconnect()
        os.replace(tmp, path)
    except BaseException:
        rec.disconnect()
        tmp.unlink(missing_ok=True)
        raise
    return path
