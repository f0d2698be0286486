"""Training the perception networks on the synthetic renders of :mod:`hoannot.synthesis`.

:class:`SegmentationDataset` and :class:`KeypointDataset` wrap a rendered pool
(:func:`hoannot.synthesis.training_renders.render_pool`, cached with ``save_pool`` /
``load_pool``) as torch Datasets that augment on the fly (:func:`augment`: scale,
rotation, translation as one affine warp, colour jitter, blur); :func:`train_loop` is the
resumable Adam loop both use; :func:`train_segmentation` (DeepLabV3+, HOnnotate Sec. 3.2)
and :func:`train_keypoints` (CPM, Wei et al., CVPR 2016, Eq. 4-5), both through
:func:`_train_network`, take their settings as :class:`~hoannot.annotate.configs.SegTrainConfig`
/ :class:`~hoannot.annotate.configs.KpTrainConfig` and write weights with their network
config and hash (:mod:`hoannot.annotate.weights`). Inference
(:mod:`hoannot.annotate.segmentation`, :mod:`hoannot.annotate.keypoints`) does not
import this module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import cv2
import numpy as np
import torch

import torch.nn.functional as F

from hoannot.annotate import weights as W
from hoannot.annotate.configs import KeypointConfig, KpTrainConfig, SegTrainConfig
from hoannot.annotate.keypoints import CPM, cpm_loss
from hoannot.annotate.preprocess import affine, crop_affine, hand_box, joint_box, normalise_depth, normalise_rgb
from hoannot.annotate.segmentation import CLASS_WEIGHTS, SegmentationNet
from hoannot.io import InputError
from hoannot.synthesis.training_assets import default_objects
from hoannot.synthesis.training_renders import RenderConfig, load_pool, render_pool, save_pool


def augment(
    sample: dict[str, np.ndarray],
    rng: np.random.Generator,
    out_size: tuple[int, int],
    M: np.ndarray,
    photometric: bool = True,
) -> dict[str, np.ndarray]:
    """Warp a sample by the affine ``M`` into an ``out_size`` (W, H) image, then jitter colours.

    Args:
        sample: ``rgb``, ``label``, ``depth``, ``uv``, ``visible`` as in :func:`render_sample`.
        rng: random generator (photometric jitter).
        out_size: (W, H) of the output.
        M: (2, 3) affine from input to output pixels (scale/rotation/translation/crop).
        photometric: apply colour jitter (brightness, contrast, saturation, hue) and
            a random Gaussian blur.
    Returns:
        the warped sample (same keys); joints leaving the image become not visible.
    """
    W, H = out_size
    rgb = cv2.warpAffine(sample["rgb"], M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    label = cv2.warpAffine(sample["label"], M, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    depth = cv2.warpAffine(sample["depth"].astype(np.float32), M, (W, H), flags=cv2.INTER_NEAREST, borderValue=0)
    uv = sample["uv"] @ M[:, :2].T + M[:, 2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    if photometric:
        x = rgb.astype(np.float32)
        if rng.random() < 0.8:
            hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 255)
            x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
        if rng.random() < 0.4:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.5))
        rgb = np.clip(x, 0, 255).astype(np.uint8)
    return {"rgb": rgb, "label": label, "depth": depth, "uv": uv.astype(np.float32),
            "visible": sample["visible"] & inside}  # fmt: skip


def hand_crops(pool: dict[str, np.ndarray], size: int = 112, context: float = 2.2) -> dict[str, np.ndarray]:
    """Cut each view of a rendered pool down to a square around its hand, for the 2D-joint network.

    A pool of hand crops is ~6x smaller than one of full views, so it can be carried to a
    GPU machine and augmented there (:class:`KeypointDataset` treats it as a pool of views:
    it still finds the hand box in ``label`` and the joints in ``uv``).

    Args:
        pool: a pool from :func:`~hoannot.synthesis.training_renders.render_pool`; views
            without hand pixels are dropped.
        size: side of the stored crops, pixels.
        context: crop side as a multiple of the larger extent of the hand mask and the
            joints together, so that the dataset's shift, scale and rotation stay inside.
    Returns:
        a pool with the same keys: ``rgb`` (N, size, size, 3) uint8, ``label`` (N, size,
        size) uint8, ``depth`` (N, size, size) float16 (zeros: the CPM reads RGB only),
        ``uv`` (N, 21, 2) float32 crop pixels, ``visible`` (N, 21) bool, ``object`` (N,).
    """
    out: dict[str, list] = {k: [] for k in ("rgb", "label", "uv", "visible", "object")}
    for i in range(len(pool["rgb"])):
        s = _pool_item(pool, i)
        ys, xs = np.nonzero(s["label"] == 1)
        if len(xs) == 0:
            continue
        vis = s["visible"]
        px = np.concatenate([xs, s["uv"][vis, 0]])
        py = np.concatenate([ys, s["uv"][vis, 1]])
        cx, cy = (px.min() + px.max()) / 2, (py.min() + py.max()) / 2
        side = max(px.max() - px.min() + 1, py.max() - py.min() + 1, 8) * context
        c = augment(s, np.random.default_rng(0), (size, size), crop_affine((cx, cy, side), size), photometric=False)
        for k in ("rgb", "label", "uv"):
            out[k].append(c[k])
        out["visible"].append(c["visible"])
        out["object"].append(pool["object"][i] if "object" in pool else "")
    crops = {k: np.stack(v) for k, v in out.items()}
    crops["depth"] = np.zeros(crops["label"].shape, np.float16)
    return crops


def _pool_item(pool: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {k: pool[k][i] for k in ("rgb", "label", "depth", "uv", "visible")}


class SegmentationDataset(torch.utils.data.Dataset):
    """Augmented full views for segmentation.

    Each item is a random scale (``scale`` range, relative to ``size / image size``),
    rotation (+-``rot_deg``) and translation of a pool view into a ``size`` (W, H) image.

    Items: ``image`` (C, H, W) float32 (C = 3 RGB or 4 RGB-D, see :func:`normalise_depth`),
    ``label`` (H, W) int64.
    """

    def __init__(self, pool, size=(128, 96), rgbd=False, augment=True, scale=(0.7, 1.5), rot_deg=30.0, seed=0):
        self.pool, self.size, self.rgbd, self.aug = pool, size, rgbd, augment
        self.scale, self.rot, self.seed = scale, rot_deg, seed
        self.epoch = 0
        self.repeats = 1  # passes over the pool per epoch (each view differently augmented)

    def __len__(self) -> int:
        return len(self.pool["rgb"]) * self.repeats

    def item(self, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        s = _pool_item(self.pool, i)
        h, w = s["label"].shape
        W, H = self.size
        base = min(W / w, H / h)
        if self.aug:
            sc = base * rng.uniform(*self.scale)
            ang = rng.uniform(-self.rot, self.rot)
            centre = (w / 2 + rng.uniform(-0.2, 0.2) * w, h / 2 + rng.uniform(-0.2, 0.2) * h)
        else:
            sc, ang, centre = base, 0.0, ((w - 1) / 2, (h - 1) / 2)
        M = affine(sc, ang, centre, ((W - 1) / 2, (H - 1) / 2))
        return augment(s, rng, (W, H), M, photometric=self.aug)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, self.epoch, i))
        s = self.item(i % len(self.pool["rgb"]), rng)
        x = normalise_rgb(s["rgb"])
        if self.rgbd:
            x = np.concatenate([x, normalise_depth(s["depth"])[None]], 0)
        return {"image": torch.from_numpy(x), "label": torch.from_numpy(s["label"].astype(np.int64))}


def gaussian_heatmaps(uv: np.ndarray, visible: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Target belief maps (Wei et al., CVPR 2016, Sec. 3.3): a Gaussian of peak 1 at each joint.

    Args:
        uv: (J, 2) joint positions in heatmap pixels.
        visible: (J,) bool; invisible joints get an all-zero map.
        size: heatmap side; sigma: Gaussian std, heatmap pixels.
    Returns:
        (J + 1, size, size) float32; the last channel is the background belief
        ``1 - max_j b_j``.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    d2 = (xs[None] - uv[:, 0, None, None]) ** 2 + (ys[None] - uv[:, 1, None, None]) ** 2
    maps = np.exp(-d2 / (2 * sigma**2)) * visible[:, None, None]
    bg = 1.0 - maps.max(0, keepdims=True)
    return np.concatenate([maps, bg], 0).astype(np.float32)


class KeypointDataset(torch.utils.data.Dataset):
    """Augmented hand crops for the 2D joint network.

    The crop box comes from the ground-truth hand mask (as at test time the first crop
    comes from the predicted mask) or, with probability ``joint_box_prob``, from the
    ground-truth joints with margin ``joint_margin`` (as the second, refined crop comes
    from the first pass's joints, :func:`hoannot.annotate.keypoints.detect_keypoints`);
    it is jittered in centre (+-``shift`` of the side) and size (``scale`` range) and
    rotated (+-``rot_deg``), to ``crop`` x ``crop`` px.

    Items: ``image`` (3, crop, crop) float32, ``heatmaps`` (22, crop/stride, crop/stride)
    float32 (:func:`gaussian_heatmaps`), ``uv`` (21, 2) crop px, ``visible`` (21,) bool.
    """

    def __init__(self, pool, crop=64, stride=4, sigma=1.2, augment=True, shift=0.1, scale=(0.85, 1.25),
                 rot_deg=40.0, joint_box_prob=0.0, joint_margin=1.5, seed=0):  # fmt: skip
        self.pool, self.crop, self.stride, self.sigma, self.aug = pool, crop, stride, sigma, augment
        self.joint_box_prob, self.joint_margin = joint_box_prob, joint_margin
        self.shift, self.scale, self.rot, self.seed = shift, scale, rot_deg, seed
        self.epoch = 0
        self.repeats = 1  # passes over the pool per epoch (each crop differently augmented)

    def __len__(self) -> int:
        return len(self.pool["rgb"]) * self.repeats

    def item(self, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        s = _pool_item(self.pool, i)
        if self.joint_box_prob > 0 and rng.random() < self.joint_box_prob:
            cx, cy, side = joint_box(s["uv"], self.joint_margin)
        else:
            cx, cy, side = hand_box(s["label"] == 1)
        ang = 0.0
        if self.aug:
            cx, cy = cx + rng.uniform(-self.shift, self.shift) * side, cy + rng.uniform(-self.shift, self.shift) * side
            side *= rng.uniform(*self.scale)
            ang = rng.uniform(-self.rot, self.rot)
        M = crop_affine((cx, cy, side), self.crop, ang)
        return augment(s, rng, (self.crop, self.crop), M, photometric=self.aug)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, self.epoch, i, 1))
        s = self.item(i % len(self.pool["rgb"]), rng)
        hm_size = self.crop // self.stride
        uv_hm = (s["uv"] + 0.5) / self.stride - 0.5
        hm = gaussian_heatmaps(uv_hm, s["visible"], hm_size, self.sigma)
        return {"image": torch.from_numpy(normalise_rgb(s["rgb"])), "heatmaps": torch.from_numpy(hm),
                "uv": torch.from_numpy(s["uv"]), "visible": torch.from_numpy(s["visible"])}  # fmt: skip


def train_loop(
    model: torch.nn.Module,
    loss_fn,
    dataset: torch.utils.data.Dataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    ckpt_path: str | Path,
    resume: bool = True,
    progress: bool = True,
    max_minutes: float | None = None,
    ckpt_every: int = 50,
    seed: int = 0,
    device: str = "cpu",
    description: str = "training",
    workers: int = 0,
) -> dict:
    """Adam with cosine learning-rate decay, checkpointed so that a run can be resumed.

    The decay follows the run's progress: ``step / steps``, or the fraction of
    ``max_minutes`` used when that is larger, so a time-capped run still anneals.

    Args:
        model: the network (moved to ``device``).
        loss_fn: ``loss_fn(model, batch) -> (loss tensor, {name: 0-d tensor})`` (the parts are
            left on the device: reading them would wait for the step on a GPU).
        dataset: yields dict batches; its ``epoch`` attribute (if any) is advanced each
            pass so augmentations differ between epochs.
        steps: total optimisation steps (a resumed run continues up to this number).
        batch_size, lr: as usual.
        ckpt_path: training checkpoint (model, optimiser, step, history), written
            atomically every ``ckpt_every`` steps and at the end.
        resume: continue from ``ckpt_path`` if it exists.
        progress: show a rich progress bar with the running loss.
        max_minutes: stop (and checkpoint) after this much wall time in this call.
        seed: shuffling seed.
        device: torch device.
        description: progress bar label.
        workers: DataLoader worker processes (0: augment in this process). With workers, a
            dataset with a ``repeats`` attribute makes each epoch at least ~500 steps long (the
            workers start once per epoch).
    Returns:
        ``{"step", "losses" (per-step list of floats), "seconds" (total, all runs),
        "resumed_from" (step or 0)}``.
    """
    import time

    from hoannot.io import atomic_write

    ckpt_path = Path(ckpt_path)
    if len(dataset) == 0:
        raise InputError("training: the dataset is empty")
    batch_size = min(batch_size, len(dataset))
    if workers > 0 and hasattr(dataset, "repeats"):
        # an epoch of at least ~500 steps: the workers are started once per epoch, which on a
        # small pool (70 steps of 128 crops from 9000) cost a large share of the time
        dataset.repeats = max(1, -(-500 * batch_size // len(dataset)))
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    state = {"step": 0, "losses": [], "seconds": 0.0}
    resumed = 0
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        resumed = state["step"]

    def save_ckpt() -> None:
        import io as _io

        buf = _io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "state": state}, buf)  # fmt: skip
        with atomic_write(ckpt_path, "wb") as f:
            f.write(buf.getvalue())

    t0 = time.time()
    t_prev = state["seconds"]
    # losses are read back every few steps, not every step: on a GPU each read waits for the step
    pending: list[torch.Tensor] = []
    read_every = 1 if device == "cpu" else 20

    def flush() -> None:
        if pending:
            state["losses"].extend(torch.stack(pending).tolist())
            pending.clear()
            recent = state["losses"][-20:]
            bar.update(task, completed=state["step"], loss=sum(recent) / len(recent))
    g = torch.Generator().manual_seed(seed)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   disable=not progress)  # fmt: skip
    with bar:
        task = bar.add_task(description, total=steps, completed=state["step"], loss=float("nan"))
        while state["step"] < steps:
            if hasattr(dataset, "epoch"):
                dataset.epoch = state["step"] // max(1, len(dataset) // batch_size) + 1000 * resumed
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                                 generator=g, num_workers=workers,
                                                 pin_memory=device.startswith("cuda"))  # fmt: skip
            for batch in loader:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                # cosine decay over the run's progress: steps, or wall time when capped
                prog = state["step"] / max(steps, 1)
                if max_minutes is not None:
                    prog = max(prog, (time.time() - t0) / (60 * max_minutes))
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(prog, 1.0)))
                loss, logs = loss_fn(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                state["step"] += 1
                pending.append(loss.detach())
                state["seconds"] = t_prev + time.time() - t0
                if len(pending) >= read_every or state["step"] % ckpt_every == 0 or state["step"] >= steps:
                    flush()
                if state["step"] % ckpt_every == 0:
                    save_ckpt()
                out_of_time = max_minutes is not None and time.time() - t0 > 60 * max_minutes
                if state["step"] >= steps or out_of_time:
                    break
            if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
                break
        flush()
    save_ckpt()
    model.eval()
    return {"step": state["step"], "losses": state["losses"], "seconds": state["seconds"], "resumed_from": resumed}


def seg_loss(model: SegmentationNet, batch: dict) -> tuple[torch.Tensor, dict]:
    """Weighted per-pixel cross-entropy (:data:`CLASS_WEIGHTS`)."""
    logits = model(batch["image"])
    w = torch.tensor(CLASS_WEIGHTS, device=logits.device)
    loss = F.cross_entropy(logits, batch["label"], weight=w)
    return loss, {"ce": loss.detach()}


def _init_from(model: SegmentationNet, init_weights: str | Path) -> str:
    """Start from user weights: a hoannot segmentation file or an encoder state_dict."""
    p = Path(init_weights)
    if W.sidecar(p).is_file():
        data = W.load_weights("segmentation", p)
        model.net.load_state_dict(data["state_dict"])
        return f"hoannot weights {p.name}"
    if not p.is_file():
        raise InputError(f"{p}: initial weights file not found")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{p}: unreadable weights ({type(e).__name__})") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    enc = model.net.encoder.state_dict()
    hits = {k: v for k, v in sd.items() if k in enc and enc[k].shape == v.shape}
    if not hits:
        raise InputError(f"{p}: no tensor matches the {model.config['encoder']} encoder")
    model.net.encoder.load_state_dict(hits, strict=False)
    return f"encoder tensors {len(hits)}/{len(enc)} from {p.name}"


def get_pool(pool_cache: str | Path | None, samples: int, objects: list[str] | None, ycb_dir, seed: int,
             progress: bool, hand: str = "open", render: RenderConfig | None = None) -> dict:  # fmt: skip
    """Load the rendered pool from ``pool_cache`` or render it (and cache it there)."""
    if pool_cache is not None and Path(pool_cache).is_file():
        return load_pool(pool_cache)
    objs = objects or default_objects(ycb_dir, "train")
    pool = render_pool(samples, objs, hand=hand, cfg=render, seed=seed, progress=progress)
    if pool_cache is not None:
        save_pool(pool_cache, pool)
    return pool


def kp_loss(model: CPM, batch: dict) -> tuple[torch.Tensor, dict]:
    total, per = cpm_loss(model(batch["image"]), batch["heatmaps"])
    return total, {f"stage{t + 1}": v.detach() for t, v in enumerate(per)}


class _Job(NamedTuple):
    """What one network's training adds to :func:`_train_network`."""

    model: torch.nn.Module  # the network, with its ``config`` dict
    loss_fn: Callable  # ``loss_fn(model, batch) -> (loss, logs)``
    dataset: torch.utils.data.Dataset
    pool: dict  # the views trained on (recorded in the meta)
    init_note: str  # where the starting weights came from
    weights: Callable[[], dict]  # the state dict the weights file stores
    meta: dict  # extra meta entries, after ``init``


def _train_network(
    kind: str,
    out_path: str | Path,
    cfg: SegTrainConfig | KpTrainConfig,
    job: Callable[[dict], _Job],
    *,
    ycb_dir: str | Path | None,
    objects: list[str] | None,
    pool_cache: str | Path | None,
    pool: dict | None,
    resume: bool,
    progress: bool,
) -> dict:
    """What training either network does: get the pool, build the network (``job``), run the
    resumable :func:`train_loop` (checkpoint ``<out_path>.ckpt``), save the weights.

    Args:
        kind: ``"segmentation"`` or ``"keypoints"`` (the weights file's kind).
        out_path: the weights file to write (``.pt`` + ``.pt.json``).
        cfg: the validated training settings (``samples``, ``steps``, ``batch_size``,
            ``lr``, ``max_minutes``, ``seed``, ``device``).
        job: ``job(pool) -> _Job``: the network, its dataset and loss on the pool.
        ycb_dir, objects, pool_cache, pool, resume, progress: see :func:`train_segmentation`.
    Returns:
        as :func:`train_segmentation`.
    """
    t0 = time.time()
    out_path = Path(out_path)
    if pool is None:
        pool = get_pool(pool_cache, cfg.samples, objects, ycb_dir, cfg.seed, progress)
    torch.manual_seed(cfg.seed)  # the network's random init: the same seed gives the same weights
    j = job(pool)
    torch.manual_seed(cfg.seed)
    name = {"segmentation": "train-seg", "keypoints": "train-kp"}[kind]
    hist = train_loop(j.model, j.loss_fn, j.dataset, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                      ckpt_path=out_path.with_name(out_path.name + ".ckpt"), resume=resume, progress=progress,
                      max_minutes=cfg.max_minutes, seed=cfg.seed, device=cfg.device, description=name,
                      workers=cfg.workers)  # fmt: skip
    losses = hist["losses"]
    meta = {
        "steps": hist["step"], "batch_size": cfg.batch_size, "lr": cfg.lr, "samples": len(j.pool["rgb"]),
        "objects": sorted(set(str(o) for o in j.pool.get("object", []))), "init": j.init_note, **j.meta,
        "first_loss": losses[0] if losses else None, "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "train_seconds": hist["seconds"], "seed": cfg.seed, "device": cfg.device,
    }  # fmt: skip
    digest = W.save_weights(out_path, kind, j.model.config, j.weights(), meta)
    return {"path": str(out_path), "sha256": digest, "steps": hist["step"], "first_loss": meta["first_loss"],
            "final_loss": meta["final_loss"], "minutes": (time.time() - t0) / 60, "samples": meta["samples"],
            "losses": losses}  # fmt: skip


def train_segmentation(
    out_path: str | Path,
    config: SegTrainConfig | None = None,
    *,
    ycb_dir: str | Path | None = None,
    objects: list[str] | None = None,
    pool_cache: str | Path | None = None,
    init_weights: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    pool: dict | None = None,
    **settings: Any,
) -> dict:
    """Train DeepLabV3+ on synthetic composites and save it with its config and hash.

    Args:
        out_path: the weights file to write (``.pt`` + ``.pt.json``); the training
            checkpoint is ``<out_path>.ckpt`` and a run resumes from it.
        config: the training settings (:class:`~hoannot.annotate.configs.SegTrainConfig`:
            ``samples``, ``steps``, ``batch_size``, ``lr``, ``max_minutes``, ``seed``,
            ``device`` and the network ``net``: ``rgbd``, ``encoder``, ``train_size`` (W, H,
            multiples of 32), ``work_width``...); None: its defaults.
        ycb_dir: YCB folder; its training objects (:data:`~hoannot.synthesis.training_assets.TRAIN_YCB`) are used with the primitives. None: primitives only
            (or ``$HOANNOT_YCB``).
        objects: explicit object specs (overrides ``ycb_dir``).
        pool_cache: ``.npz`` to cache the rendered pool in (reused if present).
        init_weights: optional starting weights (see :func:`_init_from`).
        resume: continue from ``<out_path>.ckpt`` if present.
        progress: show progress bars.
        pool: an already rendered pool (tests, benchmarks).
        **settings: fields of ``config`` or of its ``net`` by name, over ``config``
            (``steps=100, rgbd=True``); None values are skipped. Keep ``work_width / 320
            == train_size[0] / render width`` (the views are rendered 320 px wide).
    Returns:
        summary dict: ``path``, ``sha256``, ``steps``, ``final_loss``, ``first_loss``,
        ``minutes``, ``samples``, ``losses``.
    Raises:
        InputError: an unknown setting or a value the config refuses; bad
            ``init_weights`` or objects.
    """
    cfg = SegTrainConfig.with_settings(settings, "train-seg", config)

    def job(pool: dict) -> _Job:
        model = SegmentationNet(cfg.net)
        init_note = _init_from(model, init_weights) if init_weights else "random (no pretrained weights)"
        ds = SegmentationDataset(pool, size=tuple(model.config["train_size"]), rgbd=cfg.net.rgbd, seed=cfg.seed)
        return _Job(model, seg_loss, ds, pool, init_note, model.net.state_dict, {})

    return _train_network("segmentation", out_path, cfg, job, ycb_dir=ycb_dir, objects=objects, pool_cache=pool_cache,
                          pool=pool, resume=resume, progress=progress)  # fmt: skip


def train_keypoints(
    out_path: str | Path,
    config: KpTrainConfig | None = None,
    *,
    ycb_dir: str | Path | None = None,
    objects: list[str] | None = None,
    pool_cache: str | Path | None = None,
    init_weights: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    pool: dict | None = None,
    **settings: Any,
) -> dict:
    """Train the CPM on hand crops of synthetic composites; save it with config and hash.

    Args:
        out_path: weights file to write (``.pt`` + ``.pt.json``); the training
            checkpoint is ``<out_path>.ckpt`` (resumed from when present).
        config: the training settings (:class:`~hoannot.annotate.configs.KpTrainConfig`:
            ``samples``, ``steps``, ``batch_size``, ``lr``, ``max_minutes``, ``seed``,
            ``device``, ``joint_box_prob`` (share of crops cut around the ground-truth
            joints, :class:`KeypointDataset`: what the refine pass sees at test time) and
            the network ``net``: ``stages``, ``batchnorm``, ``refine_passes`` (saved in the
            config; :func:`~hoannot.annotate.keypoints.detect_keypoints`)...); None: its
            defaults.
        ycb_dir, objects, pool_cache, pool, resume, progress, **settings: as for
            :func:`train_segmentation` (the same pool cache can serve both).
        init_weights: a hoannot keypoints weights file to fine-tune; its stored network
            config replaces ``net``.
    Returns:
        summary dict: ``path``, ``sha256``, ``steps``, ``first_loss``, ``final_loss``,
        ``minutes``, ``samples``, ``losses``.
    Raises:
        InputError: an unknown setting or a value the config refuses; bad ``init_weights``.
    """
    cfg = KpTrainConfig.with_settings(settings, "train-kp", config)

    def job(pool: dict) -> _Job:
        keep = np.array([(lab == 1).any() for lab in pool["label"]])
        pool = {k: v[keep] for k, v in pool.items()}
        model = CPM(cfg.net)
        init_note = "random"
        if init_weights:
            data = W.load_weights("keypoints", init_weights)
            model = CPM(KeypointConfig.from_stored(data["config"], str(data["path"])))
            model.load_state_dict(data["state_dict"])
            init_note = f"hoannot weights {Path(init_weights).name}"
        c = model.config
        ds = KeypointDataset(pool, crop=c["crop"], stride=c["stride"], sigma=c["sigma"],
                             joint_box_prob=cfg.joint_box_prob, joint_margin=c["joint_margin"], seed=cfg.seed)  # fmt: skip
        return _Job(model, kp_loss, ds, pool, init_note, model.state_dict, {"joint_box_prob": cfg.joint_box_prob})

    return _train_network("keypoints", out_path, cfg, job, ycb_dir=ycb_dir, objects=objects, pool_cache=pool_cache,
                          pool=pool, resume=resume, progress=progress)  # fmt: skip
