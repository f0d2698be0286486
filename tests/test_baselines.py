"""Baselines: dataset crops, method shapes/training steps, skeleton-difference loss, TSDF, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoannot.baselines import cnn3d, feedback_loop, sdnet, two_stage
from hoannot.baselines.bench import bench
from hoannot.baselines.dataset import HandCropDataset, crop_depth, hand_centre
from hoannot.baselines.train import load_run, make_cfg, make_dataset, train
from hoannot.io import InputError
from hoannot.datasets.sequence import open_sequence

from pathlib import Path

WEBXR_RIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "hands" / "webxr_generic_hand" / "right.glb"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threading only adds overhead on the shared CPU
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory):
    from hoannot.pipeline import synth_sequence

    out = tmp_path_factory.mktemp("bl") / "seq"
    hand = str(WEBXR_RIGHT) if WEBXR_RIGHT.is_file() else "open"
    synth_sequence(out, "primitive:box:0.05,0.07,0.1", hand, cameras=2, frames=3, seed=3, width=128, height=96, focal=120.0)
    return out


@pytest.fixture(scope="module")
def batch(seq_dir):
    ds = HandCropDataset([seq_dir], crop_size=16, augment=True, seed=1)
    return torch.utils.data.default_collate([ds[i] for i in range(4)])


def test_crop_centre_and_normalisation_by_hand(seq_dir):
    seq = open_sequence(seq_dir)
    cam = seq.cameras[0]
    depth = seq.read_depth(cam.name, 0)
    from hoannot.baselines.dataset import read_segmentation

    seg = read_segmentation(seq, cam.name, 0)
    # centre of mass, computed independently with a loop-free pinhole back-projection
    v, u = np.nonzero((seg == 1) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    K = cam.K
    pts = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], 1)
    c = hand_centre(depth, seg, K)
    np.testing.assert_allclose(c, pts.mean(0), atol=1e-9)

    ds = HandCropDataset([seq_dir], crop_size=32, cube_m=0.3)
    it = ds[0]
    np.testing.assert_allclose(it["centre"].numpy(), c, atol=1e-6)
    # the crop pixel at crop coords (a, b) = ((i + .5) / S * 2 - 1) reads image pixel p_c + r (a, b)
    S, r = 32, 0.15 * K[0, 0] / c[2]
    uc, vc = K[0, 0] * c[0] / c[2] + K[0, 2], K[1, 1] * c[1] / c[2] + K[1, 2]
    for i, j in [(16, 16), (10, 20), (5, 27)]:
        a, b = (j + 0.5) / S * 2 - 1, (i + 0.5) / S * 2 - 1
        px, py = int(np.rint(uc + r * a)), int(np.rint(vc + r * b))  # nearest pixel centre
        d = depth[py, px]
        expect = 1.0 if d == 0 else np.clip((d - c[2]) / 0.15, -1, 1)
        assert it["depth"][0, i, j].item() == pytest.approx(expect, abs=1e-4)
    # joints relative to the centre, normalised by half the cube, in camera coordinates
    lab = np.load(seq_dir / "gt" / "poses.npz")["hand_joints"][0]
    T = cam.T_cam_world
    jc = lab @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(it["joints"].numpy(), (jc - c) / 0.15, atol=1e-4)
    np.testing.assert_allclose(it["joints_cam"].numpy(), jc, atol=1e-5)


def test_augmented_joints_stay_on_the_hand(seq_dir):
    ds = HandCropDataset([seq_dir], crop_size=48, augment=True, rot_deg=45, seed=0)
    hits = []
    for e in range(3):
        ds.set_epoch(e)
        x = ds[1]
        ij = ((x["joints_uvd"][:, :2] + 1) / 2 * 48).long().clamp(0, 47)
        hits.append((x["labels"][0][ij[:, 1], ij[:, 0]] == 1).float().mean().item())
    # rotated joints project onto the rotated hand pixels (most of them: some lie behind the object)
    assert min(hits) > 0.6
    ds.set_epoch(0)
    assert torch.equal(ds[1]["depth"], ds[1]["depth"])  # deterministic per (seed, epoch, index)
    # batched cropping (DataLoader path) equals item-by-item cropping
    for x, y in zip(ds.__getitems__([0, 1, 4]), [ds[0], ds[1], ds[4]]):
        for k in x:
            torch.testing.assert_close(x[k], y[k])


def test_crop_rotation_matches_rotating_the_image():
    depth = torch.zeros(1, 1, 40, 40)
    depth[0, 0, 10:14, 24:30] = 0.5  # a bar right of and above centre
    K = torch.tensor([[[100.0, 0, 19.5], [0, 100.0, 19.5], [0, 0, 1]]])
    centre = torch.tensor([[0.0, 0.0, 0.5]])
    cube = torch.tensor([0.4])
    d0, _ = crop_depth(depth, centre, cube, K, torch.tensor([0.0]), 40)
    d90, _ = crop_depth(depth, centre, cube, K, torch.tensor([np.pi / 2]), 40)
    # crop at theta reads p_c + R(theta)(a, b): rotating by 90 deg maps crop (a, b) to (b, -a) ...
    torch.testing.assert_close(d90[0, 0], torch.rot90(d0[0, 0], 1, dims=(0, 1)))


def test_no_segmentation_or_labels_raise(tmp_path):
    with pytest.raises(InputError):
        HandCropDataset([tmp_path])


@pytest.mark.parametrize("mod,stage,extra", [
    (sdnet, "main", {}),
    (two_stage, "segmentation", {}),
    (two_stage, "regression", {}),
    (cnn3d, "main", {"grid": 8, "refine_width": 4}),
    (feedback_loop, "localizer", {}),
    (feedback_loop, "predictor", {}),
    (feedback_loop, "synthesizer", {}),
    (feedback_loop, "updater", {}),
])
def test_shapes_and_a_training_step_reduces_the_loss(mod, stage, extra, seq_dir, batch):
    torch.manual_seed(0)
    cfg = make_cfg(mod.__name__.split(".")[-1], {"crop_size": 16, "widths": [4, 8], "hidden": 32, **extra})
    model = mod.build_model(cfg)
    ds = HandCropDataset([seq_dir], crop_size=16)
    mod.init_from_data(model, ds, cfg)
    model.train()
    model.train_epoch = 2
    opt = torch.optim.Adam(list(mod.parameters(model, stage)), lr=1e-3)
    torch.manual_seed(1)
    l0, _ = mod.loss(model, batch, cfg, stage)
    for _ in range(5):
        torch.manual_seed(1)
        l, _ = mod.loss(model, batch, cfg, stage)
        opt.zero_grad()
        l.backward()
        opt.step()
    torch.manual_seed(1)
    l1, _ = mod.loss(model, batch, cfg, stage)
    assert float(l1.detach()) < float(l0.detach())
    model.eval()
    out = mod.predict(model, batch, cfg)
    B = len(batch["depth"])
    assert out["joints"].shape == (B, 21, 3)
    if mod is two_stage:
        assert out["obj_centre"].shape == (B, 3)
    if mod is feedback_loop:
        assert out["obj_corners"].shape == (B, 8, 3)


def test_skeleton_difference_loss_hand_cases():
    rng = np.random.default_rng(0)
    gt = torch.as_tensor(rng.normal(size=(2, 21, 3)), dtype=torch.float32)
    a, r = sdnet.skeleton_difference_loss(gt, gt)
    assert float(a) == pytest.approx(0.0, abs=1e-6) and float(r) == pytest.approx(0.0, abs=1e-6)
    # bend the last bone of the index finger (DIP 3 -> tip 17) by 90 degrees, same length
    pred = gt.clone()
    b = gt[:, 17] - gt[:, 3]
    perp = torch.linalg.cross(b, torch.tensor([[0.0, 0.0, 1.0]]).expand_as(b))
    perp = perp / perp.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)
    pred[:, 17] = gt[:, 3] + perp
    a, r = sdnet.skeleton_difference_loss(pred, gt)
    assert float(a) == pytest.approx(1.0 / 20, abs=1e-5)  # one of 20 bones with 1 - cos 90 = 1
    assert float(r) == pytest.approx(0.0, abs=1e-6)
    # doubling the whole skeleton: angles unchanged, every ratio is 2 -> (2 - 1)^2 = 1
    a, r = sdnet.skeleton_difference_loss(2 * gt, gt)
    assert float(a) == pytest.approx(0.0, abs=1e-5) and float(r) == pytest.approx(1.0, abs=1e-5)


def test_gmm_fits_two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (200, 2)), rng.normal(5, 0.1, (200, 2))])
    w, m, v = sdnet.fit_gmm(x, k=2, seed=0)
    np.testing.assert_allclose(np.sort(m[:, 0]), [0, 5], atol=0.05)
    nll = sdnet.gmm_nll(torch.tensor([[0.0, 0.0], [2.5, 2.5]]), *(torch.as_tensor(a) for a in (w, m, v)))
    assert float(nll[0]) < float(nll[1])


def test_tsdf_against_hand_computation():
    # a flat wall at 0.52 m in front of a camera, centre at 0.5 m: every pixel of the crop sees 0.52
    S, G = 16, 8
    K = torch.tensor([[[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]]])
    centre, cube = torch.tensor([[0.0, 0.0, 0.5]]), torch.tensor([0.2])
    depth_n = torch.full((1, 1, S, S), (0.52 - 0.5) / 0.1)
    vol = cnn3d.tsdf_volume(depth_n, centre, cube, K, grid=G, trunc_m=0.05)
    assert vol.shape == (1, 1, G, G, G)
    z = 0.5 + ((np.arange(G) + 0.5) / G * 2 - 1) * 0.1  # voxel centre depths
    expect = np.clip((0.52 - z) / 0.05, -1, 1)
    # central voxels (inside the crop's view frustum) follow the projective TSDF
    np.testing.assert_allclose(vol[0, 0, :, G // 2, G // 2].numpy(), expect, atol=1e-5)
    # background (normalised depth 1) reads as free space everywhere
    vol_bg = cnn3d.tsdf_volume(torch.ones(1, 1, S, S), centre, cube, K, grid=G)
    assert torch.all(vol_bg == 1)


def test_recentre_shifts_the_crop():
    d = torch.ones(1, 1, 8, 8)
    d[0, 0, 4, 6] = 0.0
    out = feedback_loop.recentre(d, torch.tensor([[0.5, 0.0, 0.25]]))  # half a crop = 2 pixels right
    assert out[0, 0, 4, 4].item() == pytest.approx(-0.25)
    assert (out < 1).sum() == 1


def test_hinge_loss_eq9():
    gt = torch.zeros(1, 21, 3)
    y = torch.ones(1, 21, 3)  # |y - gt| = sqrt(63)
    assert float(feedback_loop.hinge_loss(y, 0.5 * y, gt, 0.6)) == pytest.approx(0.0)  # 0.5 < 0.6
    assert float(feedback_loop.hinge_loss(y, 0.8 * y, gt, 0.6)) == pytest.approx(0.2 * np.sqrt(63), rel=1e-5)


def test_resume_gives_the_same_state_and_bench(seq_dir, tmp_path):
    ov = {"crop_size": 16, "widths": [4, 8], "hidden": 16, "batch_size": 4, "epochs": 2}
    train("sdnet", [seq_dir], tmp_path / "a", overrides=ov, progress=False)
    train("sdnet", [seq_dir], tmp_path / "b", overrides=ov, progress=False, stop_after_epochs=1)
    r = train("sdnet", [seq_dir], tmp_path / "b", overrides=ov, progress=False)
    assert r["done"] and len(r["history"]) == 2
    sa = torch.load(tmp_path / "a" / "ckpt" / "last.pt", weights_only=False)["model"]
    sb = torch.load(tmp_path / "b" / "ckpt" / "last.pt", weights_only=False)["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    res = bench(tmp_path / "a", [seq_dir], out_dir=tmp_path / "bench")
    assert (tmp_path / "bench" / "success_curve.png").is_file() and res["frames"] == 6
    assert 0 <= res["auc"] <= 1 and res["mpjpe_mm"] > 0
    # a user's estimator on the same crops: the crop centre for every joint
    mod, model, cfg = load_run(tmp_path / "a")
    ds = make_dataset(cfg, [seq_dir], augment=False)
    gt = np.stack([ds[i]["joints_cam"].numpy() for i in range(len(ds))])
    cen = np.stack([ds[i]["centre"].numpy() for i in range(len(ds))])
    est = bench(None, [seq_dir], estimator=lambda b: b["centre"][:, None].repeat(1, 21, 1), crop_size=16)
    assert est["mpjpe_mm"] == pytest.approx(np.linalg.norm(gt - cen[:, None], axis=-1).mean() * 1000, rel=1e-5)
    with pytest.raises(InputError):
        bench(None, [seq_dir], estimator="no_colon")


def test_seg_fcn_levels_keep_the_resolution_and_widen_the_receptive_field():
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 32, 32, requires_grad=True)
    reach = {}
    for levels in (1, 2, 3):
        net = two_stage.SegFCN(8, levels)
        out = net(x)
        assert out.shape == (1, 1, 32, 32)
        (g,) = torch.autograd.grad(out[0, 0, 16, 16], x)
        reach[levels] = int((g[0, 0].abs().sum(0) > 0).sum())  # input columns that reach the centre pixel
    assert reach[1] < reach[2] < reach[3]
    # levels=2 is the architecture of the earlier, fixed network (same size), and a run saved
    # with that network's layer names (e1..e3, d2, d1) still loads and predicts the same
    net = two_stage.SegFCN(16, 2)
    assert sum(p.numel() for p in net.parameters()) == 27921
    names = {"enc.0.": "e1.", "enc.1.": "e2.", "enc.2.": "e3.", "dec.0.": "d1.", "dec.1.": "d2."}
    old = {next((names[n] + k[len(n):] for n in names if k.startswith(n)), k): v for k, v in net.state_dict().items()}
    model = torch.nn.Sequential(two_stage.SegFCN(16, 2))
    model.load_state_dict({"0." + k: v for k, v in old.items()})
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(model(x), net(x))
