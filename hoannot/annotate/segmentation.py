"""Hand/object segmentation with DeepLabV3+ (3 classes: 0 background, 1 hand, 2 object).

The network is ``segmentation_models_pytorch.DeepLabV3Plus`` (Chen et al., "Encoder-
Decoder with Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018),
the segmentation network HOnnotate uses (Hampali et al., CVPR 2020, Sec. 3.2), built with
``encoder_weights=None``: nothing is downloaded at run time. A user may start from
their own weights (:func:`train_segmentation` ``init_weights``: a hoannot segmentation
file, or any ``state_dict`` whose keys match the encoder, e.g. ImageNet weights saved
beforehand).

Variants: RGB (3 input channels) and RGB-D (4: depth as an extra channel, normalised by
:func:`hoannot.annotate.training_data.normalise_depth`).

Inference (:func:`segment`) resizes the image to the working width the network was
trained at (the training views are rendered at 320x240 and shown to the network at
``config["work_width"]`` px wide), pads to a multiple of 32, and upsamples the class
scores back to the input size before the arg-max.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hoannot.annotate import weights as W
from hoannot.annotate.training_data import (
    RenderConfig,
    SegmentationDataset,
    default_objects,
    load_pool,
    normalise_depth,
    normalise_rgb,
    render_pool,
    save_pool,
    train_loop,
)
from hoannot.io import InputError

DEFAULT_CONFIG = {
    "arch": "DeepLabV3Plus",
    "encoder": "tu-mobilenetv3_small_100",
    "decoder_channels": 64,
    "classes": 3,
    "rgbd": False,
    "work_width": 128,
    "train_size": [128, 96],
}
#: Cross-entropy class weights (background, hand, object): the hand and object cover
#: a small part of each view.
CLASS_WEIGHTS = (0.5, 1.5, 1.0)


class SegmentationNet(torch.nn.Module):
    """DeepLabV3+ with its hoannot config.

    Args:
        config: keys of :data:`DEFAULT_CONFIG` (missing ones take the defaults).

    Attributes:
        config: the full config (saved with the weights).
        net: the ``smp.DeepLabV3Plus`` module; ``forward(x)`` maps (B, C, H, W) float32
            (C = 3, or 4 with ``rgbd``; H, W multiples of 32) to (B, 3, H, W) logits.
    """

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.config = {**DEFAULT_CONFIG, **(config or {})}
        c = self.config
        self.net = smp.DeepLabV3Plus(
            encoder_name=c["encoder"], encoder_weights=None, in_channels=4 if c["rgbd"] else 3,
            classes=c["classes"], decoder_channels=c["decoder_channels"],
        )  # fmt: skip

    @property
    def in_channels(self) -> int:
        return 4 if self.config["rgbd"] else 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_segmentation(path: str | Path | None = None, device: str = "cpu") -> SegmentationNet:
    """Load trained segmentation weights (see :func:`hoannot.annotate.weights.find_weights`).

    Raises:
        InputError: no weights found (the message names ``hoannot train-seg``), hash
            mismatch, or a file of another kind.
    """
    data = W.load_weights("segmentation", path)
    model = SegmentationNet(data["config"])
    model.net.load_state_dict(data["state_dict"])
    model.weights_path, model.sha256 = str(data["path"]), data["sha256"]
    return model.to(device).eval()


def prepare_input(rgb: np.ndarray, depth: np.ndarray | None, config: dict) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize/normalise/pad one image for the network.

    Args:
        rgb: (H, W, 3) uint8. depth: (H, W) metres or None (required for RGB-D).
        config: the network config.
    Returns:
        x (1, C, Hp, Wp) float32 and the (h, w) of the resized, unpadded image.
    Raises:
        InputError: bad shapes, or an RGB-D network without depth.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise InputError(f"segment: rgb must be (H, W, 3), got {rgb.shape}")
    H, Wd = rgb.shape[:2]
    s = config["work_width"] / Wd
    w, h = int(round(Wd * s)), int(round(H * s))
    img = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (w, h), interpolation=cv2.INTER_AREA)
    x = normalise_rgb(img)
    if config["rgbd"]:
        if depth is None:
            raise InputError("segment: this is an RGB-D network; pass the depth image")
        if depth.shape != (H, Wd):
            raise InputError(f"segment: depth {depth.shape} does not match rgb {rgb.shape[:2]}")
        d = cv2.resize(depth.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        x = np.concatenate([x, normalise_depth(d)[None]], 0)
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    xt = F.pad(torch.from_numpy(x)[None], (0, wp - w, 0, hp - h), mode="replicate")
    return xt, (h, w)


@torch.no_grad()
def segment_probs(model: SegmentationNet, rgb: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities at the input resolution, (H, W, 3) float32 (softmax)."""
    dev = next(model.parameters()).device
    x, (h, w) = prepare_input(rgb, depth, model.config)
    logits = model(x.to(dev))[:, :, :h, :w]
    logits = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False)
    return torch.softmax(logits, 1)[0].permute(1, 2, 0).cpu().numpy()


def segment(model: SegmentationNet, rgb: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
    """Segment one image into background / hand / object.

    Args:
        model: a trained :class:`SegmentationNet` (eval mode).
        rgb: (H, W, 3) uint8.
        depth: (H, W) float metres (0 = no reading); required for RGB-D networks.
    Returns:
        (H, W) uint8 labels, 0 background, 1 hand, 2 object.
    Raises:
        InputError: bad shapes, or missing depth for an RGB-D network.
    """
    return segment_probs(model, rgb, depth).argmax(-1).astype(np.uint8)


def seg_loss(model: SegmentationNet, batch: dict) -> tuple[torch.Tensor, dict]:
    """Weighted per-pixel cross-entropy (:data:`CLASS_WEIGHTS`)."""
    logits = model(batch["image"])
    w = torch.tensor(CLASS_WEIGHTS, device=logits.device)
    loss = F.cross_entropy(logits, batch["label"], weight=w)
    return loss, {"ce": float(loss.detach())}


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


def train_segmentation(
    out_path: str | Path,
    *,
    ycb_dir: str | Path | None = None,
    objects: list[str] | None = None,
    samples: int = 600,
    pool_cache: str | Path | None = None,
    steps: int = 400,
    batch_size: int = 8,
    lr: float = 2e-3,
    rgbd: bool = False,
    encoder: str = DEFAULT_CONFIG["encoder"],
    train_size: tuple[int, int] = (128, 96),
    work_width: int = 128,
    init_weights: str | Path | None = None,
    resume: bool = True,
    max_minutes: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    pool: dict | None = None,
) -> dict:
    """Train DeepLabV3+ on synthetic composites and save it with its config and hash.

    Args:
        out_path: the weights file to write (``.pt`` + ``.pt.json``); the training
            checkpoint is ``<out_path>.ckpt`` and a run resumes from it.
        ycb_dir: YCB folder; its training objects (:data:`~hoannot.annotate.
            training_data.TRAIN_YCB`) are used with the primitives. None: primitives only
            (or ``$HOANNOT_YCB``).
        objects: explicit object specs (overrides ``ycb_dir``).
        samples: number of rendered views in the pool (augmented on the fly).
        pool_cache: ``.npz`` to cache the rendered pool in (reused if present).
        steps, batch_size, lr: optimisation (Adam, cosine decay).
        rgbd: train the RGB-D variant (depth as a 4th channel).
        encoder: an smp encoder name (no pretrained weights are downloaded).
        train_size: (W, H) of the augmented training images (multiples of 32).
        work_width: width images are resized to before the network (training views
            are rendered at 320 px wide and shown at ``train_size`` scale, so keep
            ``work_width / 320 == train_size[0] / render width``).
        init_weights: optional starting weights (see :func:`_init_from`).
        resume: continue from ``<out_path>.ckpt`` if present.
        max_minutes: wall-time budget for this call.
        seed, device, progress: as usual.
        pool: an already rendered pool (tests, benchmarks).
    Returns:
        summary dict: ``path``, ``sha256``, ``steps``, ``final_loss``, ``first_loss``,
        ``minutes``, ``samples``.
    Raises:
        InputError: bad ``init_weights`` or objects.
    """
    t0 = time.time()
    out_path = Path(out_path)
    if pool is None:
        pool = get_pool(pool_cache, samples, objects, ycb_dir, seed, progress)
    model = SegmentationNet({"encoder": encoder, "rgbd": rgbd, "train_size": list(train_size),
                             "work_width": int(work_width)})  # fmt: skip
    init_note = _init_from(model, init_weights) if init_weights else "random (no pretrained weights)"
    ds = SegmentationDataset(pool, size=tuple(model.config["train_size"]), rgbd=rgbd, seed=seed)
    torch.manual_seed(seed)
    hist = train_loop(model, seg_loss, ds, steps=steps, batch_size=batch_size, lr=lr,
                      ckpt_path=out_path.with_name(out_path.name + ".ckpt"), resume=resume, progress=progress,
                      max_minutes=max_minutes, seed=seed, device=device, description="train-seg")  # fmt: skip
    losses = hist["losses"]
    meta = {
        "steps": hist["step"], "batch_size": batch_size, "lr": lr, "samples": len(pool["rgb"]),
        "objects": sorted(set(str(o) for o in pool.get("object", []))), "init": init_note,
        "first_loss": losses[0] if losses else None, "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "train_seconds": hist["seconds"], "seed": seed,
    }  # fmt: skip
    digest = W.save_weights(out_path, "segmentation", model.config, model.net.state_dict(), meta)
    return {"path": str(out_path), "sha256": digest, "steps": hist["step"], "first_loss": meta["first_loss"],
            "final_loss": meta["final_loss"], "minutes": (time.time() - t0) / 60, "samples": meta["samples"],
            "losses": losses}  # fmt: skip
