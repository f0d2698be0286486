"""One config style: every settings model is pydantic, and every field says what it is."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hoannot.baselines import cnn3d, feedback_loop, sdnet, two_stage
from hoannot.baselines.train import make_cfg
from hoannot.fitting.config import EnergyWeights, FitConfig
from hoannot.io import InputError
from hoannot.synthesis.capture import SynthConfig
from hoannot.synthesis.training_renders import RenderConfig

MODELS = [FitConfig, EnergyWeights, SynthConfig, RenderConfig, feedback_loop.Settings, two_stage.Settings,
          cnn3d.Settings, sdnet.Settings]  # fmt: skip


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_every_field_has_a_description(model):
    assert [n for n, f in model.model_fields.items() if not (f.description or "").strip()] == []


def test_cli_options_take_their_help_from_the_config():
    from hoannot.cli import app

    out = CliRunner().invoke(app, ["fit", "--help"], terminal_width=100).output
    text = " ".join(out.replace("│", " ").split())  # the help panel's wrapped lines, joined
    for field in ("iterations", "batch_size", "crop_size", "track_iterations", "keypoints"):
        assert " ".join(FitConfig.model_fields[field].description.split()) in text, field


def test_baseline_settings_are_validated():
    assert make_cfg("sdnet", {"crop_size": "32"})["crop_size"] == 32  # --set values arrive as YAML scalars
    with pytest.raises(InputError, match="unknown setting 'crop'"):
        make_cfg("sdnet", {"crop": 32})
    with pytest.raises(InputError, match="setting 'lr'"):
        make_cfg("two_stage", {"lr": -1})
