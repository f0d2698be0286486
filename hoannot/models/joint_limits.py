"""Joint-angle limits for the 15 articulated hand joints (45 axis-angle components).

``hand_pose`` is MANO's full pose without the mean pose (``flat_hand_mean=True``):
15 joints in MANO order (index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3), each an
axis-angle vector (radians) expressed in the model's rest frame (every joint frame is
the identity at rest, as in MANO). Limits are an axis-aligned box on these 45 numbers:
``lower <= hand_pose <= upper``; HOnnotate (Hampali et al., CVPR 2020, Eq. 8) penalises
``max(lower - theta, 0)^2 + max(theta - upper, 0)^2`` summed over components.

Two sets:

* the bundled open hand's (:mod:`hoannot.models.open_hand`), derived from its geometry:
  each joint has anatomical axes (flexion, abduction, twist; stored in the model file as
  ``joint_axes``, :func:`hoannot.models.hand.open_hand_axes`) and an anatomical range per
  axis (:data:`OPEN_HAND_RANGES`); the box is the exact axis-aligned hull of
  ``sum_k angle_k * axis_k`` over those ranges (:func:`box_from_axes`), computed when the
  model is built and stored in its file (``joint_limits_lower`` / ``joint_limits_upper``,
  read by :class:`hoannot.models.hand.HandModel`). Positive flexion curls a finger
  towards the palm. This module imports no hand model.
* :func:`mano_limits` -- for the real MANO model, the values HOnnotate uses
  (``optimization/ghope/constraints.py`` of github.com/shreyashampali/HOnnotate,
  ``minThetaVals`` / ``maxThetaVals``; components HOnnotate does not optimise are
  frozen at 0 there and get ``lower = upper = 0`` here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: MANO joint names for the 15 articulated joints, in hand_pose order.
JOINT_NAMES = (
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)  # fmt: skip

#: Anatomical range per joint of the open hand: (flexion, abduction, twist), each
#: (low, high) in radians about the open hand's ``joint_axes``. MCP: flexion
#: -0.35..1.6 (20 deg hyperextension, 92 deg flexion), +-0.35 ab/adduction, little twist;
#: PIP: -0.1..1.85; DIP: -0.2..1.4 (cf. range-of-motion tables, e.g. Hume et al. 1990,
#: J. Hand Surg. 15A); thumb CMC gets two large DOFs and some axial rotation.
_MCP = ((-0.35, 1.6), (-0.35, 0.35), (-0.1, 0.1))
_PIP = ((-0.1, 1.85), (-0.05, 0.05), (-0.05, 0.05))
_DIP = ((-0.2, 1.4), (-0.05, 0.05), (-0.05, 0.05))
OPEN_HAND_RANGES: tuple[tuple[tuple[float, float], ...], ...] = (
    _MCP, _PIP, _DIP,  # index
    _MCP, _PIP, _DIP,  # middle
    ((-0.35, 1.6), (-0.45, 0.35), (-0.1, 0.1)), _PIP, _DIP,  # pinky
    _MCP, _PIP, _DIP,  # ring
    ((-0.5, 1.0), (-0.6, 0.8), (-0.6, 0.6)),  # thumb CMC
    ((-0.3, 1.1), (-0.2, 0.2), (-0.15, 0.15)),  # thumb MCP
    ((-0.4, 1.4), (-0.05, 0.05), (-0.05, 0.05)),  # thumb IP
)  # fmt: skip


@dataclass(frozen=True)
class JointLimits:
    """Box limits on ``hand_pose``.

    Attributes:
        lower: (45,) float32 numpy, radians.
        upper: (45,) float32 numpy, radians, ``upper >= lower``.
    """

    lower: np.ndarray
    upper: np.ndarray

    def as_tensors(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(lower, upper)`` as (45,) float32 tensors."""
        return (
            torch.as_tensor(self.lower, dtype=torch.float32, device=device),
            torch.as_tensor(self.upper, dtype=torch.float32, device=device),
        )

    def violation(self, hand_pose: torch.Tensor) -> torch.Tensor:
        """Per-component violation ``max(lower - x, 0) + max(x - upper, 0)``.

        Args:
            hand_pose: (..., 45) tensor, radians.

        Returns:
            (..., 45) tensor, radians outside the box (0 inside).
        """
        lo, hi = self.as_tensors(hand_pose.device)
        return torch.relu(lo - hand_pose) + torch.relu(hand_pose - hi)

    def contains(self, hand_pose: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
        """(...,) bool: every component of (..., 45) ``hand_pose`` inside the box (+tol)."""
        return (self.violation(hand_pose) <= tol).all(dim=-1)


def box_from_axes(axes: np.ndarray, ranges) -> JointLimits:
    """Axis-aligned box hull of ``sum_k a_k * axes[j, k]`` with ``a_k`` in ``ranges[j][k]``.

    Args:
        axes: (15, K, 3) unit vectors (K anatomical axes per joint, rest frame).
        ranges: 15 x K pairs (low, high), radians.

    Returns:
        :class:`JointLimits`; for a joint whose axes are coordinate axes the box is
        exactly the anatomical range.
    """
    axes = np.asarray(axes, dtype=np.float64)
    lo = np.zeros((15, 3))
    hi = np.zeros((15, 3))
    for j in range(15):
        for k, (a, b) in enumerate(ranges[j]):
            c = np.stack([a * axes[j, k], b * axes[j, k]])  # (2, 3)
            lo[j] += c.min(0)
            hi[j] += c.max(0)
    return JointLimits(lo.reshape(45).astype(np.float32), hi.reshape(45).astype(np.float32))


_MIN_MAX_HONNOTATE = {
    # hand_pose index: (min, max) from HOnnotate's constraints.py (theta index - 3);
    # components not listed are frozen at 0 by HOnnotate.
    0: (0.0, 0.45), 1: (-0.15, 0.2), 2: (0.1, 1.8), 3: (-0.3, 0.2), 5: (0.0, 2.0), 8: (0.0, 1.25),
    10: (-0.15, 0.15), 11: (0.1, 2.0), 12: (-0.5, -0.2), 14: (0.0, 2.0), 17: (0.0, 1.25),
    18: (-1.5, -0.2), 19: (-0.15, 0.6), 20: (-0.1, 1.6), 22: (-0.5, 0.6), 23: (0.0, 2.0), 26: (0.0, 1.25),
    27: (-0.5, -0.4), 28: (-0.25, 0.1), 29: (0.1, 1.8), 30: (-0.4, -0.2), 32: (0.0, 2.0), 35: (0.0, 1.25),
    36: (0.0, 2.0), 37: (-0.83, 0.66), 38: (0.0, 0.5), 39: (-0.15, 1.6), 41: (0.0, 0.5), 43: (-0.5, 0.0),
    44: (-1.57, 1.08),
}  # fmt: skip


def mano_limits(include_rest: bool = False) -> JointLimits:
    """Limits for the real MANO model as used by HOnnotate (Hampali et al., CVPR 2020, Eq. 8).

    Source: ``minThetaVals``/``maxThetaVals`` and ``validThetaIDs`` in
    ``optimization/ghope/constraints.py`` of github.com/shreyashampali/HOnnotate; the pose
    there is MANO's full pose without mean (our ``flat_hand_mean=True`` convention).
    Flexion is mostly the z component in MANO's frame. These ranges were tuned for
    grasping hands and exclude the flat hand for some components (e.g. index MCP z >= 0.1).

    Args:
        include_rest: widen every interval to contain 0 (the flat hand), useful as a
            soft prior when hands may be open.

    Returns:
        :class:`JointLimits` (45,) float32.
    """
    lo = np.zeros(45, np.float32)
    hi = np.zeros(45, np.float32)
    for i, (a, b) in _MIN_MAX_HONNOTATE.items():
        lo[i], hi[i] = a, b
    if include_rest:
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    return JointLimits(lo, hi)
