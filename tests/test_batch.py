"""``hoannot run``: many sequences as Ray tasks (a local Ray with 2 CPUs), a worker killed
mid-fit resumes to the labels of an undisturbed run, a broken sequence fails alone, and
without Ray the sequences run one after another."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from hoannot.batch import KILL_FIT_ENV, RunOptions, parse_stages, run_many, run_sequence
from hoannot.cli import app
from hoannot.io import InputError
from hoannot.fitting.config import load_fit_config
from hoannot.fitting.schedule import make_plan
from hoannot.pipeline import synth_sequence

NAMES = ("a", "b", "c")
FIT = dict(iterations=2, track_iterations=1, batch_size=2, overlap=1, crop_size=32, num_points=100)
OPTS = RunOptions(init_from_gt=True, fit=load_fit_config(None, **FIT))
STEPS = len(make_plan(OPTS.fit, 3, 2))  # 3 tracking steps + 2 batches
KILLED = "b"


def quiet() -> Console:
    return Console(file=io.StringIO(), width=160)


def labels(root) -> dict:
    with np.load(root / "labels" / "labels.npz") as z:
        return {k: z[k] for k in z.files}


def copies(base, dst, names=NAMES) -> list:
    out = []
    for n in names:
        shutil.copytree(base / n, dst / n)
        out.append(dst / n)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Three tiny initialised captures (2 cameras x 3 frames, 96x72)."""
    root = tmp_path_factory.mktemp("batch_base")
    for i, n in enumerate(NAMES):
        synth_sequence(root / n, "primitive:box:0.05,0.07,0.1", "open", cameras=2, frames=3, seed=i, width=96,
                       height=72, focal=90.0)  # fmt: skip
        row = run_sequence(root / n, ["init"], OPTS)
        assert row["status"] == "done", row
    return root


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    """The undisturbed run: fit + export of copies, with Ray not importable (the fallback)."""
    root = tmp_path_factory.mktemp("batch_ref")
    seqs = copies(base, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "ray", None)  # import ray -> ImportError
        rows = run_many(seqs, ["fit", "export"], OPTS, summary=root / "summary.json", console=quiet())
    return seqs, rows, json.loads((root / "summary.json").read_text())


def test_without_ray_the_sequences_run_one_after_another(reference, monkeypatch):
    seqs, rows, summary = reference
    assert summary["mode"] == "sequential" and summary["stages"] == ["fit", "export"]
    assert [r["status"] for r in rows] == ["done"] * 3, rows
    for seq, r in zip(seqs, rows):
        assert set(r["seconds"]) == {"fit", "export"} and r["skipped"] == []
        assert r["frames"] == 3 and 0 < r["iou_hand"] <= 1 and 0 < r["iou_object"] <= 1
        flags = json.loads((seq / "fit" / "quality.json").read_text())["flag"]
        assert r["frames_flagged"] == [f for f, b in zip(range(3), flags) if b]
        assert (seq / "labels" / "labels.npz").is_file()
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match="Ray is not installed"):
        run_many(seqs, ["fit"], OPTS, ray_address="ray://head:10001", summary=None, console=quiet())


def test_a_rerun_skips_the_complete_stages(reference, monkeypatch):
    seqs, _, _ = reference
    before = labels(seqs[0])
    monkeypatch.setitem(sys.modules, "ray", None)
    rows = run_many(seqs[:1], ["fit", "export"], OPTS, summary=None, console=quiet())
    assert rows[0]["status"] == "done" and rows[0]["skipped"] == ["fit", "export"] and rows[0]["seconds"] == {}
    after = labels(seqs[0])
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_other_fit_settings_fail_that_sequence_instead_of_replacing_its_fit(reference):
    seqs, _, _ = reference
    other = RunOptions(init_from_gt=True, fit=load_fit_config(None, **{**FIT, "iterations": 4}))
    row = run_sequence(seqs[0], ["fit"], other)
    assert row["status"] == "failed" and row["failed_stage"] == "fit"
    assert "other settings" in row["error"] and "\n" not in row["error"]


@pytest.fixture(scope="module")
def ray():
    """The ray module; skips (before the captures are built) without it."""
    return pytest.importorskip("ray")


def test_ray_tasks_survive_a_killed_worker_and_a_broken_sequence(ray, base, reference, tmp_path, monkeypatch):
    """Local Ray, 2 CPUs: sequence b's worker is SIGKILLed after its first fit checkpoint;
    Ray retries the task, the retry resumes from that checkpoint, and all three end with the
    undisturbed run's labels, bit for bit. A fourth sequence with a broken sequence.yaml is
    reported failed (one line) while the others finish."""
    seqs = copies(base, tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(base / "a", broken)
    (broken / "sequence.yaml").write_text("name: [unclosed\n")
    marker = tmp_path / "killed_once"
    monkeypatch.setenv(KILL_FIT_ENV, f"{KILLED}:{marker}")  # before ray.init: the workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = run_many([*seqs, broken], ["fit", "export"], OPTS, summary=tmp_path / "summary.json", console=quiet())
    finally:
        ray.shutdown()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "ray"
    by = {r["name"]: r for r in rows}
    assert by["broken"]["status"] == "failed" and "sequence.yaml" in by["broken"]["error"], by["broken"]
    assert [by[n]["status"] for n in NAMES] == ["done"] * 3, rows
    killed_at = int(marker.read_text())  # the kill happened, mid-fit
    assert 1 <= killed_at < STEPS
    assert by[KILLED]["resumed_from_step"] == killed_at  # the retry continued from the checkpoint
    assert by["a"]["resumed_from_step"] is None and by["c"]["resumed_from_step"] is None
    ref_seqs, _, _ = reference
    for seq, ref in zip(seqs, ref_seqs):
        got, want = labels(seq), labels(ref)
        assert got.keys() == want.keys()
        for k in want:
            assert np.array_equal(got[k], want[k]), f"{seq.name}: {k}"


def test_parse_stages_keeps_chain_order_and_refuses_unknown_names():
    assert parse_stages("export, fit") == ["fit", "export"]
    with pytest.raises(InputError, match="expected a comma-separated subset"):
        parse_stages("fit,polish")


def test_cli_run_exit_codes_and_summary(reference, tmp_path, monkeypatch):
    """Exit 0 when every sequence is done, 1 when one failed, 2 (one line) for bad options."""
    seqs, _, _ = reference
    monkeypatch.setitem(sys.modules, "ray", None)
    runner = CliRunner()
    fit_yaml = tmp_path / "fit.yaml"
    fit_yaml.write_text("".join(f"{k}: {v}\n" for k, v in FIT.items()))
    out = tmp_path / "s.json"
    args = ["run", str(seqs[0]), "--stages", "fit,export", "--config", str(fit_yaml), "--summary", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "one after another" in r.output and json.loads(out.read_text())["sequences"][0]["status"] == "done"
    r = runner.invoke(app, args + [str(tmp_path / "missing")])
    assert r.exit_code == 1, r.output
    rows = json.loads(out.read_text())["sequences"]
    assert [x["status"] for x in rows] == ["done", "failed"] and "not found" in rows[1]["error"]
    r = runner.invoke(app, ["run", str(seqs[0]), "--stages", "fit,polish"])
    assert r.exit_code == 2 and "error:" in r.output


def test_a_fit_of_older_initial_poses_fails_instead_of_being_kept(reference, tmp_path):
    seqs, _, _ = reference
    seq = tmp_path / "a"
    shutil.copytree(seqs[0], seq)
    init = seq / "init" / "poses.npz"
    init.touch()
    os.utime(init, (init.stat().st_atime, (seq / "fit" / "poses.npz").stat().st_mtime + 10))
    row = run_sequence(seq, ["init", "fit", "export"], OPTS)
    assert row["skipped"] == ["init"] and row["status"] == "failed" and "older initial poses" in row["error"]
