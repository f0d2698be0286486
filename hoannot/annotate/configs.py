"""Settings of the perception networks and of their training, as pydantic models.

Network configs (saved inside every weights file, :mod:`hoannot.annotate.weights`):
:class:`SegmentationConfig` (DeepLabV3+, :mod:`hoannot.annotate.segmentation`),
:class:`KeypointConfig` (the CPM, :mod:`hoannot.annotate.keypoints`) and
:class:`MediaPipeConfig` (:mod:`hoannot.annotate.mediapipe_hands`, nothing saved). The networks
keep their config as the plain dict :meth:`~pydantic.BaseModel.model_dump` gives, which is what
a weights file stores; weights files store plain dicts, so files written before these models
existed load unchanged.

Two ways in, two policies for keys a model does not know:

* :meth:`NetConfig.validated` (what a caller passes, e.g. ``CPM({"stages": 2})``): strict, an
  unknown key or a bad value is an :class:`~hoannot.io.InputError` naming the field;
* :meth:`NetConfig.from_stored` (the dict inside a weights file): missing keys take the
  defaults (older files predate later options; the defaults are what those files were trained
  with), keys this version does not know (a file from a newer hoannot) are dropped with a
  :class:`UserWarning` naming them, so the file still loads; a bad value is an ``InputError``
  naming the file.

Training settings: :class:`TrainConfig` (what ``hoannot train-seg`` and ``train-kp`` share),
:class:`SegTrainConfig` and :class:`KpTrainConfig`, each with the ``net`` it trains. The CLI
builds its ``train-seg`` / ``train-kp`` options from these fields' descriptions, so this
module imports pydantic only (no torch: ``hoannot --help`` stays fast).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hoannot.io import InputError

NUM_JOINTS = 21
Self = TypeVar("Self", bound="NetConfig")


def validation_message(e: ValidationError, where: str, given: dict[str, Any] | None = None,
                       options: bool = False) -> str:  # fmt: skip
    """One line for the first error of ``e``: ``<where>: field 'a.b': <msg> (given <value>)``.

    Args:
        e: the pydantic error.
        where: what was validated (a file, ``train-kp``...).
        given: the flat settings the caller passed; a field among them is named by its flat
            name and value, as the caller wrote it.
        options: ``given`` came from command-line options: say ``(from --name value)``.
    """
    err = e.errors()[0]
    loc = [str(x) for x in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    name = loc[-1] if loc else ""
    if given is not None and given.get(name) is not None:
        src = f"from --{name.replace('_', '-')}" if options else "given"
        return f"{where}: field {name!r}: {msg} ({src} {given[name]!r})"
    return f"{where}: field {'.'.join(loc)!r}: {msg}" + ("" if err["type"] == "extra_forbidden" else f" (given {err.get('input')!r})")


class NetConfig(BaseModel):
    """A network's config: strict for callers, tolerant of legacy keys in weights files."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @classmethod
    def validated(cls: type[Self], config: Self | dict | None, where: str | None = None) -> Self:
        """``config`` (a model, a partial dict or None = defaults) as a validated model.

        Raises:
            InputError: an unknown key or a value the field's type or bounds refuse; names
                the field (``KeypointConfig: field 'stages': Input should be greater than or
                equal to 1 (given 0)``).
        """
        if isinstance(config, cls):
            return config
        if isinstance(config, BaseModel):
            raise InputError(f"{where or cls.__name__}: expected a {cls.__name__}, got a {type(config).__name__}")
        try:
            return cls.model_validate(config or {})
        except ValidationError as e:
            raise InputError(validation_message(e, where or cls.__name__)) from None

    @classmethod
    def from_stored(cls: type[Self], stored: dict, where: str) -> Self:
        """The config saved in a weights file.

        Args:
            stored: the file's ``config`` dict (missing keys take the defaults).
            where: the file, for messages.
        Returns:
            the validated model; ``model_dump()`` is the dict the network uses.
        Raises:
            InputError: not a mapping, or a known key with a bad value.
        Warns:
            UserWarning: the dict has keys this version does not know (dropped).
        """
        if not isinstance(stored, dict):
            raise InputError(f"{where}: config is a {type(stored).__name__}, expected a mapping")
        unknown = sorted(k for k in stored if k not in cls.model_fields)
        if unknown:
            warnings.warn(f"{where}: ignoring config keys this hoannot does not know: {', '.join(map(str, unknown))}",
                          UserWarning, stacklevel=2)  # fmt: skip
        return cls.validated({k: v for k, v in stored.items() if k in cls.model_fields}, str(where))


class SegmentationConfig(NetConfig):
    """DeepLabV3+ hand/object segmentation (HOnnotate Sec. 3.2): what rebuilds the network."""

    arch: Literal["DeepLabV3Plus"] = Field("DeepLabV3Plus", description="network: DeepLabV3+ (Chen et al., ECCV 2018)")
    encoder: str = Field("tu-mobilenetv3_small_100", min_length=1, description="segmentation_models_pytorch encoder name (built without pretrained weights)")
    decoder_channels: int = Field(64, ge=1, description="channels of the DeepLabV3+ decoder")
    classes: Literal[3] = Field(3, description="output classes: 0 background, 1 hand, 2 object")
    rgbd: bool = Field(False, description="RGB-D input: depth as a 4th channel (else RGB)")
    work_width: int = Field(128, ge=32, description="width images are resized to before the network, pixels")
    train_size: list[int] = Field([128, 96], min_length=2, max_length=2, description="(W, H) of the augmented training images, pixels, multiples of 32")

    @field_validator("train_size")
    @classmethod
    def _multiple_of_32(cls, v: list[int]) -> list[int]:
        if any(x < 32 or x % 32 for x in v):
            raise ValueError("W and H must be positive multiples of 32 (the encoder's stride)")
        return v


class KeypointConfig(NetConfig):
    """Convolutional Pose Machine for 21 hand joints (Wei et al., CVPR 2016): network and crops.

    Defaults of ``refine_passes``, ``batchnorm`` and ``distal_crop`` are those of weights files
    written before each option existed (the training defaults are in :class:`KpTrainConfig`).
    """

    arch: Literal["CPM"] = Field("CPM", description="network: Convolutional Pose Machine (Wei et al., CVPR 2016)")
    stages: int = Field(3, ge=1, description="CPM stages T (each refines the previous stage's belief maps)")
    width: int = Field(48, ge=2, description="channels of the image trunk and the stages")
    crop: int = Field(64, ge=8, multiple_of=4, description="side of the square hand crop the network sees, pixels (a multiple of the stride)")
    stride: Literal[4] = Field(4, description="heatmap stride, pixels (4, fixed by the trunk's two poolings)")
    sigma: float = Field(1.2, gt=0, description="std of the Gaussian target maps, heatmap pixels")
    joints: Literal[21] = Field(NUM_JOINTS, description="hand joints predicted (21)")
    joint_order: Literal["ho3d"] = Field("ho3d", description="joint order of the outputs (HO-3D)")
    box_margin: float = Field(1.25, gt=0, description="hand crop side as a multiple of the hand mask's larger extent")
    joint_margin: float = Field(1.5, gt=0, description="refine-pass crop side as a multiple of the first pass's joint extent")
    refine_passes: int = Field(0, ge=0, description="passes that detect the joints again on a crop around the previous pass's joints")
    batchnorm: bool = Field(False, description="batch norm after every hidden convolution")
    distal_crop: bool = Field(False, description="crop around the hand end of the mask only (the forearm cut off)")


class MediaPipeConfig(NetConfig):
    """MediaPipe Hands behind the 2D-joint detector interface (Zhang et al., CVPR-W 2020)."""

    arch: Literal["MediaPipeHands"] = Field("MediaPipeHands", description="detector: MediaPipe Hands (palm detector, then landmarks)")
    model_complexity: Literal[0, 1] = Field(1, description="landmark model: 1 full, 0 lite")
    min_detection_confidence: float = Field(0.3, ge=0, le=1, description="palm detector score below which no hand is reported")
    crop: int = Field(256, ge=32, description="side of the square crop around the hand mask given to MediaPipe, pixels")
    box_margin: float = Field(2.0, gt=0, description="crop side as a multiple of the hand mask's larger extent (context for the palm detector)")
    joints: Literal[21] = Field(NUM_JOINTS, description="hand joints returned (21)")
    joint_order: Literal["ho3d"] = Field("ho3d", description="joint order of the outputs (HO-3D)")


class TrainConfig(BaseModel):
    """What training either network takes: data, budget, seed and device.

    A run checkpoints to ``<weights>.ckpt`` and continues from it up to ``steps``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    samples: int = Field(600, ge=1, description="synthetic composites rendered for training (augmented on the fly)")
    steps: int = Field(400, ge=0, description="optimiser steps in all (Adam, cosine decay); a resumed run continues up to this number")
    max_minutes: Optional[float] = Field(None, gt=0, description="stop (with a checkpoint) after this many minutes of this run; rerun to resume")
    seed: int = Field(0, description="seed of the rendered views, the initial weights, the shuffling and the augmentation")
    device: str = Field("cpu", min_length=1, description="torch device to train on (cpu, cuda)")
    workers: int = Field(0, ge=0, description="data-loading processes that augment the next batches while the network trains (0: in the training process)")

    @classmethod
    def with_settings(cls, settings: dict[str, Any], where: str, base: TrainConfig | None = None, options: bool = False):
        """``base`` (None: the defaults), then flat ``settings``: a field of this model or of its ``net``.

        Only for the subclasses, which have a ``net``.

        Args:
            settings: e.g. ``{"steps": 100, "stages": 2}`` (``stages`` is ``net.stages``);
                None values are skipped (an option not given).
            where: for messages (``train-kp``).
            base: the settings to start from (an instance of this class).
            options: the settings are command-line options (messages say ``--name``).
        Returns:
            a validated instance of this class.
        Raises:
            InputError: ``base`` of another class, an unknown setting, or a value a field
                refuses (names the setting and the value given).
        """
        if base is not None and not isinstance(base, cls):
            raise InputError(f"{where}: expected a {cls.__name__}, got a {type(base).__name__}")
        base = base if base is not None else cls()
        net_model = type(base.net)
        top, net = base.model_dump(exclude={"net"}), base.net.model_dump()
        for k, v in settings.items():
            if v is None:
                continue
            if k in cls.model_fields and k != "net":
                top[k] = v
            elif k in net_model.model_fields:
                net[k] = v
            else:
                known = sorted([*(f for f in cls.model_fields if f != "net"), *net_model.model_fields])
                raise InputError(f"{where}: unknown setting {k!r} (known: {', '.join(known)})")
        try:
            return cls.model_validate({**top, "net": net})
        except ValidationError as e:
            raise InputError(validation_message(e, where, settings, options)) from None


class SegTrainConfig(TrainConfig):
    """``hoannot train-seg``: DeepLabV3+ on synthetic composites."""

    batch_size: int = Field(8, ge=1, description="training batch size, views")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate at the start of the cosine decay")
    net: SegmentationConfig = Field(SegmentationConfig(), description="the network trained (saved with the weights)")


class KpTrainConfig(TrainConfig):
    """``hoannot train-kp``: the CPM on hand crops of synthetic composites."""

    batch_size: int = Field(16, ge=1, description="training batch size, hand crops")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate at the start of the cosine decay")
    joint_box_prob: float = Field(0.5, ge=0, le=1, description="share of training crops cut around the true joints (what the refine pass sees) rather than the hand mask")
    net: KeypointConfig = Field(KeypointConfig(batchnorm=True, refine_passes=1), description="the network trained (saved with the weights)")


__all__ = ["NUM_JOINTS", "NetConfig", "SegmentationConfig", "KeypointConfig", "MediaPipeConfig", "TrainConfig",
           "SegTrainConfig", "KpTrainConfig", "validation_message"]  # fmt: skip
