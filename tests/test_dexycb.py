"""DexYCB in and out: a two-camera, two-frame sequence in DexYCB's layout, ingested, exported
and read back; the PCA-45 pose conversion and the joint-order maps.

The synthetic sequence follows the layout of DexYCB (Chao et al., CVPR 2021) as its toolkit
reads it (NVlabs/dex-ycb-toolkit ``dex_ycb.py``, ``sequence_loader.py``): file names, YAML keys
(``!!python/tuple`` extrinsics), label keys, shapes, dtypes and the "no annotation" values.
The MANO stand-in is the bundled open hand with a random orthonormal PCA basis and a random
mean, written as a MANO pickle (the real MANO is not redistributable).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from hoannot.datasets.conventions import HO3D_JOINT_NAMES, HO3D_TO_OPENPOSE, OPENPOSE_TO_HO3D
from hoannot.datasets.dexycb import (
    axis_angle_to_pca,
    export_dexycb,
    ingest_dexycb,
    pca_to_axis_angle,
    read_label,
)
from hoannot.datasets.ho3d import detect_layout
from hoannot.io import InputError, write_image
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.validate import validate_sequence
from hoannot.evaluation.report import run_eval
from hoannot.models.hand import OPEN_HAND_PATH, HandModel
from hoannot.models.objects import load_object

W, H = 640, 480
SUBJECT, SEQ = "20200709-subject-01", "20200709_141754"
SERIALS = ["836212060125", "840412060917"]  # the second is DexYCB's master camera
MASTER = "840412060917"
EXTR, MANO_CALIB = "20200702_151821", "20200709_140042_subject-01_right"
YCB_IDS, GRASP = [3, 5, 16], 1  # grasped: id 5 = 006_mustard_bottle
NF = 2
# dex_ycb.py _MANO_JOINTS (joint_3d order), written out here independently of hoannot
DEXYCB_JOINTS = ["wrist", "thumb_mcp", "thumb_pip", "thumb_dip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
                 "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip",
                 "ring_tip", "little_mcp", "little_pip", "little_dip", "little_tip"]  # fmt: skip


def _rigid(rng, scale=0.5) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.4 * scale / 0.5, 3)).as_matrix()
    T[:3, 3] = rng.normal(0, scale, 3)
    return T


def _fake_mano(path: Path, rng) -> tuple[np.ndarray, np.ndarray]:
    with open(OPEN_HAND_PATH, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    Q = np.linalg.qr(rng.normal(size=(45, 45)))[0]
    mean = rng.normal(0, 0.2, 45)
    data.update(hands_components=Q, hands_mean=mean, version="test-mano: open-hand geometry, random PCA basis")
    path.write_bytes(pickle.dumps(data))
    return Q, mean


def make_dexycb(root: Path, seed: int = 0) -> dict:
    """A DexYCB root with one sequence ``SUBJECT/SEQ`` of two cameras and two frames."""
    rng = np.random.default_rng(seed)
    mano_path = root.parent / "mano" / "MANO_RIGHT.pkl"
    mano_path.parent.mkdir(parents=True)
    Q, mean = _fake_mano(mano_path, rng)
    model = HandModel(mano_path)
    seq = root / SUBJECT / SEQ
    calib = root / "calibration"
    # calibration: extrinsics are camera -> DexYCB world; the master is not the identity here,
    # so hoannot's world (the master's frame) differs from DexYCB's
    E = {MASTER: _rigid(rng)}
    E[SERIALS[0]] = E[MASTER] @ _rigid(rng, 0.05)  # a second view of the same hand
    E["apriltag"] = _rigid(rng)
    K = {}
    for s in SERIALS:
        fx, fy, cx, cy = rng.uniform(600, 620), rng.uniform(600, 620), rng.uniform(310, 330), rng.uniform(235, 245)
        K[s] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
        (calib / "intrinsics").mkdir(parents=True, exist_ok=True)
        (calib / "intrinsics" / f"{s}_640x480.yml").write_text(yaml.safe_dump(
            {"color": {"fx": fx, "fy": fy, "ppx": cx, "ppy": cy}, "depth": {"fx": 380.0, "fy": 380.0, "ppx": 320.0, "ppy": 240.0}}))
    (calib / f"extrinsics_{EXTR}").mkdir()
    (calib / f"extrinsics_{EXTR}" / "extrinsics.yml").write_text(yaml.dump(  # !!python/tuple, as DexYCB's
        {"extrinsics": {k: tuple(float(x) for x in T[:3].reshape(-1)) for k, T in E.items()}, "master": MASTER}))
    assert "!!python/tuple" in (calib / f"extrinsics_{EXTR}" / "extrinsics.yml").read_text()
    betas = rng.normal(0, 0.5, 10).astype(np.float32)
    (calib / f"mano_{MANO_CALIB}").mkdir()
    (calib / f"mano_{MANO_CALIB}" / "mano.yml").write_text(yaml.safe_dump({"betas": [float(b) for b in betas]}))
    import trimesh

    (root / "models" / "006_mustard_bottle").mkdir(parents=True)
    trimesh.creation.box((0.06, 0.09, 0.19)).export(root / "models" / "006_mustard_bottle" / "textured_simple.obj")
    seq.mkdir(parents=True)
    (seq / "meta.yml").write_text(yaml.safe_dump({
        "serials": SERIALS, "num_frames": NF, "extrinsics": EXTR, "ycb_ids": YCB_IDS, "ycb_grasp_ind": GRASP,
        "mano_sides": ["right"], "mano_calib": [MANO_CALIB]}))  # fmt: skip

    # ground truth in hoannot's world (= the master camera frame)
    T_world = {s: np.linalg.inv(E[MASTER]) @ E[s] for s in SERIALS}
    go = rng.normal(0, 0.5, (NF, 3))
    hp = rng.normal(0, 0.3, (NF, 45))
    tr = np.array([[0.02, -0.03, 0.55], [0.03, -0.02, 0.6]])
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = model(t(go), t(hp), t(betas), t(tr))
        J0 = model.root_joint(t(betas)).numpy()[0].astype(np.float64)
    joints_w = out.joints.numpy().astype(np.float64)
    R_o = Rotation.from_rotvec(rng.normal(0, 1, (NF, 3))).as_matrix()
    t_o = np.array([[0.05, 0.0, 0.6], [0.06, 0.01, 0.62]])
    to_openpose = [HO3D_JOINT_NAMES.index(_ho3d_name(n)) for n in DEXYCB_JOINTS]
    labels = {}
    for s in SERIALS:
        T_cw = np.linalg.inv(T_world[s])
        for f in range(NF):
            rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            write_image(seq / s / f"color_{f:06d}.jpg", rgb)
            depth = rng.integers(300, 1500, (H, W)).astype(np.uint16)
            depth[:10, :20] = 0
            write_image(seq / s / f"aligned_depth_to_color_{f:06d}.png", depth)
            j_c = joints_w[f] @ T_cw[:3, :3].T + T_cw[:3, 3]
            uv = j_c @ K[s].T
            uv = uv[:, :2] / uv[:, 2:]
            # pose_m in this camera: the hand moved rigidly by T_cw, rotating about the wrist J0
            go_c = Rotation.from_matrix(T_cw[:3, :3] @ Rotation.from_rotvec(go[f]).as_matrix()).as_rotvec()
            tr_c = T_cw[:3, :3] @ (J0 + tr[f]) + T_cw[:3, 3] - J0
            pose_m = np.concatenate([go_c, (hp[f] - mean) @ Q.T, tr_c])[None]  # Q orthonormal: Q^-1 = Q^T
            pose_y = np.zeros((3, 3, 4))
            pose_y[GRASP] = np.concatenate([T_cw[:3, :3] @ R_o[f], (T_cw[:3, :3] @ t_o[f] + T_cw[:3, 3])[:, None]], 1)
            pose_y[0] = _rigid(rng)[:3]  # another object on the table; object 2 has no pose (zeros)
            seg = np.zeros((H, W), np.uint8)
            seg[100:200, 100:300] = 5
            seg[300:350, 50:90] = 3
            seg[150:260, 250:400] = 255
            lab = dict(seg=seg, pose_y=pose_y.astype(np.float32), pose_m=pose_m.astype(np.float32),
                       joint_3d=j_c[to_openpose][None].astype(np.float32), joint_2d=uv[to_openpose][None].astype(np.float32))
            np.savez(seq / s / f"labels_{f:06d}.npz", **lab)
            labels[s, f] = lab
    return dict(root=root, seq=seq, mano=mano_path, Q=Q, mean=mean, betas=betas, K=K, T_world=T_world, go=go, hp=hp,
                tr=tr, joints_w=joints_w, R_o=R_o, t_o=t_o, labels=labels)  # fmt: skip


def _ho3d_name(dexycb_name: str) -> str:
    """DexYCB's joint names in HO-3D's vocabulary (thumb mcp/pip/dip = cmc/mcp/ip, little = pinky)."""
    thumb = {"thumb_mcp": "thumb_cmc", "thumb_pip": "thumb_mcp", "thumb_dip": "thumb_ip"}
    return thumb.get(dexycb_name, dexycb_name.replace("little", "pinky"))


@pytest.fixture(scope="module")
def dex(tmp_path_factory):
    return make_dexycb(tmp_path_factory.mktemp("dexycb") / "DexYCB")


def test_joint_order_maps_match_names_and_round_trip():
    to_openpose = [HO3D_JOINT_NAMES.index(_ho3d_name(n)) for n in DEXYCB_JOINTS]
    assert list(HO3D_TO_OPENPOSE) == to_openpose
    x = np.random.default_rng(0).normal(size=(4, 21, 3))
    np.testing.assert_array_equal(x[:, HO3D_TO_OPENPOSE][:, OPENPOSE_TO_HO3D], x)
    np.testing.assert_array_equal(x[:, OPENPOSE_TO_HO3D][:, HO3D_TO_OPENPOSE], x)


def test_pca_axis_angle_round_trip():
    rng = np.random.default_rng(3)
    Q, mean = np.linalg.qr(rng.normal(size=(45, 45)))[0], rng.normal(0, 0.2, 45)
    c = rng.normal(0, 1, (5, 45))
    aa = pca_to_axis_angle(c, Q, mean)
    np.testing.assert_allclose(aa, mean + c @ Q, atol=1e-12)  # manopth: mean + coeffs @ components
    np.testing.assert_allclose(axis_angle_to_pca(aa, Q, mean), c, atol=1e-10)
    A = rng.normal(size=(45, 45))  # not orthonormal: still an exact inverse
    np.testing.assert_allclose(axis_angle_to_pca(pca_to_axis_angle(c, A, mean), A, mean), c, atol=1e-8)
    with pytest.raises(InputError, match="hands_components"):
        pca_to_axis_angle(c, Q[:10], mean)


def _check_ground_truth(gt: GroundTruth, dex: dict) -> None:
    assert gt.frames.tolist() == list(range(NF))
    np.testing.assert_allclose(gt.hand_joints, dex["joints_w"], atol=1e-5)
    pts = np.random.default_rng(1).normal(0, 0.05, (20, 3))
    for f in range(NF):  # the grasped object's model points land where they were written
        want = pts @ dex["R_o"][f].T + dex["t_o"][f]
        got = pts @ Rotation.from_rotvec(gt.obj_rot[f]).as_matrix().T + gt.obj_transl[f]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_ingest_without_mano(dex, tmp_path):
    assert detect_layout(dex["seq"]) == "dexycb"
    seq, summary = ingest_dexycb(dex["seq"], tmp_path / "seq")
    assert "NOT converted" in summary and "--mano-model-path" in summary
    assert seq.camera_names == SERIALS and seq.frames == [0, 1] and seq.config.rgb_ext == "jpg"
    assert seq.config.object.id == "006_mustard_bottle"
    assert Path(seq.config.object.mesh) == (dex["root"] / "models" / "006_mustard_bottle" / "textured_simple.obj").resolve()
    for cam in seq.cameras:
        np.testing.assert_allclose(cam.K, dex["K"][cam.name])
        np.testing.assert_allclose(cam.T_world_cam, dex["T_world"][cam.name], atol=1e-9)
        assert (cam.width, cam.height, cam.depth_scale) == (W, H, 0.001)
    np.testing.assert_allclose(seq.camera(MASTER).T_world_cam, np.eye(4), atol=1e-9)
    src = dex["seq"] / SERIALS[0]
    assert seq.rgb_path(SERIALS[0], 1).read_bytes() == (src / "color_000001.jpg").read_bytes()
    raw = np.asarray(__import__("imageio.v3").v3.imread(src / "aligned_depth_to_color_000001.png"))
    np.testing.assert_allclose(seq.read_depth(SERIALS[0], 1), raw * 0.001, rtol=1e-6)
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    _check_ground_truth(gt, dex)
    assert gt.hand_params is None and gt.hand_vertices.shape == (NF, 0, 3)
    with np.load(seq.root / "gt" / "dexycb_mano.npz") as z:
        assert not bool(z["converted"]) and z["valid"].all() and z["pose_m_serial"].tolist() == [MASTER] * NF
    seg = seq.root / "gt" / "segmentation" / SERIALS[0] / "000000.png"
    lab = __import__("imageio.v3").v3.imread(seg)
    assert lab[120, 120] == 2 and lab[200, 300] == 1 and lab[320, 60] == 0 and lab[0, 0] == 0
    with np.load(seq.root / "gt" / "keypoints2d" / f"{SERIALS[0]}.npz") as z:
        np.testing.assert_allclose(z["uv"], [seq.cameras[0].project(j) for j in dex["joints_w"]], atol=1e-3)
        assert z["visible"].all()
    assert validate_sequence(seq.root).cameras == SERIALS
    # eval against joints-only ground truth (no mesh): hand and object metrics, no F-scores
    pred = tmp_path / "pred.npz"
    np.savez(pred, frames=gt.frames, hand_joints=gt.hand_joints + [0.003, 0, 0], hand_faces=np.zeros((1, 3), int),
             hand_vertices=np.zeros((NF, 50, 3)), obj_rot=gt.obj_rot, obj_transl=gt.obj_transl, obj_points=np.eye(3))
    m = run_eval(pred, seq.root)
    assert m["frames"] == NF and abs(m["mpjpe_mm"] - 3.0) < 1e-3 and m["add_mm"] < 1e-3 and m["f5"] is None


def test_ingest_with_mano_then_export_reads_back(dex, tmp_path):
    seq, summary = ingest_dexycb(dex["seq"], tmp_path / "seq", mano_model_path=dex["mano"])
    assert "converted" in summary and "NOT" not in summary
    gt = GroundTruth.load(seq.root / "gt" / "poses.npz")
    _check_ground_truth(gt, dex)
    p = gt.hand_params
    np.testing.assert_allclose(p.hand_pose, dex["hp"], atol=1e-5)
    np.testing.assert_allclose(p.transl, dex["tr"], atol=1e-5)
    np.testing.assert_allclose(p.betas, dex["betas"], atol=1e-7)
    np.testing.assert_allclose(Rotation.from_rotvec(p.global_orient).as_matrix(),
                               Rotation.from_rotvec(dex["go"]).as_matrix(), atol=1e-5)  # fmt: skip
    model = HandModel(dex["mano"])
    V = model.mano.v_template.shape[0]  # the stand-in's vertex count (778 for MANO)
    assert gt.hand_vertices.shape == (NF, V, 3) and gt.hand_faces.shape[1] == 3

    # DexYCB out: the ground truth as a "fit", exported and read back by the same reader
    poses = HandObjectPoses(frames=gt.frames, global_orient=p.global_orient, hand_pose=p.hand_pose, betas=p.betas,
                            transl=p.transl, obj_rot=gt.obj_rot, obj_transl=gt.obj_transl, source="test")  # fmt: skip
    obj = load_object(str(dex["root"] / "models" / "006_mustard_bottle"), name="006_mustard_bottle")
    out = export_dexycb(seq, poses, model, obj, tmp_path / "export")
    assert out == tmp_path / "export" / "hoannot-subject" / seq.config.name
    for s in SERIALS:
        for f in range(NF):
            lab = read_label(out / s / f"labels_{f:06d}.npz", num_obj=1, size=(H, W))
            ref = dex["labels"][s, f]
            with np.load(out / s / f"labels_{f:06d}.npz") as z:  # DexYCB's keys and dtypes
                assert sorted(z.files) == ["joint_2d", "joint_3d", "pose_m", "pose_y", "seg"]
                assert z["seg"].dtype == np.uint8 and z["pose_m"].dtype == np.float32
            np.testing.assert_allclose(lab.joint_3d, ref["joint_3d"], atol=1e-5)
            np.testing.assert_allclose(lab.joint_2d, ref["joint_2d"], atol=1e-3)
            np.testing.assert_allclose(lab.pose_m, ref["pose_m"], atol=1e-4)
            np.testing.assert_allclose(lab.pose_y[0], ref["pose_y"][GRASP], atol=1e-5)
            assert set(np.unique(lab.seg)) <= {0, 5, 255} and (lab.seg == 255).any() and (lab.seg == 5).any()
    back, summary = ingest_dexycb(out, tmp_path / "back", mano_model_path=dex["mano"])
    assert back.config.object.id == "006_mustard_bottle" and back.camera_names == SERIALS
    gt2 = GroundTruth.load(back.root / "gt" / "poses.npz")
    _check_ground_truth(gt2, dex)
    np.testing.assert_allclose(gt2.hand_params.hand_pose, dex["hp"], atol=1e-4)
    np.testing.assert_allclose(gt2.hand_params.transl, dex["tr"], atol=1e-5)
    for c1, c2 in zip(seq.cameras, back.cameras):
        np.testing.assert_allclose(c2.T_world_cam, c1.T_world_cam, atol=1e-6)
        np.testing.assert_allclose(c2.K, c1.K, atol=1e-6)


def test_cli_ingest_init_export_eval(dex, tmp_path):
    from hoannot.cli import app

    runner = CliRunner()
    new = tmp_path / "new"
    r = runner.invoke(app, ["init", str(dex["seq"]), "--out", str(new), "--from-gt", "--mano-model-path", str(dex["mano"])],
                      catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "ingested DexYCB" in r.output and (new / "init" / "poses.npz").is_file()
    r = runner.invoke(app, ["export", str(new), "--stage", "init", "--format", "dexycb", "--mano-model-path",
                            str(dex["mano"])], catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(list((new / "labels_init" / "dexycb").rglob("labels_*.npz"))) == 2 * NF
    assert not (new / "labels_init" / "ho3d").exists()
    r = runner.invoke(app, ["eval", str(new / "labels_init" / "labels.npz"), str(new), "--out", str(tmp_path / "ev")],
                      catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    import json

    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["frames"] == NF and 0 < m["mpjpe_mm"] < 100 and np.isfinite(m["add_mm"])
    r = runner.invoke(app, ["init", str(dex["seq"])])
    assert r.exit_code == 2 and "DexYCB layout: pass --out" in r.output
    # the open hand has no MANO PCA basis: pose_m is DexYCB's "no MANO annotation", joints valid
    r = runner.invoke(app, ["export", str(new), "--stage", "init", "--format", "dexycb"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lab = read_label(new / "labels_init" / "dexycb" / "hoannot-subject" / SEQ / MASTER / "labels_000001.npz", 1, (H, W))
    assert not lab.has_mano and lab.has_hand and np.isfinite(lab.joint_3d).all()
    meta = yaml.safe_load((new / "labels_init" / "dexycb" / "hoannot-subject" / SEQ / "meta.yml").read_text())
    assert meta["hoannot"]["hand_model"] == "open" and "all zero" in meta["hoannot"]["pose_m"]
    r = runner.invoke(app, ["export", str(new), "--format", "bogus"])
    assert r.exit_code == 2 and "--format 'bogus'" in r.output


def test_bad_input_names_the_file(dex, tmp_path):
    src = tmp_path / "DexYCB"
    shutil.copytree(dex["root"], src)
    seq = src / SUBJECT / SEQ
    with pytest.raises(InputError, match="DexYCB dataset root"):
        detect_layout(src)
    with pytest.raises(InputError, match="DexYCB subject folder"):
        detect_layout(src / SUBJECT)
    # a frame without hand annotation in every camera: NaN ground truth, not scored
    for s in SERIALS:
        lab = dict(np.load(seq / s / "labels_000001.npz"))
        lab.update(pose_m=np.zeros((1, 51), np.float32), joint_3d=-np.ones((1, 21, 3), np.float32),
                   joint_2d=-np.ones((1, 21, 2), np.float32))  # fmt: skip
        np.savez(seq / s / "labels_000001.npz", **lab)
    s2, _ = ingest_dexycb(seq, tmp_path / "one", mano_model_path=dex["mano"])
    gt = GroundTruth.load(s2.root / "gt" / "poses.npz")
    assert np.isfinite(gt.hand_joints[0]).all() and np.isnan(gt.hand_joints[1]).all()
    assert np.isnan(gt.hand_params.hand_pose[1]).all() and np.isfinite(gt.obj_rot).all()
    pred = tmp_path / "pred.npz"
    np.savez(pred, frames=gt.frames, hand_joints=np.nan_to_num(gt.hand_joints))
    assert run_eval(pred, s2.root)["frames"] == 1  # the frame without hand labels is not scored

    bad = seq / SERIALS[0] / "labels_000000.npz"
    lab = dict(np.load(bad))
    lab["pose_m"] = np.zeros((1, 48), np.float32)
    np.savez(bad, **lab)
    with pytest.raises(InputError, match=r"labels_000000.npz: 'pose_m' has shape \(1, 48\)"):
        ingest_dexycb(seq, tmp_path / "x")
    shutil.rmtree(seq / SERIALS[1])
    with pytest.raises(InputError, match=f"{SERIALS[1]}: serial folder listed in meta.yml not found"):
        ingest_dexycb(seq, tmp_path / "x")
    meta = yaml.safe_load((seq / "meta.yml").read_text())
    (seq / "meta.yml").write_text(yaml.safe_dump({**meta, "mano_sides": ["left"]}))
    with pytest.raises(InputError, match="meta.yml: mano_sides"):
        ingest_dexycb(seq, tmp_path / "x")
    (seq / "meta.yml").unlink()
    with pytest.raises(InputError, match="meta.yml: file not found"):
        ingest_dexycb(seq, tmp_path / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DexYCB", "one", "pred.npz"]  # nothing half-written
