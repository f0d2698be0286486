"""Perception stage of ``hoannot init``: segmentation masks and 2D joints for every view.

For each camera and frame of a sequence: DeepLabV3+ labels (0 background, 1 hand,
2 object; :mod:`hoannot.annotate.segmentation`) and 21 hand joints from a CPM on the
crop around the predicted hand mask (:mod:`hoannot.annotate.keypoints`). Writes
(atomically, through :mod:`hoannot.io`)::

    segmentation/<cam>/<frame:06d>.png   (H, W) uint8 labels
    keypoints2d/<cam>.npz                frames (F,), uv (F, 21, 2) float32 px,
                                         conf (F, 21) float32 peak belief, visible
                                         (F, 21) bool (conf >= threshold), joint_order
                                         "ho3d" (:mod:`hoannot.datasets.keypoints2d`),
                                         seg_sha256 / kp_sha256 of the weights used
    perception/overlay_<cam>.png         first frame: mask tint + joints + skeleton
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hoannot.io import InputError, write_image
from hoannot.datasets.keypoints2d import keypoints2d_path, write_keypoints2d
from hoannot.datasets.segmentation import labels_path, write_labels

#: HO-3D skeleton edges (parent, child) for drawing.
HO3D_BONES = (
    (0, 1), (1, 2), (2, 3), (3, 17), (0, 4), (4, 5), (5, 6), (6, 18), (0, 7), (7, 8), (8, 9), (9, 20),
    (0, 10), (10, 11), (11, 12), (12, 19), (0, 13), (13, 14), (14, 15), (15, 16),
)  # fmt: skip
_FINGER_COLOURS = ((255, 60, 60), (60, 200, 60), (60, 120, 255), (230, 200, 40), (200, 60, 230))


def draw_overlay(rgb: np.ndarray, labels: np.ndarray | None, uv: np.ndarray | None,
                 conf: np.ndarray | None = None, min_conf: float = 0.0) -> np.ndarray:  # fmt: skip
    """Picture of a segmentation and 2D joints over the image.

    Args:
        rgb: (H, W, 3) uint8; labels: (H, W) uint8 (hand tinted red, object blue) or None.
        uv: (21, 2) px HO-3D order or None; conf: (21,) (joints below ``min_conf`` hollow).
    Returns:
        (H, W, 3) uint8 image.
    """
    out = rgb[..., :3].astype(np.float32).copy()
    if labels is not None:
        for c, col in ((1, (255, 40, 40)), (2, (40, 90, 255))):
            m = labels == c
            out[m] = 0.55 * out[m] + 0.45 * np.asarray(col, np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if uv is not None and np.isfinite(uv).all():
        r = max(2, int(round(min(rgb.shape[:2]) / 120)))
        for k, (a, b) in enumerate(HO3D_BONES):
            col = _FINGER_COLOURS[k // 4]
            pa, pb = tuple(int(round(x)) for x in uv[a]), tuple(int(round(x)) for x in uv[b])
            cv2.line(out, pa, pb, col, max(1, r // 2), cv2.LINE_AA)
        for j, p in enumerate(uv):
            filled = conf is None or conf[j] >= min_conf
            cv2.circle(out, tuple(int(round(x)) for x in p), r, (255, 255, 255), -1 if filled else 1, cv2.LINE_AA)
    return out


def hand_near_object(labels: np.ndarray, reach: float = 0.75) -> np.ndarray:
    """The hand pixels within reach of the object: where the 2D joint detector should look.

    A hand mask of a real photo often runs up the forearm; a crop around all of it makes the
    hand small and the joints collapse onto the arm. A grasping hand is next to its object,
    so only hand pixels within ``reach * sqrt(object pixels)`` of an object pixel are kept
    (the whole hand mask when there is no object or nothing would be kept).

    Args:
        labels: (H, W) uint8 (1 hand, 2 object).
    Returns:
        (H, W) bool.
    """
    hand, obj = labels == 1, labels == 2
    if not obj.any() or not hand.any():
        return hand
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 3)
    near = hand & (dist <= reach * np.sqrt(obj.sum()))
    return near if near.any() else hand


def load_detector(kind: str = "cpm", weights: str | Path | None = None, device: str = "cpu"):
    """A 2D hand-joint detector by name.

    Args:
        kind: ``"cpm"`` (:func:`hoannot.annotate.keypoints.load_keypoints` of ``weights``)
            or ``"mediapipe"`` (:class:`hoannot.annotate.mediapipe_hands.MediaPipeHands`).
        weights, device: for the CPM.
    Returns:
        ``(model, detect)``: the model (with ``weights_path`` and ``sha256``) and
        ``detect(rgb (H, W, 3) uint8, hand_mask (H, W) bool) -> (uv (21, 2) float32 px
        HO-3D order, confidence (21,) float32)``.
    Raises:
        InputError: unknown ``kind``; missing weights or package (the message says how
            to get them).
    """
    if kind == "cpm":
        from hoannot.annotate.keypoints import detect_keypoints, load_keypoints

        model = load_keypoints(weights, device)
        return model, lambda rgb, mask: detect_keypoints(model, rgb, mask)
    if kind == "mediapipe":
        from hoannot.annotate.mediapipe_hands import MediaPipeHands

        model = MediaPipeHands()
        return model, model.detect
    raise InputError(f"unknown 2D joint detector {kind!r} (use cpm or mediapipe)")


def run_perception(
    seq_dir: str | Path,
    seg_weights: str | Path | None = None,
    kp_weights: str | Path | None = None,
    device: str = "cpu",
    min_conf: float = 0.2,
    progress: bool = False,
    kp_detector: str = "cpm",
    obj=None,
    geometry: bool = True,
    seed: int = 0,
) -> str:
    """Segment every view of a sequence and detect its 2D hand joints.

    Two passes: the segmentation network labels every view; with ``geometry`` (and the
    object ``obj``) the labels are then decided by the depth
    (:func:`hoannot.annotate.foreground.segment_sequence`: background planes out, the
    hand-object cluster, the registered object ray-cast; the network's labels are kept in
    ``perception/network_segmentation/``). The 2D joints are detected on the crop around the
    final hand mask.

    Args:
        seq_dir: sequence folder (:mod:`hoannot.datasets.sequence`).
        seg_weights, kp_weights: weights files or folders; None searches the user cache
            (``$HOANNOT_CACHE`` or ``~/.cache/hoannot``) and the bundled weights.
        device: torch device.
        min_conf: joints with a lower peak belief are marked not visible.
        progress: show a rich progress bar.
        kp_detector: ``"cpm"`` (hoannot's CPM, ``kp_weights``) or ``"mediapipe"``
            (:class:`~hoannot.annotate.mediapipe_hands.MediaPipeHands`, the optional
            extra; ``kp_weights`` is not used).
        obj: :class:`~hoannot.models.objects.ObjectModel`, needed by ``geometry``.
        geometry: decide the labels from depth (see above); False keeps the network's.
        seed: random seed of the geometric stage.
    Returns:
        a one-paragraph summary (views processed, mean hand/object pixels, mean joint
        confidence, weights used).
    Raises:
        InputError: bad sequence, missing/unreadable images, missing or corrupt weights
            (the message names ``hoannot train-seg`` / ``hoannot train-kp``), an unknown
            ``kp_detector``, mediapipe not installed, or (``geometry``) a frame where the
            object cannot be registered.
    """
    from hoannot.annotate.segmentation import load_segmentation, segment
    from hoannot.datasets.sequence import open_sequence

    seq = open_sequence(seq_dir)
    seg_model = load_segmentation(seg_weights, device)
    kp_model, detect = load_detector(kp_detector, kp_weights, device)
    rgbd = bool(seg_model.config["rgbd"])
    frames = seq.frames
    jobs = [(c, f) for c in seq.camera_names for f in frames]

    def bar(items, what):
        if not progress:
            return items
        from rich.progress import track

        return track(items, description=what)

    labels = {}
    for cam, frame in bar(jobs, "segmentation"):
        rgb = seq.read_rgb(cam, frame)
        labels[cam, frame] = segment(seg_model, rgb, seq.read_depth(cam, frame) if rgbd else None)
    how = "network labels"
    if geometry:
        if obj is None:
            raise InputError("run_perception: geometry=True needs the object model (obj)")
        from hoannot.annotate.foreground import segment_sequence

        for (cam, frame), lab in labels.items():
            write_labels(labels_path(seq.root / "perception" / "network_segmentation", cam, frame), lab)
        labels, _, _, how = segment_sequence(seq, obj, labels, seed=seed)
    uv_all = {c: [] for c in seq.camera_names}
    conf_all = {c: [] for c in seq.camera_names}
    hand_px, obj_px, empty = [], [], 0
    for cam, frame in bar(jobs, "2D joints"):
        rgb = seq.read_rgb(cam, frame)
        lab = labels[cam, frame]
        write_labels(seq.segmentation_path(cam, frame), lab)
        uv, conf = detect(rgb, hand_near_object(lab))
        empty += int(not (lab == 1).any())
        uv_all[cam].append(uv)
        conf_all[cam].append(conf)
        hand_px.append(int((lab == 1).sum()))
        obj_px.append(int((lab == 2).sum()))
        if frame == frames[0]:
            write_image(seq.root / "perception" / f"overlay_{cam}.png", draw_overlay(rgb, lab, uv, conf, min_conf))
    for cam in seq.camera_names:
        conf = np.stack(conf_all[cam]).astype(np.float32)
        write_keypoints2d(keypoints2d_path(seq.root, cam), frames, np.stack(uv_all[cam]), conf, conf >= min_conf,
                          seg_sha256=seg_model.sha256, kp_sha256=kp_model.sha256)
    all_conf = np.concatenate([np.stack(v) for v in conf_all.values()])
    return (
        f"perception: {len(jobs)} views ({len(seq.camera_names)} cameras x {len(frames)} frames); {how}; "
        f"mean hand {np.mean(hand_px):.0f} px, object {np.mean(obj_px):.0f} px, {empty} views without hand; "
        f"mean joint confidence {all_conf.mean():.2f}, {(all_conf >= min_conf).mean():.0%} joints >= {min_conf}; "
        f"weights {Path(seg_model.weights_path).name} ({seg_model.sha256[:8]}), "
        f"{Path(kp_model.weights_path).name} ({kp_model.sha256[:8]}); wrote segmentation/, keypoints2d/, perception/"
    )
