"""Automatic initialisation from 2D joints, masks and depth (hoannot.annotate.init2d, object_pose).

Captures are rendered (open3d ray casting) with the WebXR hand -- not the open hand model
that is initialised -- holding a real YCB mesh; the 2D joints are the capture's ground
truth plus noise (2 px on visible joints, 5 px on hidden ones, confidences 0.9 / 0.3).
Errors are measured against ``gt/poses.npz`` with hoannot.evaluation.metrics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoannot.annotate import init2d
from hoannot.annotate.object_pose import DepthView, track_object
from hoannot.io import InputError, read_image, write_npz
from hoannot.datasets.keypoints2d import read_views
from hoannot.datasets.poses import GroundTruth
from hoannot.datasets.sequence import open_sequence, write_sequence_header
from hoannot.evaluation.metrics import add, mpjpe_mm
from hoannot.models.hand import HandModel
from hoannot.pipeline import synth_sequence
from hoannot.datasets.loaders import load_sequence_object

from conftest import WEBXR_RIGHT, YCB


def _load_keypoints(directory, cams, frames):
    """The 2D joints of ``directory/<cam>.npz`` as initialisation reads them (hidden joints 0.2)."""
    return read_views([directory / f"{c}.npz" for c in cams], cams, frames, init2d.HIDDEN_CONF)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: threads only contend
    yield
    torch.set_num_threads(n)


def _noisy_keypoints(seq, out, seed=0, px=2.0):
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for cam in seq.camera_names:
        with np.load(seq.root / "gt" / "keypoints2d" / f"{cam}.npz") as z:
            vis, uv, frames = z["visible"], z["uv"], z["frames"]
        uv = uv + rng.normal(size=uv.shape) * np.where(vis, px, 2.5 * px)[..., None]
        write_npz(out / f"{cam}.npz", frames=frames, uv=uv, conf=np.where(vis, 0.9, 0.3))
    return out


def _joints(model, go, pose, betas, transl):
    with torch.no_grad():
        t = lambda x: torch.as_tensor(np.asarray(x, np.float32))  # noqa: E731
        return model(t(go), t(pose), t(betas), t(transl)).joints.numpy()


@pytest.fixture(scope="module")
def webxr_mustard(tmp_path_factory):
    if not (YCB.is_dir() and WEBXR_RIGHT.is_file()):
        pytest.skip("../shared data not available")
    root = tmp_path_factory.mktemp("i2d") / "seq"
    # seed 4: the cameras see 60% / 12% of the joints; the mustard bottle is textured and
    # has no exact symmetry (its front and back differ by colour more than by shape)
    seq = synth_sequence(root, str(YCB / "006_mustard_bottle"), str(WEBXR_RIGHT), cameras=2, frames=2, seed=4,
                         width=160, height=120, focal=150.0)  # fmt: skip
    return seq


@pytest.fixture(scope="module")
def model():
    return HandModel(None)


@pytest.fixture(scope="module")
def mustard(webxr_mustard):
    return load_sequence_object(webxr_mustard)


def test_triangulate_recovers_points_exactly():
    from hoannot.camera import Camera, look_at

    K = np.array([[150.0, 0, 80], [0, 150, 60], [0, 0, 1]])
    cams = [Camera(f"c{i}", K, 160, 120, look_at(np.array(e, float), np.zeros(3))) for i, e in
            enumerate([(0.5, 0, 0.2), (0, 0.5, 0.3), (-0.4, -0.3, 0.2)])]  # fmt: skip
    X = np.random.default_rng(0).normal(0, 0.05, (2, 21, 3))
    uv = np.stack([c.project(X) for c in cams], 1)  # (F, C, 21, 2)
    conf = np.ones(uv.shape[:3])
    conf[:, 2] = 0.1  # a low-confidence view still agrees
    pts, ok = init2d.triangulate(cams, uv, conf)
    np.testing.assert_allclose(pts, X, atol=1e-6)
    assert ok.all()
    conf[:, 1] = 0.0
    assert not init2d.triangulate(cams, uv, conf)[1].any()


def test_multiview_init_and_object_registration(webxr_mustard, model, mustard, tmp_path):
    seq, obj = webxr_mustard, mustard
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    kp = _noisy_keypoints(seq, tmp_path / "kp")
    poses = init2d.initialize_sequence(seq, model, obj, kp, seq.root / "gt" / "segmentation", hand_init="joints")
    assert poses.source.startswith(init2d.SOURCE) and "multi-camera" in poses.source
    J = _joints(model, poses.global_orient, poses.hand_pose, poses.betas, poses.transl)
    err = mpjpe_mm(J, gt.hand_joints)
    # baseline: the mean (flat) hand, joints centred on the hand pixels' 3D centroid
    base = []
    for f in seq.frames:
        pts = np.concatenate([
            c.backproject(seq.read_depth(c.name, f), read_image(seq.root / "gt/segmentation" / c.name / f"{f:06d}.png") == 1)[0]
            for c in seq.cameras
        ])  # fmt: skip
        mean = _joints(model, np.zeros((1, 3)), np.zeros((1, 45)), np.zeros(10), np.zeros((1, 3)))[0]
        base.append(mean - mean.mean(0) + pts.mean(0))
    err_base = mpjpe_mm(np.stack(base), gt.hand_joints)
    assert err < 15.0, (err, err_base)  # measured 11.0 mm here (8-16 mm on other 2-camera captures)
    assert err < 0.35 * err_base, (err, err_base)  # baseline measured 70.7 mm
    # object: ADD against the ground truth (model points = the full mesh)
    Rp = Rotation.from_rotvec(poses.obj_rot).as_matrix()
    Rg = Rotation.from_rotvec(gt.obj_rot).as_matrix()
    a = add(Rp, poses.obj_transl, Rg, gt.obj_transl, obj.points)
    assert a.max() < 0.010, a  # measured 0.2 mm


def test_object_tracking_robust_to_occluded_points(webxr_mustard, mustard):
    """The right half of the object pixels relabelled as hand (a larger occluder):
    registration still lands within 10 mm ADD."""
    seq, obj = webxr_mustard, mustard
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    views = []
    for f in seq.frames:
        row = []
        for c in seq.cameras:
            lab = read_image(seq.root / "gt/segmentation" / c.name / f"{f:06d}.png").copy()
            v, u = np.nonzero(lab == 2)
            lab[v[u > np.median(u)], u[u > np.median(u)]] = 1  # right half now "hand"
            row.append(DepthView(c, seq.read_depth(c.name, f), lab, seq.read_rgb(c.name, f)))
        views.append(row)
    rot, transl, res = track_object(views, obj)
    Rg = Rotation.from_rotvec(gt.obj_rot).as_matrix()
    a = add(Rotation.from_rotvec(rot).as_matrix(), transl, Rg, gt.obj_transl, obj.points)
    assert a.max() < 0.010, a
    assert all(r.fitness > 0.8 for r in res)


def test_single_view_grasp(webxr_mustard, model):
    seq = webxr_mustard
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    uv, conf = _load_keypoints(seq.root / "gt" / "keypoints2d", seq.camera_names, seq.frames)
    ci = int(np.argmax((conf > 0.5).sum((0, 2))))  # the camera that sees the hand best
    cam = seq.cameras[ci]
    rng = np.random.default_rng(1)
    vis = conf[:, ci] > 0.5
    uv1 = uv[:, ci] + rng.normal(size=uv[:, ci].shape) * np.where(vis, 2.0, 5.0)[..., None]
    c1 = np.where(vis, 0.9, 0.3)
    seg = seq.root / "gt" / "segmentation" / cam.name
    kd = np.stack([
        init2d.keypoint_depth(seq.read_depth(cam.name, f), read_image(seg / f"{f:06d}.png"), uv1[i])
        for i, f in enumerate(seq.frames)
    ])  # fmt: skip
    h, grasp = init2d.grasp_from_2d_single_view(model, cam, uv1, c1, gt.obj_rot, gt.obj_transl, kd, seed=0)
    J = _joints(model, h.global_orient, h.hand_pose, h.betas, h.transl)
    err = mpjpe_mm(J, gt.hand_joints)
    assert err < 20.0, err  # measured 7.9 mm here; 10-26 mm on other single views
    # one grasp: the hand joints are the same in the object frame in every frame
    Rg = Rotation.from_rotvec(gt.obj_rot).as_matrix()
    J_obj = np.einsum("fji,fnj->fni", Rg, J - gt.obj_transl[:, None])
    np.testing.assert_allclose(J_obj[0], J_obj[-1], atol=1e-5)


def test_single_camera_sequence(webxr_mustard, model, mustard, tmp_path):
    """One camera (the capture's first, as a sequence of its own): the Eq. 12 path of
    initialize_sequence, the grasp following the registered object."""
    src = webxr_mustard
    root = tmp_path / "one"
    cam = src.cameras[0]
    write_sequence_header(root, src.config.model_copy(update={"cameras": [cam.name]}), [cam])
    for sub in ("rgb", "depth"):
        (root / sub).mkdir()
        (root / sub / cam.name).symlink_to(src.root / sub / cam.name)
    seq = open_sequence(root)
    gt = GroundTruth.load(src.root / "gt" / "poses.npz")
    kp = _noisy_keypoints(src, tmp_path / "kp")
    poses = init2d.initialize_sequence(seq, model, mustard, kp, src.root / "gt/segmentation", hand_init="joints")
    assert "single-camera" in poses.source
    J = _joints(model, poses.global_orient, poses.hand_pose, poses.betas, poses.transl)
    err = mpjpe_mm(J, gt.hand_joints)
    assert err < 20.0, err  # measured 10.2 mm here; 7-19 mm on 6-frame single-camera captures
    Rg = Rotation.from_rotvec(gt.obj_rot).as_matrix()
    a = add(Rotation.from_rotvec(poses.obj_rot).as_matrix(), poses.obj_transl, Rg, gt.obj_transl, mustard.points)
    assert a.max() < 0.010, a


def test_bad_input_names_the_file(webxr_mustard, model, mustard, tmp_path):
    seq, obj = open_sequence(webxr_mustard.root), mustard
    empty = tmp_path / "nokp"
    empty.mkdir()
    with pytest.raises(InputError, match=r"nokp/cam0\.npz: file not found"):
        init2d.initialize_sequence(seq, model, obj, empty, seq.root / "gt/segmentation", hand_init="joints")
    kp = _noisy_keypoints(seq, tmp_path / "kp")
    with pytest.raises(InputError, match=r"noseg/cam0/000000\.png: file not found"):
        init2d.initialize_sequence(seq, model, obj, kp, tmp_path / "noseg")
    write_npz(kp / "cam1.npz", uv=np.zeros((2, 20, 2)), conf=np.zeros((2, 20)))
    with pytest.raises(InputError, match=r"kp/cam1\.npz: expected uv"):
        _load_keypoints(kp, seq.camera_names, seq.frames)


def test_views_without_a_detection_carry_no_weight(tmp_path):
    """A detector that finds no hand writes NaN joints: both readers (initialisation and
    fit) turn them into zero-confidence joints, so no NaN reaches an energy."""
    from types import SimpleNamespace

    from hoannot.fitting.observations import read_keypoints

    uv = np.full((2, 21, 2), 40.0)
    uv[1] = np.nan
    conf = np.full((2, 21), 0.8, np.float32)
    conf[1] = 0.0
    write_npz(tmp_path / "keypoints2d" / "cam0.npz", frames=np.array([0, 1]), uv=uv, conf=conf, confidence=conf)
    u, c = _load_keypoints(tmp_path / "keypoints2d", ["cam0"], [0, 1])
    seq = SimpleNamespace(root=tmp_path, cameras=[SimpleNamespace(name="cam0")])
    u2, c2 = read_keypoints(seq, [0, 1], "keypoints2d")
    for a, b in ((u, c), (u2, c2)):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(b[0, 0], 0.8, rtol=1e-6)
        assert (b[1, 0] == 0).all()
        np.testing.assert_allclose(a[0, 0], 40.0)


def test_no_detected_hand_anywhere_is_one_clear_line(webxr_mustard, model, mustard, tmp_path):
    seq = open_sequence(webxr_mustard.root)
    kp = tmp_path / "kp"
    for cam in seq.camera_names:
        write_npz(kp / f"{cam}.npz", frames=np.asarray(seq.frames), uv=np.full((len(seq.frames), 21, 2), np.nan),
                  conf=np.zeros((len(seq.frames), 21)))  # fmt: skip
    with pytest.raises(InputError, match=r"kp: no confident 2D joint in any view"):
        init2d.initialize_sequence(seq, model, mustard, kp, seq.root / "gt/segmentation", hand_init="joints")
    # the grasp search needs no joints, but hand pixels: masks without any are one line too
    from hoannot.io import read_image, write_image

    nohand = tmp_path / "nohand"
    for cam in seq.camera_names:
        for f in seq.frames:
            lab = read_image(seq.root / "gt/segmentation" / cam / f"{f:06d}.png")
            write_image(nohand / cam / f"{f:06d}.png", np.where(lab == 1, 0, lab).astype(np.uint8))
    with pytest.raises(InputError, match=r"nohand: no hand pixel in any view"):
        init2d.initialize_sequence(seq, model, mustard, kp, nohand)
