"""Renderer speed: our rasterizer paths (binned forward, PyTorch3D forward; both with autograd
recomputation) vs PyTorch3D's native forward and backward, same scene.

Scene: the bundled open hand (2000 faces, as fitted) beside a capsule standing in for a
decimated object mesh (~1.1k faces; fits use ``object_max_faces=1000``), B frames x C views
at the fitting crop size (``FitConfig.crop_size``), soft silhouette + depth, forward +
backward of a loss on both. Writes ``benchmarks/results/render.json``.

    python benchmarks/render.py [--size 80] [--frames 4] [--views 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from hoannot.camera import Camera, look_at
from harness import stamp, write_result

from hoannot.fitting.config import FitConfig
from hoannot.models.hand import HandModel
from hoannot.renderers.cameras import ViewCameras
from hoannot.renderers.renderer import HandObjectRenderer


def scene(frames: int, views: int, size: int):
    model = HandModel(None)
    with torch.no_grad():
        pose = torch.zeros(1, 45)
        pose[:, 2::3] = 0.3  # fingers half-closed about the flexion axis
        out = model(torch.zeros(1, 3), pose)
    hv0 = out.vertices[0].numpy()
    hand = trimesh.Trimesh(hv0 - hv0.mean(0) + [0.03, 0.0, 0.04], out.faces.numpy(), process=False)
    obj = trimesh.creation.capsule(height=0.12, radius=0.035, count=[24, 24])
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    cams = []
    for c in range(views):
        a = 2 * np.pi * c / views
        eye = [0.5 * np.sin(a), -0.15, 0.5 * np.cos(a)]
        cams.append(Camera(f"c{c}", K, 640, 480, look_at(eye, [0, 0, 0], [0, -1, 0])))
    boxes = np.tile([[200.0, 120.0, 240.0, 240.0]], (views, 1))
    vc = ViewCameras.from_cameras(cams, boxes, (size, size))
    hv = torch.tensor(hand.vertices, dtype=torch.float32)[None].repeat(frames, 1, 1)
    ov = torch.tensor(obj.vertices, dtype=torch.float32)[None].repeat(frames, 1, 1)
    hv = hv + torch.linspace(0, 0.01, frames)[:, None, None]
    return hv, torch.tensor(hand.faces), ov, torch.tensor(obj.faces), vc


def step(renderer, hv0, hf, ov0, of, vc):
    hv, ov = hv0.clone().requires_grad_(), ov0.clone().requires_grad_()
    out = renderer(hv, hf, ov, of, vc)
    loss = (out.silhouette - 0.5).square().sum() + out.zbuf.sum()
    loss.backward()
    return out, hv.grad, ov.grad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=FitConfig().crop_size)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "render.json"))
    a = ap.parse_args()
    torch.manual_seed(0)
    hv, hf, ov, of, vc = scene(a.frames, a.views, a.size)
    timings, outs = {}, {}
    for backend in ("binned", "pytorch3d", "native"):
        r = HandObjectRenderer(backend=backend)
        step(r, hv, hf, ov, of, vc)  # warm-up
        t = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            outs[backend] = step(r, hv, hf, ov, of, vc)
            t.append(time.perf_counter() - t0)
        timings[backend] = 1000 * float(np.median(t)) / (a.frames * a.views)
    f, n = outs["binned"], outs["native"]
    rel = lambda x, y: float((x - y).abs().max() / y.abs().max().clamp(min=1e-12))  # noqa: E731
    res = {
        **stamp(__file__, config_digest=FitConfig().digest()),
        "faces": int(hf.shape[0] + of.shape[0]),
        "image_size": [a.size, a.size],
        "frames": a.frames,
        "views": a.views,
        "binned_ms_per_view": round(timings["binned"], 2),
        "pytorch3d_forward_ms_per_view": round(timings["pytorch3d"], 2),
        "native_ms_per_view": round(timings["native"], 2),
        "speedup": round(timings["native"] / timings["binned"], 2),
        "speedup_pytorch3d_forward": round(timings["native"] / timings["pytorch3d"], 2),
        "max_rel_diff_silhouette": rel(f[0].silhouette, n[0].silhouette),
        "max_rel_diff_zbuf": rel(f[0].zbuf, n[0].zbuf),
        "max_rel_diff_grad_hand": rel(f[1], n[1]),
        "max_rel_diff_grad_object": rel(f[2], n[2]),
        "faces_per_pixel": HandObjectRenderer().faces_per_pixel,
        "threads": torch.get_num_threads(),
    }
    write_result(a.out, res)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
