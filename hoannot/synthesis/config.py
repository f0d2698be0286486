"""The settings of a synthetic capture (pydantic only: the CLI builds ``hoannot synth``'s
options from these fields without importing numpy or torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SynthConfig(BaseModel):
    """What to render: the cameras, the frames, the scene and the sensor model of a
    synthetic capture (the fields' descriptions give units; the hole model is in the
    module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field("synthetic", description="sequence name")
    cameras: int = Field(2, ge=1, description="number of cameras C, on a ring around the object")
    frames: int = Field(8, ge=1, description="number of frames F")
    width: int = Field(320, ge=8, description="image width, pixels")
    height: int = Field(240, ge=8, description="image height, pixels")
    focal: float = Field(300.0, gt=0, description="focal length, pixels (320 x 240 at 300 px ~ a RealSense at half size)")
    distance: float = Field(0.5, gt=0, description="camera distance to the world origin, metres")
    rotation_deg: float = Field(30.0, description="total object rotation over the sequence, degrees")
    translation_m: float = Field(0.03, ge=0, description="amplitude of the object's translation, metres")
    depth_scale: float = Field(0.0005, gt=0, description="metres per uint16 unit on disk")
    noise: bool = Field(True, description="apply the sensor model (noise, holes); quantisation always applies")
    edge_jump: float = Field(0.01, ge=0, description="hole model: a depth step larger than this at an edge, metres")
    edge_dropout: float = Field(0.5, ge=0, le=1, description="hole model: probability of losing a pixel at such an edge")
    dropout: float = Field(0.01, ge=0, le=1, description="hole model: probability of losing any pixel")
    background_m: float = Field(0.35, ge=0, description='scene "wall": depth of the wall behind the object, metres from each camera (0: none)')
    seed: int = Field(0, description="random seed (poses, colours, noise)")
    object_symmetric: bool = Field(False, description="the object is symmetric (ADD-S in evaluation)")
    scene: Literal["wall", "slanted", "table"] = Field("wall", description=(
        'the backdrop: "wall" a fronto-parallel wall per camera at background_m (smooth colour field); "slanted" one '
        "textured plane behind the object per camera, tilted 25-50 degrees from its axis; \"table\" a textured table "
        "12-20 cm under the object with 3-5 boxes of clutter and a textured wall behind; both are ray-cast like the hand "
        "and object (they occlude them and have the sensor's noise and holes)"))
    lighting: bool = Field(False, description="a directional light of random direction and strength plus ambient on top of the head light")
