"""The fit's finger search (hoannot.fitting.finger_search): a finger bent far from the truth, on
data rendered from the WebXR hand (not our model) holding a real YCB mesh."""

from __future__ import annotations

import numpy as np
import torch

from hoannot.datasets.loaders import load_hand_model, load_sequence_object
from hoannot.datasets.poses import GroundTruth, HandObjectPoses
from hoannot.datasets.sequence import open_sequence
from hoannot.fitting.config import load_fit_config
from hoannot.fitting.finger_search import FINGERS, copy_delta, describe, finger_step, move_delta, num_moves
from hoannot.fitting.objective import Objective
from hoannot.fitting.schedule import Step
from hoannot.models.hand import open_hand_axes
from hoannot.pipeline import run_init, synth_sequence

from conftest import WEBXR_RIGHT, YCB

SMALL = dict(width=160, height=120, focal=150.0)
#: HO-3D joint order: the index finger's three joints and its tip
INDEX_HO3D = [1, 2, 3, 17]


def _index_error_mm(hand, poses: HandObjectPoses, gt_joints: np.ndarray) -> float:
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    betas = np.broadcast_to(poses.betas[: hand.num_betas], (len(poses), hand.num_betas))
    with torch.no_grad():
        joints = hand(f(poses.global_orient), f(poses.hand_pose), f(betas), f(poses.transl)).joints.numpy()
    return float(np.linalg.norm(joints - gt_joints, axis=-1)[:, INDEX_HO3D].mean() * 1000)


def test_finger_search_straightens_a_finger_bent_by_a_radian(shared_dir, tmp_path):
    seq_dir = tmp_path / "seq"
    synth_sequence(seq_dir, str(YCB / "003_cracker_box"), str(WEBXR_RIGHT), cameras=3, frames=3, seed=2, noise=True,
                   **SMALL)  # fmt: skip
    run_init(seq_dir, from_gt=True, noise_deg=0.0, noise_mm=0.0, pose_noise_rad=0.0)  # as after a fit: the rest near the truth
    seq = open_sequence(seq_dir)
    frames = [int(f) for f in seq.frames]
    hand, obj = load_hand_model(seq), load_sequence_object(seq)
    start = HandObjectPoses.load(seq_dir / "init" / "poses.npz", seq.frames).select(frames)
    bent = start.select(frames)
    bend = move_delta("index", (1, 2), 0, 1.0, open_hand_axes().astype(np.float32))  # both distal joints +1 rad
    bent.hand_pose = (bent.hand_pose.reshape(-1, 15, 3) + bend).reshape(-1, 45).astype(np.float32)
    gt = GroundTruth.load(seq_dir / "gt" / "poses.npz").hand_joints
    objective = Objective.make(seq, hand, obj, load_fit_config(None, crop_size=64, num_points=500))
    out, record = finger_step(Step("fingers", tuple(range(len(frames))), num_moves()), bent, frames,
                              lambda fr: objective.observations(seq, fr, 0), objective)  # fmt: skip
    before, after = _index_error_mm(hand, bent, gt), _index_error_mm(hand, out, gt)
    assert before > 15.0  # the bend is real
    index = [m for m in record["moves"] if m["finger"] == "index"]
    assert index and index[0]["move"] == "distal flexion" and index[0]["angle_rad"] < 0, record
    assert after < 0.5 * before, (before, after, record)
    assert record["frames_changed"] == len(frames)
    # only hand poses change, and every move taken lowered the summed data energy, each from
    # where the move before it left it
    assert np.array_equal(out.obj_rot, bent.obj_rot) and np.array_equal(out.transl, bent.transl)
    assert all(m["energy_after"] < m["energy_before"] for m in record["moves"])
    assert all(a["energy_after"] == b["energy_before"] for a, b in zip(record["moves"], record["moves"][1:]))
    # each sweep visits the fingers in MANO order; a finger moves at most once per sweep
    order = [(m["sweep"], list(FINGERS).index(m["finger"])) for m in record["moves"]]
    assert order == sorted(set(order)), record


def _still_hand(n: int) -> HandObjectPoses:
    return HandObjectPoses(frames=np.arange(n), global_orient=np.zeros((n, 3), np.float32),
                           hand_pose=np.zeros((n, 45), np.float32), betas=np.zeros(10, np.float32),
                           transl=np.zeros((n, 3), np.float32), obj_rot=np.zeros((n, 3)), obj_transl=np.zeros((n, 3)))  # fmt: skip


def _with_limits(lower, upper):
    """A stand-in objective carrying only the hand model's joint-limit box."""
    from types import SimpleNamespace

    from hoannot.models.joint_limits import JointLimits

    lo, hi = (np.broadcast_to(np.asarray(x, np.float32), (45,)).copy() for x in (lower, upper))
    return SimpleNamespace(hand_model=SimpleNamespace(limits=JointLimits(lo, hi)))


def test_a_move_stops_at_the_joint_limits(monkeypatch):
    """The index's middle joint may flex 0.2 rad at most (a box on its axis-angle components);
    the stand-in energy wants it there and the distal joint at +1.0, plus E_joint's penalty
    (100 x squared violation). Bending both distal joints by +1.0 then lands exactly on the
    target: the middle joint stops at its limit, and a thumb component that already lies
    outside the box (0 > upper = -0.5), which the move leaves alone, keeps its value."""
    import hoannot.fitting.finger_search as fs

    axes = open_hand_axes().astype(np.float32)
    mid, dist = FINGERS["index"][1], FINGERS["index"][2]
    lo, hi = np.full((15, 3), -10.0, np.float32), np.full((15, 3), 10.0, np.float32)
    lo[mid], hi[mid] = -0.2 * np.abs(axes[mid, 0]), 0.2 * np.abs(axes[mid, 0])
    hi[FINGERS["thumb"][0]] = -0.5  # a component already outside the box: a move elsewhere leaves it
    objective = _with_limits(lo.reshape(45), hi.reshape(45))
    target = np.zeros((15, 3), np.float32)
    target[mid], target[dist] = 0.2 * axes[mid, 0], 1.0 * axes[dist, 0]
    start = _still_hand(2)

    def energy(objective, poses, obs):
        hp = poses.hand_pose.reshape(len(poses), 15, 3)
        off = np.maximum(hp - hi, 0) + np.maximum(lo - hp, 0)
        off[:, FINGERS["thumb"][0]] = 0  # the stand-in's E_joint ignores the thumb
        return (np.square(hp - target).sum(axis=(1, 2)) + 100 * np.square(off).sum(axis=(1, 2))).astype(np.float64)

    monkeypatch.setattr(fs, "frame_data_energy", energy)
    increments, taken = fs.search_fingers(objective, start, None, sweeps=1)
    assert [(m["finger"], m["move"], m["angle_rad"]) for m in taken] == [("index", "distal flexion", 1.0)]
    moved = fs.apply_moves(start, increments, (lo.reshape(45), hi.reshape(45))).hand_pose.reshape(2, 15, 3)
    assert np.allclose(moved, target, atol=1e-6)
    assert taken[0]["energy_after"] < 1e-9


def test_a_move_back_after_a_clipped_move_takes_effect(monkeypatch):
    """The index's middle joint may flex 0.2 rad at most; the stand-in energy wants it at -0.05
    and the distal joint at +0.95. The first sweep bends both by +1.0 (the middle joint stops
    at 0.2); the second bends them back by 0.25, which must move the middle joint to -0.05 from
    where it stopped (and the distal joint to 0.75). Adding the moves' sum (+0.75) and clipping it once would leave the middle
    joint at its limit, a move that changes the distal joint only, which the search would not take."""
    import hoannot.fitting.finger_search as fs

    axes = open_hand_axes().astype(np.float32)
    mid, dist = FINGERS["index"][1], FINGERS["index"][2]
    lo, hi = np.full((15, 3), -10.0, np.float32), np.full((15, 3), 10.0, np.float32)
    lo[mid], hi[mid] = -0.2 * np.abs(axes[mid, 0]), 0.2 * np.abs(axes[mid, 0])
    target = np.zeros((15, 3), np.float32)
    target[mid], target[dist] = -0.05 * axes[mid, 0], 0.95 * axes[dist, 0]

    def energy(objective, poses, obs):
        hp = poses.hand_pose.reshape(len(poses), 15, 3)
        return np.square(hp - target).sum(axis=(1, 2)).astype(np.float64)

    monkeypatch.setattr(fs, "frame_data_energy", energy)
    limits = (lo.reshape(45), hi.reshape(45))
    start = _still_hand(2)
    increments, taken = fs.search_fingers(_with_limits(*limits), start, None, sweeps=3)
    assert [(m["finger"], m["angle_rad"], m["sweep"]) for m in taken] == [("index", 1.0, 0), ("index", -0.25, 1)]
    moved = fs.apply_moves(start, increments, limits).hand_pose.reshape(2, 15, 3)
    assert np.allclose(moved[:, mid], -0.05 * axes[mid, 0], atol=1e-6)  # back from the limit
    assert np.allclose(moved[:, dist], 0.75 * axes[dist, 0], atol=1e-6)
    once = fs._with_delta(start, np.sum(increments, axis=0), limits=limits).hand_pose.reshape(2, 15, 3)
    assert np.allclose(once[:, mid], 0.2 * axes[mid, 0], atol=1e-6)  # the sum, clipped once: stuck at the limit


def test_sweeps_let_a_finger_take_a_second_move(monkeypatch):
    """A search scored by a stand-in energy (squared distance of the index's two distal joints to
    a flexion of +0.8 rad, in their anatomical axes): one sweep takes the nearest single move
    (+1.0), a second sweep corrects it (-0.25), a third finds nothing and ends the search; the
    progress callback is called num_moves(sweeps) times either way."""
    from functools import partial

    import hoannot.fitting.finger_search as fs

    axes = open_hand_axes().astype(np.float32)
    target = move_delta("index", (1, 2), 0, 0.8, axes)

    def energy(objective, poses, obs):
        hp = poses.hand_pose.reshape(len(poses), 15, 3)
        return np.square(hp - target).sum(axis=(1, 2)).astype(np.float64)

    monkeypatch.setattr(fs, "frame_data_energy", energy)
    start = _still_hand(2)
    results = {}
    for sweeps in (1, 3):
        calls = []
        increments, taken = fs.search_fingers(_with_limits(-10, 10), start, None, partial(calls.append, 1), sweeps=sweeps)
        assert len(calls) == num_moves(sweeps)
        delta = np.sum(increments, axis=0)  # no limit is reached: the moves add up
        results[sweeps] = (float(np.square(delta - target).sum()), [(m["finger"], m["angle_rad"], m["sweep"]) for m in taken])
    assert results[1][1] == [("index", 1.0, 0)]
    assert results[3][1] == [("index", 1.0, 0), ("index", -0.25, 1)]
    assert results[3][0] < 0.1 * results[1][0]


def test_copy_move_gives_a_finger_the_articulation_of_another():
    """A ring finger held straight takes the pinky's curl, joint by joint, in each joint's own
    anatomical axes: flexion stays flexion. The open hand's long fingers share their axes, so
    the test gives every joint its own random axes (a plain copy of the rotation vectors fails)."""
    from scipy.spatial.transform import Rotation

    axes = Rotation.random(15, random_state=1).as_matrix().transpose(0, 2, 1)  # rows: flexion, abduction, twist
    rng = np.random.default_rng(0)
    pinky = np.array([[1.2, 0.1, 0.0], [0.9, 0.0, 0.05], [0.6, 0.0, 0.0]])  # (flexion, abduction, twist) per joint
    hp = np.zeros((2, 15, 3))
    hp[:, list(FINGERS["index"])] = rng.normal(0, 0.3, (2, 3, 3))  # other fingers: anything
    for k, j in enumerate(FINGERS["pinky"]):
        hp[:, j] = pinky[k] @ axes[j]  # the same articulation on both frames
    for scale in (0.75, 1.0):
        d = copy_delta("ring", "pinky", scale, hp.reshape(2, 45).astype(np.float32), axes.astype(np.float32))
        moved = hp + d
        for k, j in enumerate(FINGERS["ring"]):
            components = np.linalg.solve(axes[j].T, moved[0, j])  # the ring joint's rotation vector in its axes
            np.testing.assert_allclose(components, scale * pinky[k], atol=1e-5)
        untouched = [j for j in range(15) if j not in FINGERS["ring"]]
        assert not d[untouched].any()
    assert describe({"finger": "ring", "move": "copy pinky", "scale": 0.75}) == "ring copy pinky x0.75"
