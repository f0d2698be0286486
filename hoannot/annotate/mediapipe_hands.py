"""MediaPipe Hands as a second 2D hand-joint detector (``pip install "hoannot[mediapipe]"``).

MediaPipe Hands (Zhang, Bazarevsky, Vakunov et al., "MediaPipe Hands: On-device Real-time
Hand Tracking", CVPR Workshops 2020) runs a palm detector (BlazePalm) and then a landmark
regressor for 21 joints on the rotated palm crop (Sec. 2). It was trained on real and
rendered hands, so unlike hoannot's CPM it has seen real images. Its models ship inside
the ``mediapipe`` wheel (``mediapipe/modules/hand_landmark/hand_landmark_full.tflite`` in
release 0.10.21, the last one that bundles them); nothing is downloaded at run time.

:class:`MediaPipeHands` has the interface of :func:`hoannot.annotate.keypoints.
detect_keypoints`: the view is cropped around the predicted hand mask (a square of
``box_margin`` x the mask's extent, so the palm detector sees the whole hand with some
context) and resized to ``crop`` px; of the hands MediaPipe finds there, the one with
most joints on the mask is kept. Its landmarks come in the OpenPose/MANO-21 order and
are returned in HO-3D order (:data:`hoannot.datasets.conventions.OPENPOSE_TO_HO3D`).

Confidence: MediaPipe gives no per-joint score, so every joint gets the hand's
handedness score (0.5-1 for a detected hand; 0 and NaN joints when none is found).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from hoannot.annotate.configs import NUM_JOINTS, MediaPipeConfig
from hoannot.annotate.preprocess import crop_affine, hand_box
from hoannot.datasets.conventions import OPENPOSE_TO_HO3D
from hoannot.io import InputError

__all__ = ["NUM_JOINTS", "MediaPipeConfig", "MediaPipeHands", "landmarks_to_ho3d"]


def landmarks_to_ho3d(xy_norm: np.ndarray, size: int) -> np.ndarray:
    """MediaPipe's normalised landmarks of a ``size`` x ``size`` crop -> crop px, HO-3D order.

    Args:
        xy_norm: (21, 2) float, OpenPose/MANO-21 order, in [0, 1] of the crop's width and
            height (MediaPipe's convention: 0 and 1 are the crop's outer edges).
        size: crop side, px.
    Returns:
        (21, 2) float64 px with pixel centres at integer coordinates, HO-3D order.
    """
    uv = np.asarray(xy_norm, np.float64)[:, :2] * size - 0.5
    return uv[list(OPENPOSE_TO_HO3D)]


class MediaPipeHands:
    """MediaPipe Hands behind the 2D-joint detector interface.

    Args:
        config: a :class:`~hoannot.annotate.configs.MediaPipeConfig` (``model_complexity``
            1 = the "full" landmark model, 0 = "lite"; ``crop`` side px; ``box_margin``), or a
            dict of some of its fields; None: the defaults.
    Attributes:
        config (the full config as a plain dict), weights_path (the bundled ``.tflite``),
        sha256 (its hash).
    Raises:
        InputError: an unknown config field or a value it refuses; mediapipe is not
            installed, or its release does not bundle the model.
    """

    def __init__(self, config: MediaPipeConfig | dict | None = None) -> None:
        self.config = c = MediaPipeConfig.validated(config).model_dump()
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logs: errors only
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import mediapipe as mp
        except ImportError:
            raise InputError("MediaPipe is not installed: pip install 'hoannot[mediapipe]' "
                             "(or use the CPM, --kp-detector cpm)") from None  # fmt: skip
        name = "hand_landmark_full.tflite" if c["model_complexity"] else "hand_landmark_lite.tflite"
        tflite = Path(mp.__file__).parent / "modules" / "hand_landmark" / name
        hands_api = getattr(getattr(mp, "solutions", None), "hands", None)
        if hands_api is None or not tflite.is_file():
            raise InputError(f"mediapipe {getattr(mp, '__version__', '?')}: no bundled {name} "
                             "(install mediapipe==0.10.21: pip install 'hoannot[mediapipe]')")  # fmt: skip
        self.weights_path = str(tflite)
        self.sha256 = hashlib.sha256(tflite.read_bytes()).hexdigest()
        self._hands = hands_api.Hands(static_image_mode=True, max_num_hands=2,
                                      model_complexity=int(c["model_complexity"]),
                                      min_detection_confidence=float(c["min_detection_confidence"]))  # fmt: skip

    def close(self) -> None:
        """Release MediaPipe's graph."""
        self._hands.close()

    def detect(self, rgb: np.ndarray, hand_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """21 hand joints in one image.

        Args:
            rgb: (H, W, 3) uint8.
            hand_mask: (H, W) bool hand pixels, or None to search the whole image.
        Returns:
            uv (21, 2) float32 px, full image, HO-3D order (NaN when no hand is found or
            the mask is empty), confidence (21,) float32 (the hand's handedness score).
        Raises:
            InputError: rgb and mask sizes differ.
        """
        c = self.config
        J = NUM_JOINTS
        none = np.full((J, 2), np.nan, np.float32), np.zeros(J, np.float32)
        rgb = np.ascontiguousarray(rgb[..., :3])
        if hand_mask is None:
            h, w = rgb.shape[:2]
            box = ((w - 1) / 2, (h - 1) / 2, float(max(w, h)))
            mask = np.ones((h, w), bool)
        else:
            if hand_mask.shape != rgb.shape[:2]:
                raise InputError(f"MediaPipeHands: mask {hand_mask.shape} does not match rgb {rgb.shape[:2]}")
            mask = np.asarray(hand_mask, bool)
            box = hand_box(mask, c["box_margin"])
            if box is None:
                return none
        size = int(c["crop"])
        M = crop_affine(box, size)
        crop = cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        res = self._hands.process(crop)
        if not res.multi_hand_landmarks:
            return none
        Minv = cv2.invertAffineTransform(M)
        best, best_hits = none, -1
        for lm, handed in zip(res.multi_hand_landmarks, res.multi_handedness):
            xy = np.array([[p.x, p.y] for p in lm.landmark])
            uv = landmarks_to_ho3d(xy, size) @ Minv[:, :2].T + Minv[:, 2]
            px = np.round(uv).astype(int)
            inside = (px[:, 0] >= 0) & (px[:, 0] < mask.shape[1]) & (px[:, 1] >= 0) & (px[:, 1] < mask.shape[0])
            hits = int(mask[px[inside, 1], px[inside, 0]].sum())
            if hits > best_hits:
                score = float(handed.classification[0].score)
                best, best_hits = (uv.astype(np.float32), np.full(J, score, np.float32)), hits
        return best
