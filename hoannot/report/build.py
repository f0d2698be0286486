"""Gather a stage's poses and quality, render every frame and camera, write ``SEQ/report/``.

The meshes are posed by the fit's own code (:class:`hoannot.fitting.parameters.PoseParameters`)
and drawn at the panel size by ray casting (:func:`hoannot.renderers.raycast.raycast_views`:
Embree through open3d, one ray per pixel centre, as the fit's hard rasterizer pass samples
pixels, but only over the box the meshes project into, and with the triangles' own normals for
shading). Only the drawings are written (8-bit palette layers over the box that holds the
rendered and the observed labels); the browser lays them over the sequence's own RGB images,
so no RGB image is decoded or encoded here. Drawing and PNG encoding run on worker threads
while the next frames are posed. The per-frame numbers of the timelines
come from ``fit/quality.json``; for ``init`` poses (which have no quality file) they are
computed with the fit's own quality function on the fit's crops, so an initialisation and a
fit are judged by the same numbers and the same flag thresholds.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import torch

import hoannot
from hoannot.io import InputError, atomic_write
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.segmentation import segmentation_path
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.config import FitConfig
from hoannot.fitting.quality import FLAG_DEPTH_MM, FLAG_IOU_HAND, FLAG_IOU_OBJECT, load_calibration
from hoannot.fitting.parameters import PoseParameters
from hoannot.models.hand import HandModel, HandOutput
from hoannot.models.objects import ObjectModel
from hoannot.geometry import crop_intrinsics
from hoannot.renderers.raycast import PixelRays, raycast_views

STAGES = ("fit", "init")
PANELS = ("overlay", "masks", "depth")
RENDER_WIDTH = 320  # px: panels are rendered (and opened on click) at most this wide
THUMB_WIDTH = 160  # px: the panels shown in the page
FRAMES_PER_POSE = 16  # frames posed per hand-model call
DEPTH_MAX_MM = 2 * FLAG_DEPTH_MM  # top of the depth-residual colour bar
ATLAS_GAP = 2  # px: transparent gap between two layers in a frame's layer image
PNG_LEVEL = 3  # zlib level of the layer images (measured: smaller and faster than 1 here, 6 is slower)
HAND_RGB, OBJECT_RGB = (255, 140, 40), (40, 150, 255)
#: mask panel: observed but not rendered, rendered but not observed, hand and object swapped
MISSED_RGB, EXTRA_RGB, SWAPPED_RGB = (230, 40, 230), (250, 240, 60), (240, 30, 30)
OVERLAY_ALPHA = 0.6
SVG_W, SVG_H, SVG_L, SVG_R, SVG_T, SVG_B = 900, 110, 56, 10, 8, 18
SERIES_COLOURS = ("#e8590c", "#1c7ed6", "#2b8a3e", "#862e9c")


def _rgb_hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


def _colormap() -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of the depth-residual colour map (OpenCV inferno)."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO)[:, 0, ::-1].copy()


# ---- inputs ------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable JSON ({type(e).__name__}: {e})".splitlines()[0]) from None


def load_quality(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``quality.json`` written by :func:`hoannot.fitting.optimize.save_fit`.

    Returns:
        per-frame arrays of equal length F: ``frames`` (F,) int64, ``flag`` (F,) bool, and
        every other key as (F,) float64 (``E_<term>``, ``iou_hand``, ``iou_object``,
        ``depth_residual_mm``, an optional ``*_error_est_mm``...), None turned into NaN.
    Raises:
        InputError: unreadable file, no ``frames``, or arrays of other lengths (names the file).
    """
    path = Path(path)
    raw = _read_json(path)
    if not isinstance(raw, dict) or "frames" not in raw:
        raise InputError(f"{path}: expected per-frame arrays with a 'frames' entry")
    q: dict[str, np.ndarray] = {"frames": np.asarray(raw["frames"], np.int64)}
    for k, v in raw.items():
        if k == "frames" or not isinstance(v, list):
            continue
        if len(v) != len(q["frames"]):
            raise InputError(f"{path}: {k!r} has {len(v)} values for {len(q['frames'])} frames")
        q[k] = np.asarray(v, bool) if k == "flag" else np.array([np.nan if x is None else x for x in v], np.float64)
    return q


def fit_config(seq: Sequence) -> tuple[FitConfig, str, str]:
    """The settings of the sequence's fit (``fit/info.json``, else the defaults), where they
    come from, and their digest (:meth:`FitConfig.digest`; a config this version cannot read
    is hashed as stored)."""
    p = seq.root / "fit" / "info.json"
    raw = _read_json(p).get("config") if p.is_file() else None
    if isinstance(raw, dict):
        try:  # the device does not change results (nor the digest); this machine may lack it
            cfg = FitConfig.model_validate({**raw, "device": "cpu"})
            return cfg, "fit/info.json", cfg.digest()
        except ValueError:
            digest = hashlib.sha1(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
            return FitConfig(), "defaults (fit/info.json's config is not this version's)", f"{digest} (as stored)"
    cfg = FitConfig()
    return cfg, "defaults (no fit/info.json)", cfg.digest()


def load_stage(seq_dir: str | Path, stage: str) -> tuple[Sequence, HandObjectPoses, list[int]]:
    """Open a sequence and its ``fit`` or ``init`` poses, restricted to the sequence's frames.

    Returns:
        the sequence, its poses (world frame) of exactly ``frames``, and ``frames`` (the
        sequence's frame ids that have a pose, in the sequence's order).
    Raises:
        InputError: unknown stage, a bad sequence (:func:`hoannot.datasets.validate.
            validate_sequence` for ``"report"``), missing or malformed ``STAGE/poses.npz``
            (:func:`hoannot.datasets.validate.check_poses`), or no pose for any frame (names
            the file).
    """
    if stage not in STAGES:
        raise InputError(f"--stage {stage!r}: expected fit or init")
    from hoannot.datasets.validate import open_validated

    seq = open_validated(seq_dir, "report")
    pose_path = seq.root / stage / "poses.npz"
    if not pose_path.is_file():
        raise InputError(f"{pose_path}: file not found (run `hoannot {stage} {seq_dir}` first)")
    poses = HandObjectPoses.load(pose_path, seq.frames)
    have = {int(f) for f in poses.frames}
    frames = [f for f in seq.frames if f in have]
    if not frames:
        raise InputError(f"{pose_path}: no pose for any frame of {seq.root / 'sequence.yaml'}")
    return seq, poses.select(frames), frames


def posed_meshes(poses: HandObjectPoses, hand_model: HandModel, obj_verts: torch.Tensor,
                 device: str = "cpu") -> tuple[HandOutput, torch.Tensor]:
    """The hand and object meshes of every frame of ``poses``, posed by the fit's own code
    (:class:`PoseParameters`), without gradients.

    Args:
        poses: world-frame poses of B frames.
        hand_model: on ``device``.
        obj_verts: (V, 3) object-frame vertices, metres, on ``device``.
    Returns:
        the posed hand (``vertices`` (B, 778, 3), ``faces``; world frame, metres) and the
        (B, V, 3) world-frame object vertices, float32 tensors on ``device``.
    """
    with torch.no_grad():
        params = PoseParameters(poses, hand_model.num_betas, device)
        return params.hand(hand_model), params.object_vertices(obj_verts)


def compute_quality(
    seq: Sequence,
    poses: HandObjectPoses,
    hand_model: HandModel,
    obj: ObjectModel,
    cfg: FitConfig,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Per-frame quality of any poses, as the fit computes it after a step (its energies,
    silhouette IoU and depth residual on the fit's crops, and its flag).

    Args:
        poses: world-frame poses of the frames to score (e.g. ``init/poses.npz``).
        cfg: the fit's settings (crop size, weights, segmentation source, ...).
    Returns:
        the arrays of ``fit/quality.json`` (:class:`hoannot.fitting.optimize.FitResult`).
    Raises:
        InputError: a missing observation (segmentation, depth), naming the file.
    """
    from hoannot.fitting.objective import Objective
    from hoannot.fitting.quality import sequence_quality

    objective = Objective.make(seq, hand_model, obj, cfg.model_copy(update={"device": device}))
    return sequence_quality(seq, poses, objective)


# ---- panels ------------------------------------------------------------------------------
#
# A panel is the sequence's own RGB image (dimmed by CSS for masks and depth) under a layer
# that covers the box holding the rendered and the observed labels; the browser composites
# them. So the report decodes no RGB image. Each layer is drawn in one 8-bit palette
# (:func:`palette`: the overlay's two colours at ``SHADES`` shading levels, the mask codes, the
# depth colour map at ``DEPTH_LEVELS`` levels), a quarter of the bytes of RGBA to compress.

SHADES = 32  # overlay shading levels per colour
DEPTH_LEVELS = 64  # depth-residual colour levels over 0..DEPTH_MAX_MM
#: first palette index of each part: 0 is transparent
_OVERLAY0, _MASK0 = 1, 1 + 2 * SHADES
_DEPTH0 = _MASK0 + 9
_NO_DEPTH = _DEPTH0 + DEPTH_LEVELS  # rendered, no sensor depth: dark grey
#: mask panel colour of (rendered label) * 3 + (observed label); 0: background (image shows)
_MASK_CODES = np.array([(0, 0, 0), MISSED_RGB, MISSED_RGB, EXTRA_RGB, HAND_RGB, SWAPPED_RGB,
                        EXTRA_RGB, SWAPPED_RGB, OBJECT_RGB], np.uint8)  # fmt: skip


@functools.lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """(``_NO_DEPTH`` + 1, 4) uint8 RGBA palette of the layers: 0 transparent; the overlay's
    hand and object colours times ``0.35 + 0.65 s`` for ``SHADES`` levels of s in [0, 1] at alpha
    ``OVERLAY_ALPHA``; the 8 mask codes; the depth colour map (:func:`_colormap`) at
    ``DEPTH_LEVELS`` levels; dark grey. All but the overlay are opaque."""
    lut = _colormap()
    s = (np.arange(SHADES) + 0.5) / SHADES
    over = [np.clip(np.asarray(c, np.float64)[None] * (0.35 + 0.65 * s[:, None]) + 0.5, 0, 255) for c in (HAND_RGB, OBJECT_RGB)]
    depth = lut[np.round((np.arange(DEPTH_LEVELS) + 0.5) / DEPTH_LEVELS * 255).astype(int)]
    rgb = np.concatenate([np.zeros((1, 3)), *over, _MASK_CODES, depth, [(70, 70, 70)]]).astype(np.uint8)
    alpha = np.full((len(rgb), 1), 255, np.uint8)
    alpha[0] = 0
    alpha[_OVERLAY0:_MASK0] = round(OVERLAY_ALPHA * 255)
    alpha[_MASK0] = 0  # mask code 0: nothing rendered or observed
    return np.concatenate([rgb, alpha], 1)


def overlay_layer(labels: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """The rendered hand and object, shaded, semi-transparent (``palette`` indices).

    Args:
        labels: (h, w) int rendered labels (0 background, 1 hand, 2 object).
        shade: (h, w) float |cosine| between each rendered surface's normal and the pixel's
            viewing ray (head-light shading, :attr:`hoannot.renderers.raycast.ViewHits.cos`).
    Returns:
        (h, w) uint8: over the image, ``(1 - OVERLAY_ALPHA) rgb + OVERLAY_ALPHA colour
        (0.35 + 0.65 shade)`` on rendered pixels (shade in ``SHADES`` levels), the image elsewhere.
    """
    level = np.minimum((np.clip(shade, 0, 1) * SHADES).astype(np.uint8), SHADES - 1)
    idx = np.uint8(_OVERLAY0) + (labels.astype(np.uint8) - np.uint8(1)) * np.uint8(SHADES) + level  # wraps where 0
    return np.where(labels > 0, idx, np.uint8(0))


def mask_layer(observed: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
    """Observed vs rendered segmentation, opaque where either labels anything (``palette``
    indices; shown over the dimmed image): agreement in the class colour, observed only in
    magenta, rendered only in yellow, hand and object swapped in red.

    Args:
        observed: (h, w) observed labels, or None (all counts as rendered only).
        labels: (h, w) rendered labels.
    Returns:
        (h, w) uint8, transparent where neither labels anything.
    """
    code = labels.astype(np.uint8) * 3
    if observed is not None:
        code += np.minimum(observed, 2).astype(np.uint8)
    return code + np.uint8(_MASK0)


def depth_layer(zbuf: np.ndarray, labels: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """|rendered - observed| depth where both exist, colour-mapped over 0..``DEPTH_MAX_MM`` mm
    (``DEPTH_LEVELS`` levels, clipped); rendered pixels without a sensor depth in dark grey
    (``palette`` indices; shown over the dimmed image).

    Args:
        zbuf: (h, w) rendered camera depth, metres. labels: (h, w) rendered labels.
        depth: (h, w) float32 observed depth, metres (0: no value).
    Returns:
        (h, w) uint8, transparent where nothing is rendered.
    """
    res_mm = np.abs(zbuf - depth) * 1000.0
    level = np.minimum(res_mm * (DEPTH_LEVELS / DEPTH_MAX_MM), DEPTH_LEVELS - 1).astype(np.uint8)
    idx = np.where(depth > 0, level + np.uint8(_DEPTH0), np.uint8(_NO_DEPTH))
    return np.where(labels > 0, idx, np.uint8(0))


def composite(rgb: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """A layer over an image as the page shows it ("source over"): (h, w, 3) uint8 RGB under
    (h, w) uint8 ``palette`` indices -> (h, w, 3) uint8 (for checks and pictures outside a browser)."""
    px = palette()[layer].astype(np.float32)
    a = px[..., 3:] / 255.0
    return np.clip(rgb * (1 - a) + px[..., :3] * a + 0.5, 0, 255).astype(np.uint8)


def view_stats(labels: np.ndarray, observed: np.ndarray | None, zbuf: np.ndarray, depth: np.ndarray) -> dict:
    """One view's numbers as the fit defines them (:func:`hoannot.fitting.quality.frame_quality`),
    at the render size: ``iou_hand``, ``iou_object`` (NaN without a segmentation) and
    ``depth_residual_mm`` (median over pixels labelled in both and with a sensor depth; NaN
    when there are none)."""
    out = {"iou_hand": math.nan, "iou_object": math.nan}
    if observed is not None:  # counts of (rendered, observed) label pairs in one pass; observed > 2: "other"
        n = np.bincount((labels.astype(np.uint8) * 4 + np.minimum(observed, 3)).ravel(), minlength=12)
        for name, c in (("iou_hand", 1), ("iou_object", 2)):
            inter = n[5 * c]
            out[name] = float(inter / max(int(n[4 * c : 4 * c + 4].sum() + n[c::4].sum() - inter), 1))
    valid = (labels > 0) & (depth > 0)
    if observed is not None:
        valid &= observed > 0
    out["depth_residual_mm"] = float(np.median(np.abs(zbuf[valid] - depth[valid])) * 1000) if valid.any() else math.nan
    return out


# ---- rendering ---------------------------------------------------------------------------


def render_size(cam, width: int) -> tuple[int, int]:
    """(H, W) of a camera's panels: its image scaled down to at most ``width`` pixels wide."""
    w = min(int(width), cam.width)
    return max(1, round(cam.height * w / cam.width)), w


def panel_intrinsics(cam, size: tuple[int, int]) -> np.ndarray:
    """(3, 3) intrinsics of a camera's whole image resampled to ``size`` (H, W), as the fit's
    renderer scales them (:meth:`hoannot.renderers.cameras.ViewCameras.from_cameras`)."""
    if (cam.height, cam.width) == tuple(size):
        return np.asarray(cam.K, np.float64)
    return np.asarray(crop_intrinsics(np.asarray(cam.K, np.float64), (-0.5, -0.5, cam.width, cam.height), size))


def render_views(hand_verts: np.ndarray, hand_faces: np.ndarray, obj_verts: np.ndarray, obj_faces: np.ndarray,
                 rays: PixelRays) -> list[tuple]:
    """Depth, labels and shading of one frame's hand and object in the views of ``rays``.

    Args:
        hand_verts: (Vh, 3), obj_verts: (Vo, 3) world-frame vertices, metres.
        hand_faces: (Fh, 3), obj_faces: (Fo, 3) int.
        rays: the panels' pixel rays (:class:`hoannot.renderers.raycast.PixelRays`; intrinsics
            of the panel size, :func:`panel_intrinsics`).
    Returns:
        per view ``(zbuf, labels, shade, box)``: (H, W) float32 camera depth in metres (0:
        nothing rendered), (H, W) uint8 labels (0 background, 1 hand, 2 object), (H, W)
        float32 head-light shading (:attr:`hoannot.renderers.raycast.ViewHits.cos`), and the
        (y0, y1, x0, x1) box outside which nothing is rendered.
    """
    hits = raycast_views([(hand_verts, hand_faces), (obj_verts, obj_faces)], rays)
    return [(h.depth, (h.geometry + 1).astype(np.uint8), h.cos, h.box) for h in hits]


def _read(path: str, flags: int, optional: bool = False) -> np.ndarray | None:
    """cv2.imread that names the file: (H, W[, C]) array (BGR for colour); None for a missing
    ``optional`` file.

    Raises:
        InputError: a missing (not ``optional``) or undecodable file.
    """
    img = cv2.imread(path, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        if not os.path.isfile(path):
            if optional:
                return None
            raise InputError(f"{path}: file not found")
        raise InputError(f"{path}: unreadable image")
    return img


@functools.lru_cache(maxsize=256)
def _view_files(root: str, cam: str, segmentation: str) -> tuple[str, str]:
    """``str.format`` templates (field ``f``: the frame) of a camera's depth and observed
    labels (``segmentation/`` or ``gt/segmentation/``), as :class:`Sequence` names them."""
    seg = segmentation_path(root, cam, 0, segmentation).parent
    return str(Path(root) / "depth" / cam) + "/{f:06d}.png", str(seg) + "/{f:06d}.png"


def _union_box(box: tuple[int, int, int, int], observed: np.ndarray | None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): rows and columns holding every rendered pixel (inside ``box``) and
    every observed label; empty (y0 == y1) when there are none."""
    y0, y1, x0, x1 = box
    if observed is not None:
        x, y, w, h = cv2.boundingRect(observed)  # the non-zero pixels'
        if w and h:
            y0, y1, x0, x1 = (y, y + h, x, x + w) if y0 == y1 else (min(y0, y), max(y1, y + h), min(x0, x), max(x1, x + w))
    return y0, y1, x0, x1


def view_layers(seq: Sequence, cam, frame: int, zbuf: np.ndarray, labels: np.ndarray, shade: np.ndarray,
                box: tuple[int, int, int, int], segmentation: str) -> tuple[dict, tuple | None, list]:
    """Read one view's observations (depth, observed labels; not its RGB image) and draw its
    panels' layers over the box that holds the rendered and the observed labels.

    Args:
        zbuf, labels, shade, box: the view's rendering (:func:`render_views`), (H, W).
        segmentation: observed labels: ``"segmentation"`` or ``"gt"``.
    Returns:
        (:func:`view_stats` of the view, the layers' box ``(y0, y1, x0, x1)`` in the panel's
        pixels or None when nothing is rendered or observed, the ``PANELS``' (h, w) uint8
        ``palette`` layers: :func:`overlay_layer`, :func:`mask_layer`, :func:`depth_layer`).
    Raises:
        InputError: a missing or unreadable depth image or segmentation (names the file).
    """
    H, W = zbuf.shape
    depth_file, seg_file = _view_files(str(seq.root), cam.name, segmentation)
    raw = _read(depth_file.format(f=frame), cv2.IMREAD_UNCHANGED)
    if raw.shape != (H, W):
        raw = cv2.resize(raw, (W, H), interpolation=cv2.INTER_NEAREST)
    observed = _read(seg_file.format(f=frame), cv2.IMREAD_UNCHANGED, optional=True)
    if observed is not None and observed.shape[:2] != (H, W):
        observed = cv2.resize(observed, (W, H), interpolation=cv2.INTER_NEAREST)
    y0, y1, x0, x1 = _union_box(box, observed)
    roi = slice(y0, y1), slice(x0, x1)
    z, lab, obs = zbuf[roi], labels[roi], observed[roi] if observed is not None else None
    depth = raw[roi].astype(np.float32) * np.float32(cam.depth_scale)
    stats = view_stats(lab, obs, z, depth)
    if y1 <= y0 or x1 <= x0:
        return stats, None, []
    return stats, (y0, y1, x0, x1), [overlay_layer(lab, shade[roi]), mask_layer(obs, lab), depth_layer(z, lab, depth)]


def write_palette_png(path: Path, index: np.ndarray) -> None:
    """Write (H, W) uint8 ``palette`` indices as an 8-bit palette PNG (Pillow; the palette's
    alpha as its transparency chunk) into ``path`` (its folder must exist)."""
    from PIL import Image

    pal = palette()
    img = Image.fromarray(index, "P")
    img.putpalette(pal[:, :3].tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=pal[:, 3].tobytes(), compress_level=PNG_LEVEL)
    path.write_bytes(buf.getvalue())


def atlas_layout(boxes: list[tuple | None]) -> tuple[tuple[int, int], list[tuple[int, list[int]] | None]]:
    """Where a frame's layers lie in its one image: a row per camera that has a box, the
    ``PANELS``' layers side by side, ``ATLAS_GAP`` transparent pixels between any two (so a
    browser scaling one never samples its neighbour).

    Args:
        boxes: per camera, its layers' ``(y0, y1, x0, x1)`` or None.
    Returns:
        ((H, W) of the atlas, per camera None or ``(y, [x of each panel])``).
    """
    cells, y, width = [], 0, 1
    for b in boxes:
        if b is None:
            cells.append(None)
            continue
        h, w = b[1] - b[0], b[3] - b[2]
        xs = [i * (w + ATLAS_GAP) for i in range(len(PANELS))]
        cells.append((y, xs))
        width = max(width, xs[-1] + w)
        y += h + ATLAS_GAP
    return (max(1, y - ATLAS_GAP), width), cells


def _frame_layers(seq: Sequence, frame: int, hand_verts: np.ndarray, hand_faces: np.ndarray, obj_verts: np.ndarray,
                  obj_faces: np.ndarray, groups: list[tuple[list[int], PixelRays]], out_dir: Path,
                  segmentation: str) -> dict:
    """Render one frame in every camera and write its layers, ``layers/<frame:06d>.png``
    (:func:`atlas_layout`; no file when nothing is rendered or observed in any view).

    Returns:
        ``{camera: view_stats(...) plus "cell": None or (y0, y1, x0, x1, atlas y, [atlas x
        per panel]) and "atlas": (H, W)}``.
    """
    cams = seq.cameras
    found: list = [None] * len(cams)
    for idx, rays in groups:
        for ci, (zbuf, labels, shade, box) in zip(idx, render_views(hand_verts, hand_faces, obj_verts, obj_faces, rays)):
            found[ci] = view_layers(seq, cams[ci], frame, zbuf, labels, shade, box, segmentation)
    shape, cells = atlas_layout([f[1] for f in found])
    out = {}
    atlas = None
    for cam, (st, box, layers), cell in zip(cams, found, cells):
        out[cam.name] = {**st, "cell": None if cell is None else (*box, *cell), "atlas": shape}
        if cell is None:
            continue
        if atlas is None:
            atlas = np.zeros(shape, np.uint8)
        y, xs = cell
        for x, layer in zip(xs, layers):
            atlas[y : y + layer.shape[0], x : x + layer.shape[1]] = layer
    if atlas is not None:
        # inside the report's temporary folder: the folder is swapped in whole
        write_palette_png(out_dir / "layers" / f"{frame:06d}.png", atlas)
    return out


def render_panels(
    seq: Sequence,
    poses: HandObjectPoses,
    hand_model: HandModel,
    obj: ObjectModel,
    out_dir: Path,
    frames: list[int],
    segmentation: str = "segmentation",
    width: int = RENDER_WIDTH,
    device: str = "cpu",
    progress: bool = True,
    workers: int | None = None,
) -> dict[tuple[int, str], dict]:
    """Render every frame and camera and write each frame's layers (``layers/<frame:06d>.png``,
    :func:`_frame_layers`): one file per frame, holding only the boxes around what is
    rendered or observed; the page composites them over the sequence's own RGB images.

    The main thread poses ``FRAMES_PER_POSE`` frames at a time (:func:`posed_meshes`);
    ``workers`` threads ray-cast each frame's cameras (:func:`render_views`), read its depth
    and labels and encode its layers (open3d's ray casting, OpenCV and numpy release the GIL).

    Args:
        poses: world-frame poses holding ``frames``.
        out_dir: the report folder (``layers/`` is written below it).
        segmentation: observed labels: ``"segmentation"`` or ``"gt"`` (as the fit's config).
        width: render width in pixels (at most each camera's own).
        device: torch device that poses the meshes.
        workers: threads for the frames (default: the CPU count, 1 to 8).
    Returns:
        ``{(frame, camera): view numbers}`` (:func:`_frame_layers`), and under ``"sizes"`` the
        (H, W) panel size of each camera (by name).
    Raises:
        InputError: an unreadable image (names the file).
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    hand_model = hand_model.to(device)
    obj_verts, obj_faces = obj.verts.to(device), obj.faces.cpu().numpy()
    by_size: dict[tuple[int, int], list[int]] = {}  # cameras of one panel size are cast together
    for ci, cam in enumerate(seq.cameras):
        by_size.setdefault(render_size(cam, width), []).append(ci)
    groups = [(idx, PixelRays(np.stack([panel_intrinsics(seq.cameras[ci], size) for ci in idx]),
                              np.stack([np.asarray(seq.cameras[ci].T_world_cam, np.float64) for ci in idx]), size))
              for size, idx in by_size.items()]  # fmt: skip
    (out_dir / "layers").mkdir(parents=True, exist_ok=True)
    stats: dict = {"sizes": {cam.name: render_size(cam, width) for cam in seq.cameras}}
    pending: deque = deque()
    cols = [TextColumn("report"), BarColumn(), MofNCompleteColumn(), TextColumn("views"), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress, transient=False) as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task("report", total=len(frames) * len(seq.cameras))

        def collect(limit: int) -> None:
            while len(pending) > limit:
                frame, fut = pending.popleft()
                for cam, st in fut.result().items():  # re-raises a worker's InputError
                    stats[(frame, cam)] = st
                bar.advance(task, len(seq.cameras))

        try:
            for i in range(0, len(frames), FRAMES_PER_POSE):
                chunk = frames[i : i + FRAMES_PER_POSE]
                hand, ov = posed_meshes(poses.select(chunk), hand_model, obj_verts, device)
                hv, ov = hand.vertices.cpu().numpy(), ov.cpu().numpy()
                hf = hand.faces.cpu().numpy()
                for b, frame in enumerate(chunk):
                    fut = pool.submit(_frame_layers, seq, frame, hv[b], hf, ov[b], obj_faces, groups, out_dir, segmentation)
                    pending.append((frame, fut))
                collect(4 * workers)  # bounded: memory does not grow with the sequence
            collect(0)
        except BaseException:
            for _, fut in pending:
                fut.cancel()
            raise
    return stats


# ---- page data ---------------------------------------------------------------------------


def _fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def _chart(title: str, unit: str, frames: list[int], series: list[tuple[str, np.ndarray, str]],
           flags: np.ndarray | None, thresholds=(), yrange=None) -> dict:
    """Polyline coordinates of one timeline (the SVG itself is drawn by the template)."""
    F = len(frames)
    pw, ph = SVG_W - SVG_L - SVG_R, SVG_H - SVG_T - SVG_B
    xs = [SVG_L + (pw * i / (F - 1) if F > 1 else pw / 2) for i in range(F)]
    finite = np.concatenate([v[np.isfinite(v)] for _, v, _ in series] + [np.asarray([t for t, _ in thresholds], float)])
    lo, hi = yrange or ((min(0.0, float(finite.min())), float(finite.max())) if finite.size else (0.0, 1.0))
    if not hi > lo:
        hi = lo + 1.0
    y = lambda v: SVG_T + ph * (1 - (v - lo) / (hi - lo))  # noqa: E731
    out_series = []
    for name, values, colour in series:
        segments, cur = [], []
        for x, v in zip(xs, values):
            if np.isfinite(v):
                cur.append(f"{x:.1f},{y(v):.1f}")
            elif cur:
                segments.append(cur)
                cur = []
        if cur:
            segments.append(cur)
        out_series.append({"name": name, "colour": colour, "lines": [" ".join(s) for s in segments if len(s) > 1],
                           "dots": [p.split(",") for s in segments if len(s) == 1 for p in s],
                           "mean": _fmt(float(np.nanmean(values)) if np.isfinite(values).any() else math.nan)})  # fmt: skip
    half = max(pw / max(F, 1), 2.0) / 2  # a frame's band, inside the plot
    spans = [(i, max(SVG_L, xs[i] - half), min(SVG_W - SVG_R, xs[i] + half)) for i in range(F)
             if flags is not None and flags[i]]  # fmt: skip
    bands = [{"x": f"{a:.1f}", "w": f"{b - a:.1f}", "frame": frames[i]} for i, a, b in spans]
    step = max(1, math.ceil(F / 10))
    return {
        "title": title, "unit": unit, "series": out_series, "bands": bands,
        "thresholds": [{"y": f"{y(t):.1f}", "label": label} for t, label in thresholds if lo <= t <= hi],
        "ylo": _fmt(lo), "yhi": _fmt(hi), "ylo_y": f"{y(lo):.1f}", "yhi_y": f"{y(hi) + 8:.1f}",
        "xticks": [{"x": f"{xs[i]:.1f}", "label": frames[i]} for i in range(0, F, step)],
        "x0": SVG_L, "x1": SVG_W - SVG_R, "ybase": f"{SVG_T + ph:.1f}",
    }  # fmt: skip


def _error_keys(q: dict) -> list[str]:
    return sorted(k for k in q if k.endswith("_error_est_mm"))


def _flag_rules(q: dict[str, np.ndarray]):
    """What flagged ``q``'s frames: ``(hard, calibration)``: the IoU/depth thresholds apply
    (no calibrated estimate, or a calibration that keeps them), and the calibration whose
    estimate thresholds apply (None without estimates)."""
    cal = load_calibration() if _error_keys(q) else None
    return (cal is None or cal.hard_flags), cal


def timeline_charts(q: dict[str, np.ndarray], frames: list[int]) -> list[dict]:
    """Timelines over ``frames``: every ``E_<term>``, both IoUs, the depth residual, any
    ``*_error_est_mm`` and the flags (flagged frames are shaded in every chart)."""
    index = {int(f): i for i, f in enumerate(q["frames"])}
    pick = lambda k: np.array([q[k][index[f]] if f in index else np.nan for f in frames], np.float64)  # noqa: E731
    flags = np.array([bool(q["flag"][index[f]]) if f in index else False for f in frames]) if "flag" in q else None
    c = SERIES_COLOURS
    hard, cal = _flag_rules(q)
    charts = [_chart(k, "", frames, [("", pick(k), c[0])], flags) for k in sorted(k for k in q if k.startswith("E_"))]
    ious = [(name, pick(k), colour) for k, name, colour in (("iou_hand", "hand", _rgb_hex(HAND_RGB)),
                                                            ("iou_object", "object", _rgb_hex(OBJECT_RGB))) if k in q]
    if ious:
        charts.append(_chart("silhouette IoU", "", frames, ious, flags, yrange=(0.0, 1.0),
                             thresholds=[(FLAG_IOU_HAND, f"hand flag < {FLAG_IOU_HAND}"),
                                         (FLAG_IOU_OBJECT, f"object flag < {FLAG_IOU_OBJECT}")] if hard else []))  # fmt: skip
    if "depth_residual_mm" in q:
        charts.append(_chart("depth residual", "mm", frames, [("median", pick("depth_residual_mm"), c[2])], flags,
                             thresholds=[(FLAG_DEPTH_MM, f"flag > {FLAG_DEPTH_MM:g} mm")] if hard else []))  # fmt: skip
    errs = _error_keys(q)
    if errs:
        charts.append(_chart("error estimate", "mm", frames,
                             [(k.removesuffix("_error_est_mm"), pick(k), c[i % len(c)]) for i, k in enumerate(errs)],
                             flags, thresholds=[] if cal is None else [(cal.hand_flag_mm, f"hand flag > {cal.hand_flag_mm:.1f} mm"),
                                                (cal.object_flag_mm, f"object flag > {cal.object_flag_mm:.1f} mm")]))  # fmt: skip
    if flags is not None:
        charts.append(_chart(f"flags: {int(flags.sum())} of {len(frames)} frames", "", frames, [], flags, yrange=(0.0, 1.0)))
    return charts


def _reasons(q: dict, i: int) -> list[str]:
    out = []
    hard, cal = _flag_rules(q)
    ih, io, d = (float(q[k][i]) if k in q else math.nan for k in ("iou_hand", "iou_object", "depth_residual_mm"))
    if hard and ih < FLAG_IOU_HAND:
        out.append(f"hand IoU {ih:.2f} < {FLAG_IOU_HAND}")
    if hard and io < FLAG_IOU_OBJECT:
        out.append(f"object IoU {io:.2f} < {FLAG_IOU_OBJECT}")
    if hard and d > FLAG_DEPTH_MM:
        out.append(f"depth residual {d:.1f} mm > {FLAG_DEPTH_MM:g}")
    elif not np.isfinite(d):
        out.append("no depth residual (rendering and observation do not overlap)")
    if not (np.isfinite(ih) and np.isfinite(io)):
        out.append("no IoU (frame not scored)")
    if cal is not None:
        for kind, limit in (("hand", cal.hand_flag_mm), ("object", cal.object_flag_mm)):
            v = float(q.get(f"{kind}_error_est_mm", [math.nan] * (i + 1))[i])
            if v > limit:
                out.append(f"{kind} error estimate {v:.1f} mm > {limit:.1f}")
    return out


def severity(q: dict[str, np.ndarray], i: int) -> float:
    """How bad frame ``i`` of quality ``q`` looks, for sorting: the largest ``*_error_est_mm``
    when the quality has one, else the largest relative violation of a flag threshold
    (``1 - IoU / threshold`` for each IoU, ``residual / threshold - 1`` for the depth);
    missing values count as the worst (``inf``)."""
    errs = _error_keys(q)
    vals = [float(q[k][i]) for k in errs] if errs else [
        1 - float(q["iou_hand"][i]) / FLAG_IOU_HAND if "iou_hand" in q else -math.inf,
        1 - float(q["iou_object"][i]) / FLAG_IOU_OBJECT if "iou_object" in q else -math.inf,
        float(q["depth_residual_mm"][i]) / FLAG_DEPTH_MM - 1 if "depth_residual_mm" in q else -math.inf,
    ]  # fmt: skip
    return max(math.inf if math.isnan(v) else v for v in vals)


def flagged_rows(q: dict[str, np.ndarray], frames: list[int]) -> list[dict]:
    """Flagged frames of ``frames``, worst first (:func:`severity`, then frame id)."""
    if "flag" not in q:
        return []
    shown = set(frames)
    idx = [i for i, f in enumerate(q["frames"]) if bool(q["flag"][i]) and int(f) in shown]
    idx.sort(key=lambda i: (-severity(q, i), int(q["frames"][i])))
    at = lambda k, i: _fmt(float(q[k][i])) if k in q else "–"  # noqa: E731
    return [{
        "frame": int(q["frames"][i]), "anchor": f"f{int(q['frames'][i]):06d}", "severity": _fmt(severity(q, i)),
        "reasons": _reasons(q, i), "iou_hand": at("iou_hand", i), "iou_object": at("iou_object", i),
        "depth": at("depth_residual_mm", i), "errors": [at(k, i) for k in _error_keys(q)],
    } for i in idx]  # fmt: skip


def _git_commit() -> str:
    """``<commit>`` (``+ local changes`` when modified) of the hoannot checkout, or why none."""
    root = Path(hoannot.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "none (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return head.stdout.strip() + (" + local changes" if dirty else "")


def provenance(seq: Sequence, stage: str, info: dict, cfg_source: str, cfg_digest: str, poses: HandObjectPoses,
               quality_source: str, command: str | None) -> list[tuple[str, str]]:
    """(label, value) rows describing where the report's poses and numbers come from."""
    rows = [("sequence", str(seq.root.resolve())), ("stage", f"{stage} ({stage}/poses.npz, source {poses.source!r})"),
            ("hoannot version", hoannot.__version__), ("git commit", _git_commit()),
            ("fit config digest", f"{cfg_digest} ({cfg_source})")]  # fmt: skip
    for key, label in (("init_source", "initial poses"), ("source", "initial poses"), ("hand_model", "hand model")):
        if key in info:
            rows.append((label, str(info[key])))
    if "seconds" in info:
        rows.append(("fit time", f"{float(info['seconds']):.1f} s"))
    rows.append((f"{stage} command", str(info.get("command", "not recorded"))))
    rows.append(("quality", quality_source))
    if command:
        rows.append(("report command", command))
    return rows


def load_refit(seq: Sequence, frames: list[int]) -> dict | None:
    """The last re-fit of ``fit/`` (``fit/refit/``, :func:`hoannot.pipeline.run_refit`), or None.

    Returns:
        ``record`` (``refit.json``), ``poses`` (the re-fitted frames' poses before it, world
        frame), ``quality`` (theirs before it, as :func:`load_quality`), ``frames`` (those of
        them in ``frames``) and ``starts`` ({frame: start taken}).
    Raises:
        InputError: a damaged ``fit/refit/`` (names the file).
    """
    d = seq.root / "fit" / "refit"
    if not (d / "refit.json").is_file():
        return None
    record = _read_json(d / "refit.json")
    poses = HandObjectPoses.load(d / "before_poses.npz", seq.frames)
    quality = load_quality(d / "before_quality.json")
    shown = set(frames)
    starts = {f: s for r in record.get("runs", []) for f, s in zip(r.get("frames", []), r.get("starts", []))}
    return {"record": record, "poses": poses, "quality": quality, "starts": starts,
            "frames": [int(f) for f in poses.frames if int(f) in shown]}  # fmt: skip


def _pct(v: float) -> str:
    return f"{100.0 * v:.4g}%"


def _view_row(seq: Sequence, stats: dict, f: int, c: str, prefix: str = "") -> dict:
    """Page data of camera ``c`` of frame ``f``: its numbers, its RGB image (relative to
    ``report/``) and, when anything is rendered or observed, its layers' box over the image and
    where each panel's layer lies in the frame's layer image (CSS percentages, so the same
    markup serves the thumbnail and the render size)."""
    H, W = stats["sizes"][c]
    st = stats[(f, c)]
    rgb = os.path.relpath(seq.rgb_path(c, f), seq.root / "report").replace(os.sep, "/")
    row = {"camera": c, "anchor": f"f{f:06d}-{c}{'-before' if prefix else ''}", "H": H, "W": W,
           "t": f"{min(1.0, THUMB_WIDTH / W):.4g}", "rgb": quote(rgb), "box": None,
           "panels": [{"name": p, "dim": p != "overlay", "style": ""} for p in PANELS],
           "iou_hand": _fmt(st["iou_hand"]), "iou_object": _fmt(st["iou_object"]), "depth": _fmt(st["depth_residual_mm"])}  # fmt: skip
    if st["cell"] is not None:
        y0, y1, x0, x1, ay, axs = st["cell"]
        AW = st["atlas"][1]
        h, w = y1 - y0, x1 - x0
        row["layer"] = f"{prefix}layers/{f:06d}.png"
        row["box"] = f"left:{_pct(x0 / W)};top:{_pct(y0 / H)};width:{_pct(w / W)};height:{_pct(h / H)}"
        for p, ax in zip(row["panels"], axs):
            p["style"] = f"width:{_pct(AW / w)};left:{_pct(-ax / w)};top:{_pct(-ay / h)}"
    return row


def _before_row(seq: Sequence, refit: dict, f: int, stats: dict) -> dict:
    """A re-fitted frame's numbers (and, with ``stats``, its panels) before the re-fit (page data)."""
    q = refit["quality"]
    i = int(np.flatnonzero(q["frames"] == f)[0])
    val = lambda k: _fmt(q[k][i]) if k in q else "–"  # noqa: E731
    return {"flag": bool(q["flag"][i]) if "flag" in q else False, "iou_hand": val("iou_hand"),
            "iou_object": val("iou_object"), "depth": val("depth_residual_mm"), "start": refit["starts"].get(f, "–"),
            "views": [_view_row(seq, stats, f, c, "before/") for c in seq.camera_names] if stats else []}  # fmt: skip


def refit_rows(refit: dict, q: dict[str, np.ndarray]) -> list[dict]:
    """One row per re-fitted frame: start taken, IoUs, depth residual and flag before -> after."""
    qi = {int(f): i for i, f in enumerate(q["frames"])}
    rows = []
    for f in refit["frames"]:
        b = _before_row(None, refit, f, {})
        i = qi.get(f)
        val = lambda k, i=i: _fmt(q[k][i]) if i is not None and k in q else "–"  # noqa: E731
        rows.append({"frame": f, "anchor": f"f{f:06d}", "start": b["start"],
                     "iou_hand": (b["iou_hand"], val("iou_hand")), "iou_object": (b["iou_object"], val("iou_object")),
                     "depth": (b["depth"], val("depth_residual_mm")),
                     "flag": (b["flag"], bool(i is not None and "flag" in q and q["flag"][i]))})  # fmt: skip
    return rows


# ---- the report --------------------------------------------------------------------------


def build_report(
    seq_dir: str | Path,
    stage: str = "fit",
    device: str = "cpu",
    mano_model_path: str | Path | None = None,
    ycb_dir: str | Path | None = None,
    width: int = RENDER_WIDTH,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Write ``SEQ/report/index.html`` and its images for the ``fit`` or ``init`` poses.

    The folder is built beside ``report/`` and swapped in when complete, so an interrupted
    build leaves the previous report as it was.

    Args:
        seq_dir: the sequence folder.
        stage: ``"fit"`` (``fit/poses.npz`` and ``fit/quality.json``) or ``"init"``
            (``init/poses.npz``; quality computed with the fit's settings, or the defaults).
        device: torch device for rendering (``cpu``, ``cuda``).
        mano_model_path, ycb_dir: as for ``hoannot fit`` (the models must be the fit's).
        width: panel render width, pixels (at most the cameras' own).
        progress: show a rich progress bar.
        command: the command line to record in the provenance.
    Returns:
        path of ``index.html``.
    Raises:
        InputError: unknown stage, no sequence, missing or malformed poses or quality file
            (names the file).
    """
    from jinja2 import Environment, PackageLoader, StrictUndefined

    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    if width < 8:
        raise InputError(f"--width {width}: expected at least 8 pixels")
    seq, poses, frames = load_stage(seq_dir, stage)
    info_path = seq.root / stage / "info.json"
    info = _read_json(info_path) if info_path.is_file() else {}
    cfg, cfg_source, cfg_digest = fit_config(seq)
    if device != cfg.device:
        try:
            cfg = cfg.model_copy(update={"device": FitConfig.model_validate({"device": device}).device})
        except ValueError as e:
            raise InputError(f"--device {device!r}: {str(e).splitlines()[-1]}") from None
    hand_model = load_hand_model(seq, mano_model_path)
    obj = load_sequence_object(seq, ycb_dir, cfg.object_max_faces)

    qpath = seq.root / stage / "quality.json"
    note = ""
    if qpath.is_file():
        quality, quality_source = load_quality(qpath), f"{stage}/quality.json"
    else:
        try:
            quality = compute_quality(seq, poses, hand_model, obj, cfg, device)
            quality_source = f"computed for this report with the fit's quality pass (config: {cfg_source})"
        except InputError as e:  # e.g. no segmentation yet: the images are still worth a look
            quality, quality_source, note = None, "none", f"no per-frame quality: {e}"

    refit = load_refit(seq, frames) if stage == "fit" else None
    root = seq.root / "report"
    tmp = seq.root / ".report.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        stats = render_panels(seq, poses, hand_model, obj, tmp, frames, cfg.segmentation, width, device, progress)
        before_stats = {}
        if refit is not None:  # the re-fitted frames as they were, panels under before/
            before_stats = render_panels(seq, refit["poses"], hand_model, obj, tmp / "before", refit["frames"],
                                         cfg.segmentation, width, device, False)  # fmt: skip
        q = quality or {"frames": np.asarray(frames, np.int64)}
        qi = {int(f): i for i, f in enumerate(q["frames"])}
        cams = seq.camera_names
        frame_rows = []
        for f in frames:
            i = qi.get(f)
            val = lambda k, i=i: _fmt(q[k][i]) if i is not None and k in q else "–"  # noqa: E731
            frame_rows.append({
                "frame": f, "anchor": f"f{f:06d}", "flag": bool(i is not None and "flag" in q and q["flag"][i]),
                "iou_hand": val("iou_hand"), "iou_object": val("iou_object"), "depth": val("depth_residual_mm"),
                "errors": [(k.removesuffix("_error_est_mm"), val(k)) for k in _error_keys(q)],
                "energies": [(k, val(k)) for k in sorted(k for k in q if k.startswith("E_"))],
                "views": [_view_row(seq, stats, f, c) for c in cams],
                "before": _before_row(seq, refit, f, before_stats) if refit is not None and f in refit["frames"] else None,
            })  # fmt: skip
        lut = _colormap()
        env = Environment(loader=PackageLoader("hoannot.report", "templates"), autoescape=True,
                          undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
        html = env.get_template("index.html.j2").render(
            title=f"{seq.config.name}: {stage}", stage=stage, cameras=cams, n_frames=len(frames),
            provenance=provenance(seq, stage, info, cfg_source, cfg_digest, poses, quality_source, command),
            note=note, charts=timeline_charts(q, frames) if quality is not None else [],
            flagged=flagged_rows(q, frames) if quality is not None else None,
            error_names=[k.removesuffix("_error_est_mm") for k in _error_keys(q)],
            refitted=refit_rows(refit, q) if refit is not None else None,
            frames=frame_rows, panels=PANELS, svg_w=SVG_W, svg_h=SVG_H,
            colours={"hand": _rgb_hex(HAND_RGB), "object": _rgb_hex(OBJECT_RGB), "missed": _rgb_hex(MISSED_RGB),
                     "extra": _rgb_hex(EXTRA_RGB), "swapped": _rgb_hex(SWAPPED_RGB)},
            colour_bar=[{"offset": f"{t:.3f}", "colour": _rgb_hex(lut[round(t * 255)])} for t in np.linspace(0, 1, 11)],
            depth_max=f"{DEPTH_MAX_MM:g}", depth_ticks=[f"{DEPTH_MAX_MM * t:g}" for t in (0, 0.25, 0.5, 0.75, 1)],
        )  # fmt: skip
        with atomic_write(tmp / "index.html", "w") as fh:
            fh.write(html)
        old = seq.root / ".report.old"
        shutil.rmtree(old, ignore_errors=True)
        if root.exists():
            root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "index.html"
