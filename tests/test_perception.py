"""Perception: composite training data, CPM, training, weights, the perception stage."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from hoannot.annotate import weights as W
from hoannot.annotate.keypoints import CPM, cpm_loss, detect_keypoints, heatmap_peaks, load_keypoints
from hoannot.annotate.preprocess import affine
from hoannot.annotate.training import KeypointDataset, augment, gaussian_heatmaps, train_loop
from hoannot.synthesis.training_assets import HandSampler, load_textured
from hoannot.synthesis.training_renders import RenderConfig, render_sample
from hoannot.io import InputError

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks on a shared 2-core machine run far faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = RenderConfig(width=96, height=72, focal=90.0, min_hand_px=300, min_object_px=300)


def _near_label(label: np.ndarray, uv: np.ndarray, value: int) -> np.ndarray:
    """(J,) bool: some pixel of the 3x3 neighbourhood of each joint has ``value``."""
    H, W = label.shape
    out = []
    for u, v in np.round(uv).astype(int):
        win = label[max(v - 1, 0): v + 2, max(u - 1, 0): u + 2]
        out.append(bool((win == value).any()))
    return np.array(out)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(3)
    hand = HandSampler("open")
    objs = [load_textured("primitive:box:0.05,0.07,0.1"), load_textured("primitive:cylinder:0.035,0.12")]
    return [render_sample(objs[i % 2], hand, rng, SMALL) for i in range(4)]


def test_composites_labels_and_joints_agree(samples):
    n_vis = n_occ = occ_on_obj = 0
    for s in samples:
        lab = s["label"]
        assert lab.shape == (72, 96) and set(np.unique(lab)) <= {0, 1, 2}
        assert (lab == 1).any() and (lab == 2).any()
        # depth: every hand/object pixel has a reading nearer than the background wall
        assert s["depth"].shape == lab.shape and np.isfinite(s["depth"]).all()
        vis = s["visible"]
        # a visible joint (not behind the object) projects onto hand pixels
        on_hand = _near_label(lab, s["uv"], 1)
        assert on_hand[vis].all(), (s["uv"][vis & ~on_hand], np.flatnonzero(vis & ~on_hand))
        n_vis += vis.sum()
        inside = (s["uv"][:, 0] >= 0) & (s["uv"][:, 0] <= 95) & (s["uv"][:, 1] >= 0) & (s["uv"][:, 1] <= 71)
        occ = inside & ~vis
        n_occ += occ.sum()
        occ_on_obj += _near_label(lab, s["uv"], 2)[occ].sum()
    assert n_vis > 20
    if n_occ:  # joints hidden by the object mostly show object pixels
        assert occ_on_obj / n_occ > 0.8


def test_augment_moves_joints_with_pixels(samples):
    s = samples[0]
    rng = np.random.default_rng(0)
    M = affine(1.3, 25.0, (40.0, 30.0), (50.0, 40.0))
    a = augment(s, rng, (100, 80), M, photometric=True)
    assert a["rgb"].shape == (80, 100, 3) and a["label"].shape == (80, 100)
    # the same affine applied independently to the joints
    uv = np.c_[s["uv"], np.ones(21)] @ M.T
    np.testing.assert_allclose(a["uv"], uv, atol=1e-4)
    vis = a["visible"]
    assert vis.sum() >= 5
    assert _near_label(a["label"], a["uv"], 1)[vis].mean() > 0.9


def test_cpm_shapes_and_intermediate_supervision():
    torch.manual_seed(0)
    model = CPM({"stages": 3, "width": 16, "crop": 32})
    x = torch.randn(2, 3, 32, 32)
    beliefs = model(x)
    assert len(beliefs) == 3
    assert all(b.shape == (2, 22, 8, 8) for b in beliefs)
    target = torch.rand(2, 22, 8, 8)
    total, per = cpm_loss(beliefs, target)
    assert len(per) == 3
    for b, f in zip(beliefs, per):  # f_t = sum_j ||b_t^j - b_*^j||^2, batch mean
        ref = np.mean([np.sum((b[i].detach().numpy() - target[i].numpy()) ** 2) for i in range(2)])
        assert float(f.detach()) == pytest.approx(ref, rel=1e-5)
    assert float(total.detach()) == pytest.approx(sum(float(f.detach()) for f in per), rel=1e-6)
    # stage-1's own loss reaches the trunk and the stage-1 head, not the later stages
    per[0].backward()
    assert model.stage1[0].weight.grad.abs().sum() > 0
    assert model.trunk[0].weight.grad.abs().sum() > 0
    assert model.stages[0][0].weight.grad is None


def test_heatmap_peaks_subpixel():
    uv = np.array([[5.3, 7.6], [10.0, 2.2], [12.6, 13.4]])
    hm = gaussian_heatmaps(uv, np.ones(3, bool), 16, 1.2)
    assert hm.shape == (4, 16, 16)
    xy, peak = heatmap_peaks(hm[:3])
    np.testing.assert_allclose(xy, uv, atol=0.2)
    assert (peak > 0.7).all()


class _DotModel(torch.nn.Module):
    """Stub network: every joint's belief map is the crop's brightness, pooled to stride 4."""

    def __init__(self):
        super().__init__()
        self.config = {"joints": 21, "crop": 64, "stride": 4, "box_margin": 1.25}
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4)
        b = (b - b.min()) / (b.max() - b.min())
        return [b.expand(-1, 22, -1, -1)]


def test_detect_keypoints_maps_back_to_image():
    img = np.zeros((120, 160, 3), np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[30:90, 50:110] = True
    dot = (83.0, 47.0)
    yy, xx = np.mgrid[0:120, 0:160]
    img[...] = (255 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 4.0**2)))[..., None].astype(np.uint8)
    uv, conf = detect_keypoints(_DotModel(), img, mask)
    assert uv.shape == (21, 2) and conf.shape == (21,)
    np.testing.assert_allclose(uv, np.tile(dot, (21, 1)), atol=1.5)
    uv0, conf0 = detect_keypoints(_DotModel(), img, np.zeros_like(mask))
    assert np.isnan(uv0).all() and (conf0 == 0).all()


def test_hand_crops_keep_joints_on_the_hand_and_survive_jpeg(samples, tmp_path):
    from hoannot.annotate.training import hand_crops
    from hoannot.synthesis.training_renders import load_pool, save_pool

    pool = {k: np.stack([s[k] for s in samples]) for k in ("rgb", "label", "depth", "uv", "visible")}
    crops = hand_crops(pool, size=48, context=2.0)
    assert crops["rgb"].shape == (4, 48, 48, 3) and crops["uv"].shape == (4, 21, 2)
    for i in range(4):
        vis = crops["visible"][i]
        assert vis.sum() >= 5 and _near_label(crops["label"][i], crops["uv"][i], 1)[vis].mean() > 0.9
        # the whole hand is inside the crop: as many hand pixels as the view has, times the scale squared
        ys, xs = np.nonzero(pool["label"][i] == 1)
        side = max(np.ptp(np.r_[xs, pool["uv"][i][pool["visible"][i], 0]]),
                   np.ptp(np.r_[ys, pool["uv"][i][pool["visible"][i], 1]])) + 1
        expect = len(xs) * (48 / (2.0 * side)) ** 2
        assert abs((crops["label"][i] == 1).sum() - expect) < 0.25 * expect + 10
    save_pool(tmp_path / "c.npz", crops, jpeg_quality=90)
    back = load_pool(tmp_path / "c.npz")
    assert back["rgb"].shape == crops["rgb"].shape and back["rgb"].dtype == np.uint8
    assert np.abs(back["rgb"].astype(float) - crops["rgb"]).mean() < 6
    np.testing.assert_array_equal(back["uv"], crops["uv"])
    z = dict(np.load(tmp_path / "c.npz"))
    z["rgb_jpeg"] = np.zeros_like(z["rgb_jpeg"])
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(InputError, match="undecodable JPEG"):
        load_pool(tmp_path / "bad.npz")


def test_tiny_training_reduces_loss(samples, tmp_path):
    pool = {k: np.stack([s[k] for s in samples]) for k in ("rgb", "label", "depth", "uv", "visible")}
    torch.manual_seed(0)
    model = CPM({"stages": 2, "width": 8, "crop": 32})
    ds = KeypointDataset(pool, crop=32, sigma=1.0, augment=False)
    from hoannot.annotate.training import kp_loss

    hist = train_loop(model, kp_loss, ds, steps=30, batch_size=4, lr=5e-3, ckpt_path=tmp_path / "k.ckpt",
                      progress=False, ckpt_every=10)  # fmt: skip
    first, last = np.mean(hist["losses"][:3]), np.mean(hist["losses"][-3:])
    assert hist["step"] == 30 and last < 0.75 * first, (first, last)
    # resume: a second call with more steps continues from the checkpoint
    hist2 = train_loop(model, kp_loss, ds, steps=32, batch_size=4, lr=5e-3, ckpt_path=tmp_path / "k.ckpt",
                       progress=False)  # fmt: skip
    assert hist2["resumed_from"] == 30 and hist2["step"] == 32 and len(hist2["losses"]) == 32


def test_training_with_workers_runs_long_epochs_of_fresh_augmentations(samples, tmp_path):
    from hoannot.annotate.training import kp_loss

    pool = {k: np.stack([s[k] for s in samples]) for k in ("rgb", "label", "depth", "uv", "visible")}
    torch.manual_seed(0)
    model = CPM({"stages": 1, "width": 4, "crop": 32})
    ds = KeypointDataset(pool, crop=32, sigma=1.0)
    hist = train_loop(model, kp_loss, ds, steps=3, batch_size=2, lr=1e-3, ckpt_path=tmp_path / "w.ckpt",
                      progress=False, workers=1)  # fmt: skip
    assert hist["step"] == 3 and len(hist["losses"]) == 3 and np.isfinite(hist["losses"]).all()
    assert ds.repeats == 250 and len(ds) == 1000  # ~500 steps of 2 per epoch
    a, b = ds[1], ds[1 + 4]  # the same view, augmented differently
    assert not torch.equal(a["uv"], b["uv"])


def test_weights_round_trip_hash_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HOANNOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "BUNDLED", tmp_path / "nothing")
    with pytest.raises(InputError, match="hoannot train-kp"):
        load_keypoints()
    with pytest.raises(InputError, match="hoannot train-seg"):
        W.load_weights("segmentation")
    torch.manual_seed(1)
    model = CPM({"stages": 2, "width": 8})
    path = tmp_path / "cache" / "keypoints.pt"
    digest = W.save_weights(path, "keypoints", model.config, model.state_dict(), {"steps": 0})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(W.sidecar(path).read_text())["sha256"] == digest
    loaded = load_keypoints()  # found in the cache
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), loaded(x)):
            assert torch.equal(a, b)
    assert loaded.sha256 == digest
    with pytest.raises(InputError, match="expected 'segmentation'"):
        W.load_weights("segmentation", path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256"):
        load_keypoints(path)


def test_run_perception_writes_masks_joints_overlays(samples, tmp_path):
    from hoannot.annotate.perception import run_perception
    from hoannot.annotate.segmentation import SegmentationNet
    from hoannot.camera import Camera
    from hoannot.io import read_image, write_image
    from hoannot.datasets.sequence import ObjectConfig, SequenceConfig, write_sequence_header

    seq = tmp_path / "seq"
    K = np.array([[90.0, 0, 47.5], [0, 90.0, 35.5], [0, 0, 1]])
    cams = [Camera(f"cam{i}", K, 96, 72, np.eye(4), depth_scale=0.0005) for i in range(2)]
    for ci, cam in enumerate(cams):
        for f in (0, 1):
            s = samples[2 * ci + f]
            write_image(seq / "rgb" / cam.name / f"{f:06d}.png", s["rgb"])
            write_image(seq / "depth" / cam.name / f"{f:06d}.png", (s["depth"] / 0.0005).astype(np.uint16))
    cfg = SequenceConfig(name="t", cameras=["cam0", "cam1"], frames=[0, 1],
                         object=ObjectConfig(id="box", mesh="primitive:box:0.05,0.07,0.1"))  # fmt: skip
    write_sequence_header(seq, cfg, cams)
    torch.manual_seed(0)
    seg = SegmentationNet({"rgbd": True, "work_width": 96})
    W.save_weights(tmp_path / "seg.pt", "segmentation", seg.config, seg.net.state_dict())
    kp = CPM({"stages": 2, "width": 8})
    W.save_weights(tmp_path / "kp.pt", "keypoints", kp.config, kp.state_dict())
    summary = run_perception(seq, tmp_path / "seg.pt", tmp_path / "kp.pt", geometry=False)  # the network's own labels
    assert "4 views" in summary
    for cam in ("cam0", "cam1"):
        for f in (0, 1):
            lab = read_image(seq / "segmentation" / cam / f"{f:06d}.png")
            assert lab.shape == (72, 96) and lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 2}
        with np.load(seq / "keypoints2d" / f"{cam}.npz") as z:
            assert z["uv"].shape == (2, 21, 2) and z["conf"].shape == (2, 21)
            assert list(z["frames"]) == [0, 1] and str(z["joint_order"]) == "ho3d"
            np.testing.assert_array_equal(z["visible"], z["conf"] >= 0.2)
        assert read_image(seq / "perception" / f"overlay_{cam}.png").shape == (72, 96, 3)
    # missing weights: one clear line naming the training command
    with pytest.raises(InputError, match="hoannot train-seg"):
        run_perception(seq, tmp_path / "none.pt", tmp_path / "kp.pt", geometry=False)


def test_refine_pass_recrops_on_the_detected_joints():
    """A hand mask much larger than the hand gives a coarse first crop (12.5 px heatmap
    cells here); the second pass crops around the first pass's joints and is sharper."""
    from hoannot.annotate.preprocess import joint_box

    img = np.zeros((120, 160, 3), np.uint8)
    dot = (83.3, 47.6)
    yy, xx = np.mgrid[0:120, 0:160]
    img[...] = (255 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 3.0**2)))[..., None].astype(np.uint8)
    mask = np.ones((120, 160), bool)
    model = _DotModel()
    uv1, _ = detect_keypoints(model, img, mask)
    model.config.update(refine_passes=1, joint_margin=1.5)
    uv2, _ = detect_keypoints(model, img, mask)
    e1, e2 = np.linalg.norm(uv1 - dot, axis=1).max(), np.linalg.norm(uv2 - dot, axis=1).max()
    assert e2 < 0.5 and e2 < 0.5 * e1, (e1, e2)
    cx, cy, side = joint_box(np.array([[10.0, 20.0], [50.0, 30.0], [np.nan, np.nan]]), 1.5)
    assert (cx, cy, side) == (30.0, 25.0, 60.0)


def test_cpm_batchnorm_option_and_legacy_weights(tmp_path):
    bn = CPM({"stages": 2, "width": 8, "batchnorm": True})
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    plain = CPM({"stages": 2, "width": 8})
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    # weights saved before the option existed (no "batchnorm" in their config) load as before
    cfg = {k: v for k, v in plain.config.items() if k not in ("batchnorm", "refine_passes", "joint_margin")}
    W.save_weights(tmp_path / "old.pt", "keypoints", cfg, plain.state_dict())
    loaded = load_keypoints(tmp_path / "old.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x)[-1], loaded(x)[-1])


def test_mediapipe_landmark_order_and_detector_errors():
    from hoannot.annotate.mediapipe_hands import landmarks_to_ho3d
    from hoannot.annotate.perception import load_detector
    from hoannot.datasets.conventions import HO3D_TO_OPENPOSE

    # OpenPose/MANO-21 landmark k sits at x = k / 20: HO-3D joint j must get landmark OPENPOSE_TO_HO3D[j]
    xy = np.stack([np.arange(21) / 20.0, np.full(21, 0.5)], 1)
    uv = landmarks_to_ho3d(xy, 200)
    k = np.round((uv[:, 0] + 0.5) / 10).astype(int)
    assert k[0] == 0 and k[16] == 4 and k[20] == 20 and k[13] == 1  # wrist, thumb tip, pinky tip, thumb CMC
    np.testing.assert_array_equal(k[list(HO3D_TO_OPENPOSE)], np.arange(21))
    np.testing.assert_allclose(uv[:, 1], 99.5)  # normalised 0.5 -> the crop's centre in pixel-centre px
    with pytest.raises(InputError, match="unknown 2D joint detector"):
        load_detector("openpose")


def test_mediapipe_missing_is_one_clear_line(monkeypatch):
    import sys

    from hoannot.annotate.mediapipe_hands import MediaPipeHands

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    with pytest.raises(InputError, match=r"pip install 'hoannot\[mediapipe\]'"):
        MediaPipeHands()


def test_mediapipe_finds_a_rendered_hand():
    """With the extra installed: joints of a rendered hand (the WebXR hand, not ours) land on it."""
    pytest.importorskip("mediapipe")
    from pathlib import Path

    from hoannot.annotate.mediapipe_hands import MediaPipeHands

    glb = Path(__file__).resolve().parents[2] / "shared" / "data" / "hands" / "webxr_generic_hand" / "right.glb"
    if not glb.is_file():
        pytest.skip("needs ../shared")
    rng = np.random.default_rng(0)
    hand, obj = HandSampler(str(glb)), load_textured("primitive:box:0.03,0.03,0.03")
    cfg = RenderConfig(forearm=0.0, hand_front=1.0, distance=(0.35, 0.4))
    model, hits, n = MediaPipeHands(), 0, 0
    for _ in range(6):
        s = render_sample(obj, hand, rng, cfg)
        uv, conf = model.detect(s["rgb"], s["label"] == 1)
        if np.isfinite(uv).all():
            err = np.linalg.norm(uv - s["uv"], axis=1)[s["visible"]]
            hits, n = hits + int((err < 10).sum()), n + int(s["visible"].sum())
    assert n > 0 and hits / n > 0.5, (hits, n)


def test_bundled_weights_load_and_find_a_hand(tmp_path, monkeypatch):
    """The small models that ship with the package (trained by benchmarks/perception.py)
    load with their hash, and the CPM puts joints near a rendered hand's."""
    if not (W.BUNDLED / "keypoints.pt").is_file():
        pytest.skip("no bundled weights in this checkout")
    from hoannot.annotate.segmentation import load_segmentation, segment

    monkeypatch.setenv("HOANNOT_CACHE", str(tmp_path / "empty"))
    kp, seg = load_keypoints(), load_segmentation()
    assert kp.weights_path == str(W.BUNDLED / "keypoints.pt")
    rng = np.random.default_rng(5)
    hand, obj = HandSampler("open"), load_textured("primitive:box:0.05,0.07,0.1")
    cfg = RenderConfig(forearm=0.0, hand_front=1.0, distance=(0.5, 0.7))
    err, iou = [], []
    for _ in range(6):
        s = render_sample(obj, hand, rng, cfg)
        lab = segment(seg, s["rgb"], s["depth"] if seg.config["rgbd"] else None)
        iou.append(((lab == 1) & (s["label"] == 1)).sum() / ((lab == 1) | (s["label"] == 1)).sum())
        uv, _ = detect_keypoints(kp, s["rgb"], s["label"] == 1)
        err.append(np.median(np.linalg.norm(uv - s["uv"], axis=1)[s["visible"]]))
    # hands span 50-100 px here; measured: median error 9 px (an untrained CPM: 55 px),
    # hand IoU 0.75 on average
    assert np.median(err) < 15.0, err
    assert np.mean(iou) > 0.6, iou


def _arm_mask(H: int = 240, W: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A forearm band entering from the left border (24 px wide, x 0..199), a wider hand
    blob at its end (56 x 70 px, x 200..255) and an object blob touching the hand."""
    hand = np.zeros((H, W), bool)
    hand[108:132, 0:200] = True  # forearm
    hand[85:155, 200:256] = True  # hand
    obj = np.zeros((H, W), bool)
    obj[70:170, 256:300] = True
    return hand, obj


def test_distal_hand_box_crops_the_hand_end_of_an_arm():
    from hoannot.annotate.preprocess import distal_hand_box, hand_box

    hand, obj = _arm_mask()
    cx, cy, side = hand_box(hand)
    assert cx < 130 and side > 300  # the whole arm: the hand a fifth of the crop
    for o in (obj, None):  # the object, or else the image border, tells the hand end
        cx, cy, side = distal_hand_box(hand, o)
        assert 200 <= cx <= 256 and 100 <= cy <= 140, (cx, cy)
        assert 70 * 1.25 <= side <= 120 * 1.25, side  # the hand and at most a wrist's worth of arm
        x0, x1 = cx - side / 2, cx + side / 2
        assert x0 <= 200 and x1 >= 255  # the whole hand blob is inside
    # mirrored: the arm from the right
    cx, _, _ = distal_hand_box(hand[:, ::-1], obj[:, ::-1])
    assert 320 - 256 <= cx <= 320 - 200
    # no forearm: exactly hand_box; nothing to decide the ends: hand_box too
    blob = np.zeros((240, 320), bool)
    blob[85:155, 100:156] = True
    assert distal_hand_box(blob, obj) == hand_box(blob)
    free = np.zeros((240, 320), bool)
    free[108:132, 40:200] = True
    free[85:155, 200:256] = True
    assert distal_hand_box(free, None) == hand_box(free)
    assert distal_hand_box(np.zeros((240, 320), bool)) is None


def test_detect_keypoints_distal_crop_option():
    """``distal_crop`` moves the first crop onto the hand end of an arm mask (the dot model
    then finds a dot there far more sharply than on the crop around the whole arm)."""
    hand, obj = _arm_mask()
    dot = (228.0, 120.0)
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.repeat((255 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 3.0**2)))[..., None], 3, 2)
    img = img.astype(np.uint8)
    model = _DotModel()
    e_whole = np.linalg.norm(detect_keypoints(model, img, hand, obj)[0] - dot, axis=1).max()
    model.config.update(distal_crop=True)
    e_hand = np.linalg.norm(detect_keypoints(model, img, hand, obj)[0] - dot, axis=1).max()
    assert e_hand < 1.0 and e_hand < 0.5 * e_whole, (e_whole, e_hand)
    with pytest.raises(InputError):
        detect_keypoints(model, img, hand, obj[:100])
