"""``hoannot report SEQ --rerun FILE.rrd``: the recording of a tiny fitted capture is read back
with rerun's own reader and holds the cameras, images, a world-frame depth point cloud and the
fitted meshes of every frame."""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from hoannot.cli import app
from hoannot.io import read_image
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.sequence import open_sequence
from hoannot.fitting.config import FitConfig
from hoannot.models.hand import HandModel
from hoannot.models.objects import load_object
from hoannot.pipeline import synth_sequence
from hoannot.datasets.loaders import load_sequence_object

runner = CliRunner()
OBJECT = "primitive:box:0.05,0.07,0.1"
CAMS = ("cam0", "cam1")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(sequence folder, {entity: {component: {frame or None (static): value}}}) of the .rrd."""
    pytest.importorskip("rerun")
    from rerun.chunk import RrdReader

    root = tmp_path_factory.mktemp("rerun") / "seq"
    synth_sequence(root, OBJECT, "open", cameras=2, frames=3, seed=4, width=96, height=72, focal=90.0)
    assert invoke("init", root, "--from-gt", "--noise-deg", 2, "--noise-mm", 3).exit_code == 0
    r = invoke("fit", root, "--iterations", 2, "--crop-size", 32, "--batch-size", 3)
    assert r.exit_code == 0, r.output
    rrd = root.parent / "out" / "capture.rrd"  # its folder does not exist yet
    r = invoke("report", root, "--rerun", rrd)
    assert r.exit_code == 0, r.output
    assert (root / "report" / "index.html").is_file() and rrd.is_file()
    assert [p.name for p in rrd.parent.iterdir()] == ["capture.rrd"]  # no temporary file left

    data: dict = defaultdict(lambda: defaultdict(dict))
    for chunk in RrdReader(rrd).stream().to_chunks():
        rb = chunk.to_record_batch()
        frames = rb.column("frame").to_pylist() if "frame" in rb.schema.names else [None] * rb.num_rows
        for name in rb.schema.names:
            if ":" in name:  # Archetype:component (not the row id nor the index)
                for f, v in zip(frames, rb.column(name).to_pylist()):
                    data[chunk.entity_path][name][f] = v
    return root, data


def test_recording_has_every_camera_and_mesh_on_a_frame_timeline(recording):
    root, data = recording
    seq = open_sequence(root)
    frames = set(seq.frames)
    for cam in CAMS:
        c = seq.camera(cam)
        base = f"/world/cameras/{cam}"
        T = c.T_world_cam
        np.testing.assert_allclose(data[base]["Transform3D:translation"][None][0], T[:3, 3], atol=1e-6)
        # TransformMat3x3 is stored column-major
        np.testing.assert_allclose(np.reshape(data[base]["Transform3D:mat3x3"][None][0], (3, 3)).T, T[:3, :3], atol=1e-6)
        pin = data[f"{base}/image"]
        np.testing.assert_allclose(np.reshape(pin["Pinhole:image_from_camera"][None][0], (3, 3)).T, c.K, atol=1e-4)
        assert pin["Pinhole:resolution"][None][0] == [c.width, c.height]
        for ent, comp in ((f"{base}/image/rgb", "EncodedImage:blob"), (f"{base}/image/depth", "EncodedDepthImage:blob"),
                          (f"/world/points/{cam}", "Points3D:positions")):  # fmt: skip
            assert set(data[ent][comp]) == frames, ent
        f0 = seq.frames[0]
        assert bytes(data[f"{base}/image/depth"]["EncodedDepthImage:blob"][f0][0]) == seq.depth_path(cam, f0).read_bytes()
        assert data[f"{base}/image/depth"]["EncodedDepthImage:meter"][f0][0] == pytest.approx(1 / c.depth_scale)
    for ent in ("/world/hand", "/world/object"):
        assert set(data[ent]["Mesh3D:vertex_positions"]) == frames
        assert None in data[ent]["Mesh3D:triangle_indices"]  # logged once, static
    timeline = {f for ent in data.values() for comp in ent.values() for f in comp if f is not None}
    assert timeline == frames


def test_logged_meshes_are_the_fitted_ones(recording):
    root, data = recording
    seq = open_sequence(root)
    poses = HandObjectPoses.load(root / "fit" / "poses.npz")
    model = HandModel(None)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        hand = model(t(poses.global_orient), t(poses.hand_pose), t(poses.betas), t(poses.transl))
    obj = load_sequence_object(seq, None, FitConfig().object_max_faces)
    ov = obj.verts.numpy().astype(np.float64)
    np.testing.assert_array_equal(np.asarray(data["/world/hand"]["Mesh3D:triangle_indices"][None]), model.faces.numpy())
    np.testing.assert_array_equal(np.asarray(data["/world/object"]["Mesh3D:triangle_indices"][None]), obj.faces.numpy())
    for i, f in enumerate(poses.frames):
        logged = np.asarray(data["/world/hand"]["Mesh3D:vertex_positions"][int(f)])
        np.testing.assert_allclose(logged, hand.vertices[i].numpy(), atol=1e-5)
        expect = ov @ Rotation.from_rotvec(poses.obj_rot[i]).as_matrix().T + poses.obj_transl[i]
        np.testing.assert_allclose(np.asarray(data["/world/object"]["Mesh3D:vertex_positions"][int(f)]), expect, atol=1e-5)


def test_depth_points_are_in_the_world_on_the_true_surfaces(recording):
    root, data = recording
    seq = open_sequence(root)
    gt = GroundTruth.load(root / "gt" / "poses.npz")
    box = load_object(OBJECT)
    for i, f in enumerate(int(x) for x in gt.frames):
        R = Rotation.from_rotvec(gt.obj_rot[i]).as_matrix()
        surf = trimesh.util.concatenate([
            trimesh.Trimesh(gt.hand_vertices[i], gt.hand_faces, process=False),
            trimesh.Trimesh(box.verts.numpy() @ R.T + gt.obj_transl[i], box.faces.numpy(), process=False)])  # fmt: skip
        for cam in CAMS:
            c = seq.camera(cam)
            pts = np.asarray(data[f"/world/points/{cam}"]["Points3D:positions"][f], np.float64)
            assert 0 < len(pts) <= c.width * c.height
            uv = np.round(c.project(pts)).astype(int)  # the world points seen again by their camera
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < c.width) & (uv[:, 1] >= 0) & (uv[:, 1] < c.height)
            assert inside.mean() > 0.99
            labels = read_image(root / "gt" / "segmentation" / cam / f"{f:06d}.png")
            on = pts[inside][labels[uv[inside, 1], uv[inside, 0]] > 0]  # on the hand or the object
            assert len(on) > 50, (f, cam, len(on))
            d = trimesh.proximity.closest_point(surf, on)[1]
            assert np.median(d) < 0.005 and np.mean(d < 0.02) > 0.9, (f, cam, np.median(d), np.mean(d < 0.02))


def test_without_rerun_sdk_it_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rerun", None)  # `import rerun` raises ImportError
    r = invoke("report", tmp_path / "anything", "--rerun", tmp_path / "out.rrd")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and 'pip install "hoannot[viewer]"' in lines[0], r.output
    assert not (tmp_path / "out.rrd").exists()


def test_a_recording_path_not_ending_in_rrd_is_refused(tmp_path):
    pytest.importorskip("rerun")
    r = invoke("report", tmp_path / "anything", "--rerun", tmp_path / "out.html")
    assert r.exit_code == 2 and "expected a file name ending in .rrd" in r.output, r.output
