"""Hand model: open hand pickle through smplx, HO-3D keypoints, limits, shape, frames."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import scipy.sparse
import torch
import trimesh
from scipy.spatial.transform import Rotation

import smplx
from hoannot.io import InputError
from hoannot.models import open_hand
from hoannot.models.hand import MANO_TIP_VERTEX_IDS, OPEN_HAND_PATH, HandModel, change_frame
from hoannot.models.hand import open_hand_axes, open_hand_flexion_axes
from hoannot.models.joint_limits import OPEN_HAND_RANGES, box_from_axes, mano_limits
from hoannot.models.open_hand import joint_axes

torch.manual_seed(0)


@pytest.fixture(scope="module")
def hand() -> HandModel:
    return HandModel()


@pytest.fixture(scope="module")
def data() -> dict:
    with open(OPEN_HAND_PATH, "rb") as f:
        return pickle.load(f)


def _pose(hand, B=1, hand_pose=None, betas=None, go=None, transl=None):
    z = torch.zeros(B, 3)
    return hand(
        go if go is not None else z,
        hand_pose if hand_pose is not None else torch.zeros(B, 45),
        betas if betas is not None else torch.zeros(B, 10),
        transl if transl is not None else z,
    )


def test_pickle_is_plain_and_loads_through_smplx(data):
    allowed = (np.ndarray, scipy.sparse.spmatrix, str)
    assert all(isinstance(v, allowed) for v in data.values()), {k: type(v) for k, v in data.items()}
    assert OPEN_HAND_PATH.stat().st_size < 2e6
    assert data["v_template"].shape[0] in range(700, 1501)
    assert data["J_regressor"].shape == (16, data["v_template"].shape[0])
    assert data["shapedirs"].shape[1:] == (3, 10) and data["posedirs"].shape[1:] == (3, 135)
    assert np.allclose(data["weights"].sum(1), 1) and (data["weights"] >= 0).all()
    m = smplx.MANO(str(OPEN_HAND_PATH.parent), use_pca=False, flat_hand_mean=True, is_rhand=True)
    np.testing.assert_allclose(m.v_template.numpy(), data["v_template"], atol=1e-7)
    assert m.parents.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    out = m(betas=torch.zeros(1, 10), global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45))
    assert out.joints.shape == (1, 16, 3)


def test_mesh_closed_and_outward(data):
    tm = trimesh.Trimesh(data["v_template"], data["f"], process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0
    assert 2e-4 < tm.volume < 6e-4  # adult hand ~ 350-500 ml


def test_zero_pose_reproduces_template(hand, data):
    out = _pose(hand, B=2)
    v = data["v_template"]
    assert out.vertices.dtype == torch.float32 and out.faces.dtype == torch.int64
    assert out.vertices.shape == (2, v.shape[0], 3) and out.joints.shape == (2, 21, 3)
    np.testing.assert_allclose(out.vertices[1].numpy(), v, atol=1e-6)
    np.testing.assert_allclose(out.joints[0, :16].numpy(), data["J_regressor"] @ v, atol=1e-6)
    np.testing.assert_allclose(out.joints[0, 16:].numpy(), v[data["tip_vertex_ids"]], atol=1e-6)
    assert hand.name == "open" and hand.num_betas == 10
    assert torch.equal(hand.faces, torch.as_tensor(data["f"].astype(np.int64)))


def test_rest_keypoints_are_anatomical_in_ho3d_order(hand, data):
    j = _pose(hand).joints[0].numpy().astype(np.float64)
    v = data["v_template"]
    # chains in HO-3D order: (MCP, PIP, DIP, tip) per finger; thumb (CMC, MCP, IP, tip)
    chains = {"index": [1, 2, 3, 17], "middle": [4, 5, 6, 18], "pinky": [7, 8, 9, 20],
              "ring": [10, 11, 12, 19], "thumb": [13, 14, 15, 16]}  # fmt: skip
    wrist = j[0]
    for name, ids in chains.items():
        d = np.linalg.norm(j[ids] - wrist, axis=1)
        assert np.all(np.diff(d) > 0.01), (name, d)  # each joint farther from the wrist
        bones = np.linalg.norm(np.diff(j[ids], axis=0), axis=1)
        assert np.all((bones > 0.012) & (bones < 0.05)), (name, bones)
        # the tip is the distal end: no vertex lies farther along the last bone
        axis = (j[ids[3]] - j[ids[0]]) / np.linalg.norm(j[ids[3]] - j[ids[0]])
        near = np.linalg.norm(v - j[ids[3]], axis=1) < 0.012
        assert ((v[near] - j[ids[3]]) @ axis).max() <= 1e-3, name
    # canonical frame: fingers along -x, thumb on +z, lateral order index > middle > ring > pinky
    assert np.all(j[[17, 18, 19, 20], 0] < j[[1, 4, 10, 7], 0] - 0.06)
    assert j[1, 2] > j[4, 2] > j[10, 2] > j[7, 2]
    assert j[16, 2] > j[1, 2] + 0.02
    assert 0.075 < np.linalg.norm(j[17] - j[1]) < 0.09  # index MCP -> tip
    assert 0.18 < np.linalg.norm(j[18] - wrist) < 0.195  # wrist -> middle tip
    assert 0.06 < np.linalg.norm(j[7] - j[1]) < 0.075  # index MCP -> pinky MCP
    not_thumb = data["weights"][:, 13:16].sum(1) < 0.01
    mcp_level = (np.abs(v[:, 0] - j[4, 0] - 0.01) < 0.006) & not_thumb
    assert 0.075 < np.ptp(v[mcp_level, 2]) < 0.095  # palm breadth at the knuckles


@pytest.mark.parametrize("joint", [0, 1, 2])
def test_positive_flexion_curls_index_to_palm(hand, data, joint):
    axes = open_hand_flexion_axes()
    hp = torch.zeros(1, 45)
    theta = 0.6
    hp[0, 3 * joint : 3 * joint + 3] = torch.as_tensor(theta * axes[joint], dtype=torch.float32)
    j0 = _pose(hand).joints[0].numpy().astype(np.float64)
    j1 = _pose(hand, hand_pose=hp).joints[0].numpy().astype(np.float64)
    pivot = j0[1 + joint]
    assert j1[17, 1] < j0[17, 1] - 0.005  # palm faces -y
    # joints beyond the pivot move rigidly about it (independent rotation via scipy)
    R = Rotation.from_rotvec(theta * axes[joint]).as_matrix()
    for k in range(joint + 2, 4):
        np.testing.assert_allclose(j1[k], R @ (j0[k] - pivot) + pivot, atol=2e-4)
    if joint == 2:  # the tip vertex is fully skinned to the distal bone
        np.testing.assert_allclose(j1[17], R @ (j0[17] - pivot) + pivot, atol=1e-5)
    np.testing.assert_allclose(j1[[0, 4, 18]], j0[[0, 4, 18]], atol=1e-6)  # others untouched


def test_joint_limits(hand):
    """The limits and axes in the model file are those its builder derives from the geometry."""
    np.testing.assert_allclose(open_hand_axes(), joint_axes(), atol=1e-12)
    lim = box_from_axes(joint_axes(), OPEN_HAND_RANGES)
    lower, upper = hand.joint_limits
    np.testing.assert_allclose(lower.numpy(), lim.lower)
    np.testing.assert_allclose(upper.numpy(), lim.upper)
    axes = open_hand_flexion_axes()
    assert lim.contains(torch.zeros(45))
    for j in range(12):  # four fingers: flexion about +z from about -0.3 to >= 1.4
        np.testing.assert_allclose(axes[j], [0, 0, 1], atol=1e-12)
        assert lower[3 * j + 2] < 0 and upper[3 * j + 2] >= 1.4
        for angle, ok in ((1.2, True), (-0.8, False), (2.2, False)):
            hp = torch.zeros(45)
            hp[3 * j : 3 * j + 3] = angle * torch.as_tensor(axes[j], dtype=torch.float32)
            assert bool(lim.contains(hp)) is ok, (j, angle)
    hp = torch.zeros(45)
    hp[3 * 1 + 0] = 0.5  # twist of the index PIP
    assert not lim.contains(hp) and lim.violation(hp)[3].item() == pytest.approx(0.45, abs=1e-6)
    m = mano_limits()
    assert m.lower.shape == (45,) and np.all(m.lower <= m.upper)
    assert m.upper[2] == pytest.approx(1.8) and m.lower[2] == pytest.approx(0.1)  # index MCP flexion
    assert not m.contains(torch.zeros(45)) and mano_limits(include_rest=True).contains(torch.zeros(45))


def test_shape_components_change_lengths_as_documented(hand):
    def kp(k, s=1.0):
        b = torch.zeros(1, 10)
        b[0, k] = s
        return _pose(hand, betas=b).joints[0].numpy().astype(np.float64)

    def dist(j, a, b):
        return np.linalg.norm(j[a] - j[b])

    j0 = kp(0, 0.0)
    std = open_hand.SHAPE_STD
    # 0 scale: every distance from the wrist grows by 5 %
    js = kp(0)
    assert dist(js, 0, 18) == pytest.approx((1 + std[0]) * dist(j0, 0, 18), rel=2e-3)
    # 1 palm width: MCP spread grows, hand length unchanged
    jw = kp(1)
    spread = abs(j0[1, 2] - j0[7, 2])
    assert abs(jw[1, 2] - jw[7, 2]) - spread == pytest.approx(std[1] * spread, rel=0.1)
    assert dist(jw, 4, 18) == pytest.approx(dist(j0, 4, 18), abs=3e-4)
    # 2 palm length: wrist -> middle MCP grows, fingers keep their length
    jl = kp(2)
    assert dist(jl, 0, 4) - dist(j0, 0, 4) == pytest.approx(std[2] * (j0[0, 0] - j0[4, 0]), rel=0.1)
    # 3-7 single finger/thumb lengths: that chain grows, the others do not
    for k, (mcp, tip) in zip(range(3, 8), [(1, 17), (4, 18), (10, 19), (7, 20), (13, 16)]):
        jk = kp(k)
        grow = dist(jk, mcp, tip) - dist(j0, mcp, tip)
        assert grow == pytest.approx(std[k] * dist(j0, mcp, tip), rel=0.15), k
        others = [(1, 17), (4, 18), (10, 19), (7, 20), (13, 16)]
        others.remove((mcp, tip))
        assert all(abs(dist(jk, a, b) - dist(j0, a, b)) < 5e-4 for a, b in others), k
        assert 0.002 < grow < 0.008  # one std is a few millimetres
    # 8 finger thickness / 9 palm thickness: volume up for +1, down for -1
    for k in (8, 9):
        vols = []
        for s in (-1.0, 0.0, 1.0):
            b = torch.zeros(1, 10)
            b[0, k] = s
            v = _pose(hand, betas=b).vertices[0].double().numpy()
            vols.append(trimesh.Trimesh(v, hand.faces.numpy(), process=False).volume)
        assert vols[0] < vols[1] < vols[2], (k, vols)


def test_gradients_reach_every_input(hand):
    B = 2
    go = (0.3 * torch.randn(B, 3)).requires_grad_()
    hp = (0.3 * torch.randn(B, 45)).requires_grad_()
    betas = torch.randn(10).requires_grad_()
    tr = torch.randn(B, 3).requires_grad_()
    out = hand(go, hp, betas, tr)
    target = torch.randn_like(out.vertices)
    ((out.vertices - target) ** 2).sum().add((out.joints**2).sum()).backward()
    for name, t in {"go": go, "hp": hp, "betas": betas, "transl": tr}.items():
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name
    assert hand.root_joint(betas.detach()).shape == (1, 3)


def test_change_of_frame_with_root_joint(hand):
    B = 3
    go, tr = 0.8 * torch.randn(B, 3), 0.3 * torch.randn(B, 3)
    hp, betas = 0.3 * torch.randn(B, 45), torch.randn(B, 10)
    R = torch.as_tensor(Rotation.random(random_state=1).as_matrix(), dtype=torch.float32)
    t = torch.tensor([0.1, -0.2, 0.5])
    v = hand(go, hp, betas, tr).vertices
    go2, tr2 = change_frame(hand, R, t, go, tr, betas)
    v2 = hand(go2, hp, betas, tr2).vertices
    torch.testing.assert_close(v2, v @ R.T + t, atol=2e-6, rtol=0)
    # root_joint is the wrist at zero pose and zero translation
    torch.testing.assert_close(hand.root_joint(betas), _pose(hand, B=B, betas=betas).joints[:, 0])
    assert hand.root_joint(betas).abs().sum() > 0  # the wrist is off the origin: the J0 terms matter


def test_mano_path_from_folder_and_file(tmp_path, data, hand):
    # a MANO-layout pickle without the open hand's extras stands in for real MANO
    plain = {k: v for k, v in data.items() if k not in ("version", "tip_vertex_ids", "joint_limits_lower",
                                                        "joint_limits_upper", "flexion_axes", "shape_names")}  # fmt: skip
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as f:
        pickle.dump(plain, f, protocol=4)
    mano = HandModel(tmp_path)
    assert mano.name == "mano"
    assert mano.tip_vertex_ids.tolist() == list(MANO_TIP_VERTEX_IDS)
    np.testing.assert_allclose(mano.joint_limits[1].numpy(), mano_limits().upper)
    hp = 0.2 * torch.randn(1, 45)
    a, b = _pose(mano, hand_pose=hp), _pose(hand, hand_pose=hp)
    torch.testing.assert_close(a.vertices, b.vertices)
    torch.testing.assert_close(a.joints[:, :16], b.joints[:, :16])
    torch.testing.assert_close(a.joints[:, 16:], a.vertices[:, list(MANO_TIP_VERTEX_IDS)])
    shutil.copy(OPEN_HAND_PATH, tmp_path / "copy.pkl")
    assert HandModel(tmp_path / "copy.pkl").name == "open"


def test_bad_inputs_raise_input_error(tmp_path, hand):
    with pytest.raises(InputError, match="MANO_RIGHT.pkl"):
        HandModel(tmp_path)
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="bad.pkl"):
        HandModel(tmp_path / "bad.pkl")
    with pytest.raises(InputError, match="hand_pose"):
        hand(torch.zeros(2, 3), torch.zeros(2, 44))
    with pytest.raises(InputError, match="betas"):
        hand(torch.zeros(2, 3), torch.zeros(2, 45), torch.zeros(3, 10))


def test_builder_reproduces_bundled_asset(data):
    m = open_hand.build_open_hand()
    assert set(m) == set(data)
    va, vb = m["v_template"], data["v_template"]
    np.testing.assert_allclose(va.min(0), vb.min(0), atol=1e-3)
    np.testing.assert_allclose(va.max(0), vb.max(0), atol=1e-3)
    assert abs(len(va) - len(vb)) <= 10
    np.testing.assert_allclose(m["joint_limits_lower"], data["joint_limits_lower"])
