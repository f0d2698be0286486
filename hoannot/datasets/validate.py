"""The one validation layer of hoannot: read-only checks of everything a command reads.

:func:`validate_sequence` opens the folder (see :mod:`hoannot.datasets.sequence` for the
layout), checks the calibration, the object spec and every (camera, frame) image, and
returns a :class:`ValidationReport`. ``hoannot init`` runs it with ``for_command="init"``
(every image decoded, depth statistics); ``fit``, ``export`` and ``report`` run it with their
own name (image headers only: size, channels and dtype, not the pixels), and then check
the values of what they read with the small functions below as they read it
(:func:`check_depth_frame`, :func:`check_labels`, :func:`check_poses`,
:func:`check_object_model`, :func:`check_device`).

Fatal problems raise :class:`~hoannot.io.InputError` with one line naming the
offending file; problems that do not stop annotation (e.g. mostly empty depth) become report
warnings. Plausibility problems (a depth scale that puts the scene kilometres away, an object
of more than :data:`MAX_OBJECT_DIAGONAL_M`, "millimetres as metres?") are warnings at
``init`` and errors for the commands whose results they would corrupt (``strict=True``).

Nothing is written: the folder is only read (no file is created, modified or touched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hoannot.camera import Camera
from hoannot.io import InputError, read_image
from hoannot.datasets.segmentation import segmentation_dir
from hoannot.datasets.sequence import Sequence, SequenceConfig, load_cameras, load_config
from hoannot.models.objects import parse_primitive

#: Tolerance of the rigidity checks on ``T_world_cam`` (orthonormality, det, last row).
RIGID_TOL = 1e-4
#: A depth frame with fewer valid (non-zero) pixels than this fraction draws a warning.
MIN_VALID_DEPTH_FRACTION = 0.5
#: Median valid depth outside this range (metres) suggests a wrong ``depth_scale``.
PLAUSIBLE_DEPTH_M = (0.1, 5.0)
#: Mesh file extensions accepted for ``object.mesh`` and YCB folders.
MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
#: An object whose bounding-box diagonal exceeds this (metres) is probably in millimetres.
MAX_OBJECT_DIAGONAL_M = 2.0
#: Hand and object translations farther than this from the world origin (metres) are refused.
MAX_TRANSLATION_M = 10.0
#: The commands that validate what they read (``for_command`` of :func:`validate_sequence`).
COMMANDS = ("init", "fit", "export", "report")


@dataclass
class DepthStats:
    """Valid-depth statistics of one camera over all frames (metres).

    Attributes:
        min_m, median_m, max_m: over pixels with non-zero depth (NaN if none).
        valid_fraction: fraction of pixels with non-zero depth, all frames pooled.
    """

    min_m: float
    median_m: float
    max_m: float
    valid_fraction: float


@dataclass
class ValidationReport:
    """Result of :func:`validate_sequence`.

    Attributes:
        root: the sequence folder.
        cameras: camera names in ``sequence.yaml`` order.
        frames: frame ids.
        image_sizes: camera name -> (width, height) in pixels (from the calibration;
            checked against the images when ``check_images``).
        depth_stats: camera name -> :class:`DepthStats` (empty when images were not read).
        object_mesh: the object spec as resolved ("primitive:...", an absolute mesh path,
            or ``"ycb:<id>"`` when it is looked up at ``init``).
        warnings: one line each, problems that do not stop annotation.
        images_checked: whether image contents were decoded and checked.
    """

    root: Path
    cameras: list[str]
    frames: list[int]
    image_sizes: dict[str, tuple[int, int]]
    depth_stats: dict[str, DepthStats] = field(default_factory=dict)
    object_mesh: str = ""
    warnings: list[str] = field(default_factory=list)
    images_checked: bool = False

    def summary(self) -> str:
        """A few human-readable lines (for the CLI)."""
        lines = [
            f"{self.root}: {len(self.cameras)} camera(s) x {len(self.frames)} frame(s), "
            f"object {self.object_mesh}"
        ]
        for cam in self.cameras:
            w, h = self.image_sizes[cam]
            line = f"  {cam}: {w}x{h}"
            s = self.depth_stats.get(cam)
            if s is not None:
                line += (
                    f", depth {s.min_m:.3f}-{s.max_m:.3f} m (median {s.median_m:.3f}), "
                    f"{100 * s.valid_fraction:.0f}% valid"
                )
            lines.append(line)
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# individual checks (each raises InputError naming ``where``)
# ---------------------------------------------------------------------------------------
def resolve_object(root: Path, config: SequenceConfig, ycb_dir: Path | None = None) -> tuple[str, list[str]]:
    """Check that the object of ``config`` exists.

    Args:
        root: sequence folder (relative mesh paths are relative to it).
        config: the parsed ``sequence.yaml``.
        ycb_dir: optional YCB models folder (``<ycb_dir>/<id>/`` holding a mesh file);
            used when ``object.mesh`` is empty.
    Returns:
        (resolved spec, warnings; a primitive larger than :data:`MAX_OBJECT_DIAGONAL_M`
        is a warning here, see :func:`check_object_model` for the mesh files).
    Raises:
        InputError: mesh file missing, unknown primitive, or YCB id not in ``ycb_dir``;
            the message names ``sequence.yaml``.
    """
    where = root / "sequence.yaml"
    mesh = config.object.mesh.strip()
    if mesh.startswith("primitive:"):
        kind, dims = parse_primitive(mesh, where)
        diag = math.sqrt(sum(d * d for d in dims)) if kind == "box" else math.hypot(2 * dims[0], dims[1])
        return mesh, [w for w in [_size_warning(diag, f"object {mesh!r}")] if w]
    if mesh:
        p = Path(mesh).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise InputError(f"{where}: unknown object: mesh file {p} does not exist")
        return str(p.resolve()), []
    if ycb_dir is not None:
        folder = Path(ycb_dir) / config.object.id
        if not folder.is_dir() or not any(q.suffix.lower() in MESH_EXTENSIONS for q in folder.iterdir()):
            raise InputError(f"{where}: unknown object {config.object.id!r}: no mesh in {folder}")
        return f"ycb:{config.object.id}", []
    return f"ycb:{config.object.id}", [
        f"object {config.object.id!r} has no mesh; it must be found in the YCB folder given to init"
    ]


def check_camera(cam: Camera, where: Path | str) -> None:
    """Check intrinsics, size, extrinsics and depth scale of one camera.

    Checks: ``K`` (3, 3) finite with fx, fy > 0 and last row [0, 0, 1]; width, height > 0;
    ``T_world_cam`` (4, 4) finite and rigid (R^T R = I and det R = +1 within
    :data:`RIGID_TOL`, last row [0, 0, 0, 1]); ``depth_scale`` finite and > 0; ``dist``
    finite.

    Raises:
        InputError: naming ``where`` and the camera.
    """
    pre = f"{where}: camera {cam.name!r}:"
    K = np.asarray(cam.K, dtype=np.float64)
    if K.shape != (3, 3):
        raise InputError(f"{pre} K must be 3x3, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise InputError(f"{pre} K has non-finite entries")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{pre} K focal lengths must be positive (fx={K[0, 0]}, fy={K[1, 1]})")
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9):
        raise InputError(f"{pre} K last row must be [0, 0, 1], got {K[2].tolist()}")
    if cam.width <= 0 or cam.height <= 0:
        raise InputError(f"{pre} image size must be positive, got {cam.width}x{cam.height}")
    T = np.asarray(cam.T_world_cam, dtype=np.float64)
    if T.shape != (4, 4):
        raise InputError(f"{pre} T_world_cam must be 4x4, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise InputError(f"{pre} T_world_cam has non-finite entries")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=RIGID_TOL, rtol=0):
        raise InputError(f"{pre} T_world_cam last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > RIGID_TOL:
        raise InputError(f"{pre} T_world_cam is not rigid: rotation not orthonormal (|R^T R - I| = {err:.2g})")
    det = float(np.linalg.det(R))
    if abs(det - 1.0) > RIGID_TOL:
        raise InputError(f"{pre} T_world_cam is not rigid: det(R) = {det:.6g}, expected +1")
    if not (math.isfinite(cam.depth_scale) and cam.depth_scale > 0):
        raise InputError(f"{pre} depth_scale must be positive, got {cam.depth_scale}")
    if not np.all(np.isfinite(np.asarray(cam.dist, dtype=np.float64))):
        raise InputError(f"{pre} dist has non-finite entries")


def _size_warning(diagonal_m: float, what: str) -> str | None:
    if math.isfinite(diagonal_m) and diagonal_m > MAX_OBJECT_DIAGONAL_M:
        return (f"{what} has a bounding-box diagonal of {diagonal_m:.4g} m (more than {MAX_OBJECT_DIAGONAL_M:g} m): "
                "millimetres as metres? sizes and mesh vertices are in metres")  # fmt: skip
    return None


def check_object_model(obj, where: Path | str, strict: bool, what: str | None = None) -> list[str]:
    """Check the size of a loaded :class:`~hoannot.models.objects.ObjectModel`.

    Returns:
        warnings: an object whose bounding-box diagonal exceeds :data:`MAX_OBJECT_DIAGONAL_M`
        (with ``strict`` False).
    Raises:
        InputError: that object with ``strict`` (it would corrupt a fit or labels); names
            ``where`` and ``what`` (default: the object's name).
    """
    pts = np.asarray(obj.points, np.float64)
    diag = float(np.linalg.norm(pts.max(0) - pts.min(0))) if len(pts) else 0.0
    w = _size_warning(diag, what or f"object {obj.name!r}")
    if w and strict:
        raise InputError(f"{where}: {w}")
    return [w] if w else []


def check_device(value: str, option: str = "--device") -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, and CUDA only where torch sees a GPU.

    Returns:
        ``value``.
    Raises:
        InputError: anything else, one line naming ``option``.
    """
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(value)):
        import torch

        try:
            torch.device(value)
        except (RuntimeError, TypeError):
            raise InputError(f"{option} {value!r} is not a device (use cpu, cuda or cuda:N)") from None
        raise InputError(f"{option} {value!r}: fits run on cpu or cuda (so do perception and rendering)")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"{option} {value!r}: no CUDA GPU is visible to torch {torch.__version__} "
                             "(run on the CPU: --device cpu)")  # fmt: skip
        n = torch.cuda.device_count()
        if ":" in value and int(value.split(":")[1]) >= n:
            raise InputError(f"{option} {value!r}: torch sees {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    return value


def check_poses(poses, path: Path | str, frames: list[int] | None = None) -> None:
    """Check a :class:`~hoannot.datasets.poses.HandObjectPoses` as read from ``path``.

    Checks: every array finite; no duplicate frame id; hand and object translations within
    :data:`MAX_TRANSLATION_M` of the world origin; with ``frames`` (the sequence's), every
    frame id is one of them.

    Raises:
        InputError: naming ``path``, the array and an example frame.
    """
    ids = np.asarray(poses.frames, np.int64)
    dup = _duplicates([str(int(f)) for f in ids])
    if dup:
        raise InputError(f"{path}: duplicate frame id(s) {', '.join(dup[:5])}")
    for name in ("global_orient", "hand_pose", "betas", "transl", "obj_rot", "obj_transl"):
        a = np.asarray(getattr(poses, name), np.float64)
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(1) if name != "betas" else ~np.isfinite(a)
        if bad.any():
            where = "" if name == "betas" else f" (frame {int(ids[np.argmax(bad)])})"
            raise InputError(f"{path}: '{name}' has non-finite values{where}")
    for name in ("transl", "obj_transl"):
        dist = np.linalg.norm(np.asarray(getattr(poses, name), np.float64), axis=-1)
        if len(dist) and dist.max() > MAX_TRANSLATION_M:
            i = int(np.argmax(dist))
            raise InputError(f"{path}: '{name}' of frame {int(ids[i])} is {dist[i]:.4g} m from the world origin "
                             f"(more than {MAX_TRANSLATION_M:g} m; translations are in metres)")  # fmt: skip
    if frames is not None:
        extra = sorted(set(int(f) for f in ids) - set(int(f) for f in frames))
        if extra:
            raise InputError(f"{path}: frame id(s) {extra[:5]} are not frames of the sequence")


#: PIL image mode -> (trailing shape, dtype) of the decoded array (what imageio returns).
_PIL_MODES = {
    "1": ((), "bool"), "L": ((), "uint8"), "LA": ((2,), "uint8"), "P": ((3,), "uint8"),
    "RGB": ((3,), "uint8"), "RGBA": ((4,), "uint8"), "CMYK": ((4,), "uint8"),
    "I;16": ((), "uint16"), "I;16L": ((), "uint16"), "I;16B": ((), "uint16"), "I;16N": ((), "uint16"),
    "I": ((), "int32"), "F": ((), "float32"),
}  # fmt: skip


def image_header(path: Path | str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an image file from its header (the pixels are not decoded, unless
    the format is not one PIL knows the layout of).

    Raises:
        InputError: missing file, or a file no image reader can open.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        from PIL import Image

        with Image.open(path) as im:
            (w, h), mode = im.size, im.mode
        tail, dtype = _PIL_MODES[mode]
        return (h, w, *tail), np.dtype(dtype)
    except Exception:  # noqa: BLE001 - not a PIL format (or odd mode): decode it
        img = read_image(path)
        return img.shape, img.dtype


def check_rgb(shape, dtype, path: Path | str, wh: tuple[int, int], cam: str) -> None:
    """Raises InputError unless an rgb image is (H, W, 3|4) uint8 of the calibrated size ``wh``."""
    if np.dtype(dtype) != np.uint8 or len(shape) != 3 or shape[2] not in (3, 4):
        raise InputError(f"{path}: rgb must be (H, W, 3) uint8, got {tuple(shape)} {np.dtype(dtype)}")
    if (shape[1], shape[0]) != wh:
        raise InputError(f"{path}: rgb size {(shape[1], shape[0])} != calibrated size {wh} of camera {cam!r}")


def check_depth(shape, dtype, path: Path | str, wh: tuple[int, int], cam: str, of: str = "calibrated size") -> None:
    """Raises InputError unless a depth image is (H, W) uint16 of size ``wh`` (``of`` says
    whose size that is: the calibrated one, or its rgb image's)."""
    if len(shape) != 2 or np.dtype(dtype) != np.uint16:
        raise InputError(f"{path}: depth must be single-channel uint16, got {tuple(shape)} {np.dtype(dtype)}")
    if (shape[1], shape[0]) != wh:
        raise InputError(f"{path}: depth size {(shape[1], shape[0])} != {of} {wh} of camera {cam!r}")


def check_segmentation(shape, dtype, path: Path | str, wh: tuple[int, int]) -> None:
    """Raises InputError unless a segmentation image is (H, W) uint8 of the size ``wh``."""
    if len(shape) != 2 or np.dtype(dtype) != np.uint8 or (shape[1], shape[0]) != wh:
        raise InputError(f"{path}: segmentation must be ({wh[1]}, {wh[0]}) uint8, got {tuple(shape)} {np.dtype(dtype)}")


def check_labels(lab: np.ndarray, path: Path | str, wh: tuple[int, int]) -> np.ndarray:
    """A decoded segmentation: shape and dtype as :func:`check_segmentation`, labels in
    {0, 1, 2} (background, hand, object). Returns ``lab``.

    Raises:
        InputError: naming ``path``.
    """
    check_segmentation(lab.shape, lab.dtype, path, wh)
    if lab.size and int(lab.max()) > 2:
        raise InputError(f"{path}: segmentation labels must be 0, 1 or 2, found {int(lab.max())}")
    return lab


def check_depth_frame(raws: list[np.ndarray], paths: list[Path], cameras: list[Camera]) -> None:
    """Value checks of one frame's decoded depth images (all cameras), for the commands whose
    results bad depth would corrupt (``fit``).

    Checks: each image as :func:`check_depth`; at least one camera has a non-zero pixel; the
    median valid depth of each image times its ``depth_scale`` within
    :data:`PLAUSIBLE_DEPTH_M` (``init`` only warns about this).

    Raises:
        InputError: naming the file.
    """
    lo, hi = PLAUSIBLE_DEPTH_M
    any_valid = False
    for raw, p, cam in zip(raws, paths, cameras):
        check_depth(raw.shape, raw.dtype, p, (int(cam.width), int(cam.height)), cam.name)
        nz = raw[raw > 0]
        if not nz.size:
            continue
        any_valid = True
        med = float(np.median(nz[:: max(1, nz.size // 10000)])) * cam.depth_scale
        if not lo <= med <= hi:
            raise InputError(f"{p}: median depth {med:.4g} m is outside {lo}-{hi} m; is depth_scale "
                             f"{cam.depth_scale} of camera {cam.name!r} right (metres per depth unit)?")  # fmt: skip
    if not any_valid and paths:
        raise InputError(f"{paths[0]}: depth is zero everywhere in this frame, in every camera")


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in names if n in seen or seen.add(n)})


def _open_checked(root: Path) -> Sequence:
    """Like ``open_sequence`` but also rejects duplicate camera names."""
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    config = load_config(root / "sequence.yaml")
    cal = root / "calibration" / "cameras.json"
    cameras = load_cameras(cal)  # raises for a missing / invalid file
    dup = _duplicates([c.name for c in cameras])
    if dup:
        raise InputError(f"{cal}: duplicate camera name(s) {', '.join(dup)}")
    by_name = {c.name: c for c in cameras}
    return Sequence(root=root, config=config, cameras=[by_name.get(n) for n in config.cameras])  # type: ignore[misc]


def _image_size(img: np.ndarray) -> tuple[int, int]:
    return int(img.shape[1]), int(img.shape[0])


def open_validated(
    root: str | Path, for_command: str, ycb_dir: Path | None = None, segmentation: str | None = None
) -> Sequence:
    """Open a sequence folder for ``fit``, ``export`` or ``report``: :func:`validate_sequence`
    with ``for_command`` (calibration, object spec, frame files and image headers), then the
    opened :class:`Sequence`. See :func:`validate_sequence` for ``segmentation``.

    Raises:
        InputError: as :func:`validate_sequence`.
    """
    rep = validate_sequence(root, ycb_dir=ycb_dir, for_command=for_command, segmentation=segmentation)
    opened = _open_checked(Path(root))
    return Sequence(root=rep.root, config=opened.config, cameras=opened.cameras)


# ---------------------------------------------------------------------------------------
def validate_sequence(
    seq: Sequence | str | Path,
    check_images: bool = True,
    ycb_dir: Path | None = None,
    for_command: str = "init",
    segmentation: str | None = None,
) -> ValidationReport:
    """Check a sequence folder without modifying it.

    Args:
        seq: an opened :class:`Sequence` (its in-memory config and cameras are checked)
            or the folder path (``sequence.yaml`` and ``calibration/cameras.json`` are
            parsed here, including a duplicate-name check of the calibration file).
        check_images: with ``for_command="init"``: decode every rgb/depth image (corrupt
            files, dtype, sizes, depth statistics). When False only the existence of the
            files is checked.
        ycb_dir: optional YCB models folder, to check an object given by id only.
        for_command: ``"init"`` (as above) or ``"fit"``, ``"export"``, ``"report"``: image
            headers only (size, channels, dtype of every depth and present segmentation
            image; the rgb images too for ``report``), no pixel is decoded -- those commands
            check values as they read them (:func:`check_depth_frame`, :func:`check_labels`).
        segmentation: ``"segmentation"`` or ``"gt"``: that segmentation folder must hold an
            image for every (camera, frame) (``fit``); None: optional.

    Returns:
        :class:`ValidationReport`.

    Raises:
        InputError (one line, naming the file) for: missing ``sequence.yaml`` or
        ``cameras.json``; duplicate camera names or frame ids; a configured camera
        without calibration; bad ``K``, non-rigid / non-finite ``T_world_cam``,
        non-positive ``depth_scale``; unknown object (missing mesh file or bad
        primitive spec); a missing rgb or depth file; an unreadable image; rgb that is
        not (H, W, 3|4) uint8; depth that is not (H, W) uint16; rgb/depth size not equal
        to each other or to the calibrated width x height; a present segmentation image
        of the wrong size/dtype or with labels outside {0, 1, 2} (labels: ``init`` only);
        a missing segmentation image when ``segmentation`` is given; an unknown
        ``for_command``.
    """
    if for_command not in COMMANDS:
        raise InputError(f"validate_sequence: unknown command {for_command!r} (expected {', '.join(COMMANDS)})")
    if isinstance(seq, Sequence):
        root = Path(seq.root)
        cal = root / "calibration" / "cameras.json"
        config, cameras = seq.config, list(seq.cameras)
        dup = _duplicates([c.name for c in cameras if c is not None])
        if dup:
            raise InputError(f"{cal}: duplicate camera name(s) {', '.join(dup)}")
    else:
        root = Path(seq)
        cal = root / "calibration" / "cameras.json"
        opened = _open_checked(root)
        config, cameras = opened.config, opened.cameras
    yaml_path = root / "sequence.yaml"

    dup = _duplicates(list(config.cameras))
    if dup:
        raise InputError(f"{yaml_path}: duplicate camera name(s) {', '.join(dup)}")
    missing = [n for n, c in zip(config.cameras, cameras) if c is None or c.name != n]
    if len(cameras) != len(config.cameras) or missing:
        raise InputError(f"{cal}: no calibration for camera(s) {', '.join(missing) or '?'}")
    dupf = _duplicates([str(f) for f in config.frames])
    if dupf:
        raise InputError(f"{yaml_path}: duplicate frame id(s) {', '.join(dupf[:5])}")
    neg = [f for f in config.frames if f < 0]
    if neg:
        raise InputError(f"{yaml_path}: negative frame id(s) {neg[:5]}")
    for cam in cameras:
        check_camera(cam, cal)
    object_mesh, warnings = resolve_object(root, config, ycb_dir)
    for cam in cameras:
        if not np.allclose(cam.dist, 0.0):
            warnings.append(f"camera {cam.name!r} has non-zero distortion; images must be undistorted already")

    sequence = Sequence(root=root, config=config, cameras=cameras)
    report = ValidationReport(
        root=root,
        cameras=list(config.cameras),
        frames=list(config.frames),
        image_sizes={c.name: (int(c.width), int(c.height)) for c in cameras},
        object_mesh=object_mesh,
        warnings=warnings,
        images_checked=check_images and for_command == "init",
    )

    # existence first (cheap), so a missing file is reported before any decoding
    seg_source = segmentation or "segmentation"
    segmentation_dir(root, seg_source)  # an unknown source is refused here

    def seg_path(cam: str, f: int) -> Path:
        return sequence.segmentation_path(cam, f, seg_source)

    kinds = [("rgb", sequence.rgb_path), ("depth", sequence.depth_path)]
    if segmentation is not None:
        kinds.append(("segmentation", seg_path))
    for kind, path_of in kinds:
        for cam in cameras:
            absent = [path_of(cam.name, f) for f in config.frames if not path_of(cam.name, f).is_file()]
            if absent:
                n = len(config.frames)
                hint = " (run `hoannot init` first)" if kind == "segmentation" else ""
                raise InputError(f"{absent[0]}: {kind} frame file not found ({len(absent)} of {n} missing for "
                                 f"camera {cam.name!r}){hint}")  # fmt: skip

    if for_command != "init":  # headers only; the commands check values as they read them
        for cam in cameras:
            wh = (int(cam.width), int(cam.height))
            for f in config.frames:
                if for_command == "report":
                    rp = sequence.rgb_path(cam.name, f)
                    check_rgb(*image_header(rp), rp, wh, cam.name)
                dp = sequence.depth_path(cam.name, f)
                check_depth(*image_header(dp), dp, wh, cam.name)
                sp = seg_path(cam.name, f)
                if sp.is_file():
                    check_segmentation(*image_header(sp), sp, wh)
        return report

    if not check_images:
        return report

    for cam in cameras:
        wh = (int(cam.width), int(cam.height))
        valid_vals: list[np.ndarray] = []
        n_pix = n_valid = 0
        sparse_frames: list[int] = []
        for f in config.frames:
            rp, dp = sequence.rgb_path(cam.name, f), sequence.depth_path(cam.name, f)
            rgb = read_image(rp)
            check_rgb(rgb.shape, rgb.dtype, rp, wh, cam.name)
            depth = read_image(dp)
            check_depth(depth.shape, depth.dtype, dp, _image_size(rgb), cam.name, of="rgb size")
            nz = depth[depth > 0]
            n_pix += depth.size
            n_valid += nz.size
            if nz.size < MIN_VALID_DEPTH_FRACTION * depth.size:
                sparse_frames.append(f)
            # subsample for the statistics: at most ~10k values per frame
            step = max(1, nz.size // 10000)
            valid_vals.append(nz[::step].astype(np.float64) * cam.depth_scale)
            if nz.size:
                valid_vals.append(np.array([nz.min(), nz.max()], np.float64) * cam.depth_scale)
            sp = sequence.segmentation_path(cam.name, f)
            if sp.is_file():
                check_labels(read_image(sp), sp, wh)
        vals = np.concatenate(valid_vals) if valid_vals else np.zeros(0)
        if vals.size:
            stats = DepthStats(float(vals.min()), float(np.median(vals)), float(vals.max()), n_valid / max(n_pix, 1))
        else:
            stats = DepthStats(math.nan, math.nan, math.nan, 0.0)
        report.depth_stats[cam.name] = stats
        if sparse_frames:
            report.warnings.append(
                f"camera {cam.name!r}: depth is mostly zero (<{MIN_VALID_DEPTH_FRACTION:.0%} valid) in "
                f"{len(sparse_frames)} of {len(config.frames)} frame(s), e.g. "
                f"{sequence.depth_path(cam.name, sparse_frames[0])}"
            )
        lo, hi = PLAUSIBLE_DEPTH_M
        if vals.size and not (lo <= stats.median_m <= hi):
            report.warnings.append(
                f"camera {cam.name!r}: median depth {stats.median_m:.3g} m is outside {lo}-{hi} m; "
                f"is depth_scale {cam.depth_scale} right?"
            )
    return report


def check_ingest_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse an ingest's output folder that would lose data (HO-3D and DexYCB ingests).

    Raises:
        InputError: ``dst`` is a file, a non-empty folder without ``overwrite``, a non-empty
            folder that is not a hoannot sequence, or ``src`` itself.
    """
    if dst.exists():
        if not dst.is_dir():
            raise InputError(f"{dst}: exists and is not a directory")
        if any(dst.iterdir()):
            if not overwrite:
                raise InputError(f"{dst}: exists and is not empty (pass overwrite=True to replace it)")
            if not (dst / "sequence.yaml").is_file():
                raise InputError(f"{dst}: not a hoannot sequence (no sequence.yaml); refusing to overwrite it")
    if dst.resolve() == src.resolve():
        raise InputError(f"{dst}: output folder is the input folder")
