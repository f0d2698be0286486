"""``hoannot report``: the page of a tiny fitted capture opens in headless Chromium, every
image loads, and its flagged-frame table lists exactly the frames the fit flagged."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hoannot.cli import app
from hoannot.datasets.poses import HandObjectPoses
from hoannot.pipeline import synth_sequence

runner = CliRunner()
BAD_FRAME = 1  # its initial hand and object are moved 6 cm: the fit flags it


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "seq"
    synth_sequence(root, "primitive:box:0.05,0.07,0.1", "open", cameras=2, frames=3, seed=4, width=96, height=72,
                   focal=90.0)  # fmt: skip
    r = invoke("init", root, "--from-gt", "--noise-deg", 2, "--noise-mm", 3)
    assert r.exit_code == 0, r.output
    p = HandObjectPoses.load(root / "init" / "poses.npz")
    p.transl[BAD_FRAME] += 0.06
    p.obj_transl[BAD_FRAME] += 0.06
    p.save(root / "init" / "poses.npz")
    r = invoke("fit", root, "--iterations", 2, "--crop-size", 32, "--batch-size", 3)
    assert r.exit_code == 0, r.output
    return root


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.links.append(a["src"])
        elif tag == "a" and not a.get("href", "#").startswith("#"):
            self.links.append(a["href"])


def _chromium_dom(page: Path, tmp_path: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not on PATH (.ci/run installs Debian's chromium package)")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=20000", "--dump-dom",
           page.resolve().as_uri() + "#selftest"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


def test_report_opens_in_chromium_with_every_image_and_the_fits_flags(seq, tmp_path):
    r = invoke("report", seq)
    assert r.exit_code == 0, r.output
    page = seq / "report" / "index.html"
    html = page.read_text()
    parser = _Links()
    parser.feed(html)
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    backgrounds = re.findall(r'<img class="bg" src="([^"]+)"', html)
    assert len(backgrounds) == 3 * 2 * 3  # frames x cameras x panels: each on the sequence's own RGB image
    assert sorted(set(backgrounds)) == sorted(f"../rgb/cam{c}/{f:06d}.png" for c in range(2) for f in range(3))
    assert len(imgs) == 2 * len(backgrounds)  # every view shows the hand: every panel has its layer
    for link in parser.links:  # relative links to files (no server, no network)
        assert "://" not in link and not link.startswith("/"), link
        assert (page.parent / link).is_file(), link

    dom = _chromium_dom(page, tmp_path)
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body))
    assert attrs.get("data-images-checked") == "1", body
    assert int(attrs["data-images"]) == len(imgs) and attrs["data-images-broken"] == "0", body

    quality = json.loads((seq / "fit" / "quality.json").read_text())
    flagged = sorted(int(f) for f, bad in zip(quality["frames"], quality["flag"]) if bad)
    assert BAD_FRAME in flagged
    listed = [int(f) for f in re.findall(r'<tr class="flagged-frame" data-frame="(\d+)"', dom)]
    assert sorted(listed) == flagged and len(listed) == len(set(listed))
    assert f'id="f{BAD_FRAME:06d}"' in dom  # the table's links point at the frame's images


def test_report_takes_the_fits_drawings_and_draws_what_changed_since(seq, tmp_path, monkeypatch):
    """The fit keeps its poses' layers (``fit/layers/``); the report takes them as they are and
    draws only the frames whose pose or observations changed after the fit."""
    import os

    import numpy as np

    from hoannot.report import panels

    root = tmp_path / "seq"
    shutil.copytree(seq, root, ignore=lambda d, e: [x for x in e if Path(d) == seq and x == "report"])
    kept = root / "fit" / "layers"
    index = json.loads((kept / "index.json").read_text())
    assert sorted(int(f) for f in index["frames"]) == [0, 1, 2]
    drawn = []
    draw = panels._frame_layers
    monkeypatch.setattr(panels, "_frame_layers", lambda s, frame, *a: drawn.append(frame) or draw(s, frame, *a))

    assert invoke("report", root).exit_code == 0
    assert drawn == []
    assert "3 frame(s) as the fit drew them (fit/layers/), 0 frame(s) drawn" in (root / "report" / "index.html").read_text()
    for f in range(3):
        assert (root / "report" / "layers" / f"{f:06d}.png").read_bytes() == (kept / f"{f:06d}.png").read_bytes()

    poses = HandObjectPoses.load(root / "fit" / "poses.npz")
    poses.obj_transl[2] += np.float32(0.01)  # frame 2's object moved 1 cm
    poses.save(root / "fit" / "poses.npz")
    depth = root / "depth" / "cam1" / "000000.png"  # frame 0's depth replaced (here: only touched)
    st = os.stat(depth)
    os.utime(depth, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert invoke("report", root).exit_code == 0
    assert sorted(drawn) == [0, 2]
    assert "1 frame(s) as the fit drew them (fit/layers/), 2 frame(s) drawn" in (root / "report" / "index.html").read_text()
    new = {f: (root / "report" / "layers" / f"{f:06d}.png").read_bytes() for f in range(3)}
    assert new[1] == (kept / "000001.png").read_bytes() and new[2] != (kept / "000002.png").read_bytes()
    # the redrawn frame is what a report drawing everything draws
    from hoannot.report.build import fit_config, load_stage
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object

    s, p, frames = load_stage(root, "fit")
    cfg = fit_config(s)[0]
    fresh = tmp_path / "fresh"
    hand_model, obj = load_hand_model(s), load_sequence_object(s, None, cfg.object_max_faces)
    panels.render_panels(s, p, hand_model, obj, fresh, frames, cfg.segmentation, progress=False)
    assert (fresh / "layers" / "000002.png").read_bytes() == new[2]
    # the shape is the sequence's: other betas, every frame's key changes
    keys = panels.layer_keys(s, p, frames, hand_model, obj, cfg.segmentation, 320)
    p.betas[3] += np.float32(0.5)
    assert all(k != keys[f] for f, k in panels.layer_keys(s, p, frames, hand_model, obj, cfg.segmentation, 320).items())


def test_the_fits_layer_step_warns_on_a_bad_image_and_loses_nothing(seq, tmp_path):
    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.sequence import open_sequence
    from hoannot.pipeline import keep_layers
    from hoannot.report.build import fit_config

    root = tmp_path / "seq"
    shutil.copytree(seq, root, ignore=lambda d, e: [x for x in e if Path(d) == seq and x == "report"])
    shutil.rmtree(root / "fit" / "layers")
    (root / "depth" / "cam0" / "000001.png").write_bytes(b"not a png")
    s = open_sequence(root)  # not validated: that would stop at the damaged image first
    poses = HandObjectPoses.load(root / "fit" / "poses.npz", s.frames)
    cfg = fit_config(s)[0]
    fit_files = {p: p.read_bytes() for p in (root / "fit").iterdir() if p.is_file()}
    with pytest.warns(UserWarning, match=r"depth/cam0/000001.png: unreadable image"):
        hand_model, obj = load_hand_model(s), load_sequence_object(s, None, cfg.object_max_faces)
        assert keep_layers(s, poses, hand_model, obj, cfg, False) is None
    assert {p: p.read_bytes() for p in (root / "fit").iterdir() if p.is_file()} == fit_files


def test_report_of_init_poses_builds(seq):
    r = invoke("report", seq, "--stage", "init")
    assert r.exit_code == 0, r.output
    html = (seq / "report" / "index.html").read_text()
    assert "init/poses.npz" in html and "silhouette IoU" in html  # quality computed by the fit's own pass
    assert f'data-frame="{BAD_FRAME}"' in html  # the bad start is visible before a fit


@pytest.mark.parametrize("args, needle", [(("{tmp}/nowhere",), "nowhere"), (("{seq}", "--stage", "bogus"), "bogus"),
                                          (("{bare}",), "fit/poses.npz")])  # fmt: skip
def test_bad_input_is_one_line_error(seq, tmp_path, args, needle):
    bare = tmp_path / "bare"
    shutil.copytree(seq, bare, ignore=lambda d, e: [x for x in e if Path(d) == seq and x in ("fit", "report")])
    r = invoke("report", *(a.format(tmp=tmp_path, seq=seq, bare=bare) for a in args))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.output
    assert not (bare / "report").exists() and not (bare / ".report.tmp").exists()


def _placed_layer(html: str, report: Path, anchor: str, panel: int, size: tuple[int, int]):
    """Panel ``panel``'s layer of view ``anchor`` as the page places it on a panel of ``size``
    (H, W) pixels, from the page's own CSS percentages: ``(y0, x0, (h, w) palette indices)``,
    or None when the view has no layer."""
    import numpy as np
    from PIL import Image

    view = html[html.index(f'id="{anchor}"'):]
    view = view[: view.index("</figure>")]
    H, W = size
    pct = lambda s: [float(v) / 100 for v in re.findall(r"(-?[\d.e+-]+)%", s)]  # noqa: E731
    boxes = re.findall(r'<span class="ly" style="([^"]+)"><img src="([^"]+)" style="([^"]+)"', view)
    if not boxes:
        return None
    box, src, cut = boxes[panel]
    left, top, width, height = pct(box)
    x0, y0, w, h = round(left * W), round(top * H), round(width * W), round(height * H)
    _, cl, ct = pct(cut)
    ax, ay = round(-cl * w), round(-ct * h)
    atlas = np.asarray(Image.open(report / src))  # the palette indices
    return y0, x0, atlas[ay : ay + h, ax : ax + w]


def _shown_panel(html: str, report: Path, anchor: str, panel: int, rgb):
    """Panel ``panel`` of view ``anchor`` as the page composites it over ``rgb`` (H, W, 3) uint8
    (a panel of the image's own size)."""
    from hoannot.report.panels import composite

    placed = _placed_layer(html, report, anchor, panel, rgb.shape[:2])
    if placed is None:
        return rgb
    y0, x0, layer = placed
    h, w = layer.shape
    out = rgb.copy()
    out[y0 : y0 + h, x0 : x0 + w] = composite(rgb[y0 : y0 + h, x0 : x0 + w], layer)
    return out


def test_panels_narrower_than_the_camera_lie_on_its_image(seq, tmp_path):
    """``--width`` below the camera's: the layers are drawn at that width and the page scales
    them with the camera's own image; the overlay's pixels must cover the hand and object
    that the fit's renderer draws at the camera's full size, shrunk to the panel."""
    import cv2
    import numpy as np

    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.sequence import open_sequence
    from hoannot.renderers.cameras import ViewCameras
    from hoannot.renderers.renderer import HandObjectRenderer
    from hoannot.report.panels import PANELS, posed_meshes, render_size

    root = tmp_path / "seq"
    shutil.copytree(seq, root, ignore=lambda d, e: [x for x in e if Path(d) == seq and x == "report"])
    r = invoke("report", root, "--width", 48)
    assert r.exit_code == 0, r.output
    html = (root / "report" / "index.html").read_text()
    s = open_sequence(root)
    cfg_faces = json.loads((root / "fit" / "info.json").read_text())["config"]["object_max_faces"]
    hand_model, obj = load_hand_model(s), load_sequence_object(s, None, cfg_faces)
    poses = HandObjectPoses.load(root / "fit" / "poses.npz")
    hand, ov = posed_meshes(poses, hand_model, obj.verts)
    full = (s.cameras[0].height, s.cameras[0].width)
    theirs = HandObjectRenderer()(hand.vertices, hand.faces, ov, obj.faces, ViewCameras.from_cameras(s.cameras, None, full),
                                  soft=False).labels.numpy()  # fmt: skip
    for ci, cam in enumerate(s.cameras):
        size = render_size(cam, 48)
        assert size[1] == 48 < cam.width
        for b, f in enumerate(poses.frames):
            y0, x0, layer = _placed_layer(html, root / "report", f"f{int(f):06d}-{cam.name}", PANELS.index("overlay"), size)
            mine = np.zeros(size, bool)
            mine[y0 : y0 + layer.shape[0], x0 : x0 + layer.shape[1]] = layer > 0
            ref = cv2.resize((theirs[b, ci] > 0).astype(np.uint8), size[::-1], interpolation=cv2.INTER_AREA) > 0
            assert (mine & ref).sum() / (mine | ref).sum() > 0.8, (f, cam.name)


def test_overlay_is_the_fits_renderer_drawn_over_the_image(seq):
    """The report ray-casts its panels (open3d); the fit's PyTorch3D-based renderer, an
    independent implementation, must see the same hand and object at the same depths, and
    the overlay as the page composites it must tint exactly those pixels (hand orange, object
    blue) and leave the sequence's own image elsewhere."""
    import cv2
    import numpy as np

    from hoannot.datasets.loaders import load_hand_model, load_sequence_object
    from hoannot.datasets.sequence import open_sequence
    from hoannot.renderers.cameras import ViewCameras
    from hoannot.renderers.raycast import PixelRays
    from hoannot.renderers.renderer import HandObjectRenderer
    from hoannot.report.panels import PANELS, panel_intrinsics, posed_meshes, render_size, render_views

    r = invoke("report", seq)
    assert r.exit_code == 0, r.output
    s = open_sequence(seq)
    cfg_faces = json.loads((seq / "fit" / "info.json").read_text())["config"]["object_max_faces"]
    hand_model, obj = load_hand_model(s), load_sequence_object(s, None, cfg_faces)
    poses = HandObjectPoses.load(seq / "fit" / "poses.npz")
    hand, ov = posed_meshes(poses, hand_model, obj.verts)
    theirs = HandObjectRenderer()(hand.vertices, hand.faces, ov, obj.faces, ViewCameras.from_cameras(
        s.cameras, None, render_size(s.cameras[0], 320)), soft=False)  # fmt: skip
    kernel = np.ones((3, 3), np.uint8)
    html = (seq / "report" / "index.html").read_text()
    for ci, cam in enumerate(s.cameras):
        size = render_size(cam, 320)
        assert size == (cam.height, cam.width)  # the page's images are the sequence's own, at their size
        for b, f in enumerate(poses.frames):
            rays = PixelRays(panel_intrinsics(cam, size)[None], np.asarray(cam.T_world_cam)[None], size)
            (zbuf, labels, _, _), = render_views(hand.vertices[b].numpy(), hand.faces.numpy(), ov[b].numpy(),
                                                 obj.faces.numpy(), rays)  # fmt: skip
            ref_z, ref = theirs.zbuf[b, ci].numpy(), theirs.labels[b, ci].numpy()
            shown = (ref > 0) | (labels > 0)
            assert (ref == 1).sum() > 20 and (ref == 2).sum() > 20
            assert (labels[shown] == ref[shown]).mean() > 0.98, (f, cam.name)  # at most silhouette-edge ties
            both = (labels == ref) & (ref > 0)
            assert np.abs(zbuf[both] - ref_z[both]).max() < 2e-4  # metres
            rgb = s.read_rgb(cam.name, int(f))
            over = _shown_panel(html, seq / "report", f"f{int(f):06d}-{cam.name}", PANELS.index("overlay"), rgb).astype(float)
            rgb = rgb.astype(float)
            tint = (over[..., 0] - over[..., 2]) - (rgb[..., 0] - rgb[..., 2])  # red minus blue, added by the overlay
            hand_px = cv2.erode((ref == 1).astype(np.uint8), kernel) > 0
            obj_px = cv2.erode((ref == 2).astype(np.uint8), kernel) > 0
            far = cv2.dilate((ref > 0).astype(np.uint8), kernel, iterations=3) == 0
            assert tint[hand_px].mean() > 40 and tint[obj_px].mean() < -40, (f, cam.name)
            assert (over[far] == rgb[far]).all()  # elsewhere the image itself
