"""The ``hoannot`` command line: the stages chained on a tiny capture, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hoannot.cli import app
from hoannot.pipeline import synth_sequence

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "seq"
    synth_sequence(root, "primitive:box:0.05,0.07,0.1", "open", cameras=2, frames=3, seed=4, width=96, height=72, focal=90.0)
    return root


def test_init_fit_export_eval(seq):
    r = invoke("init", seq, "--from-gt")
    assert r.exit_code == 0, r.output
    assert "ground truth + noise" in r.output and (seq / "init" / "poses.npz").is_file()
    r = invoke("fit", seq, "--iterations", 3, "--crop-size", 32, "--weight", "mask=10")
    assert r.exit_code == 0, r.output
    info = json.loads((seq / "fit" / "info.json").read_text())
    assert info["config"]["iterations"] == 3 and info["config"]["weights"]["mask"] == 10.0
    r = invoke("export", seq)
    assert r.exit_code == 0, r.output
    assert len(list((seq / "labels" / "ho3d").glob("*/meta/*.pkl"))) == 2 * 3
    r = invoke("eval", seq)
    assert r.exit_code == 0, r.output
    metrics = json.loads((seq / "eval" / "metrics.json").read_text())
    assert np.isfinite(metrics["mpjpe_mm"]) and np.isfinite(metrics["add_mm"])
    assert (seq / "eval" / "pck.png").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (("init", "{tmp}/nowhere"), "nowhere"),
        (("init", "{seq}"), "--from-gt"),
        (("fit", "{seq}", "--weight", "mask"), "NAME=NUMBER"),
        (("fit", "{tmp}/empty"), "empty"),
        (("export", "{seq}", "--stage", "bogus"), "bogus"),
        (("eval", "{tmp}/nowhere"), "nowhere"),
    ],
)
def test_bad_input_is_one_line_error(seq, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    r = invoke(*(a.format(tmp=tmp_path, seq=seq) for a in args))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.output
