"""Hand model: MANO (through smplx) or the bundled open hand, with 21 HO-3D keypoints.

Both models are posed by ``smplx.MANO`` (``use_pca=False``, ``flat_hand_mean=True``,
right hand), i.e. linear blend skinning of Romero et al. (SIGGRAPH Asia 2017), Eq. 1-2.
smplx 0.1.28 returns MANO's 16 kinematic joints only, so the five fingertip vertices are
appended here. Keypoint order (HO-3D): 0 wrist; 1-3 index MCP/PIP/DIP; 4-6 middle;
7-9 pinky; 10-12 ring; 13-15 thumb CMC/MCP/IP (= MANO's joint order, parents
``[-1,0,1,2,0,4,5,0,7,8,0,10,11,0,13,14]``, as smplx names them right_index1..3,
right_middle1..3, right_pinky1..3, right_ring1..3, right_thumb1..3); 16-20 tips of
thumb, index, middle, ring, pinky.

Fingertip vertices: real MANO uses ids ``[745, 317, 444, 556, 673]`` (a common choice;
smplx's own selector would use ``[744, 320, 443, 554, 671]``); the open hand stores its
own in the pickle (``tip_vertex_ids``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from smplx import MANO
from smplx.lbs import blend_shapes, vertices2joints
from smplx.utils import Struct

from hoannot.io import InputError
from hoannot.models.joint_limits import JointLimits, mano_limits

#: Fingertip vertex ids of the real MANO right hand (thumb, index, middle, ring, pinky).
MANO_TIP_VERTEX_IDS = (745, 317, 444, 556, 673)
#: Bundled open hand (MANO pickle layout).
OPEN_HAND_PATH = Path(__file__).parent / "assets" / "open_hand" / "MANO_RIGHT.pkl"


@functools.lru_cache(maxsize=1)
def open_hand_axes() -> np.ndarray:
    """Anatomical axes of the bundled open hand's joints, read from its model file.

    Returns:
        (15, 3, 3) float64, MANO joint order: ``[:, 0]`` flexion (positive rotation curls
        towards the palm), ``[:, 1]`` abduction (positive moves the distal bone towards the
        thumb side), ``[:, 2]`` twist (along the bone, towards distal). For the four fingers
        these are +z, +y, -x exactly (:func:`hoannot.models.open_hand.joint_axes` builds them).
    Raises:
        InputError: the bundled file lacks ``joint_axes``.
    """
    data = _load_pickle(OPEN_HAND_PATH)
    if "joint_axes" not in data:
        raise InputError(f"{OPEN_HAND_PATH}: open hand model lacks joint_axes")
    return np.array(data["joint_axes"], np.float64)


def open_hand_flexion_axes() -> np.ndarray:
    """(15, 3) float64 unit flexion axis per joint of the open hand (MANO joint order)."""
    return open_hand_axes()[:, 0].copy()


@dataclass
class HandOutput:
    """Posed hand.

    Attributes:
        vertices: (B, V, 3) float32, metres.
        joints: (B, 21, 3) float32, metres, HO-3D keypoint order.
        faces: (F, 3) int64 vertex indices (outward-facing for the open hand).
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    faces: torch.Tensor


def _resolve(model_path: str | Path | None) -> Path:
    if model_path is None:
        return OPEN_HAND_PATH
    p = Path(model_path)
    return p / "MANO_RIGHT.pkl" if p.is_dir() else p


def _load_pickle(path: Path) -> dict:
    """Read a MANO-layout pickle; chumpy arrays (official MANO) become numpy arrays."""
    if not path.is_file():
        raise InputError(f"{path}: MANO model file not found")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
        msg = f"{path}: unreadable MANO pickle ({type(e).__name__}: {e})".splitlines()[0]
        if isinstance(e, ModuleNotFoundError) and "chumpy" in str(e):
            msg += " -- install chumpy-fixed to read official MANO files"
        raise InputError(msg) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: MANO pickle does not hold a dict")
    missing = [k for k in ("v_template", "f", "weights", "J_regressor", "posedirs", "shapedirs", "kintree_table",
                           "hands_components", "hands_mean") if k not in data]  # fmt: skip
    if missing:
        raise InputError(f"{path}: MANO pickle lacks keys {missing}")
    out = {}
    for k, v in data.items():
        if hasattr(v, "r") and not isinstance(v, np.ndarray) and not hasattr(v, "tocsc"):
            v = np.asarray(v.r)  # chumpy -> numpy
        out[k] = v
    return out


class HandModel(torch.nn.Module):
    """Right-hand model posed with smplx's MANO layer.

    Args:
        model_path: None for the bundled open hand; else a folder holding
            ``MANO_RIGHT.pkl`` or the pickle file itself (official MANO or an open-hand
            file).
        num_betas: shape coefficients used (smplx caps this at the file's count, 10).

    Attributes:
        name: ``"open"`` (the file carries the open hand's version string) or ``"mano"``.
        faces: (F, 3) int64 buffer.
        num_betas: int.
        tip_vertex_ids: (5,) int64 buffer (thumb, index, middle, ring, pinky).
        path: the pickle loaded.

    Raises:
        InputError: the file is missing, not a pickle, or lacks MANO keys.
    """

    def __init__(self, model_path: str | Path | None = None, num_betas: int = 10) -> None:
        super().__init__()
        self.path = _resolve(model_path)
        data = _load_pickle(self.path)
        version = str(data.get("version", ""))
        self.name = "open" if version.startswith("hoannot-open-hand") else "mano"
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a 10-betas warning
            self.mano = MANO(
                str(self.path), data_struct=Struct(**data), is_rhand=True, use_pca=False,
                flat_hand_mean=True, num_betas=num_betas, create_global_orient=False,
                create_hand_pose=False, create_betas=False, create_transl=False,
            )  # fmt: skip
        self.num_betas = int(self.mano.num_betas)
        self.register_buffer("faces", self.mano.faces_tensor.clone(), persistent=False)
        tips = data.get("tip_vertex_ids", MANO_TIP_VERTEX_IDS)
        self.register_buffer("tip_vertex_ids", torch.as_tensor(np.asarray(tips), dtype=torch.long), persistent=False)
        if "joint_limits_lower" in data and "joint_limits_upper" in data:
            self._limits = JointLimits(
                np.asarray(data["joint_limits_lower"], np.float32), np.asarray(data["joint_limits_upper"], np.float32)
            )
        elif self.name == "open":
            raise InputError(f"{self.path}: open hand model lacks joint_limits_lower/upper (rebuild it: "
                             "python -m hoannot.models.open_hand OUT.pkl)")
        else:
            self._limits = mano_limits()

    @property
    def limits(self) -> JointLimits:
        """Joint-angle box limits of this model (:mod:`hoannot.models.joint_limits`)."""
        return self._limits

    @property
    def joint_limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)``: (45,) float32 tensors, radians, on the model's device."""
        return self._limits.as_tensors(self.faces.device)

    def _betas(self, betas: torch.Tensor | None, batch: int) -> torch.Tensor:
        dev, dt = self.mano.shapedirs.device, self.mano.shapedirs.dtype
        if betas is None:
            return torch.zeros(batch, self.num_betas, device=dev, dtype=dt)
        if betas.dim() == 1:
            betas = betas.unsqueeze(0).expand(batch, -1)
        if betas.dim() != 2 or betas.shape[0] not in (1, batch) or betas.shape[1] > self.num_betas:
            raise InputError(f"betas: expected (B, <= {self.num_betas}) or (nb,), got {tuple(betas.shape)}")
        betas = betas.expand(batch, -1)
        if betas.shape[1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[1]))
        return betas.to(dt)

    def forward(
        self,
        global_orient: torch.Tensor,
        hand_pose: torch.Tensor,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
    ) -> HandOutput:
        """Pose the hand.

        Args:
            global_orient: (B, 3) axis-angle of the wrist, radians (rotation about the
                wrist joint, then ``transl`` is added).
            hand_pose: (B, 45) axis-angle of the 15 joints, flat hand = 0.
            betas: (B, nb) or (nb,) shape coefficients, or None (mean shape).
            transl: (B, 3) metres, or None (zero).

        Returns:
            :class:`HandOutput` (differentiable w.r.t. every input).

        Raises:
            InputError: wrong shapes.
        """
        if global_orient.dim() != 2 or global_orient.shape[1] != 3:
            raise InputError(f"global_orient: expected (B, 3), got {tuple(global_orient.shape)}")
        B = global_orient.shape[0]
        if hand_pose.shape != (B, 45):
            raise InputError(f"hand_pose: expected ({B}, 45), got {tuple(hand_pose.shape)}")
        if transl is None:
            transl = torch.zeros(B, 3, dtype=global_orient.dtype, device=global_orient.device)
        if transl.shape != (B, 3):
            raise InputError(f"transl: expected ({B}, 3), got {tuple(transl.shape)}")
        out = self.mano(
            betas=self._betas(betas, B), global_orient=global_orient, hand_pose=hand_pose, transl=transl
        )
        verts = out.vertices
        joints = torch.cat([out.joints[:, :16], verts[:, self.tip_vertex_ids]], dim=1)
        return HandOutput(vertices=verts, joints=joints, faces=self.faces)

    def root_joint(self, betas: torch.Tensor | None = None) -> torch.Tensor:
        """Wrist joint at zero pose and zero ``transl``: (B, 3) float32, metres.

        ``global_orient`` rotates about this point, so a rigid change of frame
        ``x -> R x + t`` of the posed hand maps ``(global_orient, transl)`` to
        ``(R * global_orient, R (J0 + transl) + t - J0)`` with ``J0 = root_joint(betas)``.

        Args:
            betas: (B, nb) or (nb,) or None (gives B = 1).
        """
        B = betas.shape[0] if betas is not None and betas.dim() == 2 else 1
        b = self._betas(betas, B)
        v_shaped = self.mano.v_template + blend_shapes(b, self.mano.shapedirs)
        return vertices2joints(self.mano.J_regressor[:1], v_shaped)[:, 0]


def change_frame(
    model: HandModel,
    R: torch.Tensor,
    t: torch.Tensor,
    global_orient: torch.Tensor,
    transl: torch.Tensor,
    betas: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-express hand parameters after the rigid map ``x -> R x + t`` (e.g. world -> camera).

    Args:
        model: the hand model (for the wrist position ``J0``).
        R: (3, 3) or (B, 3, 3) rotation; t: (3,) or (B, 3) metres.
        global_orient: (B, 3) axis-angle; transl: (B, 3) metres.
        betas: shape coefficients as for :meth:`HandModel.forward`.

    Returns:
        ``(global_orient', transl')``, each (B, 3), such that the posed vertices become
        ``R v + t``.
    """
    from pytorch3d.transforms import axis_angle_to_matrix, matrix_to_axis_angle

    B = global_orient.shape[0]
    R = R.to(global_orient.dtype).expand(B, 3, 3)
    t = t.to(global_orient.dtype).expand(B, 3)
    J0 = model.root_joint(betas).to(global_orient.dtype).expand(B, 3)
    go = matrix_to_axis_angle(R @ axis_angle_to_matrix(global_orient))
    tr = (R @ (J0 + transl).unsqueeze(-1)).squeeze(-1) + t - J0
    return go, tr
