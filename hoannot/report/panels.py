"""The report's pictures: every frame and camera drawn as layers over the sequence's RGB images.

The meshes are posed by the fit's own code (:class:`hoannot.fitting.parameters.PoseParameters`)
and drawn at the panel size by ray casting (:func:`hoannot.renderers.raycast.raycast_views`:
Embree through open3d, one ray per pixel centre, as the fit's hard rasterizer pass samples
pixels, but only over the box the meshes project into, and with the triangles' own normals for
shading). Only the drawings are written (8-bit palette layers over the box that holds the
rendered and the observed labels); the browser lays them over the sequence's own RGB images,
so no RGB image is decoded or encoded here. Drawing and PNG encoding run on worker threads
while the next frames are posed.

Drawn layers are kept beside the poses they show (``STAGE/layers/``, :func:`update_layers`:
the fit draws its own at the end, as a trainer writes its evaluation images), keyed per frame
by a digest of everything they are drawn from (:func:`layer_keys`). The report takes a frame's
layers from there when its key matches and draws only the others, so a report of a fitted
sequence does no per-view work.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from hoannot.io import InputError, atomic_write
from hoannot.datasets.poses import HandObjectPoses
from hoannot.datasets.segmentation import segmentation_path
from hoannot.datasets.sequence import Sequence
from hoannot.fitting.parameters import PoseParameters
from hoannot.fitting.quality import FLAG_DEPTH_MM
from hoannot.geometry import crop_intrinsics
from hoannot.models.hand import HandModel, HandOutput
from hoannot.models.objects import ObjectModel
from hoannot.renderers.raycast import PixelRays, raycast_views

PANELS = ("overlay", "masks", "depth")
RENDER_WIDTH = 320  # px: panels are rendered (and opened on click) at most this wide
FRAMES_PER_POSE = 16  # frames posed per hand-model call
DEPTH_MAX_MM = 2 * FLAG_DEPTH_MM  # top of the depth-residual colour bar
ATLAS_GAP = 2  # px: transparent gap between two layers in a frame's layer image
PNG_LEVEL = 3  # zlib level of the layer images (measured: smaller and faster than 1 here, 6 is slower)
HAND_RGB, OBJECT_RGB = (255, 140, 40), (40, 150, 255)
#: mask panel: observed but not rendered, rendered but not observed, hand and object swapped
MISSED_RGB, EXTRA_RGB, SWAPPED_RGB = (230, 40, 230), (250, 240, 60), (240, 30, 30)
OVERLAY_ALPHA = 0.6
#: version of the drawing: kept layers of another version are drawn again (raise it whenever
#: what a layer shows or how its numbers are computed changes)
LAYERS_VERSION = 1
#: the kept layers' index in a stage folder (``STAGE/layers/index.json``)
LAYER_INDEX = "index.json"


def _colormap() -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of the depth-residual colour map (OpenCV inferno)."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO)[:, 0, ::-1].copy()


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
    alpha as its transparency chunk) into ``path`` (its folder must exist), replacing any file
    there by a new one (written beside it, then renamed; not fsynced: layers can be redrawn)."""
    from PIL import Image

    pal = palette()
    img = Image.fromarray(index, "P")
    img.putpalette(pal[:, :3].tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=pal[:, 3].tobytes(), compress_level=PNG_LEVEL)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)  # a new file: a report's hard link to the old one keeps showing what it showed


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
    path = out_dir / "layers" / f"{frame:06d}.png"
    if atlas is not None:
        write_palette_png(path, atlas)
    else:
        path.unlink(missing_ok=True)  # kept layers of poses that showed something
    return out


# ---- kept layers -------------------------------------------------------------------------


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def layer_keys(seq: Sequence, poses: HandObjectPoses, frames: list[int], hand_model: HandModel, obj: ObjectModel,
               segmentation: str, width: int) -> dict[int, str]:
    """Per frame, a digest of everything its layers are drawn from: ``LAYERS_VERSION``, the
    panel width, the cameras (intrinsics, extrinsics, size, depth scale), the hand model (kind,
    file, size and time of the file), the decimated object mesh, the sequence's ``betas``, the
    frame's pose parameters, and the size and modification time of each camera's depth and
    observed-label files.

    Args:
        poses: world-frame poses holding ``frames``.
        segmentation: observed labels: ``"segmentation"`` or ``"gt"``.
        width: render width, pixels (:func:`render_size`).
    Returns:
        {frame: 40-hex-digit SHA-1}.
    """
    h = hashlib.sha1()
    mano = Path(hand_model.path)
    st = mano.stat() if mano.is_file() else None
    h.update(json.dumps({
        "version": LAYERS_VERSION, "width": int(width), "segmentation": segmentation,
        "hand_model": [hand_model.name, str(mano), st.st_size if st else 0, st.st_mtime_ns if st else 0,
                       int(hand_model.num_betas)],
        "cameras": [[c.name, np.asarray(c.K, np.float64).tolist(), np.asarray(c.T_world_cam, np.float64).tolist(),
                     int(c.width), int(c.height), float(c.depth_scale)] for c in seq.cameras],
    }, sort_keys=True).encode())  # fmt: skip
    h.update(obj.verts.detach().cpu().numpy().astype(np.float32).tobytes())
    h.update(obj.faces.detach().cpu().numpy().astype(np.int64).tobytes())
    h.update(np.ascontiguousarray(poses.betas, np.float64).tobytes())  # (B,): the sequence's shape
    arrays = [np.ascontiguousarray(getattr(poses, k), np.float64)
              for k in ("global_orient", "hand_pose", "transl", "obj_rot", "obj_transl")]  # (F, .) each
    row = {int(f): i for i, f in enumerate(poses.frames)}
    files = [_view_files(str(seq.root), c.name, segmentation) for c in seq.cameras]
    keys = {}
    for f in frames:
        k = h.copy()
        for a in arrays:
            k.update(a[row[f]].tobytes())
        for depth_file, seg_file in files:
            for name in (depth_file.format(f=f), seg_file.format(f=f)):
                try:
                    st = os.stat(name)
                    k.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
                except OSError:
                    k.update(b"-;")
        keys[f] = k.hexdigest()
    return keys


def kept_layers(stage_dir: Path, keys: dict[int, str]) -> dict[int, dict]:
    """The frames of ``keys`` whose layers ``stage_dir/layers/`` holds for exactly that key.

    Returns:
        {frame: {camera: view numbers and layer cell, as :func:`_frame_layers` returns them}};
        a missing, unreadable or other-version index, or a missing layer file, counts as none.
    """
    path = Path(stage_dir) / "layers" / LAYER_INDEX
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = raw.get("frames") if isinstance(raw, dict) and raw.get("version") == LAYERS_VERSION else None
    if not isinstance(entries, dict):
        return {}
    out = {}
    for f, key in keys.items():
        e = entries.get(str(f))
        if not isinstance(e, dict) or e.get("key") != key or not isinstance(e.get("views"), dict):
            continue
        drawn = any(isinstance(v, dict) and v.get("cell") is not None for v in e["views"].values())
        if drawn and not (path.parent / f"{f:06d}.png").is_file():
            continue
        out[f] = e["views"]
    return out


def _write_index(stage_dir: Path, keys: dict[int, str], views: dict[int, dict]) -> None:
    """``stage_dir/layers/index.json``: per frame of ``views``, its key and view numbers (atomic)."""
    entries = {str(f): {"key": keys[f], "views": views[f]} for f in sorted(views)}
    with atomic_write(Path(stage_dir) / "layers" / LAYER_INDEX, "w") as fh:
        json.dump({"version": LAYERS_VERSION, "frames": entries}, fh, default=_json_default)


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (a copy where the file system has none)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


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
    keep: Path | None = None,
    label: str = "report",
) -> dict[tuple[int, str], dict]:
    """Draw every frame and camera and write each frame's layers (``layers/<frame:06d>.png``,
    :func:`_frame_layers`): one file per frame, holding only the boxes around what is
    rendered or observed; the page composites them over the sequence's own RGB images.

    With ``keep`` (a stage folder, e.g. ``fit/``), a frame whose layers ``keep/layers/``
    holds for the same key (:func:`layer_keys`, :func:`kept_layers`) is not drawn: its file
    is hard-linked (or copied) into ``out_dir/layers/`` and its numbers come from the index.
    When ``keep`` is ``out_dir`` itself (:func:`update_layers`), only the frames whose key
    changed are drawn and ``layers/index.json`` is rewritten: first without them, then with
    them, so an interruption never leaves an index entry beside another frame's drawing.

    The main thread poses ``FRAMES_PER_POSE`` frames at a time (:func:`posed_meshes`);
    ``workers`` threads ray-cast each frame's cameras (:func:`render_views`), read its depth
    and labels and encode its layers (open3d's ray casting, OpenCV and numpy release the GIL).

    Args:
        poses: world-frame poses holding ``frames``.
        out_dir: the folder that receives ``layers/``.
        segmentation: observed labels: ``"segmentation"`` or ``"gt"`` (as the fit's config).
        width: render width in pixels (at most each camera's own).
        device: torch device that poses the meshes.
        workers: threads for the frames (default: the CPU count, 1 to 8).
        keep: a folder whose ``layers/`` may hold frames already drawn, or None.
        label: the progress bar's name.
    Returns:
        ``{(frame, camera): view numbers}`` (:func:`_frame_layers`), ``"sizes"``: the (H, W)
        panel size of each camera (by name), ``"drawn"``: the number of frames drawn.
    Raises:
        InputError: an unreadable image (names the file).
        OSError: a layer or the index could not be written.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    (out_dir / "layers").mkdir(parents=True, exist_ok=True)
    stats: dict = {"sizes": {cam.name: render_size(cam, width) for cam in seq.cameras}}
    keys = layer_keys(seq, poses, frames, hand_model, obj, segmentation, width) if keep is not None else {}
    kept = kept_layers(keep, keys) if keep is not None else {}
    update = keep is not None and Path(keep).resolve() == Path(out_dir).resolve()
    views: dict[int, dict] = {}
    for f, vs in kept.items():
        views[f] = vs
        for cam, st in vs.items():
            stats[(f, cam)] = st
        if not update and any(v.get("cell") is not None for v in vs.values()):
            _link(Path(keep) / "layers" / f"{f:06d}.png", out_dir / "layers" / f"{f:06d}.png")
    todo = [f for f in frames if f not in kept]
    if update and todo:
        _write_index(out_dir, keys, views)
    stats["drawn"] = len(todo)
    if not todo:
        return stats

    hand_model = hand_model.to(device)
    obj_verts, obj_faces = obj.verts.to(device), obj.faces.cpu().numpy()
    by_size: dict[tuple[int, int], list[int]] = {}  # cameras of one panel size are cast together
    for ci, cam in enumerate(seq.cameras):
        by_size.setdefault(render_size(cam, width), []).append(ci)
    groups = [(idx, PixelRays(np.stack([panel_intrinsics(seq.cameras[ci], size) for ci in idx]),
                              np.stack([np.asarray(seq.cameras[ci].T_world_cam, np.float64) for ci in idx]), size))
              for size, idx in by_size.items()]  # fmt: skip
    pending: deque = deque()
    cols = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("views"), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress, transient=False) as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task(label, total=len(todo) * len(seq.cameras))

        def collect(limit: int) -> None:
            while len(pending) > limit:
                frame, fut = pending.popleft()
                views[frame] = fut.result()  # re-raises a worker's InputError
                for cam, st in views[frame].items():
                    stats[(frame, cam)] = st
                bar.advance(task, len(seq.cameras))

        try:
            for i in range(0, len(todo), FRAMES_PER_POSE):
                chunk = todo[i : i + FRAMES_PER_POSE]
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
    if update:
        _write_index(out_dir, keys, views)
    return stats


def update_layers(seq: Sequence, stage_dir: Path, poses: HandObjectPoses, hand_model: HandModel, obj: ObjectModel,
                  segmentation: str, width: int = RENDER_WIDTH, device: str = "cpu", progress: bool = True) -> int:
    """Keep the layers of a stage's poses in ``stage_dir/layers/`` (the fit's last step, so the
    report of a fit draws nothing): every frame of ``poses`` that the sequence has, drawn
    unless already kept for the same key (:func:`render_panels` with ``keep=stage_dir``).

    Returns:
        the number of frames drawn.
    Raises:
        InputError: an unreadable depth or label image (names the file).
        OSError: a layer or the index could not be written.
    """
    have = {int(f) for f in poses.frames}
    frames = [f for f in seq.frames if f in have]
    stats = render_panels(seq, poses.select(frames), hand_model, obj, Path(stage_dir), frames, segmentation, width,
                          device, progress, keep=Path(stage_dir), label="layers")  # fmt: skip
    return stats["drawn"]
