"""The ``hoannot`` command line: the stages chained on a tiny capture, and one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
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
        (("init", "{seq}", "--auto", "--hand-init", "bogus"), "bogus"),
        (("init", "{seq}", "--auto", "--hypotheses", "0"), "--hypotheses 0"),
        (("init", "{seq}", "--auto", "--search-joints", "-1"), "--search-joints -1"),
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


def _top_level(root, *names):
    """copytree ``ignore`` that drops these entries of ``root`` only (not gt/segmentation)."""
    return lambda d, entries: [e for e in entries if Path(d) == Path(root) and e in names]


def test_init_auto_from_segmentation_and_2d_joints(seq, tmp_path):
    """``init --auto`` needs no poses: 2D joints + masks (here the capture's own, copied from
    gt/ so that perception errors do not enter) -> Eq. 11 per frame + object registration."""
    from hoannot.datasets.poses import GroundTruth, HandObjectPoses
    from hoannot.datasets.loaders import load_hand_model
    from hoannot.datasets.sequence import open_sequence

    import shutil

    root = tmp_path / "auto"
    shutil.copytree(seq, root, ignore=_top_level(seq, "init", "fit", "labels", "eval", "segmentation"))
    r = invoke("init", root, "--auto", "--perception", "gt", "--hand-init", "joints")
    assert r.exit_code == 0, r.output
    assert "copied from ground truth" in r.output
    init = HandObjectPoses.load(root / "init" / "poses.npz")
    assert "2d" in init.source
    gt = GroundTruth.load(root / "gt" / "poses.npz")
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = load_hand_model(open_sequence(root))(t(init.global_orient), t(init.hand_pose), t(init.betas), t(init.transl))
    joints = out.joints.numpy()  # HO-3D order, like gt.hand_joints
    err_mm = np.linalg.norm(joints - gt.hand_joints, axis=-1).mean() * 1000
    add_mm = np.linalg.norm(init.obj_transl - gt.obj_transl, axis=-1).mean() * 1000
    assert err_mm < 25.0 and add_mm < 15.0, (err_mm, add_mm)


def test_init_auto_without_weights_names_the_training_command(seq, tmp_path, monkeypatch):
    import shutil

    from hoannot.annotate import weights

    monkeypatch.setenv("HOANNOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "BUNDLED", tmp_path / "no_bundled_weights")  # an install without them
    root = tmp_path / "noweights"
    shutil.copytree(seq, root, ignore=_top_level(seq, "init", "fit", "labels", "eval", "segmentation", "keypoints2d"))
    r = invoke("init", root, "--auto")
    assert r.exit_code == 2
    assert "hoannot train-seg" in r.output and len(r.output.strip().splitlines()) == 1


def test_train_and_bench_a_baseline(seq, tmp_path):
    run = tmp_path / "run"
    r = invoke("train", "sdnet", seq, "--out", run, "--epochs", 1, "--set", "crop_size=16", "--set", "widths=[4, 8]",
               "--set", "hidden=16", "--set", "batch_size=4")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("bench", run, seq)
    assert r.exit_code == 0, r.output
    res = json.loads((run / "bench" / "bench.json").read_text())
    assert res["frames"] == 6 and res["mpjpe_mm"] > 0 and "MPJPE" in r.output
    r = invoke("bench", "--estimator", "tests.estimators:bad", seq)  # no module of that name
    assert r.exit_code == 2 and "tests.estimators" in r.output, r.output
    r = invoke("train", "sdnet", seq, "--out", run, "--set", "bogus")
    assert r.exit_code == 2 and "NAME=VALUE" in r.output


def test_train_perception_then_init_with_the_models(seq, tmp_path):
    """train-seg/train-kp (tiny) write hashed weights; init --auto --perception model runs
    both models over every view and writes segmentation/ and keypoints2d/ from them. Weights
    this small give poor masks, so the registration may refuse: then with a one-line error."""
    for cmd, name in (("train-seg", "seg.pt"), ("train-kp", "kp.pt")):
        r = invoke(cmd, tmp_path / name, "--samples", 4, "--steps", 1)
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / f"{name}.json").read_text())["sha256"]
    import shutil

    root = tmp_path / "model"
    shutil.copytree(seq, root, ignore=_top_level(seq, "init", "fit", "labels", "eval", "segmentation", "keypoints2d"))
    r = invoke("init", root, "--auto", "--perception", "model", "--seg-weights", tmp_path / "seg.pt",
               "--kp-weights", tmp_path / "kp.pt", "--no-geometry", "--hand-init", "joints")  # the seed's path  # fmt: skip
    assert len(list((root / "segmentation").glob("*/*.png"))) == 2 * 3
    assert sorted(p.name for p in (root / "keypoints2d").glob("*.npz")) == ["cam0.npz", "cam1.npz"]
    last = r.output.strip().splitlines()[-1]  # after the progress bar
    assert r.exit_code == 0 or (r.exit_code == 2 and last.startswith("error:") and "segmentation" in last), r.output


def _tree(root):
    """{relative path: bytes} of every file under ``root`` (the fit lock's pid note excepted)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("how", ["disk_full", "disk_full_after_one_file", "read_only"])
def test_an_io_error_is_one_line_naming_the_path_and_changes_nothing(seq, tmp_path, monkeypatch, how):
    """A full disk (a write's fsync fails with ENOSPC: the first one, or the second one of each
    command, after a file was written) or a read-only sequence folder: init, fit, export and
    eval each end with one line naming the file (exit 2), and their earlier outputs stay as they
    were, never a mix of old and new files, with no temporary file left behind. Each command
    would write other bytes than those there (other seed, iterations, poses); only the fit's
    checkpoint of its first step is new where a file could be written."""
    import errno
    import os
    import shutil

    from hoannot import io

    if how == "read_only" and os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    root = tmp_path / "seq"
    shutil.copytree(seq, root, ignore=_top_level(seq, "init", "fit", "labels", "eval", "labels_init"))
    from hoannot.datasets.poses import HandObjectPoses

    for args in (("init", root, "--from-gt"), ("fit", root, "--iterations", 1, "--crop-size", 32), ("export", root),
                 ("eval", root)):  # fmt: skip
        assert invoke(*args).exit_code == 0

    def move_fit():  # so that a rerun of export, and of eval, would write other bytes
        poses = HandObjectPoses.load(root / "fit" / "poses.npz")
        poses.transl = poses.transl + np.float32(0.002)
        poses.save(root / "fit" / "poses.npz")

    move_fit()
    assert invoke("export", root).exit_code == 0  # eval/ is of the labels before this
    move_fit()
    before = _tree(root)
    fit = ("fit", root, "--iterations", 2, "--crop-size", 32)  # and other initial poses (--seed) than before
    synced = []
    if how.startswith("disk_full"):
        real_fsync = os.fsync

        def full(fd):
            if how == "disk_full" or synced:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            synced.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(io.os, "fsync", full)
        reason = "No space left on device"
    else:
        dirs = [p for p in [root, *root.rglob("*")] if p.is_dir()]
        for d in dirs:
            d.chmod(0o555)
        reason = "Permission denied"
    try:
        for args, path in ((("init", root, "--from-gt", "--seed", 7), root / "init"),
                           (fit, root / "fit"),  # the lock, a checkpoint or the results
                           (("export", root), root / "labels"),
                           (("eval", root), root / "eval")):  # fmt: skip
            synced.clear()
            r = invoke(*args)
            assert r.exit_code == 2, r.output
            errors = [ln for ln in r.output.splitlines() if "error" in ln.lower() or "Traceback" in ln]
            assert len(errors) == 1 and errors[0].startswith("error:"), r.output
            assert str(path) in errors[0] and errors[0].endswith(reason), r.output
    finally:
        if how == "read_only":
            for d in dirs:
                d.chmod(0o755)
    after = _tree(root)
    ckpt = str(Path("fit") / "ckpt" / "state.npz")
    if how == "disk_full_after_one_file":  # the new fit checkpointed its first step, then stopped
        assert after.pop(ckpt) != before.pop(ckpt) and int(np.load(root / ckpt)["next_step"]) == 1
    assert after == before
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_ctrl_c_in_any_command_is_one_line(seq, monkeypatch):
    """Ctrl-C outside ``fit`` (which says how to resume): one line, exit code 130."""
    import hoannot.pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(hoannot.pipeline, "run_export", interrupted)
    r = invoke("export", seq)
    assert r.exit_code == 130 and r.output.strip() == "interrupted", r.output


def test_ctrl_c_before_the_first_step_does_not_point_to_an_older_checkpoint(seq, monkeypatch):
    """A checkpoint left by an earlier fit (maybe of other settings) is not this run's: Ctrl-C
    before the first step says so instead of suggesting --resume; one this run wrote is named."""
    import hoannot.pipeline

    ckpt = seq / "fit" / "ckpt" / "state.npz"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"an older run's checkpoint")
    os.utime(ckpt, (1e9, 1e9))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(hoannot.pipeline, "run_fit", interrupted)
    r = invoke("fit", seq)
    assert r.exit_code == 130 and "no step of this run had finished yet" in r.output, r.output

    def one_step_then_interrupted(*a, **k):
        ckpt.write_bytes(b"this run's checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(hoannot.pipeline, "run_fit", one_step_then_interrupted)
    r = invoke("fit", seq)
    ckpt.unlink()
    assert r.exit_code == 130 and "--resume` continues from" in r.output, r.output
