"""One config style: every settings model is pydantic, and every field says what it is."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hoannot.annotate.configs import (KeypointConfig, KpTrainConfig, MediaPipeConfig, SegmentationConfig,
                                      SegTrainConfig, TrainConfig)  # fmt: skip
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


# --- perception: network configs (saved in weights files) and their training settings ---

PERCEPTION = [SegmentationConfig, KeypointConfig, MediaPipeConfig, TrainConfig, SegTrainConfig, KpTrainConfig]


@pytest.mark.parametrize("model", PERCEPTION, ids=lambda m: m.__name__)
def test_every_perception_field_has_a_description(model):
    assert [n for n, f in model.model_fields.items() if not (f.description or "").strip()] == []


@pytest.mark.parametrize("config, match", [
    ({"stages": 0}, "field 'stages': Input should be greater than or equal to 1 \\(given 0\\)"),
    ({"crop": 30}, "field 'crop': Input should be a multiple of 4"),
    ({"stage": 2}, "field 'stage': unknown field"),
    ({"sigma": float("nan")}, "field 'sigma'"),
])  # fmt: skip
def test_a_bad_network_config_is_one_clear_error(config, match):
    from hoannot.annotate.keypoints import CPM

    with pytest.raises(InputError, match=match):
        CPM(config)


def test_bad_segmentation_and_mediapipe_configs():
    with pytest.raises(InputError, match="field 'train_size': W and H must be positive multiples of 32"):
        SegmentationConfig.validated({"train_size": [100, 96]})
    with pytest.raises(InputError, match="field 'rgb': unknown field"):
        SegmentationConfig.validated({"rgb": True})
    with pytest.raises(InputError, match="field 'min_detection_confidence'"):
        MediaPipeConfig.validated({"min_detection_confidence": 1.5})
    assert MediaPipeConfig.validated(None).model_dump()["crop"] == 256


def test_training_settings_are_validated_before_any_work(tmp_path):
    from hoannot.annotate.training import train_keypoints, train_segmentation

    cfg = KpTrainConfig.with_settings({"steps": 7, "stages": 2, "lr": None}, "train-kp")
    assert (cfg.steps, cfg.net.stages, cfg.lr, cfg.net.batchnorm, cfg.net.refine_passes) == (7, 2, 1e-3, True, 1)
    assert SegTrainConfig.with_settings({"rgbd": True}, "x", base=SegTrainConfig(steps=3)).steps == 3
    # no pool given: a bad setting must fail before the views are rendered
    with pytest.raises(InputError, match="train-kp: field 'stages': .* \\(given 0\\)"):
        train_keypoints(tmp_path / "kp.pt", stages=0)
    with pytest.raises(InputError, match="train-seg: unknown setting 'stages'"):
        train_segmentation(tmp_path / "seg.pt", stages=2)
    with pytest.raises(InputError, match="train-seg: field 'batch_size'"):
        train_segmentation(tmp_path / "seg.pt", SegTrainConfig(), batch_size=0)
    with pytest.raises(InputError, match="expected a SegTrainConfig"):
        train_segmentation(tmp_path / "seg.pt", KpTrainConfig())
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("cmd, fields", [
    ("train-seg", [(SegTrainConfig, "samples"), (SegTrainConfig, "steps"), (SegTrainConfig, "batch_size"),
                   (SegTrainConfig, "lr"), (SegmentationConfig, "rgbd"), (SegTrainConfig, "max_minutes"),
                   (SegTrainConfig, "device"), (SegTrainConfig, "seed")]),
    ("train-kp", [(KpTrainConfig, "samples"), (KpTrainConfig, "steps"), (KpTrainConfig, "batch_size"),
                  (KpTrainConfig, "lr"), (KeypointConfig, "stages"), (KpTrainConfig, "max_minutes")]),
    ("synth", [(SynthConfig, f) for f in ("cameras", "frames", "width", "height", "focal", "scene", "lighting",
                                          "noise", "seed")]),
])  # fmt: skip
def test_train_perception_help_is_the_config_description(cmd, fields):
    from hoannot.cli import app

    out = CliRunner().invoke(app, [cmd, "--help"], terminal_width=100).output
    text = " ".join(out.replace("│", " ").split())
    for model, field in fields:
        assert " ".join(model.model_fields[field].description.split()) in text, field


def test_train_perception_bad_option_is_one_line_naming_it(tmp_path):
    from hoannot.cli import app

    r = CliRunner().invoke(app, ["train-kp", str(tmp_path / "kp.pt"), "--stages", "0"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == ["error: train-kp: field 'stages': Input should be greater than or "
                                             "equal to 1 (from --stages 0)"]  # fmt: skip
    r = CliRunner().invoke(app, ["train-seg", str(tmp_path / "seg.pt"), "--samples", "0"])
    assert r.exit_code == 2 and "(from --samples 0)" in r.output
    assert not list(tmp_path.iterdir())


def test_synth_options_are_the_config_fields(tmp_path):
    """``hoannot synth``: an option not given takes SynthConfig's default (the CLI holds no
    default of its own); a bad value is one line naming the option, and nothing is written."""
    from hoannot.cli import app
    from hoannot.datasets.sequence import open_sequence

    r = CliRunner().invoke(app, ["synth", str(tmp_path / "bad"), "--scene", "moon"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == ["error: synth: field 'scene': Input should be 'wall', 'slanted' or "
                                             "'table' (from --scene 'moon')"]  # fmt: skip
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "bad"), "--frames", "0"])
    assert r.exit_code == 2 and "(from --frames 0)" in r.output
    assert not list(tmp_path.iterdir())
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "seq"), "--cameras", "1", "--width", "40", "--height", "30",
                                 "--focal", "40"])  # fmt: skip
    assert r.exit_code == 0, r.output
    seq = open_sequence(tmp_path / "seq")
    assert len(seq.frames) == SynthConfig.model_fields["frames"].default
    assert (seq.cameras[0].width, seq.cameras[0].height) == (40, 30)


@pytest.mark.parametrize("kind, model", [("segmentation", SegmentationConfig), ("keypoints", KeypointConfig)])
def test_shipped_weights_load_and_their_config_round_trips(kind, model, monkeypatch, tmp_path):
    import json
    import warnings

    from hoannot.annotate import weights as W
    from hoannot.annotate.keypoints import load_keypoints
    from hoannot.annotate.segmentation import load_segmentation

    monkeypatch.setenv("HOANNOT_CACHE", str(tmp_path))  # the bundled files, not a user's
    data = W.load_weights(kind)
    assert data["path"] == W.BUNDLED / f"{kind}.pt"
    stored = data["config"]
    side = json.loads(W.sidecar(data["path"]).read_text())
    assert side["sha256"] == data["sha256"] and side["config"] == stored
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no legacy key is dropped from the shipped files
        net = (load_segmentation if kind == "segmentation" else load_keypoints)()
    # what the network uses: the stored dict, plus the defaults of options it predates
    defaults = model().model_dump()
    assert net.config == {**defaults, **stored} and list(net.config) == list(defaults)
    assert {k: net.config[k] for k in stored} == stored
    assert model.from_stored(net.config, "x").model_dump() == net.config  # round trip
    assert net.sha256 == data["sha256"] == W.sha256_file(data["path"])


def test_weights_with_unknown_or_bad_config_keys(tmp_path):
    from hoannot.annotate import weights as W
    from hoannot.annotate.keypoints import CPM, load_keypoints

    net = CPM({"stages": 1, "width": 8, "crop": 32})
    W.save_weights(tmp_path / "new.pt", "keypoints", {**net.config, "from_the_future": 1}, net.state_dict())
    with pytest.warns(UserWarning, match="new.pt: ignoring config keys this hoannot does not know: from_the_future"):
        loaded = load_keypoints(tmp_path / "new.pt")
    assert loaded.config == net.config
    W.save_weights(tmp_path / "bad.pt", "keypoints", {**net.config, "stages": 0}, net.state_dict())
    with pytest.raises(InputError, match="bad.pt: field 'stages'"):
        load_keypoints(tmp_path / "bad.pt")


def _tiny_pool(n: int = 4) -> dict:
    """``n`` 48x64 views with a hand blob (label 1) and joints on it; no rendering."""
    import numpy as np

    rng = np.random.default_rng(0)
    label = np.zeros((n, 48, 64), np.uint8)
    label[:, 12:36, 20:44] = 1
    uv = np.stack([rng.uniform([22, 14], [42, 34], (21, 2)) for _ in range(n)]).astype(np.float32)
    return {"rgb": rng.integers(0, 255, (n, 48, 64, 3), dtype=np.uint8), "label": label,
            "depth": np.full((n, 48, 64), 0.5, np.float32), "uv": uv, "visible": np.ones((n, 21), bool),
            "object": np.array(["primitive:box:0.05,0.05,0.05"] * n)}  # fmt: skip


def test_train_keypoints_is_seeded_resumable_and_saves_its_net_config(tmp_path):
    import json

    import torch

    from hoannot.annotate.training import train_keypoints

    cfg = KpTrainConfig.with_settings({"steps": 1, "batch_size": 2, "stages": 1, "width": 8, "crop": 32}, "t")
    states = []
    for name in ("a.pt", "b.pt"):
        torch.manual_seed(len(name) * 17 + len(states))  # the caller's RNG state must not matter
        r = train_keypoints(tmp_path / name, cfg, pool=_tiny_pool(), progress=False)
        assert r["steps"] == 1 and len(r["losses"]) == 1
        states.append(torch.load(tmp_path / name, weights_only=True)["state_dict"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])  # same seed, same weights
    side = json.loads((tmp_path / "a.pt.json").read_text())
    assert side["config"] == cfg.net.model_dump() and side["meta"]["joint_box_prob"] == cfg.joint_box_prob
    r = train_keypoints(tmp_path / "a.pt", cfg, pool=_tiny_pool(), progress=False, steps=2)  # resumes the .ckpt
    assert r["steps"] == 2 and len(r["losses"]) == 2 and r["losses"][0] == side["meta"]["first_loss"]
