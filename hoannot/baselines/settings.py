"""The baselines' settings as pydantic models: one field per setting, with its unit.

:class:`CropSettings` holds what every method shares (training, the depth crop and its
augmentation, the CNN trunk); each method's module defines its own ``Settings`` subclass, and
its ``DEFAULTS`` is that model's dump (a plain dict, as the methods read it).
:func:`hoannot.baselines.train.make_cfg` validates overrides (``hoannot train-baseline --set
k=v``) through the method's model, so an unknown setting or a value of the wrong type is a
one-line error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CropSettings(BaseModel):
    """Settings every baseline has."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    epochs: int = Field(60, ge=0, description="epochs of the main stage (the other stages scale with it)")
    batch_size: int = Field(32, ge=1, description="training batch size")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    crop_size: int = Field(48, ge=8, description="side of the square depth crop, pixels")
    cube_m: float = Field(0.3, gt=0, description="side of the metric cube around the hand that the crop normalises, metres")
    rot_deg: float = Field(30.0, ge=0, description="augmentation: in-plane rotation range, +- degrees")
    trans_m: float = Field(0.01, ge=0, description="augmentation: translation range of the crop centre, +- metres")
    scale: float = Field(0.1, ge=0, description="augmentation: relative scale range of the cube, +-")
    widths: list[int] = Field([8, 16, 32], min_length=1, description="channels of the CNN trunk's stages")
    hidden: int = Field(256, ge=1, description="width of the fully connected layer")


__all__ = ["CropSettings"]
